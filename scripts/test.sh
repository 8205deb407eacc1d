#!/usr/bin/env bash
# Set up (install + build) and run the test suite. GPU tests skip, with the reason
# shown, on machines without a CUDA GPU. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec "${PYTHON:-python3}" -m pytest -ra tests "$@"
