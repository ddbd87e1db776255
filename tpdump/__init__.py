"""tpdump: support dumps of Teleport clusters — one command, one archive."""

__version__ = "0.1.0"
