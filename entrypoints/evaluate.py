"""MLproject entry point `evaluate`: the same as `visreps evaluate ...`."""

import sys

from visreps.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
