"""``SFTConfig(embedding_learning_rate=...)``: embeddings and LM head at their own learning rate.

UnslothTrainer's option, on every TRL release: after the Trainer builds its optimizer (any
optimizer, ``Trainer.create_optimizer``), the trainable ``embed_tokens``/``lm_head`` weights
(PEFT ``modules_to_save`` copies, or in full fine-tuning the model's input embedding and output
head) are moved out of their parameter groups into groups of their own with that rate and the
source group's other settings (weight decay). Tied embeddings are one parameter in one group.
A user-supplied optimizer is left alone (the option is then an error, never ignored).
"""
from __future__ import annotations

from ... import report
from ...registry import row
from . import config as sft_config
from .data import unwrap_peft

NAMES = ("embed_tokens", "lm_head")


def embedding_parameters(model) -> list:
    """Trainable embedding/head parameters of ``model``, each once, in model order."""
    special = set()
    base = unwrap_peft(model)
    for getter in ("get_input_embeddings", "get_output_embeddings"):
        try:
            module = getattr(base, getter)()
        except Exception:
            module = None
        weight = getattr(module, "weight", None)
        if weight is not None:
            special.add(id(weight))
    out, seen = [], set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        if id(p) in special or any(n in name.split(".") for n in NAMES):
            seen.add(id(p))
            out.append(p)
    return out


def regroup(optimizer, params, lr) -> int:
    """Move ``params`` into their own groups at ``lr`` (one per source group); returns how many moved."""
    wanted = {id(p) for p in params}
    moved = []
    for group in optimizer.param_groups:
        emb = [p for p in group["params"] if id(p) in wanted]
        if not emb:
            continue
        group["params"] = [p for p in group["params"] if id(p) not in wanted]
        moved.append(({k: v for k, v in group.items() if k != "params"}, emb))
    optimizer.param_groups[:] = [g for g in optimizer.param_groups if g["params"]]
    for settings, emb in moved:
        optimizer.add_param_group(dict(settings, params=emb, lr=lr))
    return sum(len(e) for _, e in moved)


def _create_optimizer(wrapped, instance, args, kwargs):
    lr = sft_config.shim_options(getattr(instance, "args", None)).get("embedding_learning_rate")
    if lr is None:
        return wrapped(*args, **kwargs)
    if getattr(instance, "optimizer", None) is not None:
        raise ValueError(
            "embedding_learning_rate needs the optimizer the trainer builds; an optimizer was passed in "
            "(optimizers=...). Put the embedding parameters in their own group yourself, or drop the option."
        )
    optimizer = wrapped(*args, **kwargs)
    target = getattr(instance, "optimizer", None) or optimizer
    model = getattr(instance, "model_wrapped", None) or instance.model
    params = embedding_parameters(instance.model if hasattr(instance.model, "named_parameters") else model)
    if not params:
        raise ValueError(
            "embedding_learning_rate is set but no trainable embed_tokens/lm_head parameter was found (with PEFT, "
            "add them to modules_to_save)"
        )
    n = regroup(getattr(target, "optimizer", target), params, float(lr))
    report.decided(
        "embedding_lr", f"trlshim: {n} embedding/lm_head parameter(s) trained at embedding_learning_rate={lr}"
    )
    return optimizer


row(
    "embedding_lr.optimizer", "transformers.trainer", "Trainer.create_optimizer", ">=0.7",
    "embedding_learning_rate: embeddings and lm_head in their own optimizer parameter group",
    wrapper=_create_optimizer,
)
