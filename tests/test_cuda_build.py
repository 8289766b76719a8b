"""The CUDA build without a GPU: every kernel compiles for sm_80 and sm_90 (NVVM + ptxas from
the test extra's wheels) with the argument types the production launchers use, its PTX has no
NaN-ignoring float min/max and, in the exact kernels, no multiply that ptxas could fuse; every
CUDA kernel is cached on disk under the source digest; the launchers convert device arrays
with the backend's own converter."""

import importlib
import json
import subprocess
import sys

import numpy as np

from pc_gpu.kernels._cache import kernel_cache_dir
from pc_gpu.kernels.compile_check import _FLOAT_MINMAX, _FUSABLE_MUL, MODULES, kernel_names


def test_every_kernel_compiles_for_sm80_and_sm90(tmp_path):
    out = tmp_path / "compile.json"
    proc = subprocess.run([sys.executable, "-m", "pc_gpu.kernels.compile_check", "--cc", "80", "90",
                           "--json", str(out)], capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())["results"]
    expected = {name for module in MODULES for name in kernel_names(importlib.import_module(module))}
    assert len(expected) == 16  # 13, the PSF moments (conditions) and star detection's two (plate solving)
    for cc in (80, 90):
        compiled = {r["kernel"] for r in results if r["cc"] == cc and not r["problems"]}
        assert compiled == expected, f"sm_{cc}: missing {expected - compiled}"
    assert all(r["registers"] > 0 for r in results)


def test_ptx_checks_recognise_the_instructions():
    assert _FLOAT_MINMAX.search("\tmax.f64 \t%fd3, %fd1, %fd2;")
    assert _FLOAT_MINMAX.search("\tmin.NaN.f32 \t%f3, %f1, %f2;")
    assert not _FLOAT_MINMAX.search("\tmin.s64 \t%rd3, %rd1, %rd2;")
    assert _FUSABLE_MUL.search("\tmul.f32 \t%f30, %f29, %f25;")
    assert _FUSABLE_MUL.search("\tfma.rn.f64 \t%fd3, %fd1, %fd2, %fd4;")
    assert _FUSABLE_MUL.search("\tmul.rn.f32 \t%f30, %f29, %f25;") is None
    assert _FUSABLE_MUL.search("\tmul.wide.s32 \t%rd107, %r2, %r3;") is None
    assert _FUSABLE_MUL.search("\tmul.lo.s64 \t%rd108, %rd93, %rd92;") is None


def test_every_cuda_kernel_caches_under_the_source_digest():
    """numba-cuda reads its own copy of the configuration: the cache directory must be set there
    too, or kernels cache beside the sources keyed only on their own file."""
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name in kernel_names(module):
            path = getattr(module, name)._cache._cache_path
            assert path.startswith(kernel_cache_dir()), (name, path)


def test_sky_regions_on_a_device_use_the_backends_converter():
    """warm_up hands device index arrays to prepare_sky_regions; numpy cannot convert a cupy
    array, so the CUDA kernel set must use its own to_host."""
    from pc_gpu.kernels.cuda import CudaKernels

    converted = []

    def to_host(a):
        converted.append(a)
        return np.asarray(a)

    kernels = CudaKernels(np, to_host)
    index = np.arange(5, 9)
    regions = kernels.prepare_sky_regions((4, 4), [None, index])
    assert converted and converted[0] is index
    assert list(regions.sizes) == [16, 4]
