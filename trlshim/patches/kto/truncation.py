"""KTO ``max_prompt_length`` / ``truncation_mode`` (removed in TRL 0.27) with their old meaning on TRL >= 0.27.

TRL 0.8-0.26 ``_process_tokens`` (``0.26.2:trl/experimental/kto/kto_trainer.py:L156-L217``): with ``max_length``
less one for each BOS/EOS still to be added, when prompt + completion exceed it the prompt is cut to
``max_prompt_length`` tokens (its LAST with ``truncation_mode="keep_end"``, the default; its first with
``"keep_start"``), then, if still too long, the completion to ``max_length - max_prompt_length``. 0.27 removed both
options and only cuts the completion. 0.27-1.2 keep the same pipeline (``_tokenize`` -> ``_process_tokens`` for the
rows, then again with prefix ``KL_`` on the processed rows' prompts and the rotated raw completions, for the
mismatched pairs), so the old rule is put in front of the module's ``_process_tokens`` (a row): it cuts the raw ids
the way 0.26 did before the release's own code runs (which then finds nothing to cut - except in a keep_end KL row
0.26's BOS bookkeeping left at ``max_length + 1`` tokens, which it caps at ``max_length``: reported). The options
travel to it on the trainer's own shallow copy of the tokenizer (``fn_kwargs`` carries it, so ``datasets``' cache
fingerprint and ``num_proc`` workers see them); the user's tokenizer is untouched.

TRL >= 1.3 (KTO rewritten in ``trl.experimental`` at 1.3, promoted to ``trl.trainer`` at 1.8: ``_prepare_dataset``
tokenizes ``prompt_ids`` / ``completion_ids``, the completion already ending with EOS, and the collator keeps the
first ``max_length`` tokens): the prepared datasets are cut by the same rule on those ids - prompt + completion over
``max_length``: the prompt keeps its last (``keep_end``) or first ``max_prompt_length`` tokens (a leading BOS kept in
front), then the completion its first ``max_length - max_prompt_length`` tokens (less the BOS), its EOS kept last as
the old release re-added it. Whether there is a BOS is the release's tokenization's choice (0.26 always added one).
The mismatched KL pairs: 0.12-0.26 built each from the row's prompt as fed (cut, with BOS) and another row's raw
completion (the rotation TRL >= 1.3 still does; 0.8-0.10 paired the raw prompt), and cut that pair again by the rule -
so a KL prompt is cut where the other completion is long even when its row's was not. trlshim does the same on 1.3+'s
ids and keeps the KL prompt in a ``KL_prompt_ids`` column; the trainer's collator (``KLPrompts``) builds the KL
sequences from it (TRL's collator uses the row's ``prompt_ids`` for both). 0.26's BOS bookkeeping made its KL rows one
token off the rule (keep_end: up to ``max_length + 1`` tokens, which 1.3+'s collator caps at ``max_length``;
keep_start: the BOS counted in ``max_prompt_length``): not reproduced, reported once. The release's "prompt fills
max_length" filter runs after the cut, as it would. Image data (1.8+: tokenized in the collator) is a TypeError.

``max_completion_length`` only ever applied to encoder-decoder models (which 0.27+ KTO does not support): dropped
with a report.
"""
from __future__ import annotations

import copy
from typing import Callable, Optional

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


def _plan(call) -> Optional[tuple]:
    """``(limit, keep_end)`` from the options kept on the config, checked; None when there is nothing to cut."""
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
    report.decided("KTOTrainer.max_prompt_length", f"trlshim: KTOTrainer: prompts cut to max_prompt_length={limit} "
                   f"({mode}) and completions to max_length - max_prompt_length when too long, as TRL <= 0.26 did "
                   f"({installed_label()} removed max_prompt_length)")
    return limit, mode == "keep_end"


