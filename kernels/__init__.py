"""trlshim_kernels: Triton kernels (with torch fallbacks) for causal-LM fine-tuning.

Public API:
  rms_norm(x, weight, eps=1e-6, offset=0.0)
  apply_rotary(q, k, cos, sin, unsqueeze_dim=1)
  swiglu(gate, up), geglu(gate, up), glu_mlp(x, gate_weight, up_weight, down_weight, gelu=False)
  lora_linear(x, weight, bias, a, b, scaling) ; lora_glu_mlp(x, (wg, wu, wd), ((A, B, s) x3), gelu=False):
      LoRA projections / a LoRA gated MLP as one autograd node each
  fused_linear_cross_entropy(hidden, weight, labels, bias=None, *, ignore_index=-100, reduction="mean",
                             num_items_in_batch=None, softcap=None, chunk_size=None, return_stats=False)
  apply_to_model(model, *, rms_norm=True, rope=False, swiglu=True, fused_linear_cross_entropy=True) -> KernelHandle
      (handle.undo() restores every replaced attribute; handle.applied / handle.skipped say what was done,
      handle.fallbacks which calls went to the model's own code at run time and why;
      rope=True runs each attention forward inside rope_scope())
  route_rotary(orig, args, kwargs) / routed_rotary(orig): HF apply_rotary_pos_emb router - our kernel
      inside rope_scope() for shapes it handles, else orig unchanged ; rope_scope() ; rope_active()
  interpreting() -> bool (kernels on CPU through Triton's interpreter) ; handle.replace(obj, name, value)
      (an instance attribute changed under the handle's undo)
  head_refusal(lm_head) / weight_refusal(weight) -> str | None: why the fused head cannot read it
      (a DTensor/FSDP2 shard, a ZeRO-3 partition, a quantized weight, not a plain Linear)
  offload_checkpoints(model, keep_tail=False) -> undo ; offloaded_checkpoint_function(inner=None) ;
      offload_refusal(model) ; offloaded_calls(model) ; kept_calls(model): checkpointed layer inputs kept in pinned
      host memory, copied on a side stream; keep_tail=True (opt-in): the last layers skip the recompute while their
      activations fit in the gradients not yet allocated
  linear_logprobs(hidden, weight, targets, bias=None, *, softcap=None, chunk_size=None) -> (log_probs, entropy,
      is_top1): per-token log p(target) of an LM head, gradients made in the forward for a uniform upstream
      gradient (checked in the backward; anything else is recomputed exactly)
  precompile(handle, *, autocast_dtype=None) -> (variants, threads) | None: compile in background threads the
      kernels a routed model (on CUDA) will launch; a kernel's first launch waits for its own task
  last_stats(model) -> CEStats | None  (n_correct, entropy_sum, n_tokens of the last fused-CE forward;
      also on output.kernel_stats and handle.last_stats) ; supported_model_types() ; unwrap_model(model)
This package never imports trl or trlshim. Triton is optional: without it (or on CPU without
TRITON_INTERPRET=1) every function runs its plain-torch reference.
"""
from ._common import HAS_TRITON, interpreting
from .compile_ahead import precompile
from .cross_entropy import fused_linear_cross_entropy
from .logprobs import linear_logprobs
from .lora import lora_glu_mlp, lora_linear
from .models import (
    KernelHandle,
    apply_to_model,
    head_refusal,
    last_stats,
    rope_active,
    rope_scope,
    route_rotary,
    routed_rotary,
    supported_model_types,
    unwrap_model,
    weight_refusal,
)
from .offload import (
    kept_calls,
    offload_checkpoints,
    offload_refusal,
    offloaded_calls,
    offloaded_checkpoint_function,
)
from .reference import CEStats
from .rms_norm import rms_norm
from .rope import apply_rotary, rotary_supported
from .swiglu import geglu, glu_mlp, swiglu

__all__ = [
    "HAS_TRITON", "CEStats", "KernelHandle", "apply_rotary", "apply_to_model", "fused_linear_cross_entropy",
    "geglu", "glu_mlp", "head_refusal", "interpreting", "kept_calls", "last_stats", "linear_logprobs", "lora_glu_mlp", "lora_linear",
    "offload_checkpoints", "offload_refusal", "offloaded_calls", "offloaded_checkpoint_function", "precompile", "rms_norm",
    "rope_active", "rope_scope", "rotary_supported", "route_rotary", "routed_rotary", "supported_model_types",
    "swiglu", "unwrap_model", "weight_refusal",
]
