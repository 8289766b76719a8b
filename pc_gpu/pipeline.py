"""The per-frame reduction: the stages of DESIGN.md section 1 in order, with warm caches.

`Reducer.reduce(path)` computes everything in memory; `frameout.write_outputs` writes the
files atomically (all or none) and `frameout.finish_frame` sends the telemetry after them;
`frameout.process_frame` does all three (each also importable from here).
"""

import logging
import os
import time
from dataclasses import dataclass, field

import numpy as np

from . import __version__
from .camera import EL_NINO
from .calibcache import load_calibrations
from .catalog import catalog_table
from .conditions import measure_conditions
from .centroid import max_centroid_shift, recentroid, wrong_source_flags
from .detrend import detrend, dome_flag, prepare_calibrations
from .errors import InputError, TelescopeMotion
from .gaia import field_healpix, gaia_mag_limit, read_gaia_chunks, star_list
from .obstime import local_datetime, mjd_obs, observing_night, telemetry_timestamp
from .outputs import check_outputs_free, output_paths
from .photometry import aperture_photometry
from .rawio import read_raw, read_wcs, wcs_path_for
from .sky import inter_quadrant_rms, sky_regions, sky_statistics
from .tables import FrameInfo, _string_dtype, sky_table, zeropoints_table
from .thumbnail import THUMBNAIL_BIN, bin_image
from .zeropoints import zeropoint_rows

_MOVED_PIX = 0.01  # recentroid again when refinement moves a star's guess by more than this
_AFFINE_PIX = 0.5  # a given WCS whose affine correction moves a guess by more: corrected first
_AFFINE_PASSES = 5
_MAX_RMS_PIX = 0.5  # a refined WCS that fits its stars worse than this (per axis) is not used
_NEAR_PIX = 50.0  # Gaia stars projected through a refined WCS: those within this of the image

__all__ = ["RunOptions", "Reducer", "FrameResult", "write_outputs", "finish_frame", "process_frame",
           "SOLVE_MODES"]

log = logging.getLogger(__name__)

SOLVE_MODES = ("auto", "always", "never")


@dataclass(frozen=True)
class RunOptions:
    """How to reduce frames (the command line's flags, same names as the original's).

    outdir : output directory (None: nothing written); write_detrended, checkplot,
    plot_detrended, plot_quiver : which files; nightly_subdir : outputs in OUTDIR/YYYYMMDD;
    send_redis : telemetry; one_aper : only the 2.5 pix aperture; bg_sigclip : clipped annulus
    median; threads : CPU threads (None: all); max_n_stars : brightest N Gaia stars;
    pm_corr : proper motions to the exposure epoch; flatfield : divide by the flat;
    sci_inst_name : telemetry suffix; sci_fov_checkplot : checkplot of science-field stars;
    check_tcs_motion : skip frames with ZPFLAG set; max_zp_radius : pixels, stars farther out
    are not used for zeropoints; overwrite : replace existing outputs; device : auto|cpu|gpu;
    calib_fallback : scalar per-quadrant bias/dark when the masters are missing;
    detect_streaks : find satellite streaks (STREAKS table, CATALOG on_streak, such stars out
    of the zeropoints); plot_streaks : draw them on the detrended plot; streak_time_limit :
    seconds after which streak detection gives up (None: no limit); thumbnail : write
    RAW-thumb.jpg, an 8x8-binned asinh-stretched preview of the detrended image; wcs_refine :
    fit the WCS to the recentroided Gaia stars (TAN-SIP), recentroid again from it, record the
    pointing (False: the given .wcs as it is, no pointing record); solve : plate
    solving, 'auto' (when the .wcs is missing or fails verification against the detected
    stars), 'always' (the .wcs is not read) or 'never' (the .wcs is required and trusted).
    """

    outdir: str | None = None
    write_detrended: bool = True
    checkplot: bool = True
    nightly_subdir: bool = False
    send_redis: bool = False
    one_aper: bool = False
    bg_sigclip: bool = False
    threads: int | None = None
    max_n_stars: int = 3000
    pm_corr: bool = False
    flatfield: bool = True
    sci_inst_name: str = "desi"
    sci_fov_checkplot: bool = False
    check_tcs_motion: bool = False
    plot_detrended: bool = False
    plot_quiver: bool = False
    max_zp_radius: float | None = None
    overwrite: bool = False
    device: str = "auto"
    calib_fallback: bool = False
    detect_streaks: bool = False
    plot_streaks: bool = False
    streak_time_limit: float | None = None
    thumbnail: bool = False
    wcs_refine: bool = True
    solve: str = "auto"

    def __post_init__(self):
        if self.max_n_stars < 1:
            raise InputError(None, f"--max_n_stars must be at least 1, not {self.max_n_stars}")
        if self.threads is not None and self.threads < 1:
            raise InputError(None, f"--multiproc must be at least 1, not {self.threads}")
        if self.max_zp_radius is not None and self.max_zp_radius <= 0:
            raise InputError(None, f"--max_zp_radius must be positive, not {self.max_zp_radius}")
        if self.device not in ("auto", "cpu", "gpu"):
            raise InputError(None, f"--device must be auto, cpu or gpu, not {self.device!r}")
        if self.solve not in SOLVE_MODES:
            raise InputError(None, f"--solve must be auto, always or never, not {self.solve!r}")
        if self.streak_time_limit is not None and not self.streak_time_limit >= 0:
            raise InputError(None, f"--streak_time_limit must be >= 0 seconds, not {self.streak_time_limit}")


