"""``python -m watcherd ...``: the same as the ``watcherd`` command."""

import sys

from watcherd.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
