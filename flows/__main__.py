"""``python -m flows``: the ``spotdiff`` command."""

import sys

from flows.cli import main

sys.exit(main())
