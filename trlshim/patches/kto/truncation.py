"""KTO ``max_prompt_length`` / ``truncation_mode`` (removed in TRL 0.27) with their old meaning on TRL 0.27-1.7.

TRL 0.8-0.26 ``_process_tokens`` (``0.26.2:trl/experimental/kto/kto_trainer.py:L156-L217``): with ``max_length``
less one for each BOS/EOS still to be added, when prompt + completion exceed it the prompt is cut to
``max_prompt_length`` tokens (its LAST with ``truncation_mode="keep_end"``, the default; its first with
``"keep_start"``), then, if still too long, the completion to ``max_length - max_prompt_length``. 0.27 removed both
options and only cuts the completion. 0.27-1.7 keep the same pipeline (``_tokenize`` -> ``_process_tokens`` for the
rows, then again with prefix ``KL_`` for the mismatched pairs), so the old rule is put in front of the module's
``_process_tokens`` (a row): it cuts the raw ids the way 0.26 did before the release's own code runs (which then
finds nothing to cut). The options travel to it on the trainer's own shallow copy of the tokenizer (``fn_kwargs``
carries it, so ``datasets``' cache fingerprint and ``num_proc`` workers see them); the user's tokenizer is untouched.

``max_completion_length`` only ever applied to encoder-decoder models (which 0.27+ KTO does not support): dropped
with a report. TRL >= 1.8 (KTO rewritten) is not emulated: a TypeError (see ``REMOVED`` in ``__init__``).
"""
from __future__ import annotations

import copy
from typing import Optional

from ... import report
from ...translate import installed_label
from ..common.preference import own_options

MARK = "_trlshim_kto_truncation"
MODES = ("keep_end", "keep_start")


def old_rule(example, max_length: int, bos, eos, limit: int, keep_end: bool) -> dict:
    """The raw ids of one example cut as TRL 0.26's ``_process_tokens`` did (before BOS/EOS are added)."""
    p, pm = list(example["prompt_input_ids"]), list(example["prompt_attention_mask"])
    a, am = list(example["answer_input_ids"]), list(example["answer_attention_mask"])
    if p and bos != p[0]:
        max_length -= 1
    if a and eos != a[-1]:
        max_length -= 1
    if len(p) + len(a) > max_length:
        p, pm = (p[-limit:], pm[-limit:]) if keep_end else (p[:limit], pm[:limit])
    if len(p) + len(a) > max_length:
        a, am = a[: max_length - limit], am[: max_length - limit]
    return dict(example, prompt_input_ids=p, prompt_attention_mask=pm, answer_input_ids=a, answer_attention_mask=am)


def process_tokens_wrapper(wrapped, instance, args, kwargs):
    """Row wrapper of ``kto_trainer._process_tokens(example, model=None, **kwargs)``."""
    tokenizer = kwargs.get("tokenizer")
    plan = getattr(tokenizer, MARK, None) if tokenizer is not None else None
    if plan is None or kwargs.get("max_length") is None:
        return wrapped(*args, **kwargs)
    args = list(args)
    if args:
        args[0] = old_rule(args[0], kwargs["max_length"], tokenizer.bos_token_id, tokenizer.eos_token_id, *plan)
    else:
        kwargs["example"] = old_rule(kwargs["example"], kwargs["max_length"], tokenizer.bos_token_id,
                                     tokenizer.eos_token_id, *plan)
    return wrapped(*args, **kwargs)


def emulate(call) -> None:
    """Step (TRL 0.27-1.7): the options kept on the config -> the trainer's tokenizer copy carries them."""
    options = own_options(call.args)
    if options.get("max_completion_length") is not None:
        report.decided("KTOTrainer.max_completion_length", "trlshim: KTOTrainer: max_completion_length dropped "
                       "(TRL <= 0.26 applied it to encoder-decoder models only, which "
                       f"{installed_label()} does not support)")
    limit = options.get("max_prompt_length")
    mode = options.get("truncation_mode") or "keep_end"
    if limit is None:
        if mode != "keep_end":
            report.decided("KTOTrainer.truncation_mode", f"trlshim: KTOTrainer: truncation_mode={mode!r} has no "
                           f"effect without max_prompt_length ({installed_label()} never truncates the prompt)")
        return
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise TypeError(f"KTOTrainer: max_prompt_length={limit!r} must be a positive int or None")
    if mode not in MODES:
        raise ValueError(f"KTOTrainer: unknown truncation_mode {mode!r} (one of {', '.join(MODES)})")
    tokenizer = call.kwargs.get("processing_class")
    if tokenizer is None:
        raise TypeError(f"KTOTrainer(max_prompt_length=...) on {installed_label()}: pass processing_class= (the "
                        "tokenizer) so trlshim can truncate prompts as TRL <= 0.26 did")
    carrier = copy.copy(tokenizer)
    setattr(carrier, MARK, (limit, mode == "keep_end"))
    call.kwargs["processing_class"] = carrier
    report.decided("KTOTrainer.max_prompt_length", f"trlshim: KTOTrainer: prompts cut to max_prompt_length={limit} "
                   f"({mode}) and completions to max_length - max_prompt_length when too long, as TRL <= 0.26 did "
                   f"({installed_label()} removed max_prompt_length)")

    def done(c):
        pc = getattr(c.instance, "processing_class", None)
        if pc is not None:
            vars(pc).pop(MARK, None)

    call.after(done)


def expects_process_tokens(func) -> Optional[str]:
    return None if callable(func) else "kto_trainer._process_tokens is not callable"
