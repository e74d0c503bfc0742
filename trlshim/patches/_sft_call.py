"""Shared helpers for the rows that wrap ``SFTTrainer.__init__`` inside the argument translation.

Those rows see keyword-only arguments, with ``args`` an installed ``SFTConfig`` (TRL >= 0.9),
trlshim's legacy config (TRL < 0.9, whose set fields the translation has already copied onto
the trainer keyword arguments), or None. ``Call`` reads and writes an SFT option wherever the
installed release keeps it, copying the config before the first write (the caller's object is
never mutated), and reads trlshim's emulated options back.
"""
from __future__ import annotations

import copy
import inspect
import re

from ..translate import spellings
from . import sft_config

IGNORE = -100  # the label that carries no loss


class Call:
    """The keyword arguments of one ``SFTTrainer.__init__`` call, for the semantics rows."""

    def __init__(self, wrapped, kwargs: dict):
        from .sft_trainer import installed_config_class, parameters

        self.wrapped = wrapped
        self.kwargs = dict(kwargs)
        self.params = parameters(wrapped)
        self._copied = False
        self.config_cls = installed_config_class()
        self.legacy = self.config_cls is sft_config.legacy_config_class()  # TRL < 0.9: options are kwargs
        self._native = set() if self.legacy else set(getattr(self.config_cls, "__dataclass_fields__", {}))

    @property
    def args(self):
        return self.kwargs.get("args")

    def _writable_config(self):
        if self.args is None:
            from .sft_trainer import new_config

            self.kwargs["args"] = new_config(self.config_cls, self.kwargs)
            self._copied = True
        elif not self._copied:
            self.kwargs["args"] = copy.copy(self.args)
            self._copied = True
        return self.kwargs["args"]

    def has(self, name: str) -> bool:
        """Whether the installed release has the option ``name`` itself (in any spelling)."""
        pool = self.params if self.legacy else self._native
        return any(n in pool for n in spellings(name))

    def get(self, name: str, default=None):
        """The value of an option as the installed release (or trlshim's emulation) will read it."""
        names = spellings(name)
        for n in names:
            if n in self.kwargs and n in self.params and n != "args":
                return self.kwargs[n]
        args = self.args
        if not self.has(name):
            extra = sft_config.shim_options(args) if args is not None else {}
            return extra.get(name, default)
        if self.legacy:
            fields = getattr(type(args), "__dataclass_fields__", {}) if args is not None else {}
            for n in names:
                if n in fields:
                    return getattr(args, n)
            for n in names:
                if n in self.params:
                    p = inspect.signature(self.wrapped).parameters[n].default
                    return default if p is inspect.Parameter.empty else p
            return default
        for n in names:
            if n in self._native:
                if args is not None:
                    return getattr(args, n)
                return self.config_cls.__dataclass_fields__[n].default
        return default

    def shim(self, name: str, default=None):
        """One of trlshim's own options (``sft_config.SHIM_FIELDS``)."""
        extra = sft_config.shim_options(self.args) if self.args is not None else {}
        return extra.get(name, default)

    def set(self, name: str, value) -> None:
        """Set an option where the installed release (or trlshim's emulation) reads it."""
        names = spellings(name)
        if not self.has(name):
            cfg = self._writable_config()
            if name in getattr(type(cfg), "_trlshim_owned", {}):
                setattr(cfg, name, value)
            else:
                cfg._trlshim_extra = dict(getattr(cfg, "_trlshim_extra", None) or {}, **{name: value})
            return
        if self.legacy:
            target = next(n for n in names if n in self.params)
            self.kwargs[target] = value
            return
        for n in names:
            if n in self.kwargs and n in self.params:
                self.kwargs[n] = value
        cfg = self._writable_config()
        setattr(cfg, next(n for n in names if n in self._native), value)

    def dataset_kwargs(self) -> dict:
        return dict(self.get("dataset_kwargs") or {})

    def call(self):
        return self.wrapped(**self.kwargs)


def first_example(dataset):
    try:
        return next(iter(dataset))
    except (StopIteration, TypeError):
        return None


