"""GRPOConfig across TRL 0.14 -> 1.16: fields renamed, removed or added, values respelled, and a default
that stops a CPU run. One table per concern; the ``GRPOConfig.__init__`` row applies them.

- Renamed fields (``vllm_guided_decoding_regex`` -> ``vllm_structured_outputs_regex`` at 0.27,
  ``wandb_log_unique_prompts`` -> ``log_unique_prompts`` at 0.26, ``use_liger_loss`` -> ``use_liger_kernel``
  at 0.25/0.28, ``vllm_max_model_len`` (0.15-0.17) / ``vllm_max_model_length`` (0.26+)): the given name where
  the release has it, else its other spelling (reported once).
- ``max_prompt_length`` (default None and no longer read from 0.26, removed in 0.28): kept as trlshim's option
  on the config from 0.28; ``truncation.py`` truncates prompts to it as TRL 0.14-0.23 did from 0.26.
- Fields a release lacks, given with the one value that changes nothing there (``loss_type="grpo"`` on
  0.14-0.15, whose loss is that aggregation; ``vllm_mode="server"`` on 0.16-0.17; ``vllm_device="auto"`` after
  0.18, ...): dropped with a report. Any other value is a TypeError naming field, release and what to do.
- Values: ``loss_type`` spelled for the release (``dr-grpo`` -> ``dr_grpo``), a loss the release does not have
  a ValueError at construction (TRL itself only fails at the first loss computation); ``scale_rewards``
  ``"group"``/``"none"`` -> True/False before 0.22 (``"batch"``: an error); ``top_k=None`` (no filtering,
  0.18-0.26) -> ``0`` from 0.27, which spells "no filtering" so.
- ``bf16``: TRL >= 0.19 defaults it on, which raises on a CPU-only machine; trlshim passes ``bf16=False``
  there when neither ``bf16`` nor ``fp16`` is given (the SFT wing's rule, ``patches/sft/config.py``).
- transformers' own TrainingArguments renames (``common/training_args.py``), ``model_init_kwargs`` keys
  (``common/model_init_kwargs.py``), and, with ``written_for``, the declared release's defaults
  (``common/written_for.py``; plus its fixed loss and its ``max_prompt_length`` where those have no field).
"""
from __future__ import annotations

import dataclasses
from typing import Optional

from packaging.specifiers import SpecifierSet

from ... import report
from ...registry import FIELDS, FieldSpec, row
from ...translate import closest, init_fields, installed_label
from ...versions import trl_in
from ..common import written_for
from ..common.config_classes import (
    bf16_default,
    carried_options,
    carry_option,
    deep_copy,
    pickled_as_base,
    shallow_copy,
    without_unset_carried,
)
from ..common.model_init_kwargs import translate_model_init_kwargs
from ..common.training_args import translate_training_arguments

# Spellings of one GRPOConfig field across releases (any order: the given spelling wins where it exists).
RENAMES = (
    ("vllm_structured_outputs_regex", "vllm_guided_decoding_regex"),
    ("log_unique_prompts", "wandb_log_unique_prompts"),
    ("use_liger_kernel", "use_liger_loss"),  # the GRPO liger loss: use_liger_loss 0.17-0.27, use_liger_kernel 0.25+
    ("vllm_max_model_length", "vllm_max_model_len"),
)

# Options trlshim carries on the config where the release removed them (an emulating step reads them).
EMULATED = {"max_prompt_length": ">=0.28"}

# Fields a release lacks, and the values that mean what that release does anyway: (releases, value, why).
NEUTRAL = {
    "loss_type": ((">=0.14,<0.16", "grpo", "its loss averages each sequence's tokens, then the sequences"),
                  (">=0.16,<0.17", "bnpo", "its loss averages the tokens of the local batch")),
    "vllm_mode": ((">=0.16,<0.18", "server", "use_vllm connects to a `trl vllm-serve` server"),),
    "scale_rewards": ((">=0.14,<0.16", True, "it always divides advantages by the group's reward std"),
                      (">=0.14,<0.16", "group", "it always divides advantages by the group's reward std")),
    "vllm_device": ((">=0.18", "auto", "vLLM's placement is set by vllm_mode"),),
    "vllm_dtype": ((">=0.18", "auto", "vLLM uses the model's dtype"),),
    "vllm_enable_prefix_caching": ((">=0.18", True, "the vLLM server decides; pass it to `trl vllm-serve`"),),
    "use_liger_loss": ((">=0.14,<0.17", False, "the release has no Liger GRPO loss"),),
}
# Fields that only matter when vLLM is used: with use_vllm off, any value is dropped (reported).
VLLM_ONLY = ("vllm_mode", "vllm_device", "vllm_dtype", "vllm_enable_prefix_caching", "vllm_max_model_len",
             "vllm_max_model_length", "vllm_server_host", "vllm_server_port", "vllm_server_timeout",
             "vllm_server_base_url", "vllm_tensor_parallel_size", "vllm_guided_decoding_regex",
             "vllm_structured_outputs_regex")

