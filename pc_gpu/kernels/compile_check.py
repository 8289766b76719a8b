"""Compile every CUDA kernel for real GPU architectures, without a GPU.

    python -m pc_gpu.kernels.compile_check [--cc 80 90] [--json OUT]

1. In a child process under numba's CUDA simulator, the production launchers run on small
   inputs (`warm_up`, the streak and the star-detection warm-ups: the code paths `pc-proc` takes) and every launch
   is recorded: kernel and numba argument types.
2. For each architecture, in a child process of its own, each recorded kernel is compiled to
   PTX with NVVM (numba-cuda) and to device code with ptxas (the CUDA toolkit's, from the
   ``nvidia-cuda-nvcc`` wheel or the PATH); ptxas reports registers, stack and spills.
3. The PTX is checked for what would make the device disagree with the CPU: float min/max
   instructions (NaN-ignoring) in any kernel, and fused multiply-adds, or multiplies that ptxas
   may fuse into one (no ``.rn``), in the kernels that must agree exactly.

Exits 1 on any compilation error or failed check, and prints a table per architecture. Needs
numba-cuda with its NVVM (the ``test`` or ``gpu`` extra); no driver and no device.
"""

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import types as pytypes

__all__ = ["main"]

MODULES = ("pc_gpu.kernels.cuda", "pc_gpu.kernels.streak_cuda", "pc_gpu.kernels.detect_cuda")
EXACT_KERNELS = ("_detrend_k", "_gather_k", "_sky_level1_k", "_sky_level2_k", "_sky_sums_k", "_recentroid_k")
"""Kernels whose results must equal the CPU's bit for bit."""
_FLOAT_MINMAX = re.compile(r"^\s*(min|max)(\.[a-zA-Z]+)*\.f(32|64)\b", re.M)
_FUSABLE_MUL = re.compile(r"^\s*((fma|mad)\S*|mul(?!\S*\.rn)\S*)\.f(32|64)\b", re.M)


# --------------------------------------------------------------------------- step 1 (simulator)
def _type_record(value):
    """A JSON description of the numba type of a launch argument."""
    import numba
    import numpy as np

    t = numba.typeof(value)
    if isinstance(t, numba.types.Array):
        return {"array": np.dtype(t.dtype.name).str, "ndim": t.ndim, "layout": t.layout}
    return {"scalar": str(t)}


def record_launches():
    """Run the production launchers under the simulator; [(module, kernel, [types])]."""
    import importlib

    from ..astrometry.detect import warm_up as warm_up_detection
    from ..backend import get_backend
    from ..streaks import warm_up as warm_up_streaks
    from . import warm_up

    seen = {}

    class Recorder:
        def __init__(self, module, name, kernel):
            self.module, self.__name__, self.kernel = module, name, kernel

        def __getitem__(self, config):
            launch = self.kernel[config]

            def run(*args):
                key = (self.module, self.__name__, tuple(json.dumps(_type_record(a)) for a in args))
                seen[key] = True
                return launch(*args)

            return run

    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name in kernel_names(module):
            setattr(module, name, Recorder(module_name, name, getattr(module, name)))
    backend = get_backend("gpu")
    if backend.name != "gpu-sim":
        raise RuntimeError("record_launches needs NUMBA_ENABLE_CUDASIM=1")
    warm_up(backend)
    warm_up_streaks(backend)
    warm_up_detection(backend)
    return [(m, k, [json.loads(a) for a in args]) for m, k, args in seen]


def kernel_names(module):
    """Names of the module-level CUDA kernels of `module` (kernels, not device functions)."""
    return sorted(name for name, obj in vars(module).items()
                  if name.startswith("_k") or (name.startswith("_") and name.endswith("_k"))
                  if hasattr(obj, "py_func") or type(obj).__name__ == "FakeCUDAKernel")


# --------------------------------------------------------------------------- step 2 (NVVM + ptxas)
def _numba_type(record):
    import numba
    import numpy as np

    if "array" in record:
        return numba.types.Array(numba.from_dtype(np.dtype(record["array"])), record["ndim"], record["layout"])
    return numba.types.boolean if record["scalar"] == "bool" else getattr(numba.types, record["scalar"])


def find_ptxas():
    """Path of ptxas: the nvidia-cuda-nvcc wheel's, else the PATH's; None when absent."""
    import importlib.util

    spec = importlib.util.find_spec("nvidia")
    for root in (spec.submodule_search_locations if spec else []):
        found = sorted(glob.glob(os.path.join(root, "*", "bin", "ptxas")))
        if found:
            return found[-1]
    return shutil.which("ptxas")