def emulate(call) -> None:
    """Step (TRL 0.27-1.2): the options kept on the config -> the trainer's tokenizer copy carries them."""
    plan = _plan(call)
    if plan is None:
        return
    call.require("max_prompt_length", "kto.process_tokens")  # the row does the cut: never a silent no-op
    tokenizer = call.kwargs.get("processing_class")
    if tokenizer is None:
        raise TypeError(f"KTOTrainer(max_prompt_length=...) on {installed_label()}: pass processing_class= (the "
                        "tokenizer) so trlshim can truncate prompts as TRL <= 0.26 did")
    if plan[1] and call.get("loss_type", "kto") != "apo_zero_unpaired":  # the KL term's rows
        report.decided("KTOTrainer.max_prompt_length.KL", "trlshim: KTOTrainer: KL pairs cut as TRL <= 0.26 did, except "
                       "a keep_end KL row 0.26 fed with max_length + 1 tokens (its BOS bookkeeping): "
                       f"{installed_label()}'s own completion cut, after trlshim's, caps it at max_length")
    carrier = copy.copy(tokenizer)
    setattr(carrier, MARK, plan)
    call.kwargs["processing_class"] = carrier

    def done(c):
        pc = getattr(c.instance, "processing_class", None)
        if pc is not None:
            vars(pc).pop(MARK, None)

    call.after(done)


def _cut(ids: list, n: int, eos) -> list:
    """The first ``n`` of ``ids``, a final EOS kept last (the old release cut the text, then added EOS)."""
    if len(ids) <= n:
        return ids
    if ids and ids[-1] == eos and eos is not None:
        return ids[: max(n - 1, 0)] + [eos]
    return ids[: max(n, 0)]


def _pair(p: list, a: list, max_length: int, limit: int, keep_end: bool, bos, eos) -> tuple:
    """One (prompt, completion) pair of TRL >= 1.3 ids cut by the old rule (module docstring)."""
    head = p[:1] if p and bos is not None and p[0] == bos else []
    if len(p) + len(a) > max_length:
        body = p[len(head):]
        p = head + (body[-limit:] if keep_end else body[:limit])
    if len(p) + len(a) > max_length:
        a = _cut(a, max_length - limit - len(head), eos)
    return p, a


def stable_rule(example, max_length: int, limit: int, keep_end: bool, bos, eos) -> dict:
    """One prepared row of TRL >= 1.3 cut by the old rule (module docstring): a leading BOS stays in front of the
    prompt's kept tokens and the completion keeps ``max_length - max_prompt_length`` tokens less that BOS, as
    0.26 did (it cut the raw ids, then added BOS and EOS). The KL pair (the row's prompt as cut, another row's
    completion) is cut again by the rule, as 0.26 cut its ``KL_`` rows; its prompt goes to ``KL_prompt_ids``."""
    p, a = _pair(list(example["prompt_ids"]), list(example["completion_ids"]), max_length, limit, keep_end, bos, eos)
    out = {"prompt_ids": p, "completion_ids": a}
    if "KL_completion_ids" in example:
        out["KL_prompt_ids"], out["KL_completion_ids"] = _pair(p, list(example["KL_completion_ids"]), max_length,
                                                              limit, keep_end, bos, eos)
    return out


def _copy_without_max_length(args: tuple, kw: dict) -> tuple:
    """``_prepare_dataset(dataset, processing_class, args, name)`` with a config copy whose max_length is None
    (the release's filter then runs after the cut); returns ``(args, kw, max_length)``."""
    args = list(args)
    cfg = kw["args"] if "args" in kw else args[1] if len(args) > 1 else None
    length = getattr(cfg, "max_length", None)
    if length is None:
        return tuple(args), kw, None
    new = copy.copy(cfg)
    new.max_length = None
    if "args" in kw:
        kw = dict(kw, args=new)
    else:
        args[1] = new
    return tuple(args), kw, length


