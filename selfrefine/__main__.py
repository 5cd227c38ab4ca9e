"""`python -m selfrefine` is the `selfrefine` command."""

import sys

from selfrefine.cli import main

if __name__ == "__main__":
    sys.exit(main())
