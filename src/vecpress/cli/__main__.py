"""``python -m vecpress.cli``: the ``vecpress`` command."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
