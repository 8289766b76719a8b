"""pc-report: page data from summaries and ledgers, escaping, incremental builds, thumbnails,
Redis read-back, and the pages in a real headless Chromium (file:// and HTTP), live with
pc-realtime --report."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from urllib.parse import quote

import fitsio
import numpy as np
import pytest

from browser_fixtures import CANVAS_INK_JS, browser, console_errors, http_root  # noqa: F401
from pc_gpu.pipeline import RunOptions
from pc_gpu.realtime import LEDGER_NAME, RealtimeService, ServiceOptions
from pc_gpu.report import build_report
from pc_gpu.report.cli import main as report_main
from pc_gpu.report.data import frame_name, ledger_rows, read_ledgers, read_summary
from pc_gpu.sim import simulate_night
from pc_gpu.sim.summaries import write_synthetic_night
from pc_gpu.telemetry import RedisSettings
from pc_gpu.thumbnail import bin_image, stretch

KEY = "pc_report_test"
N_FRAMES = 7
SLEW_AFTER = 4                                 # frame 4 has ZPFLAG = 1: skipped
BAD_NAME = "<img src=x onerror=alert(1)>"      # a raw file name that is also HTML
BAD_AFTER = 2                                  # the bad file lands after frame 2
N_LIVE = 3                                     # frames landing while pc-realtime --report runs


@dataclass
class Reduced:
    out: str
    night: str
    night_paths: object
    frames: list        # frame names in arrival order (the bad one included)


@pytest.fixture(scope="module")
def reduced(tmp_path_factory, sim_gaia_dir, small_camera, redis_server):
    """A small simulated night reduced by the realtime service (thumbnails, telemetry), with a
    corrupt frame named like HTML among the frames; its report built once."""
    from pc_gpu.backend import get_backend

    base = tmp_path_factory.mktemp("report")
    night = simulate_night(base / "night", n_frames=N_FRAMES, camera=small_camera, gaia_dir=sim_gaia_dir,
                           fields=((150.0, 30.0), (153.0, 31.0)), slew_after=SLEW_AFTER)
    out = str(base / "out")
    run = RunOptions(outdir=out, write_detrended=False, nightly_subdir=True, one_aper=True,
                     check_tcs_motion=True, send_redis=True, max_zp_radius=1200.0, device="cpu",
                     thumbnail=True)
    watch = base / "watch"
    watch.mkdir()
    bad = watch / (BAD_NAME + ".fits")
    bad.write_bytes(b"SIMPLE  = not really a FITS file")
    svc = RealtimeService(run, ServiceOptions(watchdir=str(watch), use_events=False), camera=small_camera,
                          meta_dir=night.meta_dir, gaia_dir=night.gaia_dir, backend=get_backend("cpu"),
                          redis_settings=RedisSettings(host="127.0.0.1", port=redis_server.port, key=KEY))
    frames = []
    try:
        for i, raw in enumerate(night.raw):
            svc.process(raw)
            frames.append(os.path.basename(raw)[:-5])
            if i == BAD_AFTER:
                svc.process(str(bad))
                frames.append(BAD_NAME)
    finally:
        svc.close()
    build_report(out)
    return Reduced(out, "20210611", night, frames)


def _summaries(reduced):
    d = os.path.join(reduced.out, reduced.night)
    return sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith("-summary.fits"))


def _read(path):
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def _strip_scripts(html):
    return re.sub(r"<script.*?</script>", "", html, flags=re.S)


# --- page data ------------------------------------------------------------------------------------

def test_rows_from_summaries_and_ledger(reduced):
    summaries = _summaries(reduced)
    assert len(summaries) == N_FRAMES - 1          # the skipped frame has no outputs
    for path in summaries:
        row, details = read_summary(path, reduced.out)
        zps, sky = fitsio.read(path, ext="ZEROPOINTS"), fitsio.read(path, ext="SKY")
        full = zps[(zps["quadrant"] == 0) & (zps["aper_ind"] == 0) & (zps["science_fov_only"] == 0)][0]
        q3 = zps[(zps["quadrant"] == 3) & (zps["science_fov_only"] == 0)][0]
        assert row["zp"] == full["zp_adu_per_s"] and row["n_stars"] == full["n_sources_for_zp"]
        assert row["zp_q3"] == q3["zp_adu_per_s"]
        assert row["sky"] == sky["median_adu_per_s"][0] and row["sky_q2"] == sky["median_adu_quad2_per_s"][0]
        assert row["night"] == reduced.night and row["mjd"] == sky["mjd_obs"][0]
        assert row["n_streaks"] is None   # not searched
        cond = fitsio.read(path, ext="CONDITIONS")[0]   # the full-frame row's numbers
        assert row["conditions"]["fwhm_pix"] == cond["fwhm_pix"] and "region" not in row["conditions"]
        assert row["conditions"]["sky_mag_arcsec2"] == cond["sky_mag_arcsec2"]
        assert row["files"]["thumbnail"].endswith("-thumb.jpg") and row["files"]["detrended"] is None
        assert os.path.exists(os.path.join(reduced.out, row["files"]["zp_plot"]))
        assert len(details["zeropoints"]) == len(zps)
    rows = ledger_rows(read_ledgers(reduced.out))
    assert list(rows) == reduced.frames               # ledger order
    outcome = {name: r["outcome"] for name, r in rows.items()}
    assert outcome[BAD_NAME] == "failed" and outcome[reduced.frames[SLEW_AFTER + 1]] == "skipped"
    assert sum(o == "done" for o in outcome.values()) == N_FRAMES - 1
    # frames with no summary belong to the night of the frames around them, not to today
    assert {r["night"] for r in rows.values()} == {reduced.night}
    assert "ZPFLAG" in rows[reduced.frames[SLEW_AFTER + 1]]["reason"]


def test_night_table_marks_failures_and_escapes_names(reduced):
    report = os.path.join(reduced.out, "report")
    html = _read(os.path.join(report, reduced.night, "index.html"))
    body = _strip_scripts(html)
    rows = re.findall(r'<tr class="frame ([a-z ]*)"', body)
    assert len(rows) == len(reduced.frames) == N_FRAMES + 1
    assert [r.split()[0] for r in rows].count("failed") == 1 and [r.split()[0] for r in rows].count("skipped") == 1
    # the name shows as text, never as markup, in the table, the frame page and the plots' data
    assert "&lt;img src=x onerror=alert(1)&gt;" in body and "<img src=x" not in body
    assert "<img src=x" not in html           # Bokeh's data escapes it too
    frame_page = os.path.join(report, reduced.night, "frames", BAD_NAME + ".html")
    page = _read(frame_page)
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "No summary was written" in page and "No thumbnail" in page
    assert f'href="frames/{quote(BAD_NAME, safe="")}.html"' in body
    stats = json.loads(_read(os.path.join(report, "manifest.json")))["nights"][reduced.night]["stats"]
    zps = [fitsio.read(p, ext="ZEROPOINTS")["zp_adu_per_s"][0] for p in _summaries(reduced)]
    assert stats["n_frames"] == N_FRAMES + 1 and stats["n_failed"] == 1 and stats["n_skipped"] == 1
    assert stats["zp_median"] == pytest.approx(float(np.median(zps)), abs=1e-12)


def test_frame_page_shows_thumbnail_checkplot_and_tables(reduced):
    from PIL import Image

    report = os.path.join(reduced.out, "report", reduced.night)
    frame = reduced.frames[0]
    page = _read(os.path.join(report, "frames", frame + ".html"))
    for suffix in ("-thumb.jpg", "-zp.png", "-summary.fits"):
        href = f"../../../{reduced.night}/{frame}{suffix}"
        assert f'"{href}"' in page
        assert os.path.exists(os.path.normpath(os.path.join(report, "frames", href)))
    with Image.open(os.path.join(reduced.out, reduced.night, frame + "-thumb.jpg")) as im:
        assert im.size == (600 // 8, 450 // 8) and im.mode == "L"
        assert np.asarray(im).std() > 5          # stars and sky, not a flat grey
    zp = fitsio.read(os.path.join(reduced.out, reduced.night, frame + "-summary.fits"), ext="ZEROPOINTS")
    assert f"{zp['zp_adu_per_s'][0]:.4f}" in page
    assert "Streak detection did not run" in page
    # where the WCS came from and how well it fits, from the summary's header
    header = fitsio.read_header(os.path.join(reduced.out, reduced.night, frame + "-summary.fits"))
    assert header["WCSORIG"] == "refined" and "WCSORIG" in page and "WCSRMSRA" in page
    assert f"{header['WCSNSTAR']}" in page


def test_thumbnail_binning_and_stretch():
    rng = np.random.default_rng(1)
    image = rng.normal(100.0, 5.0, (83, 130)).astype(np.float32)
    binned = bin_image(image, 8)
    assert binned.shape == (10, 16)
    np.testing.assert_allclose(binned, image[:80, :128].reshape(10, 8, 16, 8).mean(axis=(1, 3)), rtol=1e-5)
    image[10:14, 20:24] += 5000.0                  # a star, bottom left in FITS orientation
    shown = stretch(bin_image(image, 4))
    assert shown.dtype == np.uint8 and shown[-1 - 10 // 4, 20 // 4] == 255   # top row first
    assert np.median(shown) < 128                  # the sky stays dark


def test_thumbnail_flags():
    from pc_gpu.cli import build_parser, options_from_args
    from pc_gpu.realtime import options_from_args as realtime_options
    from pc_gpu.realtime import parse_args

    assert not options_from_args(build_parser().parse_args(["r.fits"])).thumbnail
    assert options_from_args(build_parser().parse_args(["r.fits", "--thumbnail"])).thumbnail
    watch = os.path.dirname(os.path.abspath(__file__))
    assert realtime_options(parse_args([watch, "--outdir", "o"]))[0].thumbnail
    assert not realtime_options(parse_args([watch, "--outdir", "o", "--no_thumbnail"]))[0].thumbnail


# --- incremental ----------------------------------------------------------------------------------

def test_incremental_rebuild_only_changed_nights(tmp_path):
    out = str(tmp_path)
    first = write_synthetic_night(out, "20240101", 4, seed=1)
    write_synthetic_night(out, "20240102", 5, seed=2)
    result = build_report(out)
    assert sorted(result.nights_built) == ["20240101", "20240102"] and result.frames_written == 9
    again = build_report(out)
    assert again.nights_built == [] and again.frames_written == 0 and not again.index_written
    page1 = os.path.join(out, "report", "20240101", "index.html")
    page2 = os.path.join(out, "report", "20240102", "index.html")
    before = os.stat(page2).st_mtime_ns
    st = os.stat(first[1])
    os.utime(first[1], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))   # one summary rewritten
    result = build_report(out)
    assert result.nights_built == ["20240101"] and result.frames_written == 1 and result.index_written
    assert os.stat(page2).st_mtime_ns == before
    # a ledger outcome for a frame of the second night rebuilds that night only
    with open(os.path.join(out, "pc-archive-ledger.jsonl"), "w") as fh:
        fh.write(json.dumps({"event": "failed", "frame": "20240102.190500.99999_20000.fits",
                             "reason": "bad header", "time": "2024-01-03T03:00:00+00:00"}) + "\n")
    result = build_report(out)
    assert result.nights_built == ["20240102"]
    assert "bad header" in _read(page2)
    shutil.rmtree(os.path.join(out, "20240101"))   # a night gone
    result = build_report(out)
    assert result.index_written and result.n_nights == 1
    index = _read(os.path.join(out, "report", "index.html"))
    assert "20240102" in index and 'href="20240101/index.html"' not in index
    assert not os.path.exists(page1)               # its pages went with it


def test_many_nights_built_in_worker_processes_as_in_one(tmp_path, monkeypatch):
    import pc_gpu.report.build as build

    nights = [f"2024020{k}" for k in range(1, 6)]
    for k, night in enumerate(nights):
        write_synthetic_night(str(tmp_path / "a"), night, 2, seed=10 + k)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    parallel = build_report(str(tmp_path / "a"))
    monkeypatch.setattr(build, "_PARALLEL_NIGHTS", 10**6)      # the same, one night after another
    serial = build_report(str(tmp_path / "b"))
    assert parallel.nights_built == serial.nights_built == nights and parallel.frames_written == 10

    def table(root, night):
        html = _read(os.path.join(root, "report", night, "index.html"))
        return re.search(r'<table class="sortable" id="frames">.*?</table>', html, re.S).group(0)
    for night in nights:
        assert table(tmp_path / "a", night) == table(tmp_path / "b", night)
    monkeypatch.undo()
    assert build_report(str(tmp_path / "a")).frames_written == 0     # what the workers wrote is known
    summary = sorted((tmp_path / "a" / nights[2]).iterdir())[0]
    st = os.stat(summary)
    os.utime(summary, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    again = build_report(str(tmp_path / "a"))
    assert again.nights_built == [nights[2]] and again.frames_written == 1


def test_conditions_dome_and_streaks_shown_when_present(tmp_path):
    out = str(tmp_path)
    paths = write_synthetic_night(out, "20240105", 3, seed=3)
    fwhm = [2.1, 2.5, 3.3]
    for k, path in enumerate(paths):
        with fitsio.FITS(path, "rw") as f:
            cond = np.zeros(1, dtype=[("fwhm_arcsec", "f8"), ("transparency", "f8"), ("sky_mag_arcsec2", "f8")])
            cond[0] = (fwhm[k], 0.9, 20.5 + 0.1 * k)
            f.write(cond, extname="CONDITIONS")
            if k == 1:
                f["SKY"].write_column("has_dome", np.array([1]))
                f.write(np.zeros(1, dtype=[("length_pix", "f8")]), extname="STREAKS")
    build_report(out)
    html = _read(os.path.join(out, "report", "20240105", "index.html"))
    body = _strip_scripts(html)
    for column in ("fwhm_arcsec", "transparency", "sky_mag_arcsec2"):
        assert f"<th>{column}</th>" in body
    assert re.findall(r'<tr class="frame ([a-z ]*)"', body) == ["done", "done dome streak", "done"]
    assert "dome, streaks: 1" in body
    assert "sky (mag/arcsec" in html and "sky (-2.5 log10" not in html   # the sky axis from CONDITIONS
    stats = json.loads(_read(os.path.join(out, "report", "manifest.json")))["nights"]["20240105"]["stats"]
    assert stats["fwhm_median"] == pytest.approx(2.5)
    index = _strip_scripts(_read(os.path.join(out, "report", "index.html")))
    assert "<td>2.50</td>" in index
    page = _read(os.path.join(out, "report", "20240105", "frames", frame_name(paths[1]) + ".html"))
    assert "<h2>Conditions</h2>" in page and "length_pix" in page and "No thumbnail" in page
    # without a CONDITIONS table no condition is invented
    plain = str(tmp_path / "plain")
    write_synthetic_night(plain, "20240106", 2, seed=4)
    build_report(plain)
    body = _strip_scripts(_read(os.path.join(plain, "report", "20240106", "index.html")))
    assert "fwhm" not in body and "transparency" not in body
    html = _read(os.path.join(plain, "report", "20240106", "index.html"))
    assert "sky (-2.5 log10 ADU/s/pix)" in html and "sky (mag/arcsec" not in html


def test_cli_errors_and_exit_status(tmp_path, caplog):
    assert report_main([str(tmp_path / "missing")]) == 1
    assert "missing" in caplog.text and "not found" in caplog.text
    assert not (tmp_path / "missing").exists()
    with pytest.raises(SystemExit) as exc:
        report_main([])
    assert exc.value.code == 2


def test_redis_readback(reduced, redis_server, capsys, monkeypatch):
    for k, v in redis_server.environ(KEY).items():
        monkeypatch.setenv(k, v)
    assert report_main(["--redis", "--count", "3", "-q"]) == 0
    text = capsys.readouterr().out
    done = [f for f in reduced.frames if f != BAD_NAME and f != reduced.frames[SLEW_AFTER + 1]]
    lines = text.splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.strip().startswith("id "))
    entries = lines[header + 1:]
    assert [ln.split()[1] for ln in entries] == [f + ".fits" for f in done[::-1][:3]]   # newest first
    latest = fitsio.read(os.path.join(reduced.out, reduced.night, done[-1] + "-summary.fits"), ext="ZEROPOINTS")
    hash_zp = next(ln.split()[1] for ln in lines if ln.strip().startswith("zp_adu_per_s "))
    assert float(hash_zp) == pytest.approx(float(latest["zp_adu_per_s"][0]), abs=1e-9)
    monkeypatch.setenv("REDISPORT", "1")          # nothing listens there
    assert report_main(["--redis", "-q"]) == 1


# --- in a real browser -----------------------------------------------------------------------------

def _wait(predicate, timeout, what):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _load(browser, url, plots):
    """Open `url`; wait for the Bokeh canvases to have ink when `plots`; return console errors."""
    browser.get(url)
    if plots:
        _wait(lambda: max(browser.execute_script(CANVAS_INK_JS) or [0]) > 500, 20, f"plots drawn on {url}")
    return console_errors(browser)


def test_pages_load_render_and_link_in_browser(reduced, browser, http_root, tmp_path):
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.by import By

    night, frame = reduced.night, reduced.frames[1]
    pages = [("report/index.html", True), (f"report/{night}/index.html", True),
             (f"report/{night}/frames/{quote(frame)}.html", False),
             (f"report/{night}/frames/{quote(BAD_NAME, safe='')}.html", False)]
    for base in ("file://" + reduced.out, http_root(reduced.out)):
        for page, plots in pages:
            assert _load(browser, f"{base}/{page}", plots) == [], (base, page)
            assert browser.execute_script("return document.querySelectorAll('img[src=\"x\"]').length") == 0

    # the night page over HTTP: a row per frame, failures marked, rows and points open frames
    base = http_root(reduced.out)
    _load(browser, f"{base}/report/{night}/index.html", True)
    rows = browser.find_elements(By.CSS_SELECTOR, "#frames tbody tr")
    assert len(rows) == len(reduced.frames)
    failed = browser.find_elements(By.CSS_SELECTOR, "#frames tbody tr.failed")
    assert [r.find_element(By.CSS_SELECTOR, "td.name a").text for r in failed] == [BAD_NAME]
    assert len(browser.find_elements(By.CSS_SELECTOR, "#frames tbody tr.skipped")) == 1
    # the figures are shared by every night of a layout: this night's data came from its page
    plotted = browser.execute_script("""
        var doc = Bokeh.documents[0];
        return [doc.get_model_by_name('frames').data.frame, doc.get_model_by_name('failed').data.frame];""")
    assert sorted(plotted[0]) == sorted(r for r in reduced.frames if r != BAD_NAME
                                        and r != reduced.frames[SLEW_AFTER + 1])
    assert sorted(plotted[1]) == sorted([BAD_NAME, reduced.frames[SLEW_AFTER + 1]])
    shot = tmp_path / "night-page.png"
    browser.save_screenshot(str(shot))
    _check_screenshot(shot)
    if os.environ.get("PC_GPU_SCREENSHOT_DIR"):     # how docs/night-page.png is made
        shutil.copy(shot, os.path.join(os.environ["PC_GPU_SCREENSHOT_DIR"], "night-page.png"))

    rows[2].find_elements(By.TAG_NAME, "td")[2].click()       # a cell of the third row, not its link
    _wait(lambda: browser.current_url.endswith(f"/frames/{quote(reduced.frames[2])}.html"), 10, "row click")
    assert browser.find_element(By.TAG_NAME, "h1").text == reduced.frames[2]

    _load(browser, f"{base}/report/{night}/index.html", True)
    i = 3
    x, y = browser.execute_script("""
        var doc = Bokeh.documents[0], fig = doc.get_model_by_name('zp_figure');
        var view = Bokeh.index.find_one(fig), src = doc.get_model_by_name('frames');
        var box = view.canvas_view.el.getBoundingClientRect();
        return [box.left + view.frame.x_scale.compute(src.data.t[arguments[0]]),
                box.top + view.frame.y_scale.compute(src.data.zp[arguments[0]])];""", i)
    target = browser.execute_script("return Bokeh.documents[0].get_model_by_name('frames').data.frame[arguments[0]]", i)
    click = ActionBuilder(browser)
    click.pointer_action.move_to_location(int(round(x)), int(round(y)))
    click.pointer_action.click()
    click.perform()
    _wait(lambda: browser.current_url.endswith(f"/frames/{quote(target)}.html"), 10, "a click on a point")
    assert browser.find_element(By.TAG_NAME, "h1").text == target
    assert console_errors(browser) == []


def _check_screenshot(path):
    from PIL import Image

    with Image.open(path) as im:
        pixels = np.asarray(im.convert("RGB")).reshape(-1, 3)
    assert pixels.std() > 20                           # not a blank page
    assert len(np.unique(pixels[::7], axis=0)) > 50    # text, points, lines in several colours


# --- live -----------------------------------------------------------------------------------------

def test_live_report_grows_while_frames_land(reduced, browser, redis_server, redis_client, tmp_path):
    night = reduced.night_paths
    watch, out = tmp_path / "watch", tmp_path / "out"
    watch.mkdir()
    env = {**os.environ, **redis_server.environ("pc_live"), "NUMBA_NUM_THREADS": "2"}
    cmd = [sys.executable, "-m", "pc_gpu.realtime", str(watch), "--outdir", str(out), "--meta_dir",
           night.meta_dir, "--gaia_dir", night.gaia_dir, "--device", "cpu", "--camera_nx", "600",
           "--camera_ny", "450", "--poll_seconds", "0.5", "--report", "--report_interval", "1"]
    page = out / "report" / reduced.night / "index.html"
    seen = []

    def rows_on_page():
        if not page.exists():
            return 0
        return len(re.findall(r'<tr class="frame ', _strip_scripts(page.read_text(encoding="utf-8"))))

    with open(tmp_path / "service.log", "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait(lambda: redis_client.hget("pc_live:heartbeat", "state") == "running" or proc.poll() is not None,
              120, "the service")
        assert proc.poll() is None, (tmp_path / "service.log").read_text()
        for i in range(N_LIVE):
            shutil.copy(night.wcs[i], watch)
            name = os.path.basename(night.raw[i])
            shutil.copy(night.raw[i], watch / ("." + name + ".part"))
            os.replace(watch / ("." + name + ".part"), watch / name)
            _wait(lambda: redis_client.xlen("pc_live:history") == i + 1, 60, f"telemetry of frame {i}")
            _wait(lambda: rows_on_page() == i + 1, 60, f"frame {i} on the night page")
            seen.append(rows_on_page())
        html = page.read_text(encoding="utf-8")
        assert 'http-equiv="refresh"' in html                  # reloads while the night runs
        browser.get(page.as_uri())
        _wait(lambda: max(browser.execute_script(CANVAS_INK_JS) or [0]) > 500, 20, "live plots")
        assert console_errors(browser) == []
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert seen == list(range(1, N_LIVE + 1))
    assert 'http-equiv="refresh"' not in page.read_text(encoding="utf-8")   # final build: night over
    entries = redis_client.xrange("pc_live:history")
    assert [f["frame"] for _, f in entries] == [os.path.basename(p) for p in night.raw[:N_LIVE]]
    with open(out / LEDGER_NAME) as fh:
        done = [json.loads(ln) for ln in fh if '"event":"done"' in ln]
    assert len(done) == N_LIVE and all(not e["telemetry_queued"] for e in done)
