"""``tokenizer=`` <-> ``processing_class=`` for TRL's other trainers.

TRL 0.12 renamed ``tokenizer`` to ``processing_class`` in every trainer (DPO, ORPO, KTO, CPO,
Reward, GRPO, PPO, ...), kept a deprecated alias in some releases and removed it later; 0.24+
moved several trainers to ``trl.experimental``. One row per (module, class) where such a
trainer has lived; rows whose module a release lacks never fire.
"""
from __future__ import annotations

from ... import report
from ...pipeline import parameters
from ...registry import row
from ...translate import check_spelling_conflicts, installed_label, rename
from .moved_trainers import native_versions

TRAINERS = (
    "ppo", "ppov2", "rloo", "bco", "online_dpo", "xpo",
    "nash_md", "gkd", "prm", "iterative_sft", "alignprop", "ddpo",
)
CLASS_NAMES = {
    "dpo": "DPOTrainer", "orpo": "ORPOTrainer", "kto": "KTOTrainer", "cpo": "CPOTrainer", "reward": "RewardTrainer",
    "grpo": "GRPOTrainer", "ppo": "PPOTrainer", "ppov2": "PPOv2Trainer", "rloo": "RLOOTrainer", "bco": "BCOTrainer",
    "online_dpo": "OnlineDPOTrainer", "xpo": "XPOTrainer", "nash_md": "NashMDTrainer", "gkd": "GKDTrainer",
    "prm": "PRMTrainer", "iterative_sft": "IterativeSFTTrainer", "alignprop": "AlignPropTrainer",
    "ddpo": "DDPOTrainer",
}


def _processing_class_alias(wrapped, instance, args, kwargs):
    params = parameters(wrapped)
    cls_name = type(instance).__name__ if instance is not None else "Trainer"
    if "tokenizer" in kwargs or "processing_class" in kwargs:
        check_spelling_conflicts(kwargs, f"{cls_name}()", params)
        kwargs = dict(kwargs)
        for name in ("tokenizer", "processing_class"):
            if name in kwargs and name not in params:
                target = rename(name, params)
                if target is not None and target not in kwargs:
                    report.translated(
                        f"{cls_name}.{name}", f"trlshim: {cls_name}({name}=...) -> {target}= ({installed_label()})"
                    )
                    kwargs[target] = kwargs.pop(name)
                elif target is not None:
                    kwargs.pop(name)  # same value under both names (checked above)
    return wrapped(*args, **kwargs)


def _expects(init):
    params = parameters(init)
    if "tokenizer" in params or "processing_class" in params or "kwargs" in params:
        return None
    return "__init__ takes neither tokenizer nor processing_class"


for _name in TRAINERS:
    for _module in (f"trl.trainer.{_name}_trainer", f"trl.experimental.{_name}.{_name}_trainer"):
        row(  # trl.trainer.<name>_trainer only where TRL has it (trlshim's legacy module there resolves to the
            # experimental class, which the other row wraps: rows on one target never stack)
            f"trainer_args.{_name}[{_module.split('.')[1]}]", _module, f"{CLASS_NAMES[_name]}.__init__",
            native_versions(_name) if _module.startswith("trl.trainer.") else ">=0.7",
            "tokenizer= and processing_class= both work on every release",
            wrapper=_processing_class_alias, expects=_expects, optional=True,
        )
