"""Time pc-report: a long night's page, an archive's index, an incremental rebuild, the page
load in headless Chromium, and the thumbnail a reduction writes.

Usage:
    python benchmarks/bench_report.py [--frames 1800] [--nights 200] [--frames-per-night 20]
                                      [--repeat 3] [--workdir DIR]

The summaries are synthetic (`pc_gpu.sim.summaries.write_synthetic_night`: the pipeline's own
table and FITS writers with made-up zeropoints and skies; no frame is simulated or reduced),
written once into --workdir and reused. The peer of the night page is a static two-panel
matplotlib plot of the same zeropoints and skies (what the original's nightly plot script
drew), timed in the same process from the same rows.
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

from machine import environment


def timed(fn, repeat, clock=time.perf_counter):
    times = []
    for _ in range(repeat):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return statistics.median(times), min(times)


def synthetic_tree(path, nights, frames_per_night, seed0=0):
    from pc_gpu.sim.summaries import write_synthetic_night

    marker = os.path.join(path, ".complete")
    if not os.path.exists(marker):
        shutil.rmtree(path, ignore_errors=True)
        t0 = time.perf_counter()
        for k, night in enumerate(nights):
            write_synthetic_night(path, night, frames_per_night, seed=seed0 + k)
        print(f"wrote {len(nights) * frames_per_night} synthetic summaries in {time.perf_counter() - t0:.0f} s",
              flush=True)
        open(marker, "w").close()
    return path


def matplotlib_peer(rows, png):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r["mjd"] for r in rows]
    fig, (a, b) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    for key, colour in (("", "k"), ("_q1", "m"), ("_q2", "r"), ("_q3", "g"), ("_q4", "c")):
        a.scatter(t, [r["zp" + key] for r in rows], s=4, c=colour)
        b.scatter(t, [-2.5 * np.log10(r["sky" + key]) for r in rows], s=4, c=colour)
    fig.savefig(png)
    plt.close(fig)


FRAMES_PLOTTED_JS = """
    var doc = window.Bokeh && Bokeh.documents[0], src = doc && doc.get_model_by_name('frames');
    return Boolean(src && src.data.t && src.data.t.length > 0);"""


def page_load(path, repeat):
    """Median seconds from navigation to the Bokeh plots drawn with the night's frames, in
    headless Chromium."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from browser_fixtures import CANVAS_INK_JS

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    profile = tempfile.mkdtemp()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                "--window-size=1200,1500", f"--user-data-dir={profile}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        def load():
            driver.get("about:blank")
            t0 = time.perf_counter()
            driver.get("file://" + path)
            while max(driver.execute_script(CANVAS_INK_JS) or [0]) <= 500 or not driver.execute_script(FRAMES_PLOTTED_JS):
                time.sleep(0.01)
            return time.perf_counter() - t0
        load()  # the browser's own first start
        return statistics.median([load() for _ in range(repeat)])
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=1800, help="frames in the long night")
    p.add_argument("--nights", type=int, default=200, help="nights in the archive")
    p.add_argument("--frames-per-night", type=int, default=20, help="frames per archive night")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "pc_bench_report"))
    p.add_argument("--parts", default="night,archive,browser,thumbnail",
                   help="comma-separated subset of night, archive, browser, thumbnail")
    args = p.parse_args()
    parts = set(args.parts.split(","))
    import logging

    logging.basicConfig(level=logging.WARNING)
    for k, v in environment("bokeh", "jinja2", "fitsio", "matplotlib").items():
        print(f"{k}: {v}")

    night_dir = os.path.join(args.workdir, f"night{args.frames}")
    page = os.path.join(night_dir, "report", "20231221", "index.html")
    if "night" in parts:
        night(args, night_dir, page)
    if "archive" in parts:
        archive(args)
    if "browser" in parts and shutil.which("chromedriver") and os.path.exists(page):
        print(f"\nlong night page load in headless Chromium (to the plots drawn): "
              f"median {page_load(page, max(args.repeat, 5)):.2f} s (target <= 3 s)")
    if "thumbnail" in parts:
        thumbnail(args)


