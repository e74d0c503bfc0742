"""trlshim_kernels: Triton kernels (with torch fallbacks) for causal-LM fine-tuning.

Public API:
  rms_norm(x, weight, eps=1e-6, offset=0.0)
  apply_rotary(q, k, cos, sin, unsqueeze_dim=1)
  swiglu(gate, up), geglu(gate, up)
  fused_linear_cross_entropy(hidden, weight, labels, bias=None, *, ignore_index=-100, reduction="mean",
                             num_items_in_batch=None, softcap=None, chunk_size=None, return_stats=False)
  apply_to_model(model, *, rms_norm=True, rope=False, swiglu=True, fused_linear_cross_entropy=True) -> KernelHandle
  last_stats(model) -> CEStats | None ; supported_model_types() ; HAS_TRITON
This package never imports trl or trlshim. Triton is optional: without it (or on CPU without
TRITON_INTERPRET=1) every function runs its plain-torch reference.
"""
from ._common import HAS_TRITON
from .cross_entropy import fused_linear_cross_entropy
from .models import KernelHandle, apply_to_model, last_stats, supported_model_types
from .reference import CEStats
from .rms_norm import rms_norm
from .rope import apply_rotary
from .swiglu import geglu, swiglu

__all__ = [
    "HAS_TRITON", "CEStats", "KernelHandle", "apply_rotary", "apply_to_model", "fused_linear_cross_entropy",
    "geglu", "last_stats", "rms_norm", "supported_model_types", "swiglu",
]
