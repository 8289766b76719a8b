"""Streak detection benchmark: recall over a grid of injected streaks, ends (in the frame and on
its edge), measured widths and brightness against the truth, false detections on clean frames,
time per frame on the CPU backend, and acstools' `findsat_mrt` on the same frames.

    python benchmarks/bench_streaks.py [--clean 100] [--grid-repeats 4] [--acstools N] [--seed 2026]
                                       [--only FRAME ...] [--misses]

Frames are full-size El Nino frames from `pc_gpu.sim` (demo field region, real + synthetic
Gaia stars, bad pixels and columns), detrended with the simulator's own calibrations. The
recall grid has no dome (a vignetted streak's SNR is not the injected one); a third of the
clean frames have dome vignetting. Streak SNR is the matched-filter (optimal) SNR of 100 pix of length:
``SNR100 = F t sqrt(100) / sqrt(var_pix 2 sqrt(pi) sigma)`` with F the flux per pixel of length
(ADU/s), t the exposure, sigma the streak's Gaussian width and var_pix the sky + dark + read
variance (ADU^2). Matching: `pc_gpu.streaks.match_streaks` (angle within 2 deg, midpoint within
5 pix of the truth line, covering half of its in-frame part). Streak widths: FWHM uniform in
1.5-4 pix. Truth per streak from the simulator (`pc_gpu.sim.streaks`): FWHM, flux per pixel of
length, and the in-frame part's ends (the true end, or where the streak crosses the frame
boundary, at -0.5 or n - 0.5).
"""

import argparse
import math
import os
import platform
import sys
import tempfile
import time

import numpy as np

from pc_gpu.camera import EL_NINO
from pc_gpu.sim import Region, build_chunk_tree, make_calibrations, simulate_frame
from pc_gpu.sim.night import DEMO_DEC, DEMO_RA
from pc_gpu.streaks import clip_segment, detect_streaks, match_streaks
from pc_gpu.streaks.ends import line_extent
from pc_gpu.streaks.measure import ProfileFit, fit_line

CAM = EL_NINO
T = 20.0
STAR_G_LIMIT = 15.16  # the pipeline's Gaia cut at 20 s


def backend():
    try:
        from pc_gpu.backend import get_backend

        return get_backend("cpu")
    except ImportError:  # the backend module is not there yet: numpy stand-in
        from types import SimpleNamespace

        return SimpleNamespace(xp=np, asarray=np.asarray, to_host=np.asarray, name="cpu")


def pixel_variance(cam=CAM, t=T):
    read = float(np.mean(cam.read_noise_adu))
    return (cam.dark_sky_adu_per_s + cam.dark_adu_per_s) * t / cam.gain_e_per_adu + read ** 2


def flux_for_snr100(snr100, sigma, t=T):
    """Flux per pixel of length (ADU/s) giving matched-filter SNR `snr100` over 100 pix."""
    return snr100 * math.sqrt(pixel_variance() * 2 * math.sqrt(math.pi) * sigma) / (10.0 * t)


def snr100_of(flux, sigma, t=T):
    return flux * t * 10.0 / math.sqrt(pixel_variance() * 2 * math.sqrt(math.pi) * sigma)


def detrended(frame, cal):
    return ((frame.raw.astype(np.float32) - cal.bias - cal.dark * np.float32(T)) / cal.flat).astype(np.float32)


def catalogue_stars(frame):
    """Stars the pipeline would mask: in frame, G <= the 20 s cut, brightest 3000."""
    tr = frame.truth
    tr = tr[(tr["PHOT_G_MEAN_MAG"] <= STAR_G_LIMIT) & tr["IN_FRAME"]]
    tr = tr[np.argsort(tr["G_PRIME"])][:3000]
    return tr["X"], tr["Y"], tr["FLUX_ADU"]


