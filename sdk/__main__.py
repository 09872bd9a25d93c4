"""``python -m edgeship`` = the ``edgeship`` command."""

import sys

from .cli import main

sys.exit(main())
