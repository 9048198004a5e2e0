"""trajkit's version, in a module of its own so that any layer can read it without importing the package's
front door (``trajkit/__init__.py`` loads some names lazily)."""

__version__ = "0.1.0"
