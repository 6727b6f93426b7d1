"""The package version, in a module of its own so that any module (and the core loader, which
checks the compiled core against it) can read it without importing the package's ``__init__``."""

__version__ = "0.1.0"
