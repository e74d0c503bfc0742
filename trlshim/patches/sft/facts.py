"""Version-dependent facts the SFT steps read (``call.fact(name)`` / ``pipeline.lookup``): one table.

Each row: (name, TRL range, value); the first row whose range holds the installed release wins.
A TRL release that changes one of these is one row here, never a branch in a step body.
"""
from __future__ import annotations

from ...pipeline import fact

FACTS = (
    # Where the release puts its output when no args are given (we mirror it when we must build one).
    fact("default_output_dir", ">=0.15", "{model_name}-SFT"),
    fact("default_output_dir", "<0.15", "tmp_trainer"),
    # TRL >= 0.17 calls formatting_func per example (0.17-0.20 fall back to batched only when it raises).
    fact("formatting_per_example", ">=0.17", True),
    # Releases with a fused LM head of their own: ours is never routed there.
    fact("own_fused_head", ">=1.15", "TRL >= 1.15 computes the loss with its own fused LM head"),
    # How a release logs its logits-based metrics while our fused head runs: (the option that makes its
    # compute_loss skip the logits code, whether trlshim logs mean_token_accuracy, whether it logs entropy).
    fact("metric_path", ">=0.15,<0.16", ("use_liger", True, False)),
    fact("metric_path", ">=0.16,<0.22", ("use_liger_kernel", True, False)),
    fact("metric_path", ">=0.22,<0.26", ("use_liger_kernel", True, True)),
    fact("metric_path", ">=0.26,<1.15", ("use_liger_kernel", False, True)),  # accuracy: TRL reads outputs.token_accuracy
)
