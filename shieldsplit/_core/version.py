"""The package version, in the lowest layer so that any module can record it without
importing the package root (which sits above every layer)."""

__version__ = "0.1.0"

__all__ = ["__version__"]
