"""The version, in one place: ``pyproject.toml`` reads it from here, the package and the CLI import it."""

__version__ = "0.2.0"
