#!/usr/bin/env bash
# Every GPU check in one call, for a lent CUDA machine (it has torch, triton and transformers but not the packages
# that ship SmolLM2): installs grumem over the machine's torch, runs the GPU tests (CUDA graphs vs eager, the
# Triton kernels compiled against their references) and the GPU engine benchmark, and writes
# $OUT/report.json (default gpu_report/) with the device name. Budget: under 8 minutes.
#
#   bash scripts/gpu_check.sh prepare   here, on a set-up CPU machine: the tokenizer the tests need -> .gpu/
#   bash scripts/gpu_check.sh           there, with .gpu/ carried along
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = prepare ]; then
    .venv/bin/python -c 'from grumem.engine.models.registry import load_tokenizer; load_tokenizer().save_pretrained(".gpu/tokenizer")'
    echo "carry .gpu (tokenizer files, $(du -sh .gpu | cut -f1)) and run: bash scripts/gpu_check.sh"
    exit 0
fi
OUT=${OUT:-gpu_report}
mkdir -p "$OUT"
PY=${PYTHON:-python}
start=$(date +%s)
"$PY" -m pip install --quiet --no-build-isolation --no-deps -e . > "$OUT/install.log" 2>&1
install_rc=$?
timeout 240 "$PY" -m pytest -q -p no:cacheprovider --tokenizer .gpu/tokenizer --junitxml "$OUT/tests.xml" \
    tests/test_cuda_graphs.py tests/kernels > "$OUT/tests.log" 2>&1
tests_rc=$?
timeout 240 "$PY" -m pytest -q -p no:cacheprovider benchmarks/bench_gpu.py --benchmark-json "$OUT/bench_gpu.json" \
    > "$OUT/bench.log" 2>&1
bench_rc=$?
"$PY" - "$OUT" "$install_rc" "$tests_rc" "$bench_rc" "$(( $(date +%s) - start ))" <<'PYEOF'
import json, subprocess, sys
out, install_rc, tests_rc, bench_rc, seconds = sys.argv[1], *map(int, sys.argv[2:])
import torch
report = {
    "device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    "torch": torch.__version__, "cuda": torch.version.cuda,
    "commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() or None,
    "install_rc": install_rc, "tests_rc": tests_rc, "bench_rc": bench_rc, "seconds": seconds,
    "tests_summary": open(f"{out}/tests.log").read().strip().splitlines()[-1:],
}
try:
    bench = json.load(open(f"{out}/bench_gpu.json"))
    report["benchmarks"] = {b["name"]: {"mean_s": b["stats"]["mean"], **b["extra_info"]} for b in bench["benchmarks"]}
except (OSError, ValueError, KeyError):
    report["benchmarks"] = None
json.dump(report, open(f"{out}/report.json", "w"), indent=1)
print(json.dumps(report, indent=1))
PYEOF