class KLPrompts:
    """The trainer's data collator (TRL >= 1.3) with each KL sequence built on its own prompt (``KL_prompt_ids``):
    the collator is called once as it is, and, where a KL prompt differs from its row's, once more on the KL pairs
    as plain rows, whose sequences replace its ``KL_*`` ones (same truncation, padding and masks)."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, examples, *args, **kwargs):
        if not examples or "KL_prompt_ids" not in examples[0]:
            return self.inner(examples, *args, **kwargs)
        out = self.inner([{k: v for k, v in ex.items() if k != "KL_prompt_ids"} for ex in examples], *args, **kwargs)
        if all(list(ex["KL_prompt_ids"]) == list(ex["prompt_ids"]) for ex in examples):
            return out
        kl = self.inner([{"prompt_ids": ex["KL_prompt_ids"], "completion_ids": ex["KL_completion_ids"],
                          "label": ex["label"]} for ex in examples], *args, **kwargs)
        keys = [k for k in kl if f"KL_{k}" in out]
        if not keys:
            raise TypeError(f"KTOTrainer: max_prompt_length: trlshim cannot give the KL sequences their own prompts "
                            f"with this data collator ({type(self.inner).__name__} returns no KL_* sequences) on "
                            f"{installed_label()}; use TRL's collator, or truncate the dataset yourself")
        for key in keys:
            out[f"KL_{key}"] = kl[key]
        return out


def _kl_collator(trainer) -> None:
    """The trainer's collator and kept columns carry ``KL_prompt_ids`` (idempotent)."""
    collator = getattr(trainer, "data_collator", None)
    if collator is not None and not isinstance(collator, KLPrompts):
        trainer.data_collator = KLPrompts(collator)
    trainer._set_signature_columns_if_needed()
    columns = trainer._signature_columns
    if columns is not None and "KL_completion_ids" in columns and "KL_prompt_ids" not in columns:
        trainer._signature_columns = list(columns) + ["KL_prompt_ids"]


def emulate_stable(call) -> None:
    """Step (TRL >= 1.3): cut the prepared datasets (module docstring), each KL pair on its own."""
    plan = _plan(call)
    instance = call.instance
    if plan is None or instance is None:
        return
    limit, keep_end = plan
    prepare: Callable = instance._prepare_dataset
    precompute: Optional[Callable] = getattr(instance, "_precompute_ref_logps", None)

    def _prepare_dataset(dataset, *args, **kw):
        args, kw, length = _copy_without_max_length(args, kw)
        out = prepare(dataset, *args, **kw)
        if length is None:
            return out
        names = getattr(out, "column_names", None) or []
        if "prompt_ids" not in names or "completion_ids" not in names:
            raise TypeError(f"KTOTrainer: trlshim cannot apply max_prompt_length to this dataset on {installed_label()} "
                            f"(its prepared columns {names} have no prompt_ids/completion_ids; e.g. image data): "
                            "truncate the dataset yourself, or use max_length")
        tokenizer = getattr(instance, "_tokenizer", None) or instance.processing_class
        ids = dict(bos=getattr(tokenizer, "bos_token_id", None), eos=getattr(tokenizer, "eos_token_id", None))
        out = out.map(stable_rule, fn_kwargs=dict(max_length=length, limit=limit, keep_end=keep_end, **ids))
        if "KL_completion_ids" in names:
            report.decided("KTOTrainer.max_prompt_length.KL", "trlshim: KTOTrainer: each KL pair (a row's prompt as "
                           "cut, another row's completion) cut again by the TRL <= 0.26 rule and fed with its own "
                           f"prompt; on {installed_label()}'s sequences, where 0.26's BOS bookkeeping made KL rows one "
                           "token off (keep_end: up to max_length + 1 tokens, which this release's collator caps; "
                           "keep_start: the BOS counted in max_prompt_length)")
        return out.filter(lambda example: len(example["prompt_ids"]) < length)  # as the release does

    def _precompute_ref_logps(*args, **kw):  # in TRL's __init__, after Trainer's: the collator exists
        _kl_collator(instance)
        return precompute(*args, **kw)

    def done(c):
        if getattr(instance, "_is_vision_dataset", False):  # 1.8+ prepare image data in the collator, never here
            raise TypeError(f"KTOTrainer: trlshim cannot apply max_prompt_length to image data on {installed_label()} "
                            "(it is tokenized in the collator); truncate the prompts yourself, or use max_length")
        _kl_collator(instance)
        vars(instance).pop("_precompute_ref_logps", None)

    instance._prepare_dataset = _prepare_dataset  # kept: evaluate(eval_dataset=...) prepares through it (1.10+)
    if precompute is not None:
        instance._precompute_ref_logps = _precompute_ref_logps
    call.after(done)


def expects_stable(init) -> Optional[str]:
    """The class whose ``__init__`` the pipeline wraps (experimental 1.3-1.7, ``trl.trainer`` from 1.8)."""
    import sys

    cls = getattr(sys.modules.get(getattr(init, "__module__", None) or ""), "KTOTrainer", None)
    return None if callable(getattr(cls, "_prepare_dataset", None)) else "KTOTrainer has no _prepare_dataset"


def expects_process_tokens(func) -> Optional[str]:
    return None if callable(func) else "kto_trainer._process_tokens is not callable"
