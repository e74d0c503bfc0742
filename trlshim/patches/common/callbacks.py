"""A base for trlshim's TrainerCallbacks, duck-typed so that defining one imports nothing of transformers (the
Trainer's ``CallbackHandler`` calls each event by name): every event a subclass does not define does nothing."""
from __future__ import annotations


class Callback:
    def __getattr__(self, name):
        if name.startswith("on_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)