# loss_type values per release (first matching range wins); before 0.17 the release has no option.
LOSS_TYPES = (
    (">=1.0", ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo", "vespo")),
    (">=0.26", ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo")),
    (">=0.22", ("grpo", "bnpo", "dr_grpo", "dapo")),
    (">=0.17", ("grpo", "bnpo", "dr_grpo")),
)
VLLM_MODES = ("server", "colocate")
# scale_rewards became a string at 0.22 (TRL maps True/False itself there); earlier releases take a bool.
SCALE_REWARDS_AS_BOOL = {"group": True, "none": False}


def installed_config_class():
    from trl.trainer.grpo_config import GRPOConfig

    return GRPOConfig


def _drop(owner, name, value, why):
    report.translated(f"{owner}.{name}", f"trlshim: dropped {owner}({name}={value!r}) ({installed_label()}: {why})")


def _neutral(owner, name, value, kwargs) -> bool:
    """Whether ``name=value`` (a field the release lacks) changes nothing there; reported when dropped."""
    if name in VLLM_ONLY and not kwargs.get("use_vllm"):
        _drop(owner, name, value, "use_vllm is off, so no vLLM option is read")
        return True
    for spec, neutral, why in NEUTRAL.get(name, ()):
        if trl_in(spec) and value == neutral and type(value) is type(neutral):
            _drop(owner, name, value, why)
            return True
    return False


def _absent(owner, name, value, fields, kwargs) -> None:
    """A field the installed GRPOConfig lacks in every spelling: dropped when neutral, else a TypeError."""
    if _neutral(owner, name, value, kwargs):
        return
    if name in NEUTRAL or name in VLLM_ONLY:
        raise TypeError(
            f"{owner}({name}={value!r}): {installed_label()} has no {name!r} and does something else; "
            f"{_advice(name)}"
        )
    raise TypeError(f"{owner}() got an unexpected keyword argument {name!r} ({installed_label()}){closest(name, fields)}")


def _advice(name) -> str:
    return {
        "loss_type": "its loss is fixed (0.14-0.15: per-sequence mean, 'grpo'; 0.16: token mean, 'bnpo'); "
                     "install trl>=0.17 to choose",
        "vllm_mode": "0.14-0.15 run vLLM in-process on vllm_device; 0.16-0.17 only connect to a server",
        "scale_rewards": "0.14-0.15 always scale by the group's std; install trl>=0.16 to turn it off",
        "use_liger_loss": "install trl>=0.17 for the Liger GRPO loss",
    }.get(name, "vLLM's options changed meaning at 0.16 and 0.18: see trl's vllm-serve documentation")


def _respell_values(owner, native: dict) -> None:
    """Values whose spelling the release decides (in place)."""
    if "loss_type" in native and isinstance(native["loss_type"], str):
        given = native["loss_type"]
        value = given.strip().lower().replace("-", "_")
        accepted = next((values for spec, values in LOSS_TYPES if trl_in(spec)), ())
        if value not in accepted:
            raise ValueError(f"{owner}(loss_type={given!r}): {installed_label()} has the losses "
                             f"{', '.join(map(repr, accepted))}{closest(value, accepted)}")
        if value != given:
            report.translated(f"{owner}.loss_type={given}", f"trlshim: {owner}(loss_type={given!r}) -> {value!r}")
            native["loss_type"] = value
    if "vllm_mode" in native and native["vllm_mode"] not in VLLM_MODES:
        raise ValueError(f"{owner}(vllm_mode={native['vllm_mode']!r}): {installed_label()} accepts "
                         f"{', '.join(map(repr, VLLM_MODES))}")
    if "top_k" in native and native["top_k"] is None and trl_in(">=0.27"):
        report.translated(f"{owner}.top_k=None", f"trlshim: {owner}(top_k=None) -> 0 (no top-k filtering; "
                          f"{installed_label()} spells that 0)")
        native["top_k"] = 0
    value = native.get("scale_rewards")
    if isinstance(value, str) and trl_in("<0.22"):
        if value not in SCALE_REWARDS_AS_BOOL:
            raise ValueError(f"{owner}(scale_rewards={value!r}): {installed_label()} only scales per group or not at "
                             "all (True / False); 'batch' needs trl>=0.22")
        report.translated(f"{owner}.scale_rewards={value}",
                          f"trlshim: {owner}(scale_rewards={value!r}) -> {SCALE_REWARDS_AS_BOOL[value]} "
                          f"({installed_label()} takes a bool)")
        native["scale_rewards"] = SCALE_REWARDS_AS_BOOL[value]


# The loss a release without ``loss_type`` computes, as a later release spells it (for ``written_for``).
FIXED_LOSS = ((">=0.14,<0.16", "grpo"), (">=0.16,<0.17", "bnpo"))


def _written_for(cls, kwargs: dict) -> dict:
    """``written_for`` (``common/written_for.py``): the declared release's defaults for fields left unset, plus
    what that table cannot say: the loss a release without ``loss_type`` computed, and its ``max_prompt_length``
    default where the installed release removed the field (trlshim emulates it)."""
    rel = written_for.release()
    if rel is None:
        return kwargs
    out = dict(kwargs)
    fields = init_fields(cls)
    if "loss_type" in fields and "loss_type" not in out:
        fixed = next((v for spec, v in FIXED_LOSS if SpecifierSet(spec).contains(rel)), None)
        if fixed is not None:
            report.decided("written_for.GRPOConfig.loss_type", f"trlshim: written_for={rel}: GRPOConfig.loss_type -> "
                           f"{fixed!r} (the loss TRL {rel} computes)")
            out["loss_type"] = fixed
    points = written_for.table()["classes"].get("GRPOConfig", {}).get("max_prompt_length")
    if points and "max_prompt_length" not in fields and "max_prompt_length" not in out:
        old = written_for.value_at(points, rel)
        if old not in (None, written_for.ABSENT):
            report.decided("written_for.GRPOConfig.max_prompt_length", f"trlshim: written_for={rel}: "
                           f"GRPOConfig.max_prompt_length -> {old!r} (emulated: {installed_label()} removed it)")
            out["max_prompt_length"] = old
    # 0.26-0.27 keep the field (default None, no longer read): the old default is restored there as any other,
    # and applied by trlshim (truncation.py)
    return written_for.restore_defaults("GRPOConfig", cls, out)


def translate(cls, kwargs: dict):
    """``(native kwargs for cls, trlshim-carried options)`` for a GRPOConfig construction."""
    owner = cls.__name__
    fields = init_fields(cls)
    kwargs = without_unset_carried(cls, kwargs)  # a copy's unset emulated field
    kwargs = translate_training_arguments(_written_for(cls, kwargs), owner, fields)
    native, extra = {}, {}
    for name, value in kwargs.items():
        group = next((g for g in RENAMES if name in g), (name,))
        target = name if name in fields else next((n for n in group if n in fields), None)
        if target is not None:
            if target in native and native[target] != value:
                raise TypeError(f"{owner}() got both {name!r} and {target!r} with different values; they are one "
                                f"option ({installed_label()} spells it {target!r}): pass only one")
            if target != name:
                report.translated(f"{owner}.{name}", f"trlshim: {owner}({name}=...) -> {target}= ({installed_label()})")
            native[target] = value
        elif name in EMULATED and trl_in(EMULATED[name]):
            report.translated(f"{owner}.{name}", f"trlshim: {owner}({name}=...) kept by trlshim and applied as before "
                              f"({installed_label()} removed it)")
            extra[name] = value
        else:
            _absent(owner, name, value, fields, kwargs)
    if native.get("model_init_kwargs") is not None:
        native["model_init_kwargs"] = translate_model_init_kwargs(native["model_init_kwargs"],
                                                                  f"{owner}.model_init_kwargs")
    _respell_values(owner, native)
    return bf16_default(cls, native), extra


def own_options(config) -> dict:
    """trlshim's options a config carries (``max_prompt_length`` where the release removed it): a real dataclass
    field where the ``grpo_config.emulated_fields`` row added it, else a plain attribute."""
    return carried_options(config, "_trlshim_grpo")


def set_own_option(config, name, value) -> None:
    carry_option(config, "_trlshim_grpo", name, value)



def _init_wrapper(wrapped, instance, args, kwargs):
    if instance is None or not dataclasses.is_dataclass(type(instance)):
        return wrapped(*args, **kwargs)
    native, extra = translate(type(instance), kwargs)
    result = wrapped(*args, **native)
    for name, value in extra.items():
        set_own_option(instance, name, value)
    return result


def _expects(init) -> Optional[str]:
    return None if callable(init) else "GRPOConfig.__init__ is not callable"


row(
    "grpo_config.fields", "trl.trainer.grpo_config", "GRPOConfig.__init__", ">=0.14",
    "accept every release's GRPOConfig field names and values; keep bf16 runnable where TRL >= 0.19 defaults it on",
    wrapper=_init_wrapper, expects=_expects,
)


row(
    "grpo_config.emulated_fields", "trl.trainer.grpo_config", "GRPOConfig", ">=0.28",
    "max_prompt_length (removed in 0.28, emulated) as a real field: it survives dataclasses.replace, to_dict, "
    "deepcopy, pickle",
    kind=FIELDS, factory=lambda: FieldSpec(fields=(("max_prompt_length", Optional[int], None),)),
)


# -- trlshim.GRPOConfig ---------------------------------------------------------------------------------------------
def build_config_class(base):
    """``trlshim.GRPOConfig``: a subclass of the installed GRPOConfig whose constructor translates as the row does
    (whether or not ``trlshim.patch()`` ran); pickled as ``base`` so checkpoints load without trlshim."""

    def __init__(self, *args, **kwargs):
        native, extra = translate(type(self), kwargs)
        base.__init__(self, *args, **native)
        for name, value in extra.items():
            set_own_option(self, name, value)

    cls = type("GRPOConfig", (base,), {"__init__": __init__, "__module__": "trlshim", "__reduce_ex__": pickled_as_base,
                                       "__copy__": shallow_copy, "__deepcopy__": deep_copy})
    cls.__doc__ = f"trlshim.GRPOConfig: {base.__module__}.{base.__name__} accepting every TRL release's field names."
    return cls
