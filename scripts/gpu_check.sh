#!/usr/bin/env bash
# One-call GPU check: build for this GPU (plus the archs forced families need),
# run the whole test suite (GPU tests included), compute-sanitizer on the CUDA
# kernels at a small ragged shape, then the benchmark table.
# Logs go to $OUT when set (the device tool's output folder), else ./gpu_check_logs.
set -uo pipefail
cd "$(dirname "$0")/.."
LOG=${OUT:-gpu_check_logs}
mkdir -p "$LOG"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
# 9.0a runs every family on a Hopper GPU (sm75/sm80 code is built for it too).
export XLSTM_CUDA_ARCHS=${XLSTM_CUDA_ARCHS:-"9.0a"}
export MAX_JOBS=${MAX_JOBS:-16}
export PYTHONUNBUFFERED=1
bash scripts/install.sh 2>&1 | tee "$LOG/build.log" | tail -5 || exit 1
python3 -m pytest -q -ra tests 2>&1 | tee "$LOG/pytest.log" | tail -25
if [[ -f scripts/sanitize_cases.py ]]; then
  for tool in memcheck racecheck; do
    compute-sanitizer --tool "$tool" --error-exitcode 1 python3 scripts/sanitize_cases.py \
      >"$LOG/sanitizer_$tool.log" 2>&1
    echo "compute-sanitizer $tool: exit $? ($(grep -c 'ERROR SUMMARY: 0 errors' "$LOG/sanitizer_$tool.log") clean summaries)"
  done
fi
python3 -m xlstm_cuda.bench 2>&1 | tee "$LOG/bench.log"
