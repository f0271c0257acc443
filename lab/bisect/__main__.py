"""`python -m lab.bisect --state FILE`: one `git bisect run` step (lab.bisect.step)."""

import sys

from lab.bisect.step import step_main

sys.exit(step_main())
