"""`python -m lab` is the same as `klab`."""

import sys

from lab.cli import main

sys.exit(main())
