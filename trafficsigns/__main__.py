"""`python -m trafficsigns COMMAND ...`: the tools around the pipeline (see trafficsigns/cli.py)."""

import sys

from trafficsigns.cli import main

sys.exit(main())
