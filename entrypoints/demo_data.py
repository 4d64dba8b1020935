"""MLproject entry point `demo_data`: the same as `visreps demo_data ...`."""

import sys

from visreps.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo_data", *sys.argv[1:]]))
