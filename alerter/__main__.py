"""Allow ``python -m alerter``."""

import sys

from alerter.cli import main

sys.exit(main())
