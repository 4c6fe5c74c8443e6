"""Allow ``python -m alerter``."""

from alerter.cli import entry_point

entry_point()
