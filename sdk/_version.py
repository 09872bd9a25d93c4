"""The version of edgeship (the ground floor: every module may import it without importing the package API)."""

__version__ = "0.1.0"
