"""``python -m open_magvit2``."""

import sys

from open_magvit2.cli import main

sys.exit(main())
