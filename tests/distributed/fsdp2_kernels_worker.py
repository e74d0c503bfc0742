"""trlshim's kernels on an FSDP2-sharded model (``torch.distributed.fsdp.fully_shard``), run by
tests/reliability/test_fsdp.py as two gloo processes (torchrun). Not a test module.

Every rank feeds the SAME batch, so the sharded model's loss and its (averaged, then gathered)
gradients must equal one unsharded model's on that batch. Cases: the LM head inside the root unit
(how accelerate's FSDP2 wraps: decoder layers, then the root) or a unit of its own; float32 or bf16
parameters (``MixedPrecisionPolicy``); kernels routed with ``trlshim_kernels.apply_to_model`` before
sharding (as trlshim routes at trainer construction, before accelerate's ``prepare`` shards) or not.
Rank 0 writes ``<out>/cases.json``: per case the loss, the largest gradient difference from the
unsharded float32 reference, which kernels applied/skipped and what the fused head did at run time
(``handle.fallbacks``), or the error."""
from __future__ import annotations

import copy
import json
import os
import sys
import traceback

import torch
import torch.distributed as dist


def _model():
    from trlshim import tiny

    return tiny.make_model(vocab_size=96, seed=0, hidden=32, layers=2)


def _batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(4, 96, (4, 16), generator=g)
    return ids


def _grads(model):
    out = {}
    for name, p in model.named_parameters():
        g = p.grad
        if g is None:
            continue
        if hasattr(g, "full_tensor"):
            g = g.full_tensor()
        out[name.replace("_fsdp_wrapped_module.", "")] = g.detach().float()
    return out


def _case(base, ids, *, head_unit: bool, bf16: bool, kernels: bool, route_after: bool = False):
    import trlshim_kernels
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    model = copy.deepcopy(base)
    model.train()
    handle = trlshim_kernels.apply_to_model(model, rope=False) if kernels and not route_after else None
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else MixedPrecisionPolicy()
    for layer in model.model.layers:
        fully_shard(layer, mp_policy=mp)
    if head_unit:
        fully_shard(model.lm_head, mp_policy=mp)
    fully_shard(model, mp_policy=mp)
    if route_after:  # routed on an already sharded model: the head's weight is a DTensor now
        handle = trlshim_kernels.apply_to_model(model, rope=False)
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    rec = {"loss": loss.item(), "grads": _grads(model)}
    if handle is not None:
        rec.update(applied=dict(handle.applied), skipped=dict(handle.skipped), fallbacks=dict(handle.fallbacks),
                   fused_ran=handle.last_stats is not None)
        handle.undo()
    return rec


def main(out_dir: str) -> None:
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    base = _model()
    ids = _batch()
    ref_model = copy.deepcopy(base)
    ref_loss = ref_model(input_ids=ids, labels=ids).loss
    ref_loss.backward()
    ref = {n: p.grad.detach().float() for n, p in ref_model.named_parameters()}
    cases = {}
    for head_unit in (False, True):
        for bf16 in (False, True):
            for kernels in (False, True):
                key = f"head_unit={head_unit},bf16={bf16},kernels={kernels}"
                try:
                    rec = _case(base, ids, head_unit=head_unit, bf16=bf16, kernels=kernels)
                    grads = rec.pop("grads")
                    assert set(grads) == set(ref), sorted(set(grads) ^ set(ref))
                    rec["grad_max_diff"] = max((grads[n] - ref[n]).abs().max().item() for n in ref)
                    rec["grad_max"] = max(ref[n].abs().max().item() for n in ref)
                except Exception as e:  # recorded: the test says which case failed and how
                    rec = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-2000:]}
                cases[key] = rec
    try:
        rec = _case(base, ids, head_unit=False, bf16=False, kernels=True, route_after=True)
        grads = rec.pop("grads")
        rec["grad_max_diff"] = max((grads[n] - ref[n]).abs().max().item() for n in ref)
    except Exception as e:
        rec = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-2000:]}
    cases["routed_after_sharding"] = rec
    if dist.get_rank() == 0:
        with open(os.path.join(out_dir, "cases.json"), "w") as f:
            json.dump({"ref_loss": ref_loss.item(), "cases": cases}, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # gloo's threads can abort a process in the interpreter's teardown
