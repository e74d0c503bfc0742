"""``eval_strategy`` (``evaluation_strategy``) other than ``"no"`` with no ``eval_dataset``, on transformers >= 4.46.

transformers 4.36-4.45 built such a trainer; training ran, and only an evaluation step that actually came raised
"Trainer: evaluation requires an eval_dataset." (never, when ``eval_steps`` - by default ``logging_steps``, 500 -
lay beyond ``max_steps``: the usual case in short scripts). 4.46 refuses it in ``Trainer.__init__``. With the old
meaning: TRL's ``__init__`` sees ``eval_strategy="no"`` on trlshim's copy of the config, and the trainer's
``args`` get the script's strategy back right after, so the first evaluation step raises as before (its error
comes from transformers' own ``get_eval_dataloader``, unchanged since 4.36). transformers 5.x also evaluates at
the last step when it is not an evaluation step; without an evaluation dataset that would raise where the old
releases finished, so a callback takes that end-of-training evaluation back (only that one). Reported once.
"""
from __future__ import annotations

from packaging.version import Version

from ... import report
from ...versions import release, transformers_version
from .callbacks import Callback

REFUSED_FROM = Version("4.46")
FIELDS = ("eval_strategy", "evaluation_strategy")


def _strategy(cfg):
    for name in FIELDS:
        value = getattr(cfg, name, None)
        if value is not None:
            return name, value
    return None, None


def _is_no(value) -> bool:
    return str(getattr(value, "value", value)).lower() == "no"


def defer_error(call) -> None:
    """Step: an evaluation strategy without an evaluation dataset fails at the first evaluation, not at build."""
    installed = transformers_version()
    cfg = call.args
    if installed is None or release(installed) < REFUSED_FROM or cfg is None or call.kwargs.get("eval_dataset") is not None:
        return
    name, value = _strategy(cfg)
    if name is None or _is_no(value):
        return
    setattr(call.writable_config(), name, "no")

    def give_back(call):
        trainer = call.instance
        args = getattr(trainer, "args", None)
        if args is not None:
            object.__setattr__(args, name, value)
            trainer.add_callback(NoEvaluationAtTheEnd(trainer))

    call.after(give_back)
    report.decided("eval_without_dataset", f"trlshim: {name}={getattr(value, 'value', value)!r} without an "
                   f"eval_dataset: training runs and the first evaluation step raises, as transformers < 4.46 did "
                   f"(transformers {installed} refuses it when the trainer is built)")


class NoEvaluationAtTheEnd(Callback):
    """A TrainerCallback (duck-typed) after transformers' own flow callback: the evaluation transformers 5.x adds
    at the last step (not an ``eval_steps`` multiple) is dropped while the trainer has no evaluation dataset."""

    def __init__(self, trainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        steps = getattr(state, "eval_steps", None)
        if (getattr(self.trainer, "eval_dataset", None) is None and steps and state.global_step >= state.max_steps
                and state.global_step % steps != 0):
            control.should_evaluate = False
        return control
