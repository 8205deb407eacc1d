#!/usr/bin/env bash
# Installs what xlstm_cuda needs and builds it in place (editable install).
# Idempotent: packages already importable are left alone, so it also runs on an
# offline machine that has torch (wheels in .whl/ are used when present).
#   PYTHON        interpreter to use (default: python3)
#   TORCH_SPEC    torch to install when none is importable (default: torch==2.14.1)
# Build knobs (XLSTM_CUDA_ARCHS, XLSTM_CUDA_FAMILIES, MAX_JOBS, ...) pass through to setup.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }

if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "[install] installing ${TORCH_SPEC:-torch==2.14.1}"
  pip_install "${TORCH_SPEC:-torch==2.14.1}"
fi

# module:requirement pairs for the build and the tests
missing=()
for pair in ninja:ninja pybind11:pybind11 cutlass_library:nvidia-cutlass==4.2.0.0 \
            pytest:pytest expecttest:expecttest; do
  "$PY" -c "import ${pair%%:*}" 2>/dev/null || missing+=("${pair#*:}")
done
if ((${#missing[@]})); then
  if compgen -G ".whl/*.whl" >/dev/null; then
    echo "[install] installing ${missing[*]} from .whl/"
    pip_install --no-index --find-links .whl "${missing[@]}"
  else
    echo "[install] installing ${missing[*]}"
    pip_install "${missing[@]}"
  fi
fi

if [[ -z "${CUDA_HOME:-}" && -x /usr/local/cuda/bin/nvcc ]]; then
  export CUDA_HOME=/usr/local/cuda
fi
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
echo "[install] building xlstm_cuda (CUDA_HOME=${CUDA_HOME:-none}, MAX_JOBS=$MAX_JOBS)"
"$PY" -m pip install --disable-pip-version-check -q --no-build-isolation --no-deps -e . \
  2>&1 | grep -v "Running pip as the 'root' user" || true
"$PY" -c "import xlstm_cuda as x; print('[install] xlstm_cuda built: CUDA =', x.WITH_CUDA, \
'archs =', x.CUDA_ARCHS, 'kernel families =', x.KERNEL_FAMILIES)"
