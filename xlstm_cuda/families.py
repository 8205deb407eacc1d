"""Which CUDA kernel families a GPU can run (SPEC §6), for the bench and scripts.

The C++ dispatcher (csrc/mlstm_dispatch.cpp) makes the same decision for each call;
this is the Python view of it for code that enumerates families.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch

from ._build_info import KERNEL_FAMILIES

# Input dtypes each family's kernels take (sm75: Turing has no bf16 MMA).
FAMILY_DTYPES = {
    "sm75": (torch.float16,),
    "sm80": (torch.float16, torch.bfloat16),
    "sm90": (torch.float16, torch.bfloat16),
}


def family_runs_on(family: str, capability: Tuple[int, int]) -> bool:
    """sm90 is sm_90a code, which only 9.0 runs; sm75/sm80 code is built for every
    later arch too."""
    if family == "sm90":
        return capability == (9, 0)
    if family == "sm80":
        return capability >= (8, 0)
    if family == "sm75":
        return capability >= (7, 5)
    raise ValueError(f"unknown kernel family {family!r}")


def runnable_families(device: Optional[torch.device] = None) -> List[str]:
    """The families of this build the (current) GPU can run; [] without a GPU."""
    if not torch.cuda.is_available():
        return []
    capability = torch.cuda.get_device_capability(device)
    return [fam for fam in KERNEL_FAMILIES if family_runs_on(fam, capability)]
