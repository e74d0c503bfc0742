"""What ``per_device_train_batch_size`` counts in GRPO, for a script that declares the release it was written for.

TRL 0.14 counted **prompts**: each of the ``per_device_*_batch_size`` prompts a step draws is generated
``num_generations`` times (``0.14.0:trl/trainer/grpo_trainer.py:L417``, ``repeat_interleave``), with no constraint
on ``num_generations``. From 0.15 the batch size counts **completions**: ``RepeatRandomSampler`` repeats each
prompt ``num_generations`` times inside the batch, and the global batch (``per_device x processes``) must be
divisible by ``num_generations`` (``0.15.0:trl/trainer/grpo_trainer.py:L343-L360``). The same number thus means
``num_generations`` times fewer prompts per step on 0.15+.

Nothing in a config says which meaning its author had, so trlshim only translates when the script declares it
(``written_for``, ``common/written_for.py``): written for 0.14 on TRL >= 0.15, the batch sizes are multiplied by
``num_generations`` (same prompts per step; always divisible); written for >= 0.15 on TRL 0.14, divided by it
(a TypeError when it does not divide: 0.14 cannot draw a fraction of a prompt). Done on the trainer's copy of the
config, so the user's config (and copies of it) keep the number the script wrote. Without ``written_for`` the
installed release's meaning applies, as TRL's own.
"""
from __future__ import annotations

from typing import Optional

from packaging.version import Version

from ... import report
from ...translate import installed_label
from ...versions import trl_in
from ..common import written_for

FIELDS = ("per_device_train_batch_size", "per_device_eval_batch_size")
COUNTS_COMPLETIONS = "0.15"  # the first release whose batch size counts completions


def _declared() -> Optional[bool]:
    """Whether the declared release counts completions (None: nothing declared, or a release without GRPO)."""
    rel = written_for.release()
    if rel is None or Version(rel) < Version("0.14"):
        return None
    return Version(rel) >= Version(COUNTS_COMPLETIONS)


def translate(call) -> None:
    """Step: the batch sizes in the installed release's unit (see module docstring)."""
    declared = _declared()
    installed = trl_in(f">={COUNTS_COMPLETIONS}")
    if declared is None or declared == installed or call.args is None:
        return
    generations = getattr(call.args, "num_generations", None)
    if not isinstance(generations, int) or generations < 1:
        return
    rel = written_for.release()
    changes = {}
    for name in FIELDS:
        if name == "per_device_eval_batch_size" and call.kwargs.get("eval_dataset") is None:
            continue  # no evaluation: the number is never used
        value = getattr(call.args, name, None)
        if not isinstance(value, int):
            continue
        if installed:  # written for 0.14: prompts -> completions
            changes[name] = value * generations
        elif value % generations:
            raise TypeError(f"GRPOConfig({name}={value}): written for TRL {rel}, where it counts completions, but "
                            f"{installed_label()} counts prompts (each generated num_generations={generations} times) "
                            f"and {value} is not a multiple of {generations}; pass a multiple of num_generations")
        else:
            changes[name] = value // generations
    if not changes:
        return
    cfg = call.writable_config()
    for name, value in changes.items():
        old = getattr(cfg, name)
        setattr(cfg, name, value)
        unit = "prompts" if installed else "completions"
        report.decided(f"grpo.batch.{name}", f"trlshim: written_for={rel}: GRPOConfig.{name}={old} ({unit} in TRL "
                       f"{rel}) -> {value} on {installed_label()} (num_generations={generations}): the same prompts "
                       "per step")
