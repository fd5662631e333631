"""``python -m torchdr_sc.cli COMMAND ...``: the console script without the installed entry."""

import sys

from .main import main

sys.exit(main())
