#!/usr/bin/env bash
# Everything a short GPU window should measure, in one command (about 5 minutes on an H100/H200
# after the install): installs the GPU extra, compiles every CUDA kernel for the device's
# architecture, runs the real-GPU tests, then every GPU benchmark, and prints the figures.
# Usage: bash benchmarks/gpu_check.sh [cu12]     (default: CUDA 13 wheels)
set -uo pipefail
cd "$(dirname "$0")/.."
extra="gpu"
[ "${1:-}" = "cu12" ] && extra="gpu-cu12"
status=0
step() { echo; echo "=== $* ($(date -u +%H:%M:%S))"; }

step "install ($extra, test, bench)"
scripts/install.sh "$extra,test,bench" || exit 1
py=.venv/bin/python
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
$py -c "from pc_gpu.backend import gpu_problem; p = gpu_problem(); print('GPU usable' if p is None else p)"

step "compile every kernel (sm_80, sm_90) and check the PTX"
$py -m pc_gpu.kernels.compile_check --cc 80 90 || status=1

step "real-GPU tests: pytest -m gpu (kernels and a full frame against the CPU)"
$py -m pytest -q -m gpu -p no:cacheprovider || status=1

step "the CUDA path without GPU shortcuts: simulator tests"
$py -m pytest -q -p no:cacheprovider tests/test_kernels_cudasim.py tests/test_gpu_path.py || status=1

step "kernels: every stage on a full frame, CPU and GPU"
$py benchmarks/bench_kernels.py --repeat 7 --peer-repeat 1 || status=1

step "pipeline: pc-proc as a new process, warm latency, batch frames/s (GPU)"
$py benchmarks/bench_pipeline.py --device gpu --repeat 5 --batch 40 || status=1

if [ -f benchmarks/bench_archive.py ]; then
    step "archive: the GPU engine"
    $py benchmarks/bench_archive.py --device gpu --frames 96 --repeats 2 || status=1
fi
step "done (status $status)"
exit $status
