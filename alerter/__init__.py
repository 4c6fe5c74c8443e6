"""factory-usage-alert: warn before Factory (droid) usage runs out."""

# The one place the version is written: pyproject.toml reads it from here.
__version__ = "1.0.0"