def column_names(dataset):
    names = getattr(dataset, "column_names", None)
    if isinstance(names, list):
        return names
    ex = first_example(dataset) if names is None else None
    return list(ex) if isinstance(ex, dict) else []


def is_hf_dataset(dataset) -> bool:
    try:
        import datasets
    except ImportError:
        return False
    return isinstance(dataset, (datasets.Dataset, datasets.IterableDataset))


def eval_datasets(kwargs):
    """(name, dataset) pairs of the eval dataset argument (a dict or a single dataset)."""
    ev = kwargs.get("eval_dataset")
    if ev is None:
        return []
    if isinstance(ev, dict):
        return list(ev.items())
    return [(None, ev)]


def map_datasets(call: Call, fn) -> None:
    """Apply ``fn(dataset) -> dataset`` to the train and eval datasets of the call."""
    if call.kwargs.get("train_dataset") is not None:
        call.kwargs["train_dataset"] = fn(call.kwargs["train_dataset"])
    ev = call.kwargs.get("eval_dataset")
    if isinstance(ev, dict):
        call.kwargs["eval_dataset"] = {k: fn(v) for k, v in ev.items()}
    elif ev is not None:
        call.kwargs["eval_dataset"] = fn(ev)


def tokenizer_of(kwargs):
    tok = kwargs.get("processing_class", kwargs.get("tokenizer"))
    return getattr(tok, "tokenizer", tok)  # a processor's tokenizer


def is_messages(value) -> bool:
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict)


def conversational_column(example):
    """"messages" or "conversations" when the example is conversational, else None."""
    if not hasattr(example, "keys"):  # a dict, or a datasets row inside map()
        return None
    for col in ("messages", "conversations"):
        if is_messages(example.get(col)):
            return col
    return None


def to_chatml(messages):
    """``from``/``value`` turns (ShareGPT) as ``role``/``content`` (what TRL 0.15+ converts)."""
    roles = {"human": "user", "gpt": "assistant", "system": "system", "user": "user", "assistant": "assistant"}
    out = []
    for m in messages:
        if "role" in m:
            out.append(m)
        else:
            out.append({"role": roles.get(m.get("from"), m.get("from")), "content": m.get("value")})
    return out


GENERATION = re.compile(r"\{%-?\s*generation\s*-?%\}")


def has_generation_markers(tokenizer) -> bool:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("default")
    return isinstance(template, str) and bool(GENERATION.search(template))


def _native_assistant_mask(tokenizer) -> bool:
    import inspect

    return "return_assistant_tokens_mask" in inspect.signature(tokenizer.apply_chat_template).parameters


def _rendered_with_spans(tokenizer, messages):
    """Render the chat template, returning the text and the char spans of generation blocks
    (for transformers releases whose apply_chat_template has no assistant mask)."""
    import jinja2
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    open_mark, close_mark = "\x00trlshim-gen\x01", "\x00trlshim-end\x01"

    class Generation(Extension):
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_mark"), [], [], body).set_lineno(lineno)

        def _mark(self, caller):
            return open_mark + caller() + close_mark

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[Generation, loopcontrols])
    env.globals["raise_exception"] = raise_exception
    template = tokenizer.chat_template
    specials = {k: v for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)}
    text = env.from_string(template).render(messages=messages, add_generation_prompt=False, **specials)
    spans, clean, pos = [], [], 0
    for part in re.split(f"({re.escape(open_mark)}|{re.escape(close_mark)})", text):
        if part == open_mark:
            spans.append([pos, None])
        elif part == close_mark:
            spans[-1][1] = pos
        else:
            clean.append(part)
            pos += len(part)
    return "".join(clean), spans


def needs_own_renderer(tokenizer) -> bool:
    """transformers < 4.44 has no ``{% generation %}`` tag: such templates do not even render there."""
    return has_generation_markers(tokenizer) and not _native_assistant_mask(tokenizer)


def chat_text(tokenizer, messages) -> str:
    """The chat template rendered as text (``apply_chat_template(tokenize=False)``)."""
    if needs_own_renderer(tokenizer):
        return _rendered_with_spans(tokenizer, messages)[0]
    return tokenizer.apply_chat_template(messages, tokenize=False)
