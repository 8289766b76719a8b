"""A small simulated archive for the pc-archive tests (built once per test session).

Two observing nights of 600 x 450 frames (5 + 4, from `simulate_night`, one ZPFLAG frame after
the slew) that share one META and the session's Gaia chunk tree, plus the faults of issue 10
in the same tree: a truncated frame, a non-FITS file, a frame without its .wcs, a frame of the
wrong size, a zero-exposure frame; and outside the tree, for --file-list, a dangling path and
a directory named like a frame (unreadable as a file).
"""

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

import pytest
from astropy.io import fits

from pc_gpu.camera import EL_NINO
from pc_gpu.sim.night import DEMO_DEC, DEMO_RA, simulate_night

NX, NY = 600, 450
FIELDS = ((DEMO_RA, DEMO_DEC), (DEMO_RA + 1.2, DEMO_DEC + 0.8))


@dataclass(frozen=True)
class Archive:
    root: str           # INPUT directory of pc-archive
    meta_dir: str
    gaia_dir: str
    good: tuple         # raw paths that must be done
    bad: dict           # raw path -> a phrase its failure reason must contain
    no_wcs: str         # raw path that must be skipped ('no .wcs')
    unreadable: tuple   # (dangling path, directory named *.fits) for --file-list
    nights: tuple       # ('20210611', '20210612')


def _copy_frame(src, dst, *, wcs=True, **header):
    """Copy a raw frame (and its .wcs) under a new name, changing header cards."""
    with fits.open(src) as hdul:
        hdul[0].header.update(header)
        hdul.writeto(dst)
    if wcs:
        shutil.copyfile(src[:-5] + ".wcs", dst[:-5] + ".wcs")


def build_archive(workdir, gaia_dir):
    root = os.path.join(workdir, "archive")
    camera = EL_NINO.with_(nx=NX, ny=NY)
    n1 = simulate_night(os.path.join(root, "n1"), n_frames=5, fields=FIELDS, slew_after=3, camera=camera,
                        gaia_dir=gaia_dir, seed=1, start_time="2021-06-12T05:00:00")
    n2 = simulate_night(os.path.join(root, "n2"), n_frames=4, fields=FIELDS, slew_after=3, camera=camera,
                        gaia_dir=gaia_dir, seed=1, first_frame_number=101, start_time="2021-06-13T04:00:00")
    raw1 = os.path.dirname(n1.raw[0])
    bad = {}
    truncated = os.path.join(raw1, "20210611.230000.00090_20000.fits")
    with open(n1.raw[0], "rb") as fh:
        data = fh.read()
    with open(truncated, "wb") as fh:
        fh.write(data[: len(data) // 3])
    shutil.copyfile(n1.wcs[0], truncated[:-5] + ".wcs")
    bad[truncated] = "truncated"
    garbage = os.path.join(raw1, "20210611.230020.00091_20000.fits")
    with open(garbage, "wb") as fh:
        fh.write(b"this is not a FITS file\n" * 200)
    shutil.copyfile(n1.wcs[0], garbage[:-5] + ".wcs")
    bad[garbage] = "not a readable FITS file"
    zero = os.path.join(raw1, "20210611.230040.00092_20000.fits")
    _copy_frame(n1.raw[1], zero, EXPOSURE=0)
    bad[zero] = "exposure time must be positive"
    wrong = os.path.join(raw1, "20210611.230100.00093_20000.fits")
    with fits.open(n1.raw[2]) as hdul:
        fits.PrimaryHDU(hdul[0].data[:200, :300], hdul[0].header).writeto(wrong)
    shutil.copyfile(n1.wcs[2], wrong[:-5] + ".wcs")
    bad[wrong] = "(300, 200) pixels"
    no_wcs = os.path.join(raw1, "20210611.230120.00094_20000.fits")
    _copy_frame(n1.raw[3], no_wcs, wcs=False)
    elsewhere = os.path.join(workdir, "listed")
    os.makedirs(elsewhere)
    dangling = os.path.join(elsewhere, "20210612.010000.00095_20000.fits")
    os.symlink(os.path.join(elsewhere, "gone.fits"), dangling)
    directory = os.path.join(elsewhere, "20210612.010020.00096_20000.fits")
    os.makedirs(directory)
    return Archive(root, n1.meta_dir, gaia_dir, n1.raw + n2.raw, bad, no_wcs, (dangling, directory),
                   ("20210611", "20210612"))


@pytest.fixture(scope="session")
def archive(tmp_path_factory, sim_gaia_dir):
    return build_archive(str(tmp_path_factory.mktemp("archive")), sim_gaia_dir)


def archive_cmd(archive, outdir, *extra):
    """The pc-archive command line for `archive` into `outdir`."""
    return [sys.executable, "-m", "pc_gpu.archive", archive.root, "--outdir", str(outdir),
            "--meta_dir", archive.meta_dir, "--gaia_dir", archive.gaia_dir, "--camera_nx", str(NX),
            "--camera_ny", str(NY), "--progress", "log", *extra]


def run_archive(archive, outdir, *extra, timeout=600, env=None):
    """Run pc-archive to the end: the CompletedProcess."""
    return subprocess.run(archive_cmd(archive, outdir, *extra), capture_output=True, text=True,
                          timeout=timeout, env=env)