def grid_streaks(rng, lengths, snrs, repeats, bright_xy):
    """One row per injected streak: X0, Y0, X1, Y1, SIGMA_PIX, FLUX, LENGTH, SNR100, KIND."""
    rows = []
    nx, ny = CAM.nx, CAM.ny
    for L in lengths:
        for s in snrs:
            for r in range(repeats):
                ang = rng.uniform(0, np.pi)
                sigma = rng.uniform(1.5, 4.0) / 2.3548  # FWHM 1.5-4 pix
                kind = r % 4  # 0 inside, 1 leaving the frame, 2 across a bright star, 3 inside
                if kind == 1 or L >= 3000:
                    cx, cy = rng.uniform(0, nx), rng.uniform(0, ny)
                    side = rng.integers(4)
                    cx, cy = [(rng.uniform(0, 80), cy), (nx - rng.uniform(0, 80), cy),
                              (cx, rng.uniform(0, 80)), (cx, ny - rng.uniform(0, 80))][side]
                    kind = 1
                elif kind == 2 and len(bright_xy):
                    cx, cy = bright_xy[rng.integers(len(bright_xy))]
                    cx += rng.uniform(-3, 3)
                    cy += rng.uniform(-3, 3)
                else:
                    m = L / 2 + 20
                    cx = rng.uniform(min(m, nx / 2), max(nx - m, nx / 2))
                    cy = rng.uniform(min(m, ny / 2), max(ny - m, ny / 2))
                    kind = 0
                h = L / 2
                rows.append((cx - h * math.cos(ang), cy - h * math.sin(ang), cx + h * math.cos(ang),
                             cy + h * math.sin(ang), sigma, flux_for_snr100(s, sigma), L, s, kind))
    return np.array(rows)


def pack_frames(rows, rng, per_frame=4):
    """Assign streaks to frames, a few per frame, avoiding close midpoints."""
    order = rng.permutation(len(rows))
    frames = []
    for i in order:
        mx, my = 0.5 * (rows[i, 0] + rows[i, 2]), 0.5 * (rows[i, 1] + rows[i, 3])
        for f in frames:
            if len(f) < per_frame and all(math.hypot(mx - 0.5 * (rows[j, 0] + rows[j, 2]),
                                                     my - 0.5 * (rows[j, 1] + rows[j, 3])) > 300 for j in f):
                f.append(i)
                break
        else:
            frames.append([i])
    return frames


