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
export PIP_ROOT_USER_ACTION=ignore
pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }

if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "[install] installing ${TORCH_SPEC:-torch==2.14.1}"
  pip_install "${TORCH_SPEC:-torch==2.14.1}"
fi

# Installs each missing module's requirement, from .whl/ when wheels were carried
# there (offline machines), else from the package index. $1: extra pip flags.
install_missing() {
  local flags=$1; shift
  local missing=() pair
  for pair in "$@"; do
    "$PY" -c "import ${pair%%:*}" 2>/dev/null || missing+=("${pair#*:}")
  done
  ((${#missing[@]})) || return 0
  echo "[install] installing ${missing[*]}"
  if compgen -G ".whl/*.whl" >/dev/null; then
    pip_install $flags --no-index --find-links .whl "${missing[@]}"
  else
    pip_install $flags "${missing[@]}"
  fi
}
install_missing "" ninja:ninja pybind11:pybind11 pytest:pytest expecttest:expecttest
# nvidia-cutlass is only a source of CUTLASS/CuTe headers here: its Python
# dependencies (cuda-python, ...) are not needed.
install_missing "--no-deps" cutlass_library:nvidia-cutlass==4.2.0.0

if [[ -z "${CUDA_HOME:-}" && -x /usr/local/cuda/bin/nvcc ]]; then
  export CUDA_HOME=/usr/local/cuda
fi
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
echo "[install] building xlstm_cuda (CUDA_HOME=${CUDA_HOME:-none}, MAX_JOBS=$MAX_JOBS)"
pip_install --no-build-isolation --no-deps -e .
"$PY" -c "import xlstm_cuda as x; print('[install] xlstm_cuda built: CUDA =', x.WITH_CUDA, \
'archs =', x.CUDA_ARCHS, 'kernel families =', x.KERNEL_FAMILIES)"
