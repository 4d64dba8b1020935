"""MLproject entry point `train`: the same as `visreps train ...`."""

import sys

from visreps.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