def compile_for(cc, launches, ptxas):
    """Compile every recorded launch for compute capability `cc` (e.g. 90); a list of result
    dicts (kernel, registers, stack, spill stores/loads, problems)."""
    import importlib

    from numba import cuda
    from numba.cuda import dispatcher

    major, minor = divmod(int(cc), 10)
    # Device functions compile for "the current device"; there is none, so name the target.
    dispatcher.get_current_device = lambda: pytypes.SimpleNamespace(compute_capability=(major, minor))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for module_name, name, arg_records in launches:
            kernel = getattr(importlib.import_module(module_name), name)
            argtypes = tuple(_numba_type(r) for r in arg_records)
            row = {"kernel": name, "cc": cc, "problems": []}
            results.append(row)
            try:
                ptx, _ = cuda.compile_ptx(kernel.py_func, argtypes, cc=(major, minor))
            except Exception as exc:  # report every kernel, not only the first failure
                row["problems"].append(f"NVVM: {type(exc).__name__}: {str(exc).splitlines()[0]}")
                continue
            if _FLOAT_MINMAX.search(ptx):
                row["problems"].append("float min/max instruction (ignores NaN; use lesser/greater)")
            if name in EXACT_KERNELS and _FUSABLE_MUL.search(ptx):
                row["problems"].append("FMA, or a multiply without .rn that ptxas may fuse into one, in an exact kernel")
            path = os.path.join(tmp, f"{name}.ptx")
            with open(path, "w") as handle:
                handle.write(ptx)
            proc = subprocess.run([ptxas, f"-arch=sm_{cc}", "-v", path, "-o", os.devnull],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                row["problems"].append("ptxas: " + proc.stderr.strip()[-500:])
                continue
            row.update(_ptxas_usage(proc.stderr))
    return results


def _ptxas_usage(text):
    """Registers, stack and spill bytes from `ptxas -v` output."""
    usage = {}
    m = re.search(r"Used (\d+) registers", text)
    usage["registers"] = int(m.group(1)) if m else None
    m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", text)
    if m:
        usage["stack"], usage["spill_stores"], usage["spill_loads"] = (int(g) for g in m.groups())
    return usage


# --------------------------------------------------------------------------- driver
def _child(args, env_extra):
    env = dict(os.environ, **env_extra)
    proc = subprocess.run([sys.executable, "-m", "pc_gpu.kernels.compile_check", *args], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def main(argv=None):
    """Run the check; returns the exit status."""
    p = argparse.ArgumentParser(prog="python -m pc_gpu.kernels.compile_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cc", nargs="+", type=int, default=[80, 90], help="compute capabilities (default 80 90)")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--step", choices=("record", "compile"), help=argparse.SUPPRESS)
    p.add_argument("--launches", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.step == "record":
        json.dump(record_launches(), sys.stdout)
        return 0
    if args.step == "compile":
        with open(args.launches) as handle:
            launches = json.load(handle)
        json.dump(compile_for(args.cc[0], launches, find_ptxas()), sys.stdout)
        return 0

    if find_ptxas() is None:
        print("ptxas not found: install the test extra (nvidia-cuda-nvcc) or put the CUDA toolkit on PATH",
              file=sys.stderr)
        return 1
    launches = _child(["--step", "record"], {"NUMBA_ENABLE_CUDASIM": "1"})
    results = []
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(launches, handle)
    try:
        for cc in args.cc:
            results += _child(["--step", "compile", "--cc", str(cc), "--launches", handle.name],
                              {"NUMBA_ENABLE_CUDASIM": "0"})
    finally:
        os.unlink(handle.name)
    print(f"{'kernel':<16} {'sm':>3} {'regs':>5} {'stack':>6} {'spill st':>9} {'spill ld':>9}  problems")
    for r in sorted(results, key=lambda r: (r["kernel"], r["cc"])):
        print(f"{r['kernel']:<16} {r['cc']:>3} {r.get('registers') or '-':>5} {r.get('stack', '-'):>6} "
              f"{r.get('spill_stores', '-'):>9} {r.get('spill_loads', '-'):>9}  {'; '.join(r['problems'])}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"launches": launches, "results": results}, handle, indent=1)
    failed = [r for r in results if r["problems"]]
    print(f"{len(results)} compilations ({len(launches)} launch signatures x {len(args.cc)} architectures), "
          f"{len(failed)} with problems")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
