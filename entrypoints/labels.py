"""MLproject entry point `labels`: the same as `visreps labels ...`."""

import sys

from visreps.cli import main

if __name__ == "__main__":
    sys.exit(main(["labels", *sys.argv[1:]]))
