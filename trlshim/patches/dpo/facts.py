"""Version-dependent facts the DPO steps read (``call.fact(name)``): one table, first matching row wins."""
from __future__ import annotations

from ...pipeline import fact

FACTS = (
    # Where the release puts its output when no args are given (mirrored when trlshim must build a config).
    fact("default_output_dir", ">=0.13", "{model_name}-DPO"),
    fact("default_output_dir", "<0.13", "tmp_trainer"),
    # The columns ``DPOTrainer._prepare_dataset`` returns (prompt, chosen, rejected token ids).
    fact("tokenized_columns", ">=0.29", ("prompt_ids", "chosen_ids", "rejected_ids")),
    fact("tokenized_columns", ">=0.13,<0.29", ("prompt_input_ids", "chosen_input_ids", "rejected_input_ids")),
)
FACTS += (
    # TRL >= 0.20 takes loss_type as a list (several losses, loss_weights).
    fact("loss_type_list", ">=0.20", True),
)
FACTS += (
    # How a TRL 0.7-0.11 truncation call (max_length + max_prompt_length as trainer kwargs) keeps its meaning:
    # 0.12-0.13 tokenize inside __init__ with per-part caps only (approximated by a completion cap); >= 0.14
    # through the prepared dataset (``_prepare_dataset``: truncation.py applies the old rule exactly).
    fact("legacy_truncation", ">=0.14", "prepared_dataset"),
    fact("legacy_truncation", ">=0.12,<0.14", "completion_cap"),
)
FACTS += (
    # _prepare_dataset drops examples whose prompt alone reaches max_length (keep_start).
    fact("drops_fully_truncated", ">=1.16", True),
)
FACTS += (
    # _prepare_dataset (tokenize_row) cuts the prompt to max_prompt_length (left) and completions to
    # max_completion_length (right); pre-tokenized data fed by trlshim gets the same cut there.
    fact("prepare_caps_parts", ">=0.14,<0.29", True),
)
