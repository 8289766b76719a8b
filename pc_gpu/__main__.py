"""`python -m pc_gpu ...` is `pc-proc ...`."""

import sys

from .cli import main

sys.exit(main())
