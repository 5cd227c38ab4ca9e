"""The `selfrefine` command line. Each command group lives in its own module and registers itself."""

from selfrefine.cli.main import main

__all__ = ["main"]
