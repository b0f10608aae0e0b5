"""``python -m sessionmeta``: the same command line as ``sessionmeta``."""

import sys

from sessionmeta.cli import main

# Guarded, so that importing every submodule (as tools and tests do) runs nothing.
if __name__ == "__main__":
    sys.exit(main())
