"""Dataset and chat-template helpers shared by the SFT steps (no version logic here)."""
from __future__ import annotations

import re

IGNORE = -100  # the label that carries no loss
IMAGE_COLUMNS = ("image", "images")


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


def map_datasets(call, fn) -> None:
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


def vision_reason(call):
    """Why this call trains on vision data (a vision-language model, a processor with an image processor,
    image columns), or None."""
    model = call.kwargs.get("model")
    if getattr(getattr(model, "config", None), "vision_config", None) is not None:
        return "the model is a vision-language model"
    tok = call.kwargs.get("processing_class", call.kwargs.get("tokenizer"))
    if tok is not None and hasattr(tok, "image_processor"):
        return "processing_class is a processor with an image processor"
    if any(c in column_names(call.kwargs.get("train_dataset")) for c in IMAGE_COLUMNS):
        return "the dataset has image columns"
    return None


def unwrap_peft(model):
    """The model under a PEFT wrapper (``get_base_model``), or the model itself."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model
