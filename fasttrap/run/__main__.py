"""``python -m fasttrap.run``: the main job (see :mod:`fasttrap.run.cli` and ``--help``)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
