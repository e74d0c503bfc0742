"""The patch rows, one module per concern. Importing this package declares every row.

Order matters where rows wrap the same attribute: a row declared later wraps outside the
earlier ones, so ``sft_trainer`` (argument translation) is imported last and sees the call first.
(``trainer_args`` imports ``sft_trainer``, so it comes after the SFTTrainer semantics rows.)
"""
# ruff: noqa: I001, F401  (the import order is the wrapping order)
from . import sft_config
from . import kernel_routing  # innermost SFTTrainer.__init__ row: sees the final arguments
from . import embedding_lr  # optimizer parameter groups

# SFTTrainer.__init__ semantics rows, innermost first (they see translated arguments).
from . import collators, packing, formatting, loss_masks
from . import trainer_args, sft_trainer  # argument translation: outermost, declared last
