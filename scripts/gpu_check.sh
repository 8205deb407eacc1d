#!/usr/bin/env bash
# One-call GPU check: build for this GPU (all three families are built for 9.0a, so
# an H100 runs each of them), the GPU tests, the parity sweep (allocator poisoned
# with NaN), compute-sanitizer memcheck + racecheck on every family at a small
# ragged shape, then the benchmark tables. CPU tests run in CI (scripts/test.sh).
# Logs go to $OUT when set (the device tool's output folder), else ./gpu_check_logs.
#   bash scripts/gpu_check.sh [--quick]     (--quick: shorter parity sweep)
set -uo pipefail
cd "$(dirname "$0")/.."
LOG=${OUT:-gpu_check_logs}
mkdir -p "$LOG"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
export XLSTM_CUDA_ARCHS=${XLSTM_CUDA_ARCHS:-"9.0a"}
export MAX_JOBS=${MAX_JOBS:-16}
export PYTHONUNBUFFERED=1
bash scripts/install.sh >"$LOG/build.log" 2>&1 || { tail -30 "$LOG/build.log"; exit 1; }
tail -1 "$LOG/build.log"
python3 -m pytest -q -ra -p no:cacheprovider tests/test_gpu.py tests/test_gpu_backward.py \
  tests/test_gpu_chunkwise.py \
  >"$LOG/pytest_gpu.log" 2>&1
echo "GPU tests: $(tail -1 "$LOG/pytest_gpu.log")"
python3 scripts/gpu_parity_sweep.py "$@" >"$LOG/sweep.log" 2>&1
grep -E "^FAIL|parity sweep" "$LOG/sweep.log"
for tool in memcheck racecheck; do
  compute-sanitizer --tool "$tool" --error-exitcode 1 python3 scripts/sanitize_cases.py \
    >"$LOG/sanitizer_$tool.log" 2>&1
  echo "compute-sanitizer $tool: exit $? ($(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' \
    "$LOG/sanitizer_$tool.log" | tail -1))"
done
python3 -m xlstm_cuda.bench 2>&1 | tee "$LOG/bench.log"
