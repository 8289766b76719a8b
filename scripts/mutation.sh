#!/usr/bin/env bash
# Mutation testing of pc_gpu's non-kernel modules with mutmut: each mutant (a small change to
# the code) must make at least one of the tests that run that code fail. Not part of CI (slow);
# rerun when the modules or their tests change, and record the score in tests/MUTATION.md.
#
# Usage: scripts/mutation.sh [--sample N] [MODULE ...]
#   MODULE       pc_gpu module names from the table below (default: all of them)
#   --sample N   test N mutants per module, spread evenly over its mutants (default: all)
#
# Works in a scratch copy of the working tree (kept, and named at the end, for
# `mutmut show NAME` there); the summary and the surviving mutants' diffs are printed and
# written to that directory's summary.txt and survivors.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

# module -> the test files that exercise it (mutmut then runs, for each mutant, only those of
# their tests that call the mutated function)
declare -A TESTS=(
    [pipeline]="test_pipeline.py test_proc_flags.py test_zeropoints_truth.py test_plots.py test_cli_errors.py test_streaks_pipeline.py"
    [frameout]="test_pipeline.py test_proc_flags.py test_plots.py test_cli_errors.py test_outputs.py test_wcs_refine.py"
    [detrend]="test_pipeline.py test_proc_flags.py test_stage_units.py"
    [sky]="test_pipeline.py test_proc_flags.py test_stage_units.py"
    [gaia]="test_pipeline.py test_proc_flags.py test_cli_errors.py"
    [centroid]="test_pipeline.py test_edges.py test_proc_flags.py test_stage_units.py"
    [photometry]="test_pipeline.py test_proc_flags.py"
    [catalog]="test_pipeline.py test_zeropoints_truth.py test_proc_flags.py test_plots.py test_stage_units.py"
    [zeropoints]="test_zeropoints_truth.py test_pipeline.py test_edges.py test_plots.py test_cli_errors.py"
    [cli]="test_proc_flags.py test_cli_errors.py test_plots.py test_streaks_pipeline.py"
    [plots]="test_plots.py test_cli_errors.py"
    [outputs]="test_edges.py test_pipeline.py test_cli_errors.py test_realtime*.py"
    [telemetry]="test_edges.py test_pipeline.py test_cli_errors.py test_realtime*.py test_telemetry*.py"
    [ledger]="test_realtime*.py"
    [realtime]="test_realtime*.py"
    [watch]="test_realtime*.py"
)
ORDER=(pipeline detrend sky gaia centroid photometry catalog zeropoints cli plots outputs telemetry ledger realtime watch)

sample=0
modules=()
while [ $# -gt 0 ]; do
    case "$1" in
        --sample) sample="$2"; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) [ -n "${TESTS[$1]+x}" ] || { echo "unknown module '$1'; one of: ${ORDER[*]}" >&2; exit 2; }
           modules+=("$1"); shift ;;
    esac
done
[ ${#modules[@]} -gt 0 ] || modules=("${ORDER[@]}")

python=$PWD/.venv/bin/python
[ -x "$python" ] || bash scripts/install.sh test,mutation
"$python" -c "import mutmut" 2>/dev/null || "$python" -m pip install -q -e ".[test,mutation]"
bash scripts/ensure_redis.sh >/dev/null

work=$(mktemp -d "${TMPDIR:-/tmp}/pc_gpu_mutation.XXXXXX")
git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$work"

# mutmut's configuration: setup.cfg in the scratch copy (list values one per line)
tests=$(cd tests && for m in "${modules[@]}"; do for t in ${TESTS[$m]}; do [ -e "$t" ] && echo "tests/$t"; done; done | sort -u)
{
    echo "[mutmut]"
    echo "source_paths = pc_gpu"
    echo "only_mutate ="
    for m in "${modules[@]}"; do echo "    pc_gpu/$m.py"; done
    echo "do_not_mutate_patterns ="
    echo "    log\\.(debug|info)\\("          # what only goes to the debug/info log
    echo "pytest_add_cli_args ="
    echo "    -p"
    echo "    no:cacheprovider"
    echo "pytest_add_cli_args_test_selection ="
    for t in $tests; do echo "    $t"; done
    echo "timeout_multiplier = 5"
    echo "timeout_constant = 20"
    echo "use_git_change_detection = false"
} > "$work/setup.cfg"

# mutmut forks a worker per mutant from a process that already ran the kernels: numba's
# workqueue threading layer survives a fork (GNU OpenMP does not). Simulated frames are made
# once and read back by every mutant's test run.
export NUMBA_THREADING_LAYER=workqueue
export PC_GPU_TEST_DATA="$work/test-data"
cd "$work"
mutmut=("$(dirname "$python")/mutmut")

# first pass: make the mutants and find which tests run which function (mutmut stops there only
# when asked for a mutant by name; none has this one, so it ends with an error after that work)
"${mutmut[@]}" run "pc_gpu.__generate_only__" > generate.log 2>&1 || true
[ -f mutants/mutmut-stats.json ] || { tail -40 generate.log; echo "mutmut could not start: $work/generate.log" >&2; exit 1; }
names=$("$python" - "$sample" "${modules[@]}" <<'EOF'
import json
import sys
sample, modules = int(sys.argv[1]), sys.argv[2:]
for module in modules:
    with open(f"mutants/pc_gpu/{module}.py.meta") as f:
        own = sorted(json.load(f)["exit_code_by_key"],
                     key=lambda n: (n.rpartition("__mutmut_")[0], int(n.rpartition("_")[2])))
    if sample and len(own) > sample:  # evenly spread over the module, the same every time
        own = [own[round(i * (len(own) - 1) / max(sample - 1, 1))] for i in range(sample)]
    print("\n".join(own))
EOF
)
# shellcheck disable=SC2086
"${mutmut[@]}" run --max-children 2 $names > run.log 2>&1 || true
"${mutmut[@]}" results --all true > results.txt

"$python" - "${modules[@]}" <<'EOF' | tee summary.txt
import sys
from collections import Counter
modules = sys.argv[1:]
status = {}
for line in open("results.txt"):
    name, _, result = line.strip().rpartition(": ")
    if "__mutmut_" in name and result != "not checked":
        status[name] = result
print(f"{'module':<12} {'tested':>6} {'killed':>6} {'survived':>8} {'other':>6}  score")
for module in modules:
    counts = Counter(s for n, s in status.items() if n.startswith(f"pc_gpu.{module}."))
    tested = sum(counts.values())
    killed = counts["killed"] + counts["timeout"]
    other = tested - killed - counts["survived"]
    score = f"{100 * killed / tested:.0f}%" if tested else "-"
    print(f"{module:<12} {tested:>6} {killed:>6} {counts['survived']:>8} {other:>6}  {score}")
others = Counter(s for s in status.values() if s not in ("killed", "timeout", "survived"))
if others:
    print("other outcomes:", dict(others))
EOF
for name in $(awk -F': ' '$2 == "survived" {print $1}' results.txt); do
    "${mutmut[@]}" show "$name"
    echo
done > survivors.txt 2>&1
echo "surviving mutants' diffs: $work/survivors.txt (mutmut show NAME in $work)"
