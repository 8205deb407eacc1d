"""xlstm_cuda: exact, fast xLSTM (mLSTM) kernels for PyTorch.

Importing the package loads the compiled extension, which registers the op family
``torch.ops.xlstm.*``, and attaches fake (meta) and autograd implementations.
"""
import torch  # noqa: F401  (loads libtorch before the extension)

from . import _C  # noqa: F401  (registers torch.ops.xlstm.*)
from . import ops  # noqa: F401  (fake + autograd registration)
from ._build_info import CUDA_ARCHS, KERNEL_FAMILIES, WITH_CUDA
from .mlstm import ALGORITHMS, BACKENDS, mlstm, selected_backward_kernel, selected_kernel
from .reference import mlstm_parallel_reference, mlstm_recurrent_reference

__all__ = [
    "mlstm",
    "selected_kernel",
    "selected_backward_kernel",
    "mlstm_parallel_reference",
    "mlstm_recurrent_reference",
    "ALGORITHMS",
    "BACKENDS",
    "WITH_CUDA",
    "CUDA_ARCHS",
    "KERNEL_FAMILIES",
]
__version__ = "0.1.0"
