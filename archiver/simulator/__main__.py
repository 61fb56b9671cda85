"""``python -m archiver.simulator``."""

import sys

from archiver.simulator.cli import main

sys.exit(main())
