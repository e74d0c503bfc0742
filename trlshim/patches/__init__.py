"""The patch rows, one module per concern. Importing this package declares every row.

Order matters where rows wrap the same attribute: a row declared later wraps outside the
earlier ones, so ``sft_trainer`` (argument translation) is imported last and sees the call first.
(``trainer_args`` imports ``sft_trainer``, so it comes after the SFTTrainer semantics rows.)
"""
from . import sft_config  # noqa: F401
from . import kernel_routing  # noqa: F401  (innermost SFTTrainer.__init__ row: sees the final arguments)
from . import embedding_lr  # noqa: F401  (optimizer parameter groups)

# SFTTrainer.__init__ semantics rows, innermost first (they see translated arguments; loss_masks first).
from . import collators, packing, formatting, loss_masks  # noqa: F401
from . import trainer_args, sft_trainer  # noqa: F401  (argument translation: outermost, declared last)
