"""``ModelConfig`` (TRL's model arguments for scripts, all releases) in both spellings of its dtype field.

TRL 0.23 added ``dtype`` beside ``torch_dtype`` (deprecated, copied over in ``__post_init__``) and 0.27
removed ``torch_dtype``: an old script's ``ModelConfig(torch_dtype="bfloat16")``, ``--torch_dtype bfloat16``
or ``model_args.torch_dtype`` fails there. Releases before 0.23 lack ``dtype`` the same way for new scripts.
Where the class has one spelling only, the other is accepted by the constructor (reported), read and
written as a property of the real field, and on the command line (the shared CLI-alias row reads
``_trlshim_aliases``, which the FIELDS row sets).
"""
from __future__ import annotations

from ... import report
from ...registry import FIELDS, FieldSpec, row
from ...translate import installed_label, same_value

GROUP = ("dtype", "torch_dtype")
MODULE, CLASS = "trl.trainer.model_config", "ModelConfig"


def _init(wrapped, instance, args, kwargs):
    fields = getattr(type(instance), "__dataclass_fields__", {}) if instance is not None else {}
    real = [n for n in GROUP if n in fields and n not in getattr(type(instance), "_trlshim_injected_fields", ())]
    if len(real) == 1:
        (target,) = real
        other = next(n for n in GROUP if n != target)
        if other in kwargs:
            value = kwargs.pop(other)
            if target in kwargs and not same_value(kwargs[target], value):
                raise TypeError(f"ModelConfig got {other}={value!r} and {target}={kwargs[target]!r}: one option; "
                                f"{installed_label()} calls it {target!r}")
            kwargs.setdefault(target, value)
            report.translated(f"ModelConfig.{other}", f"trlshim: ModelConfig({other}=...) -> {target}= "
                              f"({installed_label()})")
    added = {n: kwargs.pop(n) for n in getattr(type(instance), "_trlshim_injected_fields", ()) if n in kwargs}
    result = wrapped(*args, **kwargs)
    for name, value in added.items():  # fields the release's own __init__ does not take (REMOVED_FIELDS)
        setattr(instance, name, value)
    return result


# TRL 0.8-1.5 example scripts read ``model_args.trust_remote_code`` and pass it to from_pretrained themselves;
# ModelConfig lost the field between 1.5 and 1.10 (SFTConfig got its own in 1.7). The >=0.27 row adds it back
# as a plain field (one FIELDS row per class; a class that has the field gets nothing), so
# ``--trust_remote_code`` parses and the script's own value reaches its loading call.
REMOVED_FIELDS = (("trust_remote_code", bool, False),)

for _spec, _why, _fields in ((">=0.27", "TRL 0.27 removed torch_dtype; trust_remote_code gone after 1.5", REMOVED_FIELDS),
                             ("<0.23", "dtype arrived in TRL 0.23", ())):
    row(f"model_config.dtype.init[{_spec}]", MODULE, f"{CLASS}.__init__", _spec,
        f"ModelConfig(torch_dtype=...) and ModelConfig(dtype=...) on every release ({_why})", wrapper=_init)
    row(f"model_config.dtype.alias[{_spec}]", MODULE, CLASS, _spec,
        f"model_args.torch_dtype / model_args.dtype and --torch_dtype / --dtype on every release ({_why})",
        kind=FIELDS, factory=lambda _fields=_fields: FieldSpec(fields=_fields, aliases=(GROUP,)))

