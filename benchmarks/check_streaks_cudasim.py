"""Whole streak detector on the CPU kernels and on the CUDA kernels in numba's simulator: the
same STREAKS table (every column) from the same image.

    NUMBA_ENABLE_CUDASIM=1 python benchmarks/check_streaks_cudasim.py

A small image (160 x 320) with two streaks, one leaving the frame at both ends; the simulator
runs every CUDA thread in Python, so this takes a minute or more (too slow for the test suite,
whose `tests/test_streaks.py::test_cuda_kernels_match_cpu_in_simulator` compares the kernels
one by one).
"""

import os
import sys
import time

import numpy as np

from pc_gpu.backend import get_backend
from pc_gpu.sim.streaks import render_streaks, streak_truth
from pc_gpu.streaks import detect_streaks


def main():
    if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        print("run with NUMBA_ENABLE_CUDASIM=1", file=sys.stderr)
        return 2
    rng = np.random.default_rng(5)
    signal = np.zeros((160, 320))
    render_streaks(signal, streak_truth([(-20.0, 30.0, 400.0, 150.0, 1.2, 30.0),
                                         (100.0, 140.0, 220.0, 60.0, 0.8, 40.0)], signal.shape))
    image = (100.0 + 20.0 * signal + rng.normal(0.0, 10.0, signal.shape)).astype(np.float32)
    tables = {}
    for device in ("cpu", "gpu"):
        t0 = time.perf_counter()
        tables[device] = detect_streaks(image, None, np.array([50.0]), np.array([60.0]), np.array([1e4]),
                                        exptime_s=20.0, backend=get_backend(device)).table
        print(f"{device}: {len(tables[device])} streaks in {time.perf_counter() - t0:.1f} s")
    a, b = tables["cpu"], tables["gpu"]
    same = len(a) == len(b) == 2
    if same:
        worst = {n: float(np.nanmax(np.abs(a[n] - b[n].astype(np.float64)), initial=0.0)) for n in a.dtype.names}
        print("largest CPU - CUDA simulator difference per column:", worst)
        same = all(np.allclose(a[n], b[n], rtol=1e-6, atol=1e-6, equal_nan=True) for n in a.dtype.names)
    print("agree" if same else "DIFFER")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
