"""`python -m pc_gpu.report` is `pc-report`."""

import sys

from .cli import main

sys.exit(main())
