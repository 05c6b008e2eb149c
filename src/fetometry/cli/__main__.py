"""``python -m fetometry.cli``: the same entry point as the ``fetometry`` command (torchrun uses it)."""

import sys

from fetometry.cli import main

sys.exit(main())
