"""Ahead-of-time compilation (trlshim_kernels.compile_ahead): the plan covers every launch a training step makes,
and a kernel's first launch waits for its own precompile task instead of compiling it a second time."""
import importlib
import threading
import time

import pytest
import torch

pytest.importorskip("triton")
transformers = pytest.importorskip("transformers")
import trlshim_kernels.models as KM  # noqa: E402
from trlshim_kernels import _launch, apply_to_model, linear_logprobs  # noqa: E402
from trlshim_kernels import compile_ahead as P  # noqa: E402

SMALL = dict(hidden_size=64, intermediate_size=120, num_hidden_layers=1, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=503, max_position_embeddings=64)


def planned(handle, autocast_dtype=None):
    sigs = set()

    def summarize(kernel, grid):
        return lambda *a, **kw: sigs.add(_launch.signature(kernel, a, kw))

    for _, fn, args, kwargs in P.plan(handle, autocast_dtype):
        fn(*args, go=summarize, **kwargs)
    return sigs


def step(model, ids, labels, autocast_dtype):
    with torch.autocast("cpu", dtype=autocast_dtype, enabled=autocast_dtype is not None):
        out = model(input_ids=ids, labels=labels)
    out.loss.backward()
    h = torch.randn(ids.numel(), model.config.hidden_size, dtype=model.dtype, requires_grad=True)
    with torch.autocast("cpu", dtype=autocast_dtype, enabled=autocast_dtype is not None):
        lp, ent, _ = linear_logprobs(h, model.lm_head.weight, ids.reshape(-1))  # TRL >= 1.15's head route
    lp.sum().backward()


@pytest.mark.parametrize("model_type,dtype,autocast_dtype", [
    ("llama", torch.float32, None),
    ("llama", torch.bfloat16, None),
    ("llama", torch.float32, torch.bfloat16),  # the Trainer's bf16=True over float32 weights
    ("gemma", torch.float32, None),  # (1 + w) norms, GeGLU
])
def test_plan_covers_a_training_step(model_type, dtype, autocast_dtype, monkeypatch):
    mod = importlib.import_module(f"transformers.models.{model_type}.modeling_{model_type}")
    monkeypatch.setattr(mod, "apply_rotary_pos_emb", KM.routed_rotary(mod.apply_rotary_pos_emb))
    torch.manual_seed(0)
    cfg = transformers.AutoConfig.for_model(model_type, **SMALL)
    cfg._attn_implementation = "eager"
    model = transformers.AutoModelForCausalLM.from_config(cfg).to(dtype).train()
    handle = apply_to_model(model, rope=True)
    g = torch.Generator().manual_seed(1)
    try:
        with _launch.recording() as launched:
            for T in (17, 32):  # row counts of both divisibility classes: compiled unspecialised
                ids = torch.randint(0, 503, (2, T), generator=g)
                step(model, ids, ids.clone(), autocast_dtype)
        plan = planned(handle, autocast_dtype)
        groups = P.grouped(handle, autocast_dtype)
        n_plan = len(P.plan(handle, autocast_dtype))
    finally:
        handle.undo()
    # the compile tasks: one a kernel, each entry its own kernel's
    assert all(getattr(k, "fn", k).__name__ == e[0] for k, entries in groups.items() for e in entries)
    assert sum(map(len, groups.values())) == n_plan
    ran = set(launched)
    assert {s[0] for s in ran} == {"_rms_fwd", "_rms_bwd", "_rope_kernel", "_glu_fwd", "_glu_bwd", "_ce_rows"}
    missing = ran - plan
    assert not missing, f"launched but not in the precompile plan: {sorted(missing)}"


class FakeKernel:
    """Stands for a JITFunction: warmup() blocks until released; launches are recorded."""

    def __init__(self, fail=False):
        self.release = threading.Event()
        self.warmed, self.launched, self.fail, self.inited = [], [], fail, False

    def warmup(self, *args, grid, **kwargs):
        self.release.wait(5)
        if self.fail:
            raise RuntimeError("no compiler here")
        self.warmed.append(args)
        return self  # stands for the CompiledKernel too

    def _init_handles(self):  # Triton's first-launch work (binary loaded, launcher built): done ahead too
        self.inited = True

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.launched.append((args, time.monotonic()))


def fake_launch(kernel, x, go=_launch.launch):
    go(kernel, (1,))(x)


def test_first_launch_waits_for_its_precompile_task():
    k, other = FakeKernel(), FakeKernel()
    other.release.set()
    before = dict(P.STATS)
    setup = []
    P.start({k: [("k", fake_launch, (k, torch.float32), {})],
             other: [("other", fake_launch, (other, torch.float32), {})]}, threads=2, setup=lambda: setup.append(1))
    t = threading.Thread(target=fake_launch, args=(k, 1))
    t.start()
    t.join(0.3)
    assert t.is_alive() and k.launched == []  # still compiling: the launch waits rather than compiling again
    fake_launch(other, 2)  # another kernel's launch does not wait for this one
    assert [a for a, _ in other.launched] == [(2,)]
    released = time.monotonic()
    k.release.set()
    t.join(5)
    assert k.warmed == [(torch.float32,)] and [a for a, _ in k.launched] == [(1,)] and k.inited and setup == [1]
    assert k.launched[0][1] >= released
    assert P.STATS["compiled"] - before["compiled"] == 2 and not _launch._PENDING


def test_failed_precompile_leaves_the_launch_to_compile():
    k = FakeKernel(fail=True)
    k.release.set()
    before = P.STATS["failed"]
    P.start({k: [("k", fake_launch, (k, torch.float32), {})]}, threads=1)
    fake_launch(k, 3)
    assert [a for a, _ in k.launched] == [(3,)]
    assert P.STATS["failed"] == before + 1 and "no compiler here" in P.STATS["error"]


def test_nothing_to_precompile_on_cpu():
    model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model("llama", **SMALL))
    handle = apply_to_model(model)
    try:
        assert P.precompile(handle) is None  # the interpreter (and CPU tensors) compile nothing
    finally:
        handle.undo()
