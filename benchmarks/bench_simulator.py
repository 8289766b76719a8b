"""Time the camera simulator on a full El Nino frame (~4000 stars), median of N runs.

Usage: python benchmarks/bench_simulator.py [--repeat 5] [--seed 0]
"""

import argparse
import os
import statistics
import tempfile
import time

from machine import environment


def timed(func, repeat):
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - start)
    return times, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from pc_gpu.camera import EL_NINO
    from pc_gpu.sim import (Region, build_chunk_tree, make_calibrations, simulate_frame,
                            write_calibrations, write_frame)

    for key, value in environment("scipy", "astropy", "fitsio").items():
        print(f"{key:>9}: {value}")
    with tempfile.TemporaryDirectory() as work:
        gaia = os.path.join(work, "gaia")
        start = time.perf_counter()
        build_chunk_tree(gaia, regions=Region(150.0, 30.0, 6.0), synthetic=True, seed=args.seed)
        print(f"chunk tree (region r=6 deg, synthetic): {time.perf_counter() - start:.3f} s")
        start = time.perf_counter()
        build_chunk_tree(os.path.join(work, "sky"))
        print(f"chunk tree (whole sky, 12288 files, real stars only): "
              f"{time.perf_counter() - start:.3f} s")

        cal_times, cal = timed(lambda: make_calibrations(EL_NINO, seed=args.seed), args.repeat)
        frame_times, frame = timed(lambda: simulate_frame(gaia, 150.0, 30.0, calibrations=cal,
                                                          seed=args.seed), args.repeat)
        counter = iter(range(10 ** 6))
        write_times, _ = timed(lambda: write_frame(frame, os.path.join(work, f"raw{next(counter)}")),
                               args.repeat)
        meta_times, _ = timed(lambda: write_calibrations(cal, os.path.join(work, "meta"),
                                                         overwrite=True), args.repeat)
        n_in = int(frame.truth["IN_FRAME"].sum())
        print(f"frame: {EL_NINO.nx} x {EL_NINO.ny}, {frame.truth.size} stars rendered "
              f"({n_in} centred in the frame), repeat {args.repeat}")
        for label, times in (("simulate_frame", frame_times), ("make_calibrations", cal_times),
                             ("write_frame (raw+wcs+truth)", write_times),
                             ("write_calibrations (4 x .fits.gz)", meta_times)):
            print(f"{label:>36}: median {statistics.median(times):.3f} s  "
                  f"best {min(times):.3f} s")
        total = (statistics.median(frame_times) + statistics.median(cal_times)
                 + statistics.median(write_times))
        print(f"{'frame incl. calibrations + writing':>36}: {total:.3f} s (median sum)")


if __name__ == "__main__":
    main()
