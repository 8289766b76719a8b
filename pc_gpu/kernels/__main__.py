"""`python -m pc_gpu.kernels [--device cpu|gpu|auto]`: compile (or load from the disk cache)
every kernel, the streak and star-detection kernels included, so that the first frame a new process reduces does
not pay for it."""

import argparse
import logging
import sys

from . import warm_up


def main(argv=None):
    """Warm the kernels of one backend; returns the exit status."""
    p = argparse.ArgumentParser(prog="python -m pc_gpu.kernels", description=__doc__)
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), default="cpu")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ..astrometry.detect import warm_up as warm_up_detection
    from ..backend import get_backend
    from ..errors import PCError
    from ..streaks import warm_up as warm_up_streaks

    try:
        backend = get_backend(args.device)
        warm_up(backend)
        warm_up_streaks(backend)
        warm_up_detection(backend)
    except PCError as exc:
        logging.getLogger("pc_gpu").error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
