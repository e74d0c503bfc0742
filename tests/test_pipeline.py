"""The trainer-agnostic pipeline (trlshim/pipeline.py), on a stand-in trainer: no TRL needed."""
from __future__ import annotations

import dataclasses
import os

import pytest
from packaging.version import Version

from trlshim import pipeline as P


@dataclasses.dataclass
class Config:
    output_dir: str = "x"
    packing: bool = False


class Trainer:
    def __init__(self, model=None, args=None, train_dataset=None, processing_class=None, *, extra=None):
        self.got = dict(model=model, args=args, train_dataset=train_dataset, processing_class=processing_class,
                        extra=extra)


def make(steps, **kw):
    return P.Pipeline(name="t.pipeline", trainer="Trainer", module="m", attribute="Trainer.__init__", reason="r",
                      steps=tuple(steps), config_class=lambda: Config,
                      positional=("model", "args", "train_dataset", "processing_class"),
                      new_config=lambda call: Config(output_dir="made"), **kw)


@pytest.fixture(autouse=True)
def _release(monkeypatch):
    monkeypatch.setenv("TRLSHIM_TRL_VERSION", "0.20.0")


def build(pl, *args, **kwargs):
    t = Trainer.__new__(Trainer)
    pl.run(Trainer.__init__.__get__(t), t, args, kwargs)
    return t


def test_steps_run_in_list_order_and_after_work_unwinds():
    seen = []
    steps = [P.step(n, ">=0.7", n, lambda call, n=n: (seen.append(n), call.after(lambda c, n=n: seen.append("after " + n))))
             for n in ("a", "b", "c")]
    build(make(steps))
    assert seen == ["a", "b", "c", "after c", "after b", "after a"]


def test_step_ranges_select():
    seen = []
    steps = [P.step("old", "<0.19", "", lambda call: seen.append("old")),
             P.step("new", ">=0.19", "", lambda call: seen.append("new"))]
    build(make(steps))
    assert seen == ["new"]


def test_positionals_bound_by_name_even_without_any_translation_step():
    cfg, tok = Config(), object()
    t = build(make([]), "m", cfg, "data", tok, extra=1)
    assert t.got == dict(model="m", args=cfg, train_dataset="data", processing_class=tok, extra=1)
    with pytest.raises(TypeError, match="at most 4 positional"):
        build(make([]), "m", cfg, "data", tok, "fifth")
    with pytest.raises(TypeError, match="multiple values"):
        build(make([]), "m", model="again")


def test_config_copied_once_and_callers_object_untouched():
    cfg = Config()
    copies = []

    def first(call):
        call.writable_config().packing = True
        copies.append(call.args)

    def second(call):
        call.writable_config().output_dir = "y"
        copies.append(call.args)

    t = build(make([P.step("a", ">=0.7", "", first), P.step("b", ">=0.7", "", second)]), args=cfg)
    assert copies[0] is copies[1] is t.got["args"] and t.got["args"] is not cfg
    assert (cfg.packing, cfg.output_dir) == (False, "x") and (t.got["args"].packing, t.got["args"].output_dir) == (True, "y")
    t = build(make([P.step("a", ">=0.7", "", first)]))  # no args: the config TRL would build
    assert t.got["args"].output_dir == "made" and t.got["args"].packing is True


def test_one_failing_shape_check_skips_the_whole_pipeline():
    steps = [P.step("a", ">=0.7", "", lambda call: None),
             P.step("b", ">=0.7", "", lambda call: None, expects=lambda init: "no such parameter")]
    why = make(steps).shape_problem(Trainer.__init__)
    assert "no such parameter" in why and "step b" in why and "whole Trainer pipeline" in why
    assert make(steps[:1]).shape_problem(Trainer.__init__) is None
    old_only = [P.step("b", "<0.19", "", lambda call: None, expects=lambda init: "changed")]
    assert make(old_only).shape_problem(Trainer.__init__) is None  # unselected steps are not checked


def test_facts_first_matching_row_wins():
    facts = (P.fact("x", ">=1.0", "new"), P.fact("x", ">=0.15", "mid"), P.fact("x", "<0.15", "old"))
    assert [P.lookup(facts, "x", trl=Version(v)) for v in ("0.8.6", "0.20.0", "1.16.0")] == ["old", "mid", "new"]
    assert P.lookup(facts, "y", "default") == "default" and os.environ["TRLSHIM_TRL_VERSION"] == "0.20.0"
    assert P.lookup(facts, "x") == "mid"


def test_nested_run_for_the_same_instance_passes_through():
    """trlshim.SFTTrainer over a patched class: the inner pipeline must not run the steps again."""
    runs = []
    pl = make([P.step("count", ">=0.7", "", lambda call: runs.append(1))])
    t = Trainer.__new__(Trainer)
    inner = Trainer.__init__.__get__(t)
    outer = lambda *a, **k: pl.run(inner, t, a, k)  # noqa: E731  (the patched __init__)
    pl.run(outer, t, (), {"model": "m"})
    assert runs == [1] and t.got["model"] == "m"
