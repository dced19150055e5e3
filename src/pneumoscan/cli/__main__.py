"""``python -m pneumoscan.cli``: the command line."""

import sys

from pneumoscan.cli import main

sys.exit(main())
