"""The patch rows, one module per concern. Importing this package declares every row.

Order matters where rows wrap the same attribute: a row declared later wraps outside the
earlier ones, so ``sft_trainer`` (argument translation) is imported last and sees the call first.
"""
from . import sft_config, trainer_args, sft_trainer  # noqa: F401
