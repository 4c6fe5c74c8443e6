"""factory-usage-alert: warn before Factory (droid) usage runs out."""

__version__ = "0.1.0"
