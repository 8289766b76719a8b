"""pc-archive on a small simulated archive of two nights (tests/archive_fixtures.py): outcomes
of good and bad frames, parity with pc-proc, season tables, resuming, --retry-failed, the lock,
bad invocations, kill -9 mid-run, the output disk filling up, and the file discovery rules."""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import fitsio
import numpy as np
import pyarrow.dataset as ds
import pytest

from archive_fixtures import NX, NY, archive, archive_cmd, run_archive  # noqa: F401  (fixture)
from pc_gpu.archive.discover import discover
from pc_gpu.archive.run import LEDGER_NAME
from pc_gpu.backend import gpu_problem
from pc_gpu.camera import EL_NINO
from pc_gpu.ledger import Ledger, lock_directory
from pc_gpu.pipeline import Reducer, RunOptions, process_frame


def events(outdir):
    with open(os.path.join(outdir, LEDGER_NAME)) as fh:
        return [json.loads(line) for line in fh]


def final_counts(outdir):
    """frame -> [final events], in ledger order."""
    out = {}
    for e in events(outdir):
        if e["event"] in ("done", "skipped", "failed"):
            out.setdefault(e["frame"], []).append(e)
    return out


def assert_each_good_frame_done_once(archive, outdir, written_in=None):
    """Each good frame has one done event and its outputs (written under `written_in` when the
    run wrote to another place than `outdir`, where they were copied)."""
    finals = final_counts(outdir)
    for raw in archive.good:
        name = os.path.basename(raw)
        dones = [e for e in finals.get(name, []) if e["event"] == "done"]
        assert len(dones) == 1, (name, finals.get(name))
        outputs = [os.path.join(outdir, os.path.relpath(p, written_in or outdir)) for p in dones[0]["outputs"]]
        assert all(os.path.exists(p) for p in outputs)
        fitsio.read(next(p for p in outputs if p.endswith("-summary.fits")), ext="ZEROPOINTS")
    assert not glob.glob(os.path.join(outdir, "**", ".*.tmp*"), recursive=True)


@pytest.fixture(scope="module")
def local_run(archive, tmp_path_factory):
    outdir = tmp_path_factory.mktemp("archive_local") / "out"
    proc = run_archive(archive, outdir, "--workers", "2")
    return outdir, proc


def test_local_run_records_every_frame_with_its_outcome(archive, local_run):
    outdir, proc = local_run
    assert proc.returncode == 4, proc.stderr[-3000:]   # some frames failed
    finals = final_counts(outdir)
    assert_each_good_frame_done_once(archive, outdir)
    for raw, phrase in archive.bad.items():
        (event,) = finals[os.path.basename(raw)]
        assert event["event"] == "failed" and phrase in event["reason"], event
    # --solve auto (the default): a frame without .wcs is plate-solved, not skipped
    (event,) = finals[os.path.basename(archive.no_wcs)]
    assert event["event"] == "done", event
    solved = next(p for p in event["outputs"] if p.endswith("-summary.fits"))
    assert fitsio.read_header(solved)["WCSORIG"] == "solved"
    assert len(finals) == len(archive.good) + len(archive.bad) + 1
    # nightly subdirectories, summary + checkplot, no detrended image
    for raw in archive.good:
        night = finals[os.path.basename(raw)][0]["night"]
        base = os.path.join(outdir, night, os.path.basename(raw)[:-5])
        assert os.path.exists(base + "-summary.fits") and os.path.exists(base + "-zp.png")
        assert not os.path.exists(base + "-detrended.fits")
    assert "4 failed" in proc.stderr and "no .wcs" not in proc.stderr


def test_summaries_equal_what_pc_proc_writes(archive, local_run, tmp_path):
    outdir, _ = local_run
    camera = EL_NINO.with_(nx=NX, ny=NY)
    reducer = Reducer(RunOptions(outdir=str(tmp_path), nightly_subdir=True, write_detrended=False,
                                 checkplot=False), camera=camera, meta_dir=archive.meta_dir, gaia_dir=archive.gaia_dir)
    for raw in archive.good:
        _, paths, _ = process_frame(raw, reducer)
        ours = os.path.join(outdir, os.path.relpath(paths["summary"], tmp_path))
        for ext in ("CATALOG", "ZEROPOINTS", "SKY"):
            a, b = fitsio.read(ours, ext=ext), fitsio.read(paths["summary"], ext=ext)
            assert a.dtype == b.dtype, ext
            for name in a.dtype.names:
                np.testing.assert_array_equal(a[name], b[name], err_msg=f"{raw} {ext} {name}")


