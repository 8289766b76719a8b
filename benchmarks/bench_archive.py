"""Throughput of `pc-archive` on a simulated two-night archive of full-size frames.

Usage:
    python benchmarks/bench_archive.py [--frames 200] [--repeats 3] [--workdir DIR]
    python benchmarks/bench_archive.py --device gpu [--frames 200] [--repeats 3]

The archive (two nights of El Nino frames, ~4000 Gaia stars each, half the frames a night) is
simulated once in --workdir and reused. Each configuration runs `python -m pc_gpu.archive` as
a subprocess into a fresh OUT, `--repeats` times; reported: the median end-to-end rate (frames
/ wall time of the command, start-up included) and the steady rate (from the ledger's done
times, start-up excluded). CPU mode runs: the local pool with the archive defaults (summary +
zp.png) and with --skip_checkplot; 1 vs 2 workers (scaling efficiency); a Dask LocalCluster
with as many workers; and resident memory of each pool worker, sampled from /proc, over the
first and the last 50 frames. The peer, in the same process: a loop of `pc-proc` commands on a
few frames (what a user had before). GPU mode: the GPU engine with summaries only, 1, 8 and 16
frames per batch (--gpu_batch), and where each frame's time goes (read/decode on host threads,
each device stage, writes).

`--worker_cpu N` measures instead one warm archive worker in this process (CPU backend, one
thread, the archive's options) over N frames: CPU time (time.process_time, far less sensitive
to other jobs on the machine than wall time) of the read and reduction and of writing each
output, medians per frame. Run it with PYTHONPATH pointing at another checkout to compare.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from machine import environment

_CPU_STAGES = ("read", "detrend", "sky", "gaia", "centroid", "photometry", "zeropoints")


def make_archive(workdir, n_frames):
    """Two simulated nights of full-size frames (made once, then reused): (root, meta, gaia)."""
    from pc_gpu.sim import Region, build_chunk_tree
    from pc_gpu.sim.night import DEMO_DEC, DEMO_RA, simulate_night

    root = os.path.join(workdir, f"archive{n_frames}")
    gaia, done = os.path.join(workdir, "gaia"), os.path.join(root, "complete")
    fields = ((DEMO_RA, DEMO_DEC), (DEMO_RA + 2.0, DEMO_DEC + 1.0))
    if not os.path.exists(done):
        t0 = time.perf_counter()
        build_chunk_tree(gaia, regions=[Region(DEMO_RA + 1.0, DEMO_DEC + 0.5, 7.0)], synthetic=True, seed=0,
                         overwrite=True)
        half = n_frames // 2
        for k, (n, start) in enumerate(((half, "2021-06-12T04:00:00"), (n_frames - half, "2021-06-13T04:00:00"))):
            simulate_night(os.path.join(root, f"night{k + 1}"), n_frames=n, fields=fields, gaia_dir=gaia,
                           seed=k + 1, start_time=start, first_frame_number=1 + 1000 * k, overwrite=True)
        open(done, "w").close()
        print(f"simulated {n_frames} full-size frames in {time.perf_counter() - t0:.0f} s", flush=True)
    return root, os.path.join(root, "night1", "meta"), gaia


def _rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS")) / 1024.0
    except (OSError, StopIteration):
        return None


def _children(parent):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == parent:
                        out.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return out


def run_once(archive, extra, n_frames, sample_memory=False):
    """One pc-archive run into a fresh OUT: a dict of figures."""
    root, meta, gaia = archive
    with tempfile.TemporaryDirectory(prefix="bench_archive_") as tmp:
        out = os.path.join(tmp, "out")
        cmd = [sys.executable, "-m", "pc_gpu.archive", root, "--outdir", out, "--meta_dir", meta, "--gaia_dir", gaia,
               "--progress", "log", "-q", *extra]
        samples = []
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        stop = threading.Event()

        def sample():
            ledger = os.path.join(out, "pc-archive-ledger.jsonl")
            while not stop.wait(0.25):
                try:
                    with open(ledger) as fh:
                        n_done = sum('"event":"done"' in line for line in fh)
                except OSError:
                    n_done = 0
                rss = [r for r in map(_rss_mib, _children(proc.pid)) if r is not None and r > 100]
                if rss:
                    samples.append((n_done, max(rss)))

        sampler = threading.Thread(target=sample, daemon=True)
        if sample_memory:
            sampler.start()
        _, stderr = proc.communicate()
        wall = time.perf_counter() - t0
        stop.set()
        if proc.returncode not in (0, 4):
            raise SystemExit(f"pc-archive failed ({proc.returncode}):\n{stderr[-3000:]}")
        with open(os.path.join(out, "pc-archive-ledger.jsonl")) as fh:
            events = [json.loads(line) for line in fh]
    done = [e for e in events if e["event"] == "done"]
    times = sorted(_epoch(e["time"]) for e in done)
    steady = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 2 and times[-1] > times[0] else float("nan")
    figures = {"wall_s": wall, "done": len(done), "rate": len(done) / wall, "steady": steady}
    if samples:
        first = [r for n, r in samples if n <= 50]
        last = [r for n, r in samples if n >= n_frames - 50]
        figures["rss_first50"] = max(first) if first else float("nan")
        figures["rss_last50"] = max(last) if last else float("nan")
    stages = {}
    for e in done:
        for k, v in (e.get("stages_ms") or {}).items():
            stages.setdefault(k, []).append(v)
        stages.setdefault("load (host thread)", []).append(1e3 * e.get("load_s", 0.0))
        stages.setdefault("write", []).append(1e3 * e.get("write_s", 0.0))
    figures["stages_ms"] = {k: statistics.median(v) for k, v in stages.items()}
    return figures


def _epoch(iso):
    import datetime as dt

    return dt.datetime.fromisoformat(iso).timestamp()


def measure(archive, label, extra, n_frames, repeats, sample_memory=False):
    runs = [run_once(archive, extra, n_frames, sample_memory) for _ in range(repeats)]
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "stages_ms"}
    med["stages_ms"] = runs[len(runs) // 2]["stages_ms"]
    line = (f"{label:<44s} {med['rate']:7.2f} frames/s end to end, {med['steady']:7.2f} steady "
            f"(median of {repeats}; {med['done']:.0f} frames, {med['wall_s']:.1f} s)")
    if "rss_first50" in med:
        line += f"; worker RSS first/last 50 frames {med['rss_first50']:.0f}/{med['rss_last50']:.0f} MiB"
    print(line, flush=True)
    return med


def peer_pc_proc(archive, n):
    """A loop of pc-proc commands (one process per frame), as a user would have run: frames/s."""
    root, meta, gaia = archive
    raws = sorted(os.path.join(d, f) for d, _, fs in os.walk(os.path.join(root, "night1", "raw"))
                  for f in fs if f.endswith(".fits") and "truth" not in d)[:n]
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        for raw in raws:
            subprocess.run([sys.executable, "-m", "pc_gpu", raw, "--outdir", out, "--meta_dir", meta, "--gaia_dir",
                            gaia, "--nightly_subdir", "--dont_write_detrended", "-q", "--device", "cpu"], check=True)
        return len(raws) / (time.perf_counter() - t0)


def worker_cpu(archive, n_frames):
    """CPU ms per frame of a warm worker: read + reduce, then the summary alone, + zp.png,
    + thumbnail (each output's cost is the difference), medians over `n_frames` frames."""
    import dataclasses

    from pc_gpu.pipeline import Reducer, RunOptions, write_outputs

    root, meta, gaia = archive
    raws = sorted(os.path.join(d, f) for d, _, fs in os.walk(os.path.join(root, "night1", "raw"))
                  for f in fs if f.endswith(".fits"))[: n_frames + 2]
    with tempfile.TemporaryDirectory(prefix="bench_worker_") as out:
        base = RunOptions(outdir=out, write_detrended=False, nightly_subdir=True, threads=1, device="cpu",
                          overwrite=True, checkplot=False, thumbnail=False)
        reducer = Reducer(dataclasses.replace(base, thumbnail=True), meta_dir=meta, gaia_dir=gaia)
        variants = {"summary": {}, "+ zp.png": {"checkplot": True}, "+ thumbnail": {"checkplot": True, "thumbnail": True}}
        writers = {name: Reducer(dataclasses.replace(base, outdir=os.path.join(out, str(k)), **flags),
                                 meta_dir=meta, gaia_dir=gaia)
                   for k, (name, flags) in enumerate(variants.items())}
        cpu = {k: [] for k in ("read + reduce", *writers)}
        stages = {}
        for i, raw in enumerate(raws):
            t = time.process_time()
            result = reducer.reduce(raw)
            cpu["read + reduce"].append(time.process_time() - t)
            for name, writer in writers.items():
                t = time.process_time()
                write_outputs(result, writer)
                cpu[name].append(time.process_time() - t)
            for k, v in result.timings.items():
                stages.setdefault(k, []).append(v)
            if i < 2:  # warm-up frames (kernels, fonts, first figure)
                for v in (*cpu.values(), *stages.values()):
                    v.clear()
    med = {k: 1e3 * statistics.median(v) for k, v in cpu.items()}
    print(f"warm worker, CPU ms per frame (median of {len(cpu['summary'])} frames, 1 thread):")
    print(f"  read + reduce {med['read + reduce']:.1f} (stages, wall ms: "
          + ", ".join(f"{k} {statistics.median(v):.1f}" for k, v in stages.items()) + ")")
    print(f"  summary {med['summary']:.1f}, zp.png {med['+ zp.png'] - med['summary']:.1f}, "
          f"thumbnail {med['+ thumbnail'] - med['+ zp.png']:.1f}")
    total = med["read + reduce"] + med["+ thumbnail"]
    skip = med["read + reduce"] + med["summary"]
    cores = os.cpu_count() or 1
    print(f"  per frame, archive defaults {total:.1f} ms, --skip_checkplot --no_thumbnail {skip:.1f} ms: "
          f"at most {1e3 * cores / total:.1f} / {1e3 * cores / skip:.1f} frames/s on {cores} cores "
          f"(targets >= 10 / >= 15); load average at the end {os.getloadavg()[0]:.2f}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--peer_frames", type=int, default=6, help="frames for the pc-proc loop")
    p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "pc_bench_archive"))
    p.add_argument("--worker_cpu", type=int, metavar="N", help="only the warm worker's CPU time over N frames")
    args = p.parse_args(argv)
    for key, value in environment("pyarrow").items():
        print(f"{key}: {value}")
    archive = make_archive(args.workdir, args.frames)
    if args.worker_cpu:
        worker_cpu(archive, args.worker_cpu)
        return 0
    cores = os.cpu_count() or 1
    if args.device == "gpu":
        from pc_gpu.backend import gpu_problem

        problem = gpu_problem()
        if problem is not None:
            raise SystemExit(f"no usable GPU: {problem}")
        for batch in (1, 8, 16):
            med = measure(archive, f"GPU engine, summaries only, {batch} frame(s) per batch",
                          ["--device", "gpu", "--skip_checkplot", "--no_thumbnail", "--gpu_batch", str(batch)],
                          args.frames, args.repeats)
            print("median per frame (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in med["stages_ms"].items()))
        print("target: >= 300 frames/s on one H100/H200 (summaries only)")
        return 0
    cpu = ["--device", "cpu"]
    default = measure(archive, f"local pool, {cores} workers, summary + zp.png", cpu, args.frames, args.repeats,
                      sample_memory=True)
    skip = measure(archive, f"local pool, {cores} workers, --skip_checkplot", cpu + ["--skip_checkplot"],
                   args.frames, args.repeats)
    one = measure(archive, "local pool, 1 worker x 1 thread, --skip_checkplot",
                  cpu + ["--skip_checkplot", "--workers", "1", "--multiproc", "1"], args.frames, args.repeats)
    dask = None
    try:
        import distributed  # noqa: F401

        dask = measure(archive, f"Dask LocalCluster, {cores} workers, --skip_checkplot",
                       cpu + ["--skip_checkplot", "--scheduler", "local", "--workers", str(cores)], args.frames,
                       args.repeats)
    except ImportError:
        print("Dask not installed: pip install 'pc_gpu[distributed]'")
    peer = peer_pc_proc(archive, args.peer_frames)
    print(f"{'peer: a loop of pc-proc commands':<44s} {peer:7.2f} frames/s ({args.peer_frames} frames)")
    print(f"local pool (defaults) vs pc-proc loop: {default['rate'] / peer:.1f} x")
    print(f"scaling 1 -> {cores} workers (steady): efficiency {skip['steady'] / (cores * one['steady']):.0%}")
    if dask is not None:
        print(f"Dask LocalCluster / local pool (steady): {dask['steady'] / skip['steady']:.2f}")
    print("median per frame (ms), local pool defaults: "
          + ", ".join(f"{k} {v:.1f}" for k, v in default["stages_ms"].items()))
    print("targets: >= 10 frames/s defaults, >= 15 with --skip_checkplot, scaling >= 85%, Dask within 15%, "
          "worker RSS <= 600 MiB and flat")
    return 0


if __name__ == "__main__":
    sys.exit(main())
