"""The whole reduction through the GPU code path writes the same summary as the CPU path:
under numba's CUDA simulator on a tiny frame (always; in a subprocess with
NUMBA_ENABLE_CUDASIM=1) and on a real GPU with a full-size frame (marked `gpu`); a batch of
frames reduced together (`Reducer.reduce_frames`, one star-kernel launch for all) gives each
frame what the CPU gives it alone.

Run as a script (``python tests/test_gpu_path.py RAW META GAIA NX NY OUTDIR``) it reduces RAW
with `get_backend('gpu')` and writes the outputs into OUTDIR; ``batch OUT.npz NX NY META GAIA
RAW...`` reduces the RAWs as one batch and saves their tables.
"""

import os
import subprocess
import sys

import fitsio
import numpy as np
import pytest

from pc_gpu.backend import get_backend
from pc_gpu.camera import EL_NINO
from pc_gpu.pipeline import Reducer, RunOptions, process_frame


def reduce_to(outdir, raw, meta, gaia, camera, device):
    """Reduce one frame on `device` and return the summary file's path."""
    reducer = Reducer(RunOptions(outdir=str(outdir), checkplot=False, max_n_stars=25),
                      camera=camera, meta_dir=meta, gaia_dir=gaia, backend=get_backend(device))
    _, paths, _ = process_frame(raw, reducer)
    return paths["summary"], reducer.backend.name


def summary_tables(path):
    """{HDU name: table} of a summary file."""
    return {name: fitsio.read(path, ext=name) for name in ("SKY", "CATALOG", "ZEROPOINTS")}


def assert_same_summary(gpu_path, cpu_path):
    """See `assert_same_tables`."""
    assert_same_tables(summary_tables(gpu_path), summary_tables(cpu_path))