def _dataset(outdir, table):
    return ds.dataset(os.path.join(outdir, "tables", table), partitioning="hive").to_table()


def _sorted_rows(table, keys):
    """Rows as dicts (NaN as None, so that equal rows compare equal), sorted by `keys`."""
    rows = [{k: None if isinstance(v, float) and v != v else v for k, v in r.items()} for r in table.to_pylist()]
    return sorted(rows, key=lambda r: tuple(r[k] for k in keys))


def test_season_tables_equal_the_summaries(archive, local_run):
    outdir, _ = local_run
    finals = {k: v[-1] for k, v in final_counts(outdir).items()}
    summaries = [p for e in finals.values() if e["event"] == "done" for p in e["outputs"] if p.endswith("-summary.fits")]
    zp_table, sky_table = _dataset(outdir, "zeropoints"), _dataset(outdir, "sky")
    for ext, table in (("ZEROPOINTS", zp_table), ("SKY", sky_table)):
        expected = np.concatenate([fitsio.read(p, ext=ext) for p in summaries])
        assert table.num_rows == len(expected)
        keys = ["fname_raw"] + (["quadrant", "aper_ind", "science_fov_only"] if ext == "ZEROPOINTS" else [])
        order = np.lexsort([expected[k] for k in reversed(keys)])
        got = _sorted_rows(table, keys)
        for name in expected.dtype.names:
            np.testing.assert_array_equal(np.array([r[name] for r in got]), expected[name][order], err_msg=f"{ext} {name}")
        assert sorted({str(r["night"]) for r in got}) == sorted({str(v) for v in expected["obs_night"]})
    frames = {r["frame"]: r for r in _dataset(outdir, "frames").to_pylist()}
    # every frame whose night is known has a row, with its outcome
    for name, e in finals.items():
        if e.get("night"):
            assert frames[name]["outcome"] == e["event"], name
    for path in summaries:
        zps = fitsio.read(path, ext="ZEROPOINTS")
        row = zps[(zps["quadrant"] == 0) & (zps["aper_ind"] == 1) & (zps["science_fov_only"] == 0)][0]
        sky = fitsio.read(path, ext="SKY")[0]
        r = frames[os.path.basename(path).replace("-summary.fits", ".fits")]
        assert r["zp_adu_per_s"] == row["zp_adu_per_s"] and r["n_sources_for_zp"] == row["n_sources_for_zp"]
        assert r["sky_median_adu_per_s"] == sky["median_adu_per_s"] and r["mjd_obs"] == sky["mjd_obs"]
        assert r["has_dome"] == sky["has_dome"] and r["night"] == int(sky["obs_night"])


