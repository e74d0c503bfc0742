"""Rows shared by every trainer (``tokenizer=`` <-> ``processing_class=`` on TRL's other trainers; trainers TRL
moved or deleted: ``moved_trainers``; transformers' TrainingArguments fields across releases: ``training_args``;
public helper names TRL moved or deleted: ``removed_names``; the Trainer's per-step walks of the model:
``bookkeeping``)."""
from . import bookkeeping, model_config, moved_trainers, processing_class, removed_names, training_args  # noqa: F401
