"""MLproject entry point `sweep`: the same as `visreps sweep ...`."""

import sys

from visreps.cli import main

if __name__ == "__main__":
    sys.exit(main(["sweep", *sys.argv[1:]]))