@dataclass
class FrameResult:
    """Everything one frame's reduction produced, in memory (host arrays)."""

    raw_path: str
    header_extra: list
    header: object
    detrended: np.ndarray
    catalog: np.ndarray
    zeropoints: np.ndarray
    sky: np.ndarray
    obs_night: str
    timestamp: str
    exptime_s: float
    wcs_ctype: tuple
    timings: dict = field(default_factory=dict)
    streaks: object = None  # streaks.StreakResult when detection was asked for
    thumbnail: np.ndarray | None = None  # binned detrended image (ADU) with options.thumbnail
    conditions: np.ndarray | None = None  # CONDITIONS table (conditions.measure_conditions)
    wcs: object = None  # the astropy WCS the frame was reduced with (refined when it was)
    pointing: dict | None = None  # astrometry.pointing.pointing_record, with options.wcs_refine
    wcs_origin: str = "given"  # 'given' (.wcs as it is), 'refined' or 'solved' (then in the output headers)


class Reducer:
    """Reduces frames one after another, keeping calibrations, sky regions, Gaia stars and
    compiled kernels warm between them.

    Parameters
    ----------
    options : RunOptions
    camera : Camera
    meta_dir, gaia_dir : str, optional
        Calibration and Gaia chunk directories (default $POINTING_CAMERA_META, $PC_GAIA_DIR).
    backend : Backend, optional
        Default: `backend.get_backend(options.device, threads=options.threads)`.
    """

    def __init__(self, options, *, camera=EL_NINO, meta_dir=None, gaia_dir=None, backend=None):
        self.options = options
        self.camera = camera
        self.meta_dir = meta_dir if meta_dir is not None else os.environ.get("POINTING_CAMERA_META")
        self.gaia_dir = gaia_dir if gaia_dir is not None else os.environ.get("PC_GAIA_DIR")
        if backend is None:
            from .backend import get_backend

            backend = get_backend(options.device, threads=options.threads)
        self.backend = backend
        self.radii = ((camera.aperture_radii_pix[camera.standard_aperture_index],) if options.one_aper
                      else tuple(camera.aperture_radii_pix))
        self.standard_aperture = 0 if options.one_aper else camera.standard_aperture_index
        self._calibrations = None
        self._regions = None

    @property
    def calibrations(self):
        """Device calibrations, read once."""
        if self._calibrations is None:
            calib, gather = load_calibrations(self.meta_dir, self.camera,
                                              allow_fallback=self.options.calib_fallback)
            self._calibrations = prepare_calibrations(calib, gather, self.backend)
            self._regions = sky_regions(self.camera, self.backend)
            log.info("calibrations from %s (%d static bad pixels)%s", calib.source,
                     self._calibrations.n_bad_pixels,
                     "; bias/dark are per-quadrant scalars" if calib.fallback else "")
        return self._calibrations

    def output_dir(self, obs_night):
        """Where a frame's outputs go (None when nothing is written)."""
        if self.options.outdir is None:
            return None
        if self.options.nightly_subdir:
            return os.path.join(self.options.outdir, obs_night)
        return self.options.outdir

    def planned_outputs(self, raw_path, obs_night):
        """{kind: final path} of the files this frame will produce under the options."""
        outdir = self.output_dir(obs_night)
        if outdir is None:
            return {}
        paths = output_paths(raw_path, outdir)
        o = self.options
        wanted = {"summary": True, "detrended": o.write_detrended, "zp_plot": o.checkplot,
                  "detrended_plot": o.plot_detrended, "quiver_plot": o.plot_quiver,
                  "thumbnail": o.thumbnail}
        return {k: p for k, p in paths.items() if wanted[k]}

    def reduce(self, raw_path):
        """Read one raw frame and its .wcs and reduce it in memory; raise InputError,
        TelescopeMotion (ZPFLAG with --check_tcs_motion) or OutputExistsError."""
        started = time.perf_counter()
        frame, wcs = self.load(raw_path)
        return self.reduce_frame(frame, wcs, started=started)

    def load(self, raw_path):
        """Read and check one raw frame and its .wcs: (`rawio.RawFrame`, astropy WCS, or None
        when the frame is to be plate-solved: always with --solve always, and with --solve auto
        when there is no .wcs); raise as `reduce` does (host work only: threads may load frames
        ahead of the reduction)."""
        raw_path = os.fspath(raw_path)
        frame = read_raw(raw_path, self.camera)
        if self.options.check_tcs_motion and _truthy(frame.header.get("ZPFLAG")):
            raise TelescopeMotion(f"{raw_path}: ZPFLAG set, the telescope moved during the exposure; skipped")
        obs_night = observing_night(local_datetime(frame.header, raw_path))
        check_outputs_free(self.planned_outputs(raw_path, obs_night).values(), overwrite=self.options.overwrite)
        wcs_path = wcs_path_for(raw_path)
        if self.options.solve == "always" or (self.options.solve == "auto" and not os.path.exists(wcs_path)):
            return frame, None
        return frame, read_wcs(wcs_path)

    def reduce_frame(self, frame, wcs, *, started=None):
        """Reduce a frame already in memory (`rawio.RawFrame` and its astropy WCS, None to
        plate-solve it). The 'read' stage timing counts from `started` (time.perf_counter() s)
        when given. Raises `astrometry.solve.NoSolution` when a frame to solve has no solution."""
        return self.reduce_frames([frame], [wcs], started=started)[0]

    def reduce_frames(self, frames, wcss, *, started=None):
        """Reduce several frames already in memory together: each frame's pixel stages on its
        own, then the stars of all of them recentroided and measured in one kernel launch
        each (a batch fills a GPU where one frame's stars cannot; with `wcs_refine`, each
        frame's WCS is fitted to its stars between two such recentroid launches), then each
        frame's catalogue and zeropoints. Same results as one `reduce_frame` per frame; returns the
        list of FrameResult."""
        be, o = self.backend, self.options
        started = time.perf_counter() if started is None else started
        images = be.xp.empty((len(frames),) + self.camera.shape, dtype=np.float32)
        measured = [self._measure(frame, wcs, images[i], started) for i, (frame, wcs) in enumerate(zip(frames, wcss))]
        centroids = self._recentroid(images, measured, range(len(frames)))
        t_centroid = time.perf_counter()
        if o.wcs_refine:
            redo = {i: self._refine(frame, m["wcs"], measured, images, i, centroids)
                    for i, (frame, m) in enumerate(zip(frames, measured))}
            redo = {i: r for i, r in redo.items() if r[0].any()}
            if redo:
                centroids.update(self._recentroid(images, measured, redo, redo))
        t_refine = time.perf_counter()
        counts = [len(m["stars"]) for m in measured]
        which = np.repeat(np.arange(len(frames)), counts)
        xc, yc, qmax = (np.concatenate([centroids[i][k] for i in range(len(frames))]) for k in range(3))
        if len(xc):
            phot = aperture_photometry(images, xc, yc, self.camera, be, radii=self.radii,
                                       bg_sigclip=o.bg_sigclip, frame=which)
        else:
            empty = np.zeros((0, len(self.radii)))
            phot = {"aperture_sum": empty, "bkg_median": np.zeros(0), "aper_bkg": empty, "flux_adu": empty,
                    "n_annulus": np.zeros(0, np.int64)}
        t_photometry = time.perf_counter()
        bounds = np.cumsum([0] + counts)
        results = []
        for i, (frame, m) in enumerate(zip(frames, measured)):
            part = slice(bounds[i], bounds[i + 1])
            m["t"]["centroid"] = t_centroid
            if o.wcs_refine:
                m["t"]["refine"] = t_refine
            m["t"]["photometry"] = t_photometry
            results.append(self._finish(frame, m["wcs"], m, images[i], (xc[part], yc[part], qmax[part]),
                                        {k: v[part] for k, v in phot.items()}))
        return results

    def _recentroid(self, images, measured, indices, redo=None):
        """Recentroid the stars of the frames `indices` (into `measured` and `images`) in one
        kernel launch; {index: (xcentroid, ycentroid, qmaxshift)}. With `redo` ({index:
        (mask, (xcentroid, ycentroid, qmaxshift))}), only a frame's masked stars are
        recentroided and the others keep the centroids given there."""
        indices = list(indices)
        redo = redo or {}
        stars = [measured[i]["stars"] for i in indices]
        masks = [redo[i][0] if i in redo else np.ones(len(s), bool) for i, s in zip(indices, stars)]
        which = np.repeat(np.array(indices, dtype=np.int64), [int(m.sum()) for m in masks])
        xg = np.concatenate([s["x_gaia_guess"][m] for s, m in zip(stars, masks)]).astype(np.float64)
        yg = np.concatenate([s["y_gaia_guess"][m] for s, m in zip(stars, masks)]).astype(np.float64)
        if len(xg):
            xc, yc, qmax = recentroid(images, xg, yg, self.camera, self.backend, frame=which)
        else:
            xc, yc, qmax = xg.copy(), yg.copy(), np.zeros(0, np.int64)
        out = {}
        for i, mask in zip(indices, masks):
            kept = redo[i][1] if i in redo else (np.zeros(len(mask)), np.zeros(len(mask)), np.zeros(len(mask), np.int64))
            x, y, q = (np.array(a) for a in kept)
            x[mask], y[mask], q[mask] = xc[which == i], yc[which == i], qmax[which == i]
            out[i] = (x, y, q)
        return out

    def _refine(self, frame, wcs, measured, images, i, centroids):
        """Fit frame i's WCS to its recentroided stars (`astrometry.refine`); on success put the
        refined WCS and the stars projected through it in `measured[i]`. A given WCS so far off that an
        affine correction moves guesses by more than _AFFINE_PIX is corrected that way first
        and the stars recentroided (`centroids[i]` updated). Sets m["pointing"]; returns (mask of
        the final stars whose guesses moved by more than _MOVED_PIX: they need recentroiding
        again, the centroids of the others)."""
        from .astrometry.pointing import pointing_record
        from .astrometry.refine import affine_correction, carried_centroids, fit_star_mask, refine_wcs

        cam, m = self.camera, measured[i]
        stars = m["stars"]
        colour = (stars["PHOT_BP_MEAN_MAG"] - stars["PHOT_RP_MEAN_MAG"]).astype(np.float64)
        g_prime = stars["PHOT_G_MEAN_MAG"] + 0.25 * np.where(np.isfinite(colour), colour, 0.0)
        guesses_moved = False
        for attempt in range(_AFFINE_PASSES + 1):
            xc, yc, qmax = centroids[i]
            xg, yg = stars["x_gaia_guess"], stars["y_gaia_guess"]
            use = fit_star_mask(xc, yc, qmax, g_prime, exptime_s=frame.exptime_s,
                                sky_adu=m["stats"]["full"][0], camera=cam)
            correct = affine_correction(xg, yg, xc, yc, use, cam.centre)
            if correct is None or attempt == _AFFINE_PASSES:
                break
            xa, ya = correct(xg, yg)
            if not np.max(np.hypot(xa - xg, ya - yg), initial=0.0) > _AFFINE_PIX:
                break
            log.info("%s: the given WCS is off by up to %.1f pix; corrected by an affine fit first",
                     frame.path, float(np.max(np.hypot(xa - xg, ya - yg))))
            stars = m["stars"] = stars.copy()
            stars["x_gaia_guess"], stars["y_gaia_guess"] = xa, ya
            centroids.update(self._recentroid(images, measured, [i]))
            guesses_moved = True
        ra, dec = stars["RA"][use], stars["DEC"][use]
        fit = refine_wcs(ra, dec, xc[use], yc[use], wcs, cam.centre, shape=cam.shape)
        if fit is not None and max(fit.rms_ra_arcsec, fit.rms_dec_arcsec) > _MAX_RMS_PIX * cam.pixel_scale_arcsec:
            log.warning("%s: the refined WCS fits its %d stars to %.1f\" x %.1f\" only", frame.path, fit.n_used,
                        fit.rms_ra_arcsec, fit.rms_dec_arcsec)
            fit = None
        new = self._project(m, fit.wcs, frame) if fit is not None else None
        if new is None:
            log.warning("%s: WCS not refined (%d usable stars); the given .wcs is used", frame.path, int(use.sum()))
            origin = m["astrometry"].origin if m["astrometry"] is not None else "given"
            m["pointing"] = pointing_record(wcs, cam, frame.header, origin=origin, ra=ra, dec=dec,
                                            x=xc[use], y=yc[use])
            new = stars if not guesses_moved else star_list(  # the given WCS's stars again
                m["gaia"], wcs, cam, frame.exptime_s, max_n_stars=self.options.max_n_stars,
                pm_corr=self.options.pm_corr, mjd=m["mjd"])
        else:
            ok = fit.used
            solved = m["astrometry"] is not None and m["astrometry"].origin == "solved"
            m["pointing"] = pointing_record(fit.wcs, cam, frame.header, origin="solved" if solved else "refined",
                                            fit_order=fit.order,
                                            ra=ra[ok], dec=dec[ok], x=xc[use][ok], y=yc[use][ok])
            log.info("%s: WCS refined on %d stars (order %d): rms %.2f\" x %.2f\"", frame.path, fit.n_used,
                     fit.order, fit.rms_ra_arcsec, fit.rms_dec_arcsec)
            m["wcs"] = fit.wcs
        m["stars"] = new
        # a star keeps its centroid when it was measured from (nearly) the same guess
        return carried_centroids(stars, new, (xc, yc, qmax), tolerance_pix=_MOVED_PIX)

    def _project(self, m, wcs, frame):
        """`star_list` through a refined WCS of the Gaia stars near the field
        (`astrometry.refine.near_field`); None when the WCS cannot be inverted there."""
        from astropy.wcs import NoConvergence

        from .astrometry.refine import near_field

        g = m["gaia"]["PHOT_G_MEAN_MAG"]
        gaia = m["gaia"][np.isfinite(g) & (g <= gaia_mag_limit(frame.exptime_s))]  # star_list's cut, first
        try:
            return star_list(near_field(gaia, wcs, self.camera, _NEAR_PIX), wcs, self.camera, frame.exptime_s,
                             max_n_stars=self.options.max_n_stars, pm_corr=self.options.pm_corr, mjd=m["mjd"])
        except NoConvergence:
            log.warning("%s: the refined WCS cannot be inverted at every Gaia star near the field", frame.path)
            return None

    def _measure(self, frame, wcs, image, started):
        """A frame's pixel stages into `image` (a float32 device plane), its astrometry and its
        Gaia stars: a dict of what `_finish` needs."""
        o, cam, be = self.options, self.camera, self.backend
        t = {"start": started}
        local = local_datetime(frame.header, frame.path)
        calib = self.calibrations
        t["read"] = time.perf_counter()

        detrend(frame.stored, calib, frame.exptime_s, be, flatfield=o.flatfield, out=image, bzero=frame.bzero)
        has_dome = dome_flag(image, frame.exptime_s, cam, be)
        t["detrend"] = time.perf_counter()

        stats = sky_statistics(image, self._regions, be)
        t["sky"] = time.perf_counter()

        astrometry = None
        if o.solve == "always" or (o.solve == "auto" and wcs is None):
            astrometry = self._astrometry(frame, wcs, image)
            wcs = astrometry.wcs
            t["astrometry"] = time.perf_counter()
        mjd = mjd_obs(frame.header, local, cam.timezone_offset_hours)
        gaia, stars = self._gaia_stars(frame, wcs, mjd)
        t["gaia"] = time.perf_counter()
        if o.solve == "auto" and astrometry is None:
            # the given .wcs checked on the image centre first; on the whole image, and solved
            # when it fails there too
            from .astrometry.frame import FrameAstrometry, check_given_wcs

            check = check_given_wcs(image, stars, cam, be)
            if check.ok:
                astrometry = FrameAstrometry(wcs, "given", True, check.n_matched, check.rms_pix)
            else:
                log.info("%s: the .wcs fails the check on the image centre (%s)", frame.path, check.reason)
                astrometry = self._astrometry(frame, wcs, image)
                if astrometry.wcs is not wcs:
                    wcs = astrometry.wcs
                    gaia, stars = self._gaia_stars(frame, wcs, mjd)
            t["astrometry"] = time.perf_counter()
        return {"t": t, "local": local, "has_dome": has_dome, "stats": stats, "mjd": mjd, "stars": stars,
                "gaia": gaia, "wcs": wcs, "astrometry": astrometry}

    def _astrometry(self, frame, wcs, image):
        """`astrometry.frame.frame_astrometry` of a frame under the run's --solve mode."""
        from .astrometry.frame import frame_astrometry

        return frame_astrometry(frame, wcs, image, mode=self.options.solve, gaia_dir=self.gaia_dir,
                                camera=self.camera, backend=self.backend)

    def _gaia_stars(self, frame, wcs, mjd):
        """The Gaia chunk rows around a frame's field and its `gaia.star_list` through `wcs`."""
        o, cam = self.options, self.camera
        gaia = read_gaia_chunks(self.gaia_dir, field_healpix(wcs, cam))
        stars = star_list(gaia, wcs, cam, frame.exptime_s, max_n_stars=o.max_n_stars,
                          pm_corr=o.pm_corr, mjd=mjd)
        if len(stars) == 0:
            log.warning("%s: no Gaia star brighter than the magnitude limit lies in the field", frame.path)
        return gaia, stars

    def _finish(self, frame, wcs, m, image, centroid_result, phot):
        """A frame's catalogue, streaks, zeropoints and FrameResult from its measurements."""
        o, cam, be = self.options, self.camera, self.backend
        t, stars, has_dome, stats = m["t"], m["stars"], m["has_dome"], m["stats"]
        raw_path = frame.path
        obs_night = observing_night(m["local"])
        calib = self.calibrations
        quad_rms = inter_quadrant_rms([stats[f"quad{q}"][0] for q in range(1, 5)])
        xg, yg = stars["x_gaia_guess"], stars["y_gaia_guess"]
        xc, yc, qmax = centroid_result
        centroids = {"xcentroid": xc, "ycentroid": yc, "cmaxshift": max_centroid_shift(xg, yg, cam),
                     "qmaxshift": qmax, "wrong_source_centroid": wrong_source_flags(xg, yg, xc, yc)}

        catalog = catalog_table(stars, centroids, phot, frame.values, cam, exptime_s=frame.exptime_s,
                                has_dome=has_dome, max_zp_radius=o.max_zp_radius)
        streaks = None
        if o.detect_streaks:
            streaks, catalog = self._streaks(image, catalog, wcs, frame.exptime_s, raw_path)
            t["streaks"] = time.perf_counter()
        info = FrameInfo(fname_raw=raw_path, exptime_s=frame.exptime_s, mjd_obs=m["mjd"],
                         obs_night=obs_night, has_dome=has_dome, header=frame.header)
        zps = zeropoints_table(zeropoint_rows(catalog, cam, n_apertures=len(self.radii)), info,
                               max_zp_radius=o.max_zp_radius)
        sky = sky_table(stats, quad_rms, info)
        t["zeropoints"] = time.perf_counter()
        frame_columns = [("fname_raw", raw_path, _string_dtype(raw_path)), ("mjd_obs", m["mjd"], "f8"),
                         ("obs_night", obs_night, "S8")]
        pointing = m.get("pointing")
        if pointing is not None:
            from .astrometry.pointing import table_columns

            frame_columns += table_columns(pointing)
        catalog, conditions = measure_conditions(
            catalog, image, phot, cam, calib, be, sky, zps, exptime_s=frame.exptime_s, radii=self.radii,
            standard_aperture=self.standard_aperture, flatfield=o.flatfield, bg_sigclip=o.bg_sigclip,
            pixel_area_arcsec2=abs(float(np.linalg.det(wcs.pixel_scale_matrix))) * 3600.0 ** 2,
            frame_columns=frame_columns)
        t["conditions"] = time.perf_counter()
        header_extra = [
            ("DOMEFLAG", bool(has_dome), "potential dome vignetting"),
            ("PCGPUVER", __version__, "pc_gpu version"),
            ("PCDEVICE", be.name, "backend that reduced this frame"),
            ("FLATFLD", bool(o.flatfield), "flat field applied"),
            ("BPINTERP", "row+column mean", "static bad-pixel interpolation"),
            ("CALFALLB", bool(calib.fallback), "bias/dark from per-quadrant scalars"),
            ("OBSNIGHT", obs_night, "observing night (local date at noon)"),
        ]
        if m["astrometry"] is not None:
            header_extra += m["astrometry"].header_cards(origin=m.get("pointing") is None)
        if streaks is not None:
            header_extra += [
                ("STRKDET", True, "satellite streak detection ran"),
                ("STRKTOUT", bool(streaks.timed_out), "streak detection gave up at its time limit"),
                ("NSTREAKS", len(streaks.table), "satellite streaks found"),
            ]
        if pointing is not None:
            from .astrometry.pointing import header_cards

            header_extra += header_cards(pointing)
        detrended = be.to_host(image) if o.write_detrended or o.plot_detrended else None
        thumbnail = be.to_host(bin_image(image, THUMBNAIL_BIN, be.xp)) if o.thumbnail else None
        timings = _stage_timings(t)
        result = FrameResult(raw_path=raw_path, header_extra=header_extra, header=frame.header,
                             detrended=detrended, catalog=catalog, zeropoints=zps, sky=sky,
                             obs_night=obs_night, timestamp=telemetry_timestamp(m["local"]),
                             exptime_s=frame.exptime_s, wcs_ctype=tuple(wcs.wcs.ctype), timings=timings,
                             streaks=streaks, thumbnail=thumbnail, conditions=conditions, wcs=wcs,
                             pointing=pointing, wcs_origin=_wcs_origin(m))
        row = zps[(zps["quadrant"] == 0) & (zps["aper_ind"] == self.standard_aperture)
                  & (zps["science_fov_only"] == 0)][0]
        log.info("%s: zp %.3f mag (%d stars), sky %.3f ADU/s/pix, dome %s, %.0f ms on %s",
                 os.path.basename(raw_path), row["zp_adu_per_s"], row["n_sources_for_zp"],
                 sky[0]["median_adu_per_s"], "yes" if has_dome else "no",
                 1e3 * (t["zeropoints"] - t["start"]), be.name)
        log.debug("stage timings (ms): %s", timings)
        return result

    def _streaks(self, image, catalog, wcs, exptime_s, raw_path):
        """Streak detection on the detrended image with the catalogue's stars and the static
        bad pixels masked; returns (StreakResult, catalog with `on_streak`)."""
        from numpy.lib import recfunctions

        from .streaks import detect_streaks, stars_on_streaks

        be, cam, o = self.backend, self.camera, self.options
        if getattr(self, "_bad_mask", None) is None:
            gather = self.calibrations.gather
            mask = be.xp.zeros(cam.ny * cam.nx, dtype=be.xp.uint8)
            mask[gather.index] = 1
            self._bad_mask = mask.reshape(cam.ny, cam.nx)
        x, y = catalog["xcentroid"], catalog["ycentroid"]
        # mask radius from the larger of the measured flux and the flux the Gaia magnitude
        # predicts at the nominal zeropoint (saturated stars measure low)
        with np.errstate(over="ignore", invalid="ignore"):
            predicted = 10.0 ** (-0.4 * (catalog["G_PRIME"].astype(np.float64) - cam.nominal_zp)) * exptime_s
        measured = catalog["flux_adu"][:, -1] if len(catalog) else np.zeros(0)
        flux = np.fmax(np.nan_to_num(predicted, nan=0.0), np.nan_to_num(measured, nan=0.0))
        result = detect_streaks(image, self._bad_mask, x, y, flux, exptime_s=exptime_s, backend=be,
                                wcs=wcs, time_limit_s=o.streak_time_limit)
        if result.timed_out:
            log.warning("%s: streak detection passed its %.3g s limit; STREAKS is empty (STRKTOUT = T)",
                        raw_path, o.streak_time_limit)
        on = stars_on_streaks(x, y, result.table).astype(np.int16)
        catalog = recfunctions.append_fields(catalog, "on_streak", on, usemask=False)
        if on.any():
            log.info("%s: %d star(s) on streaks left out of the zeropoints", raw_path, int(on.sum()))
        return result, catalog


def _truthy(value):
    if value is None:
        return False
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "f", "false", "no")
    return bool(value)


def _stage_timings(t):
    keys = list(t)
    return {k: round(1e3 * (t[k] - t[p]), 2) for p, k in zip(keys, keys[1:])}


def _wcs_origin(m):
    """'given', 'refined' or 'solved': where the WCS a frame was reduced with came from."""
    if m.get("pointing") is not None:
        return m["pointing"]["wcs_origin"]
    return m["astrometry"].origin if m["astrometry"] is not None else "given"


# the writing half, in its own module; here too, where the callers have always found it
from .frameout import finish_frame, process_frame, write_outputs  # noqa: E402
