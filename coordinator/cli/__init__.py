"""Command-line interface (``coordinator``)."""

from coordinator.cli.main import main

__all__ = ["main"]
