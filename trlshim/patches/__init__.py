"""The patch rows. Importing this package declares every row; the order of these imports does not
matter: rows on one target never stack (a trainer's ``__init__`` carries one pipeline row, whose
step order is a list in ``patches/<trainer>/__init__.py``)."""
from . import common, cpo, dpo, grpo, kto, orpo, reward, sft  # noqa: F401
