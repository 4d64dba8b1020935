"""MLproject entry point `compare`: the same as `visreps compare ...`."""

import sys

from visreps.cli import main

if __name__ == "__main__":
    sys.exit(main(["compare", *sys.argv[1:]]))