def night(args, night_dir, page):
    """The long night: first build, full rebuild, one changed frame, the matplotlib peer."""
    from pc_gpu.report import build_report
    from pc_gpu.report.data import read_summary

    synthetic_tree(night_dir, ["20231221"], args.frames)
    cold = build_report(night_dir, force=True)   # includes importing Bokeh once
    print(f"\nlong night ({args.frames} frames), first build in this process: {cold.seconds:.2f} s (target <= 10 s)")
    med, best = timed(lambda: build_report(night_dir, force=True), args.repeat)
    print(f"  full rebuild (read every summary, {args.frames} frame pages, night page, index): "
          f"median {med:.2f} s, best {best:.2f} s")

    def touch_one():
        first = os.path.join(night_dir, "20231221", sorted(os.listdir(os.path.join(night_dir, "20231221")))[0])
        st = os.stat(first)
        os.utime(first, ns=(st.st_atime_ns, st.st_mtime_ns + 1000))
        return build_report(night_dir)
    med_inc, best_inc = timed(touch_one, args.repeat)
    print(f"  night page after one new/changed frame (the live case): median {med_inc:.2f} s, best {best_inc:.2f} s")
    d = os.path.join(night_dir, "20231221")
    rows = [read_summary(os.path.join(d, f), night_dir)[0] for f in sorted(os.listdir(d))]
    med_peer, _ = timed(lambda: matplotlib_peer(rows, os.path.join(args.workdir, "peer.png")), args.repeat)
    print(f"  peer, a static matplotlib zeropoint+sky plot of the same rows: median {med_peer:.2f} s "
          f"(night page after a change / peer: {med_inc / med_peer:.2f})")
    print(f"  night page size: {os.path.getsize(page) / 1e6:.1f} MB (BokehJS inline: ~1.3 MB)")


def archive(args):
    """The archive: a first build of every page, one night changed, nothing changed."""
    from pc_gpu.report import build_report

    nights = [f"{2020 + k // 300}{1 + (k % 300) // 28:02d}{1 + k % 28:02d}" for k in range(args.nights)]
    archive = synthetic_tree(os.path.join(args.workdir, f"archive{args.nights}x{args.frames_per_night}"), nights,
                             args.frames_per_night, seed0=1000)
    cpu0 = _cpu_s()
    med_arch, _ = timed(lambda: build_report(archive, force=True), 1)
    print(f"\narchive ({args.nights} nights x {args.frames_per_night} frames), full build: {med_arch:.1f} s "
          f"(CPU {_cpu_s() - cpu0:.1f} s in all processes; target <= 30 s)")

    def one_night_changed():
        d = os.path.join(archive, nights[len(nights) // 2])
        first = os.path.join(d, sorted(os.listdir(d))[0])
        st = os.stat(first)
        os.utime(first, ns=(st.st_atime_ns, st.st_mtime_ns + 1000))
        result = build_report(archive)
        assert result.nights_built == [nights[len(nights) // 2]], result.nights_built
    med_one, best_one = timed(one_night_changed, args.repeat)
    print(f"  incremental: one changed night + the index: median {med_one:.2f} s, best {best_one:.2f} s "
          "(target <= 10 s)")
    med_none, _ = timed(lambda: build_report(archive), args.repeat)
    print(f"  nothing changed (stat every summary, no page written): median {med_none:.2f} s")


def _cpu_s():
    """CPU seconds of this process and its finished children."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def thumbnail(args):
    """The thumbnail a reduction writes (full El Nino frame, host arrays)."""
    from pc_gpu.thumbnail import THUMBNAIL_BIN, bin_image, write_thumbnail

    image = np.random.default_rng(0).normal(64.0, 8.0, (2472, 3296)).astype(np.float32)
    out = os.path.join(args.workdir, "thumb.jpg")
    med_bin, _ = timed(lambda: bin_image(image, THUMBNAIL_BIN), 21)
    binned = bin_image(image, THUMBNAIL_BIN)
    med_jpg, _ = timed(lambda: write_thumbnail(out, binned), 21)
    med_np, _ = timed(lambda: image.reshape(309, 8, 412, 8).mean(axis=(1, 3)), 21)
    cpu_bin, _ = timed(lambda: bin_image(image, THUMBNAIL_BIN), 21, time.process_time)
    cpu_jpg, _ = timed(lambda: write_thumbnail(out, binned), 21, time.process_time)
    print(f"\nthumbnail of a full frame: binning {1e3 * med_bin:.1f} ms + stretch and JPEG {1e3 * med_jpg:.1f} ms "
          f"(median of 21; CPU time {1e3 * cpu_bin:.1f} + {1e3 * cpu_jpg:.1f} ms; target <= 10 ms); peer numpy "
          f"reshape-mean binning {1e3 * med_np:.1f} ms (ratio {med_bin / med_np:.2f})")


if __name__ == "__main__":
    main()
