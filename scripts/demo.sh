#!/usr/bin/env bash
# Set up (install + build) and run the demo: parity + timing table on the best device.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec "${PYTHON:-python3}" -m xlstm_cuda.bench "$@"