def assert_same_tables(gpu, cpu):
    """Tables equal within the kernels' tolerances: fluxes 1e-5 relative, sky statistics and
    centroids exactly."""
    gsky, csky = gpu["SKY"], cpu["SKY"]
    for name in csky.dtype.names:
        if name.startswith(("median", "mean", "inter_quad")):
            np.testing.assert_allclose(gsky[name], csky[name], rtol=1e-12 if name.startswith("median") else 1e-6,
                                       err_msg=name)
    gcat, ccat = gpu["CATALOG"], cpu["CATALOG"]
    assert len(gcat) == len(ccat) > 0
    np.testing.assert_array_equal(gcat["SOURCE_ID"], ccat["SOURCE_ID"])
    for name in ("xcentroid", "ycentroid", "qmaxshift", "wrong_source_centroid", "quadrant",
                 "centroid_pixel_saturated"):
        np.testing.assert_array_equal(gcat[name], ccat[name], err_msg=name)
    np.testing.assert_allclose(gcat["flux_adu"], ccat["flux_adu"], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(gcat["sky_annulus_median"], ccat["sky_annulus_median"], rtol=1e-6)
    gzp, czp = gpu["ZEROPOINTS"], cpu["ZEROPOINTS"]
    np.testing.assert_array_equal(gzp["n_sources_for_zp"], czp["n_sources_for_zp"])
    np.testing.assert_allclose(gzp["zp_adu_per_s"], czp["zp_adu_per_s"], atol=1e-5)


def batch_reducer(meta, gaia, camera, device):
    return Reducer(RunOptions(outdir=None, checkplot=False, max_n_stars=25), camera=camera, meta_dir=meta,
                   gaia_dir=gaia, backend=get_backend(device))


def load(raw, camera):
    from pc_gpu.rawio import read_raw, read_wcs, wcs_path_for

    return read_raw(raw, camera), read_wcs(wcs_path_for(raw))


def test_batch_of_frames_in_cuda_simulator_matches_cpu_frame_by_frame(tmp_path, sim_gaia_dir):
    from pc_gpu.sim import make_demo_field

    camera = EL_NINO.with_(nx=240, ny=180)
    fields = [make_demo_field(tmp_path / f"field{seed}", seed=seed, gaia_dir=sim_gaia_dir, camera=camera)
              for seed in (2, 5)]
    meta = fields[0].meta_dir
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    out = tmp_path / "batch.npz"
    proc = subprocess.run([sys.executable, "-W", "error", __file__, "batch", str(out), str(camera.nx), str(camera.ny),
                           meta, sim_gaia_dir, *(f.raw for f in fields)], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cpu = batch_reducer(meta, sim_gaia_dir, camera, "cpu")
    with np.load(out) as saved:
        for i, f in enumerate(fields):
            alone = cpu.reduce(f.raw)
            tables = {"SKY": alone.sky, "CATALOG": alone.catalog, "ZEROPOINTS": alone.zeropoints}
            assert_same_tables({k: saved[f"{k}{i}"] for k in tables}, tables)
        assert not np.array_equal(saved["CATALOG0"]["flux_adu"], saved["CATALOG1"]["flux_adu"])
    # on the CPU too, a batch equals the frames one by one
    together = cpu.reduce_frames(*zip(*(load(f.raw, camera) for f in fields)))
    for i, f in enumerate(fields):
        alone = cpu.reduce(f.raw).catalog
        for name in alone.dtype.names:
            np.testing.assert_array_equal(together[i].catalog[name], alone[name], err_msg=name)


def test_gpu_path_in_cuda_simulator_matches_cpu(tmp_path, sim_gaia_dir):
    from pc_gpu.sim import make_demo_field

    camera = EL_NINO.with_(nx=240, ny=180)
    field = make_demo_field(tmp_path / "field", seed=2, gaia_dir=sim_gaia_dir, camera=camera)
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    args = [field.raw, field.meta_dir, field.gaia_dir, str(camera.nx), str(camera.ny), str(tmp_path / "gpu")]
    proc = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "gpu-sim" in proc.stdout
    cpu_summary, _ = reduce_to(tmp_path / "cpu", field.raw, field.meta_dir, field.gaia_dir, camera, "cpu")
    gpu_summary = os.path.join(tmp_path / "gpu", os.path.basename(cpu_summary))
    assert fitsio.read_header(gpu_summary)["PCDEVICE"] == "gpu-sim"
    assert_same_summary(gpu_summary, cpu_summary)


@pytest.mark.gpu
def test_gpu_full_frame_matches_cpu(tmp_path, demo_field):
    from pc_gpu.backend import gpu_problem

    problem = gpu_problem()
    if problem is not None:
        pytest.skip(f"no usable GPU: {problem}")
    cpu, _ = reduce_to(tmp_path / "cpu", demo_field.raw, demo_field.meta_dir, demo_field.gaia_dir, EL_NINO, "cpu")
    gpu, name = reduce_to(tmp_path / "gpu", demo_field.raw, demo_field.meta_dir, demo_field.gaia_dir, EL_NINO, "gpu")
    assert name == "gpu"
    assert_same_summary(gpu, cpu)


if __name__ == "__main__" and sys.argv[1] == "batch":
    out, nx, ny, meta, gaia, *raws = sys.argv[2:]
    cam = EL_NINO.with_(nx=int(nx), ny=int(ny))
    reducer = batch_reducer(meta, gaia, cam, "gpu")
    assert reducer.backend.name == "gpu-sim"
    results = reducer.reduce_frames(*zip(*(load(raw, cam) for raw in raws)))
    np.savez(out, **{f"{k}{i}": getattr(r, attr) for i, r in enumerate(results)
                     for k, attr in (("SKY", "sky"), ("CATALOG", "catalog"), ("ZEROPOINTS", "zeropoints"))})
elif __name__ == "__main__":
    raw, meta, gaia, nx, ny, outdir = sys.argv[1:7]
    summary, backend_name = reduce_to(outdir, raw, meta, gaia, EL_NINO.with_(nx=int(nx), ny=int(ny)), "gpu")
    sys.stdout.write(f"{backend_name} {summary}\n")
