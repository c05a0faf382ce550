"""vastinit: the init system of GPU containers."""

__version__ = "0.1.0"
