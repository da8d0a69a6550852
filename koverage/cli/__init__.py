"""The `koverage` command line."""

from koverage.cli._main import main

__all__ = ["main"]
