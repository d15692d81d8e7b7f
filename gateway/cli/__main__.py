"""``python -m gateway.cli``: the same as the ``mailgate`` console script."""

import sys

from . import main

sys.exit(main())