def run_findsat(image, mask_bad):
    """acstools findsat_mrt (median Radon transform) on the detrended image, its documented
    defaults but 2 processes; returns (TrailFinder, seconds)."""
    from acstools.findsat_mrt import TrailFinder

    img = np.where(mask_bad, np.nan, image).astype(np.float64)
    img = img - np.nanmedian(img)
    t0 = time.perf_counter()
    tf = TrailFinder(img, processes=2, save_catalog=False, save_diagnostic=False)
    tf.run_mrt()
    tf.find_mrt_sources()
    tf.filter_sources()
    tf.make_mask()
    return tf, time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clean", type=int, default=100, help="clean frames for false detections")
    ap.add_argument("--grid-repeats", type=int, default=4, help="streaks per (length, SNR) cell")
    ap.add_argument("--acstools", type=int, default=6, help="grid frames also given to findsat_mrt (0: none)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--seed", type=int, default=2026,
                    help="seed of the grid (streaks, frames' noise, clean frames); 2026 is the recorded run")
    ap.add_argument("--only", type=int, nargs="+", default=None,
                    help="run only these grid frames (indices as printed by --misses)")
    ap.add_argument("--misses", action="store_true",
                    help="print the streaks that miss a criterion (frame index, geometry, errors)")
    args = ap.parse_args(argv)
    import numba

    print(f"python {platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}, "
          f"{platform.machine()} {os.cpu_count()} cpus, numba threads {numba.get_num_threads()}, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    work = args.workdir or tempfile.mkdtemp(prefix="bench_streaks_")
    gaia = os.path.join(work, "gaia")
    if not os.path.exists(gaia):
        build_chunk_tree(gaia, regions=[Region(DEMO_RA, DEMO_DEC, 6.0)], synthetic=True, seed=0,
                         overwrite=True)
    be = backend()
    cal = make_calibrations(CAM, seed=0)
    rng = np.random.default_rng(args.seed)
    frame_seed0 = 1000 + 100_000 * (args.seed - 2026)  # 1000 for the recorded run

    # warm-up (numba compile, workspace)
    fr = simulate_frame(gaia, DEMO_RA, DEMO_DEC, camera=CAM, calibrations=cal, seed=999)
    img = detrended(fr, cal)
    t0 = time.perf_counter()
    detect_streaks(img, cal.mask, *catalogue_stars(fr)[:2], catalogue_stars(fr)[2], exptime_s=T, backend=be)
    print(f"first call (compile or cache load): {time.perf_counter() - t0:.2f} s")

    # ---- recall grid
    lengths = (100, 200, 400, 1000, 2000, 4000)
    snrs = (5, 7, 10, 15, 30, 100)
    tr = fr.truth
    bright = tr[(tr["PHOT_G_MEAN_MAG"] < 10.5) & (tr["EDGE_DIST_PIX"] > 100)]
    rows = grid_streaks(rng, lengths, snrs, args.grid_repeats, list(zip(bright["X"], bright["Y"])))
    frames = pack_frames(rows, rng)
    found = np.zeros(len(rows), bool)
    ran = np.zeros(len(rows), bool)
    end_err, end_snr, ang_err, ang_snr, times = [], [], [], [], []
    edge_err, edge_snr, edge_sd, edge_oracle, edge_count_ok = [], [], [], [], []
    meas = []  # SNR100, true FWHM, FWHM, its error, true flux, flux, its error
    acs_found, acs_total, acs_times, acs_error = 0, 0, [], None
    n_false_grid = 0
    for fi, idx in enumerate(frames):
        if args.only is not None and fi not in args.only:
            continue
        ran[idx] = True
        fr = simulate_frame(gaia, DEMO_RA, DEMO_DEC, camera=CAM, calibrations=cal, seed=frame_seed0 + fi,
                            streaks=[tuple(rows[i, :6]) for i in idx])
        img = detrended(fr, cal)
        x, y, f = catalogue_stars(fr)
        t0 = time.perf_counter()
        res = detect_streaks(img, cal.mask, x, y, f, exptime_s=T, backend=be, wcs=fr.wcs)
        times.append(time.perf_counter() - t0)
        m = match_streaks(res.table, [tuple(rows[i, :4]) for i in idx], img.shape)
        n_false_grid += len(res.table) - sum(k >= 0 for k in m)
        for i, k in zip(idx, m):
            if k < 0:
                if args.misses and rows[i, 7] >= 10:
                    print(f"  miss: frame {fi}, not found: {_describe(rows[i])}")
                continue
            found[i] = True
            d = res.table[k]
            c = clip_segment(*rows[i, :4], CAM.nx, CAM.ny)
            inside = [(rows[i, 0], rows[i, 1]), (rows[i, 2], rows[i, 3])]
            t = fr.streaks[idx.index(i)]
            misses = []
            for ex, ey in inside:
                if 0 <= ex <= CAM.nx - 1 and 0 <= ey <= CAM.ny - 1:
                    end_snr.append(rows[i, 7])
                    end_err.append(min(math.hypot(d["x0"] - ex, d["y0"] - ey), math.hypot(d["x1"] - ex, d["y1"] - ey)))
                    if rows[i, 7] >= 30 and end_err[-1] > 3:
                        misses.append(f"in-frame end ({ex:.1f}, {ey:.1f}) off by {end_err[-1]:.2f} pix")
            for ex, ey, on_edge in ((t["CLIP_X0"], t["CLIP_Y0"], t["EDGE0"]), (t["CLIP_X1"], t["CLIP_Y1"], t["EDGE1"])):
                if on_edge:
                    edge_snr.append(rows[i, 7])
                    edge_sd.append(edge_crossing_sd(c, ex, ey, rows[i, 4], rows[i, 7]))
                    edge_oracle.append(oracle_edge_error(img, cal.mask != 0, t, ex, ey))
                    edge_err.append(min(math.hypot(d["x0"] - ex, d["y0"] - ey), math.hypot(d["x1"] - ex, d["y1"] - ey)))
                    if rows[i, 7] >= 10 and edge_err[-1] > 0.5:
                        misses.append(f"edge end ({ex:.1f}, {ey:.1f}) off by {edge_err[-1]:.2f} pix")
            wr = d["width_fwhm_pix"] / t["FWHM_PIX"]
            if rows[i, 7] >= 30 and not abs(wr - 1) <= 0.1:
                misses.append(f"width {d['width_fwhm_pix']:.2f} +- {d['width_fwhm_err_pix']:.2f} "
                              f"for {t['FWHM_PIX']:.2f} (ratio {wr:.3f})")
            n_edge = int(t["EDGE0"]) + int(t["EDGE1"])
            if d["n_ends_at_edge"] != n_edge:
                misses.append(f"n_ends_at_edge {d['n_ends_at_edge']} for {n_edge}")
            if args.misses and misses:
                print(f"  miss: frame {fi}, {_describe(rows[i])} -> detected ({d['x0']:.1f}, {d['y0']:.1f})-"
                      f"({d['x1']:.1f}, {d['y1']:.1f}): " + "; ".join(misses))
            edge_count_ok.append(n_edge == d["n_ends_at_edge"])
            meas.append((rows[i, 7], t["FWHM_PIX"], d["width_fwhm_pix"], d["width_fwhm_err_pix"],
                         t["FLUX_ADU_PER_S_PER_PIX"], d["flux_adu_per_s_per_pix"], d["flux_err_adu_per_s_per_pix"]))
            Lc = math.hypot(c[2] - c[0], c[3] - c[1])
            if Lc > 300:
                a_t = math.degrees(math.atan2(rows[i, 3] - rows[i, 1], rows[i, 2] - rows[i, 0])) % 180
                ang_err.append(abs((d["angle_pix_deg"] - a_t + 90) % 180 - 90))
                ang_snr.append(rows[i, 7])
        if fi < args.acstools and acs_error is None:
            try:
                tf, dt = run_findsat(img, cal.mask != 0)
                acs_times.append(dt)
                acs_total += len(idx)
                acs_found += _match_acs(tf, [tuple(rows[i, :4]) for i in idx])
            except Exception as exc:  # report whatever stops the peer
                acs_error = f"{type(exc).__name__}: {exc}"
    rows, found = rows[ran], found[ran]
    snr_col, len_col = rows[:, 7], rows[:, 6]
    print("\nrecall by SNR per 100 pix (rows) and length (columns), pc_gpu:")
    print("SNR100 " + " ".join(f"{L:>6.0f}" for L in lengths) + "    all")
    for s in snrs:
        sel = snr_col == s
        cells = [_fraction(found[sel & (len_col == L)]) for L in lengths]
        print(f"{s:>6.0f} " + " ".join(f"{c:6.2f}" for c in cells) + f" {_fraction(found[sel]):6.2f}")
    strong = snr_col >= 10
    print(f"recall for SNR100 >= 10: {found[strong].mean():.3f} ({found[strong].sum()}/{strong.sum()})")
    for kind, name in ((0, "inside"), (1, "leaving the frame"), (2, "across a bright star")):
        sel = strong & (rows[:, 8] == kind)
        if sel.any():
            print(f"  {name}: {found[sel].mean():.3f} ({found[sel].sum()}/{sel.sum()})")
    e, es = np.array(end_err), np.array(end_snr)
    a, as_ = np.array(ang_err), np.array(ang_snr)
    if e.size:
        print(f"in-frame endpoint error (pix), all SNRs: median {np.median(e):.2f}, within 3 pix "
              f"{np.mean(e <= 3):.3f} (n={e.size})")
    for lo_, hi_ in ((10, 1e9), (10, 15), (15, 30), (30, 1e9)):
        sel = (es >= lo_) & (es < hi_)
        if sel.any():
            print(f"  SNR100 {lo_}-{hi_ if hi_ < 1e9 else 'up'}: within 3 pix {np.mean(e[sel] <= 3):.3f}, "
                  f"median {np.median(e[sel]):.2f}, 90% {np.percentile(e[sel], 90):.2f} (n={sel.sum()})")
    print("  best possible within 3 pix (change point of a box in white noise, known amplitude): "
          + ", ".join(f"SNR100 {s}: {endpoint_limit(s):.2f}" for s in (10, 15, 30)))
    report_edges(np.array(edge_err), np.array(edge_snr), np.array(edge_sd), np.array(edge_oracle), edge_count_ok)
    report_measurements(np.array(meas))
    for name, sel in (("all SNRs", as_ > 0), ("SNR100 >= 10", as_ >= 10)):
        if not sel.any():
            continue
        print(f"angle error for length > 300 pix (deg), {name}: median {np.median(a[sel]):.3f}, "
              f"max {a[sel].max():.3f}, within 0.2 deg {np.mean(a[sel] <= 0.2):.3f} (n={sel.sum()})")
    print(f"unmatched detections on the grid frames: {n_false_grid} in {len(times)} frames")
    print(f"time per frame (with streaks): median {np.median(times):.3f} s, best {np.min(times):.3f} s")
    if acs_error:
        print(f"acstools findsat_mrt failed: {acs_error}")
    elif acs_total:
        print(f"acstools findsat_mrt on {len(acs_times)} of these frames: recall (all SNRs) "
              f"{acs_found}/{acs_total}, time per frame median {np.median(acs_times):.2f} s")

    # ---- clean frames
    n_false, ctimes = 0, []
    for k in range(args.clean):
        ra = DEMO_RA + rng.uniform(-2, 2)
        dec = DEMO_DEC + rng.uniform(-2, 2)
        fr = simulate_frame(gaia, ra, dec, rotation_deg=rng.uniform(0, 360), camera=CAM,
                            calibrations=cal, seed=frame_seed0 + 4000 + k, dome=(k % 3 == 0))
        img = detrended(fr, cal)
        x, y, f = catalogue_stars(fr)
        t0 = time.perf_counter()
        res = detect_streaks(img, cal.mask, x, y, f, exptime_s=T, backend=be)
        ctimes.append(time.perf_counter() - t0)
        n_false += len(res.table)
        for r in res.table:
            print(f"  false detection in clean frame {k}: ({r['x0']:.0f}, {r['y0']:.0f}) - "
                  f"({r['x1']:.0f}, {r['y1']:.0f}), snr {r['snr']:.1f}")
    if args.clean:
        print(f"clean frames: {n_false} false detections in {args.clean} frames (a third with dome "
              f"vignetting); time per frame median {np.median(ctimes):.3f} s, best {np.min(ctimes):.3f} s")
    print(f"load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


def _fraction(flags):
    """Mean of boolean flags, NaN for none."""
    return float(np.mean(flags)) if len(flags) else math.nan


def _describe(row):
    """One grid row in words: its segment, length, SNR100, FWHM and kind."""
    kind = ("inside", "leaving the frame", "across a bright star")[int(row[8])]
    return (f"({row[0]:.1f}, {row[1]:.1f})-({row[2]:.1f}, {row[3]:.1f}) L {row[6]:.0f} SNR100 {row[7]:.0f} "
            f"FWHM {2.3548 * row[4]:.2f} {kind}")


def edge_crossing_sd(clip, ex, ey, sigma, snr100):
    """Standard deviation (pix) of the best possible boundary crossing of a streak's line: the
    line's offset and angle fitted to the in-frame part `clip` (x0, y0, x1, y1; white noise,
    Gaussian profile of `sigma` pix at `snr100`), its offset at the end (ex, ey) measured along
    the edge there.

    The Fisher information on the offset is SNR100^2 / (200 sigma^2) per pixel of length; a
    line fitted over length L is known at its ends to sqrt(4 / (I L)) across it; along an edge
    that it crosses at angle theta that becomes 1 / sin(theta) times larger."""
    L = math.hypot(clip[2] - clip[0], clip[3] - clip[1])
    ux, uy = (clip[2] - clip[0]) / L, (clip[3] - clip[1]) / L
    on_column_edge = min(abs(ex + 0.5), abs(ex - (CAM.nx - 0.5))) < 1e-6
    sin_theta = abs(ux) if on_column_edge else abs(uy)
    across = math.sqrt(4.0 * 200.0 * sigma ** 2 / (snr100 ** 2 * L))
    return across / max(sin_theta, 1e-3)


def oracle_edge_error(image, bad, truth, ex, ey):
    """Distance (pix) from the true boundary crossing (ex, ey) to where the line crosses the
    frame edge when its offset and angle are fitted (`measure.fit_line`, started on the true
    line) with the streak's true profile (width, flux per pixel of length, no end) to the
    frame's own pixels: the in-frame part, out to 3 sigma + 8 pix across, less 3 sigma + 2 pix
    at an end inside the frame, the band's median as the sky. What the data themselves say of
    the crossing: no estimator that uses them well does much better."""
    c = (truth["CLIP_X0"], truth["CLIP_Y0"], truth["CLIP_X1"], truth["CLIP_Y1"])
    sigma = truth["FWHM_PIX"] / 2.3548
    horizontal = abs(c[2] - c[0]) >= abs(c[3] - c[1])
    if not horizontal:  # work in (major, minor) = (y, x)
        image, bad, c = image.T, bad.T, (c[1], c[0], c[3], c[2])
    edges = (truth["EDGE0"], truth["EDGE1"]) if c[0] <= c[2] else (truth["EDGE1"], truth["EDGE0"])
    (a, ya), (b, yb) = sorted([(c[0], c[1]), (c[2], c[3])])
    slope = (yb - ya) / (b - a)
    icpt = ya - slope * a
    cosphi = 1.0 / math.sqrt(1.0 + slope * slope)
    margin = (3.0 * sigma + 2.0) / cosphi
    n_major, n_minor = image.shape[1], image.shape[0]
    major = np.arange(max(int(math.ceil(a + (0 if edges[0] else margin))), 0),
                      min(int(math.floor(b - (0 if edges[1] else margin))), n_major - 1) + 1)
    k = int(math.ceil((3.0 * sigma + 8.0) / cosphi))
    minor = np.rint(icpt + slope * major).astype(int)[:, None] + np.arange(-k, k + 1)[None, :]
    inside = (minor >= 0) & (minor < n_minor)
    mm, cols = np.clip(minor, 0, n_minor - 1), np.broadcast_to(major[:, None], minor.shape)
    v = np.where(inside & ~bad[mm, cols], image[mm, cols], np.nan).astype(np.float64)
    d = (minor - (icpt + slope * major[:, None])) * cosphi
    sky = float(np.nanmedian(v[np.abs(d) >= 3.0 * sigma + 2.0]))
    true_profile = ProfileFit(flux=truth["FLUX_ADU_PER_S_PER_PIX"] * T, flux_err=0.0, sigma=sigma,
                              sigma_err=0.0, offset=0.0, background=sky)
    line = fit_line(v, d, major.astype(np.float64), true_profile, slope=slope)
    if line is None:
        return math.nan
    icpt, slope = icpt + line[0] / cosphi, slope + line[1] / cosphi
    ends = [(m, icpt + slope * m) for m in line_extent(icpt, slope, (n_major, n_minor))[:2]]
    if not horizontal:
        ends = [(q, p) for p, q in ends]
    return min(math.hypot(p - ex, q - ey) for p, q in ends)


def report_edges(err, snr, sd, oracle, count_ok):
    """Print how far the ends on the frame edge lie from the true boundary crossings, how many
    an ideal line fit would put within 0.5 pix (`edge_crossing_sd`), and how many the line
    fitted with the true profile to the same pixels does (`oracle_edge_error`)."""
    sel = snr >= 10
    if not sel.any():
        return
    e, sd, orc = err[sel], sd[sel], oracle[sel]
    ideal = float(np.sum([math.erf(0.5 / (s * math.sqrt(2.0))) for s in sd]))
    print(f"ends on the frame edge, SNR100 >= 10: within 0.5 pix {np.mean(e <= 0.5):.3f} "
          f"({np.sum(e <= 0.5)}/{e.size}), median {np.median(e):.3f} pix, worst {e.max():.2f} pix; "
          f"n_ends_at_edge right for {np.sum(count_ok)}/{len(count_ok)} matched streaks")
    print(f"  an ideal line fit would put {ideal:.1f} of these {e.size} within 0.5 pix (its error along the "
          f"edge: median {np.median(sd):.3f} pix, above 0.25 pix for {np.sum(sd > 0.25)}); errors / its sd: "
          f"median {np.median(e / sd):.2f}, largest {np.max(e / sd):.2f}")
    print(f"  the line fitted with the true profile to the same pixels puts {np.sum(orc <= 0.5)}/{orc.size} "
          f"within 0.5 pix (worst {np.nanmax(orc):.2f} pix)")
    for k in np.flatnonzero((e > 0.5) | (orc > 0.5)):
        print(f"  edge end off by {e[k]:.2f} pix, SNR100 {snr[sel][k]:.0f}: ideal sd along the edge {sd[k]:.2f} pix, "
              f"true-profile fit off by {orc[k]:.2f} pix")


def report_measurements(m):
    """Print measured widths and brightness against the truth, and their error bars' pulls."""
    if not len(m):
        return
    snr, w_t, w, w_e, f_t, f, f_e = m.T
    for lo_, name in ((30, "SNR100 >= 30"), (10, "SNR100 >= 10")):
        sel = (snr >= lo_) & np.isfinite(w) & np.isfinite(f)
        if not sel.any():
            continue
        wr, fr_ = w[sel] / w_t[sel], f[sel] / f_t[sel]
        pw, pf = (w[sel] - w_t[sel]) / w_e[sel], (f[sel] - f_t[sel]) / f_e[sel]
        print(f"{name} (n={sel.sum()}, {np.sum((snr >= lo_) & ~(np.isfinite(w) & np.isfinite(f)))} "
              f"without a measurement):")
        # with its own error bars, an unbiased width lands within 10% with probability erf(...)
        expect = np.sum([math.erf(0.1 * wt / (we * math.sqrt(2.0))) for wt, we in zip(w_t[sel], w_e[sel])])
        print(f"  width / truth: median {np.median(wr):.3f}, within 10% {np.mean(np.abs(wr - 1) <= 0.1):.3f} "
              f"({np.sum(np.abs(wr - 1) <= 0.1)}; expected from the error bars {expect:.1f}), "
              f"worst {wr[np.argmax(np.abs(wr - 1))]:.3f}; pulls sd {np.std(pw):.2f} (robust "
              f"{1.4826 * np.median(np.abs(pw - np.median(pw))):.2f}), median {np.median(pw):+.2f}")
        print(f"  flux per pixel of length / truth: median {np.median(fr_):.4f}, within 3% "
              f"{np.mean(np.abs(fr_ - 1) <= 0.03):.3f}, 5-95% {np.percentile(fr_, 5):.3f}-"
              f"{np.percentile(fr_, 95):.3f}; pulls sd {np.std(pf):.2f} (robust "
              f"{1.4826 * np.median(np.abs(pf - np.median(pf))):.2f}), median {np.median(pf):+.2f}")
        for lo_w, hi_w in ((1.5, 2.3), (2.3, 3.2), (3.2, 4.0)):
            b = (w_t[sel] >= lo_w) & (w_t[sel] < hi_w)
            if b.any():
                print(f"    FWHM {lo_w}-{hi_w}: width/truth median {np.median(wr[b]):.3f} "
                      f"(within 10% {np.mean(np.abs(wr[b] - 1) <= 0.1):.2f}), flux/truth median "
                      f"{np.median(fr_[b]):.3f} (n={b.sum()})")


def endpoint_limit(snr100, trials=20000, half=60, seed=0):
    """Fraction of end estimates within 3 pix for an ideal estimator: a streak end in unit
    white noise, one matched-filter value per pixel of length with mean snr100 / 10 inside and
    0 outside, amplitude known, end = posterior median of the cut (flat prior)."""
    rng = np.random.default_rng(seed)
    mu = snr100 / 10.0
    f = rng.normal(size=(trials, 2 * half))
    f[:, :half] += mu
    c = np.concatenate([np.zeros((trials, 1)), np.cumsum(mu * (f - 0.5 * mu), axis=1)], axis=1)
    w = np.cumsum(np.exp(c - c.max(axis=1, keepdims=True)), axis=1)
    cut = np.argmax(w >= 0.5 * w[:, -1:], axis=1)
    return float(np.mean(np.abs(cut - half) <= 3))


def _match_acs(tf, truth):
    """Count truth streaks matched by findsat_mrt's mask (half the in-frame truth pixels masked)."""
    mask = np.asarray(tf.mask, bool)
    ny, nx = mask.shape
    n = 0
    for (x0, y0, x1, y1) in truth:
        c = clip_segment(x0, y0, x1, y1, nx, ny)
        if c is None:
            continue
        L = max(int(math.hypot(c[2] - c[0], c[3] - c[1])), 2)
        xs = np.clip(np.rint(np.linspace(c[0], c[2], L)).astype(int), 0, nx - 1)
        ys = np.clip(np.rint(np.linspace(c[1], c[3], L)).astype(int), 0, ny - 1)
        if mask[ys, xs].mean() >= 0.5:
            n += 1
    return n


if __name__ == "__main__":
    sys.exit(main())
