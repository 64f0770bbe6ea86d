"""``python -m mesh``: the ``mesh`` command where the console script is not on PATH
(a venv that is not activated, or an interpreter chosen explicitly)."""

import sys

from mesh.cli import main

if __name__ == "__main__":
    sys.exit(main())
