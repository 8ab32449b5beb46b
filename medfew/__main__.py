"""``python -m medfew`` (also what ``torchrun -m medfew`` runs)."""

import sys

from medfew.cli import main

sys.exit(main())
