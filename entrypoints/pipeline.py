"""MLproject entry point `pipeline`: the same as `visreps pipeline ...`."""

import sys

from visreps.cli import main

if __name__ == "__main__":
    sys.exit(main(["pipeline", *sys.argv[1:]]))
