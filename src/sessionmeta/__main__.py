"""``python -m sessionmeta``: the same command line as ``sessionmeta``."""

import sys

from .cli import main

sys.exit(main())
