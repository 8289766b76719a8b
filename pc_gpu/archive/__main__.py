"""`python -m pc_gpu.archive` is `pc-archive`."""

import sys

from .cli import main

sys.exit(main())