def test_tables_command_rebuilds_the_same_tables(archive, local_run, tmp_path):
    outdir, _ = local_run
    copy = tmp_path / "copy"
    shutil.copytree(outdir, copy)
    before = {t: _sorted_rows(_dataset(copy, t), ["night"] + (["frame"] if t == "frames" else ["fname_raw"]))
              for t in ("frames", "sky")}
    shutil.rmtree(copy / "tables" / "sky")
    proc = subprocess.run([sys.executable, "-m", "pc_gpu.archive", "tables", str(copy)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    after = {t: _sorted_rows(_dataset(copy, t), ["night"] + (["frame"] if t == "frames" else ["fname_raw"]))
             for t in ("frames", "sky")}
    assert after == before
    assert _dataset(copy, "zeropoints").num_rows == _dataset(outdir, "zeropoints").num_rows
    proc = subprocess.run([sys.executable, "-m", "pc_gpu.archive", "tables", str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1 and "not a pc-archive output directory" in proc.stderr


def test_rerun_does_nothing_new_and_retry_failed_retries(archive, local_run, tmp_path):
    outdir, _ = local_run
    copy = tmp_path / "out"
    shutil.copytree(outdir, copy)
    n_before = len(events(copy))
    proc = run_archive(archive, copy, "--workers", "1")
    assert proc.returncode == 4
    assert len(events(copy)) == n_before    # nothing was redone or recorded again
    assert "finished by earlier runs" in proc.stderr
    proc = run_archive(archive, copy, "--workers", "1", "--retry-failed")
    assert proc.returncode == 4
    finals = final_counts(copy)
    for raw in archive.bad:
        assert [e["event"] for e in finals[os.path.basename(raw)]] == ["failed", "failed"]
    assert_each_good_frame_done_once(archive, copy)


def test_second_run_on_same_outdir_is_refused(archive, tmp_path):
    outdir = tmp_path / "out"
    outdir.mkdir()
    lock = lock_directory(str(outdir), ".pc-archive.lock", "test")
    try:
        proc = run_archive(archive, outdir, "--workers", "1", timeout=120)
    finally:
        lock.close()
    assert proc.returncode == 1
    assert "another pc-archive is already writing here" in proc.stderr
    assert not os.path.exists(outdir / LEDGER_NAME)


@pytest.mark.parametrize("args, phrase", [
    (["--meta_dir", "/nonexistent/meta"], "calibration directory not found"),
    (["--gaia_dir", "/nonexistent/gaia"], "Gaia chunk directory not found"),
    (["--nights", "2021-06-11"], "expected YYYYMMDD"),
    (["--workers", "0"], "--workers must be at least 1"),
    pytest.param(["--device", "gpu"], "no GPU is usable",
                 marks=pytest.mark.skipif(gpu_problem() is None, reason="a GPU is usable here")),
])
def test_bad_invocations_are_refused_before_any_work(archive, tmp_path, args, phrase):
    outdir = tmp_path / "out"
    proc = run_archive(archive, outdir, *args, timeout=120)
    assert proc.returncode == 1 and phrase in proc.stderr, proc.stderr[-2000:]
    assert not os.path.exists(outdir)


def test_missing_input_and_file_list_faults(archive, tmp_path):
    cmd = archive_cmd(archive, tmp_path / "a")
    cmd[3] = str(tmp_path / "nothing-here")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "no file matches it" in proc.stderr
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join([archive.good[0][:-5] + ".wcs", *archive.unreadable, ""]))
    cmd = archive_cmd(archive, tmp_path / "b", "--file-list", str(listing))
    del cmd[3]   # no INPUT directory: only the list
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 4, proc.stderr[-2000:]
    finals = final_counts(tmp_path / "b")
    assert finals[os.path.basename(archive.good[0])][0]["event"] == "done"
    for path in archive.unreadable:
        (event,) = finals[os.path.basename(path)]
        assert event["event"] == "failed" and path in event["reason"], event


def test_discovery_order_filters_and_exclusions(archive, tmp_path):
    frames = discover([archive.root])
    names = [f.name for f in frames]
    assert not any(n.endswith(("-truth.fits", "night_truth.fits")) for n in names)
    known = [f for f in frames if f.night]
    assert [(f.night, f.local_time) for f in known] == sorted((f.night, f.local_time) for f in known)
    assert (frames[-1].name, frames[-1].night) == ("20210611.230020.00091_20000.fits", None)  # non-FITS: last
    assert frames[-2].night is not None
    assert {f.night for f in known} == set(archive.nights)
    only = discover([archive.root], nights=(archive.nights[1], archive.nights[1]))
    assert {f.night for f in only} == {archive.nights[1]} and len(only) == 4
    assert [f.name for f in discover([archive.root], limit=3)] == names[:3]
    pattern = os.path.join(archive.root, "n2", "raw", "*.wcs")
    assert [f.name for f in discover([pattern])] == [f.name for f in only]


def wait_for_first_done(proc, ledger, timeout=300):
    """Wait until the run `proc` records its first done frame in `ledger` (or ends)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if ledger.exists() and '"event":"done"' in ledger.read_text():
            return
        time.sleep(0.02)


def test_kill9_mid_run_then_rerun_completes_exactly_once(archive, tmp_path):
    outdir = tmp_path / "out"
    proc = subprocess.Popen(archive_cmd(archive, outdir, "--workers", "2", "--chunk_size", "1"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    ledger = outdir / LEDGER_NAME
    wait_for_first_done(proc, ledger)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    with Ledger(ledger) as state:
        assert state.in_hand, "nothing was in hand at the kill"
        n_done = sum(e["event"] == "done" for e in state.outcomes.values())
    assert n_done < len(archive.good)
    rerun = run_archive(archive, outdir, "--workers", "2")
    assert rerun.returncode == 4, rerun.stderr[-3000:]
    assert_each_good_frame_done_once(archive, outdir)


def _can_mount_tmpfs():
    try:
        return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                               "mount -t tmpfs -o size=1m tmpfs /mnt"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


_DISK_FULL = """
set -u
out=$1; copy=$2; shift 2
mount -t tmpfs -o size=400k tmpfs "$out" || exit 90
"$@" --outdir "$out"; echo "rc1=$?"
find "$out" -name '.*.tmp*' | sed 's/^/leftover /'
for f in $(find "$out" -name '*-summary.fits'); do
    python3 -c 'import sys; d=open(sys.argv[1],"rb").read(); sys.exit(len(d) % 2880 != 0)' "$f" || echo "partial $f"
done
mount -o remount,size=64m "$out"
"$@" --outdir "$out"; echo "rc2=$?"
cp -a "$out"/. "$copy"/
"""


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="cannot make a small tmpfs (no user namespaces here)")
def test_disk_full_stops_cleanly_and_a_rerun_completes(archive, tmp_path):
    """OUT on a 400 KiB tmpfs (in a user + mount namespace, no root needed): the run stops with
    a clear message and no partial file; after the space grows the same command finishes."""
    out, copy = tmp_path / "out", tmp_path / "copy"
    out.mkdir()
    copy.mkdir()
    cmd = archive_cmd(archive, "X", "--workers", "1")
    cmd = cmd[:cmd.index("--outdir")] + cmd[cmd.index("--outdir") + 2:]
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", _DISK_FULL, "sh",
                           str(out), str(copy), *cmd], capture_output=True, text=True, timeout=600)
    assert "rc1=1" in proc.stdout, proc.stdout + proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if "ERROR" in line]
    assert any("No space left on device" in e and "run the same command again" in e for e in errors), errors
    assert "leftover" not in proc.stdout and "partial" not in proc.stdout, proc.stdout
    assert "rc2=4" in proc.stdout, proc.stdout + proc.stderr[-3000:]
    assert_each_good_frame_done_once(archive, str(copy), written_in=str(out))
    with_night = [v[-1] for v in final_counts(copy).values() if v[-1].get("night")]
    assert _dataset(copy, "frames").num_rows == len(with_night)   # tables caught up too


def _worker_pids(parent):
    """Dask worker processes started by `parent`: its children but multiprocessing's resource
    tracker (a worker's command line is "dask worker [...]" where setproctitle is installed,
    else multiprocessing's spawn_main)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and b"resource_tracker" not in cmdline:
            pids.append(int(entry))
    return pids


def test_dask_local_cluster_workers_keep_glibc_memory_reuse():
    """The LocalCluster's workers run without the nannies' MALLOC_TRIM_THRESHOLD_ (with it,
    glibc maps every array over 128 KiB afresh: detrend and sky ~30% slower than in the pool)
    and without the stack-sampling profiler; the rest of the nannies' environment stays."""
    from pc_gpu.archive.engines import DaskEngine

    engine = DaskEngine("local", 1)
    try:
        env = engine.client.run(lambda: {k: os.environ.get(k) for k in ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS")})
        profile = engine.client.run(lambda: __import__("dask").config.get("distributed.worker.profile.enabled"))
    finally:
        engine.close()
    assert [e["MALLOC_TRIM_THRESHOLD_"] for e in env.values()] == [None]
    assert [e["OMP_NUM_THREADS"] for e in env.values()] == [os.environ.get("OMP_NUM_THREADS", "1")]  # Dask's own
    assert list(profile.values()) == [False]


def test_dask_local_cluster_with_a_worker_killed_mid_run(archive, tmp_path):
    outdir = tmp_path / "out"
    proc = subprocess.Popen(archive_cmd(archive, outdir, "--scheduler", "local", "--workers", "2", "--chunk_size", "2"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for_first_done(proc, outdir / LEDGER_NAME)
        workers = _worker_pids(proc.pid)
        assert proc.poll() is None and len(workers) == 2, workers
        os.kill(workers[0], signal.SIGKILL)
        _, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 4, stderr[-3000:]
    assert_each_good_frame_done_once(archive, outdir)
    assert len(final_counts(outdir)) == len(archive.good) + len(archive.bad) + 1


def test_gpu_engine_in_cuda_simulator_matches_cpu(tmp_path, sim_gaia_dir):
    """--device gpu under NUMBA_ENABLE_CUDASIM=1 (tiny frames): reads ahead and writes behind on
    host threads, reduces frames in batches, and every summary equals the CPU path's within the
    kernels' tolerances."""
    from pc_gpu.sim.night import simulate_night
    from test_gpu_path import assert_same_summary, reduce_to

    camera = EL_NINO.with_(nx=240, ny=180)
    night = simulate_night(tmp_path / "night", n_frames=3, fields=((150.0, 30.0),), camera=camera,
                           gaia_dir=sim_gaia_dir, seed=3)
    outdir = tmp_path / "gpu"
    cmd = [sys.executable, "-m", "pc_gpu.archive", os.path.dirname(night.raw[0]), "--outdir", str(outdir),
           "--meta_dir", night.meta_dir, "--gaia_dir", sim_gaia_dir, "--camera_nx", "240", "--camera_ny", "180",
           "--device", "gpu", "--max_n_stars", "25", "--io_threads", "2", "--chunk_size", "2", "--gpu_batch", "2",
           "--progress", "log"]
    proc = subprocess.run(cmd, env=dict(os.environ, NUMBA_ENABLE_CUDASIM="1"), capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "gpu engine" in proc.stderr
    finals = final_counts(outdir)
    assert [finals[os.path.basename(r)][0]["event"] for r in night.raw] == ["done"] * 3
    # chunks of 2 and 1 frames: the first two reduced together (one star-kernel launch)
    assert sorted(finals[os.path.basename(r)][0]["batch"] for r in night.raw) == [1, 2, 2]
    for raw in night.raw:
        cpu_summary, _ = reduce_to(tmp_path / "cpu", raw, night.meta_dir, sim_gaia_dir, camera, "cpu")
        gpu_summary = next(p for p in finals[os.path.basename(raw)][0]["outputs"] if p.endswith("-summary.fits"))
        assert fitsio.read_header(gpu_summary)["PCDEVICE"] == "gpu-sim"
        assert_same_summary(gpu_summary, cpu_summary)
        assert os.path.exists(gpu_summary.replace("-summary.fits", "-zp.png"))
    assert _dataset(outdir, "frames").num_rows == 3


def test_progress_log_lines_and_bar(caplog, capsys):
    from pc_gpu.archive.run import Progress

    with caplog.at_level("INFO", logger="pc_gpu.archive"):
        progress = Progress(4, interval_s=0.0, bar=False)
        progress.add("done", 2)
        progress.add("failed")
        progress.close()
    assert "3/4 frames (done 2, skipped 0, failed 1)" in caplog.text
    progress = Progress(4, bar=True)
    progress.add("done", 3)
    progress.close()
    assert "3/4" in capsys.readouterr().err


def test_solve_never_skips_a_frame_without_wcs(archive, tmp_path):
    """With --solve never a frame without .wcs is skipped (as the original's archive scripts
    did); the default, auto, solves it (test_local_run_records_every_frame_with_its_outcome)."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(archive.no_wcs, inputs)
    cmd = archive_cmd(archive, tmp_path / "out", "--solve", "never", "--workers", "1")
    cmd[3] = str(inputs)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (event,) = final_counts(tmp_path / "out")[os.path.basename(archive.no_wcs)]
    assert (event["event"], event["reason"]) == ("skipped", "no .wcs")
