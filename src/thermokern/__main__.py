"""python -m thermokern == the thermokern command."""

import sys

from thermokern.cli import main

sys.exit(main())
