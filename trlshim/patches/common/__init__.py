"""Rows shared by every trainer (``tokenizer=`` <-> ``processing_class=`` on TRL's other trainers)."""
from . import processing_class  # noqa: F401
