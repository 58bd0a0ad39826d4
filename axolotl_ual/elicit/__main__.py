"""`python -m axolotl_ual.elicit COMMAND ...`: the elicit/inspect/merge commands on their own."""

import sys

from .cli import main

sys.exit(main())
