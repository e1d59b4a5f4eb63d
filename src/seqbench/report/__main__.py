"""``python -m seqbench.report``: the same as the ``seqbench-report`` console script."""

import sys

from seqbench.report.cli import main

sys.exit(main())
