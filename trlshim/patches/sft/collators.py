"""``DataCollatorForCompletionOnlyLM`` on every release.

TRL deprecated the collator in 0.17 and removed it in 0.20 (ImportError). On TRL >= 0.20
trlshim injects an implementation with TRL 0.19's signature and masking (labels ``-100`` up to
and including the last response template; with an instruction template, every instruction turn
masked; templates as strings or token ids) as ``trl.DataCollatorForCompletionOnlyLM``,
``trl.trainer.DataCollatorForCompletionOnlyLM`` and ``trl.trainer.utils.DataCollatorForCompletionOnlyLM``.

New TRL's dataset preparation adds columns (``completion_mask``, ``seq_lengths``, and from 1.7
``labels``); the injected collator reads only ``input_ids`` (and ``attention_mask``) and builds
the labels itself, so the user's collator decides the loss as it did. Like TRL <= 0.14, it
refuses ``packing=True`` (the packed rows mix examples, so the templates cannot be found).
"""
from __future__ import annotations

import functools
import warnings

from ... import report
from ...registry import INJECT, row
from ...translate import installed_label

NAME = "DataCollatorForCompletionOnlyLM"
KEEP = ("input_ids", "attention_mask")


@functools.cache
def completion_only_collator_class():
    """TRL 0.19's DataCollatorForCompletionOnlyLM, reading only ``input_ids`` from each example."""
    # From the submodule, not the lazy package: a hook may run while another thread imports transformers.
    import numpy as np
    from transformers.data.data_collator import DataCollatorForLanguageModeling

    class DataCollatorForCompletionOnlyLM(DataCollatorForLanguageModeling):
        """Completion-only loss: labels are ``ignore_index`` up to the end of the response template
        (and on instruction turns when ``instruction_template`` is given). trlshim's implementation
        of the collator TRL removed in 0.20, with TRL 0.19's behaviour."""

        def __init__(self, response_template, instruction_template=None, *args, mlm=False, ignore_index=-100,
                     padding_free=False, **kwargs):
            super().__init__(*args, mlm=mlm, **kwargs)
            self.instruction_template = instruction_template
            if isinstance(instruction_template, str):
                self.instruction_token_ids = self.tokenizer.encode(instruction_template, add_special_tokens=False)
            else:
                self.instruction_token_ids = instruction_template
            self.response_template = response_template
            if isinstance(response_template, str):
                self.response_token_ids = self.tokenizer.encode(response_template, add_special_tokens=False)
            else:
                self.response_token_ids = response_template
            if not self.mlm and self.instruction_template and self.tokenizer.pad_token_id == self.tokenizer.eos_token_id:
                warnings.warn(
                    "The pad_token_id and eos_token_id values of this tokenizer are identical. If you are planning "
                    "for multi-turn training, it can result in the model continuously generating questions and "
                    "answers without eos token. To avoid this, set the pad_token_id to a different value.",
                    UserWarning,
                    stacklevel=2,
                )
            self.ignore_index = ignore_index
            self.padding_free = padding_free

        def _missing(self, what, template, ids):
            """One example without its template: counted; one warning per collator (TRL warned per example)."""
            self._missed = getattr(self, "_missed", 0) + 1
            if getattr(self, "_warned", False):
                return
            self._warned = True
            warnings.warn(
                f"Could not find {what} key `{template}` in the following instance: {self.tokenizer.decode(ids)}. "
                "This instance will be ignored in loss calculation. Note, if this happens often, consider "
                "increasing the `max_length`. (trlshim: warned once; later instances are counted, not shown)",
                UserWarning,
                stacklevel=2,
            )

        def _no_labels(self, batch):
            """A batch in which no token carries loss would train on nothing and report loss 0: refused."""
            ids = batch["input_ids"][0].tolist()
            template = list(self.response_token_ids)
            raise ValueError(
                f"DataCollatorForCompletionOnlyLM: no token of this batch carries a label - the response template "
                f"{self.response_template!r} was not found in any example. It tokenizes as {template} "
                f"{self.tokenizer.convert_ids_to_tokens(template)}; the first example tokenizes as "
                f"{self.tokenizer.convert_ids_to_tokens(ids[:48])}{' ...' if len(ids) > 48 else ''}. A template "
                "inside a sentence often tokenizes differently than alone: pass the token ids it has in context "
                "(response_template=[...]), or fix the template (trlshim's collator)"
            )

        def torch_call(self, examples):
            if examples and isinstance(examples[0], dict):  # new TRL adds columns: the labels are ours to build
                examples = [{k: v for k, v in ex.items() if k in KEEP} for ex in examples]
            batch = self._labelled(examples)
            if not (batch["labels"] != self.ignore_index).any():
                self._no_labels(batch)
            return batch

        def _labelled(self, examples):
            batch = super().torch_call(examples)
            labels = batch["labels"]
            response = list(self.response_token_ids)
            for i in range(len(examples)):
                row_labels = labels[i]
                if self.instruction_template is None:
                    start = None
                    for idx in np.where(row_labels == response[0])[0]:
                        if response == row_labels[idx: idx + len(response)].tolist():
                            start = idx
                    if start is None:
                        self._missing("response", self.response_template, batch["input_ids"][i])
                        labels[i, :] = self.ignore_index
                    else:
                        labels[i, : start + len(response)] = self.ignore_index
                    continue
                response_idxs, human_idxs = [], []
                for idx in np.where(row_labels == response[0])[0]:
                    if response == row_labels[idx: idx + len(response)].tolist():
                        response_idxs.append(idx + len(response))
                if not response_idxs:
                    self._missing("response", self.response_template, batch["input_ids"][i])
                    labels[i, :] = self.ignore_index
                human = list(self.instruction_token_ids)
                for idx in np.where(row_labels == human[0])[0]:
                    if human == row_labels[idx: idx + len(human)].tolist():
                        human_idxs.append(idx)
                if not human_idxs:
                    self._missing("instruction", self.instruction_template, batch["input_ids"][i])
                    labels[i, :] = self.ignore_index
                if human_idxs and response_idxs and human_idxs[0] > response_idxs[0]:
                    human_idxs = [0] + human_idxs
                for n, (start, end) in enumerate(zip(human_idxs, response_idxs)):
                    if n != 0:
                        labels[i, start:end] = self.ignore_index
                    else:
                        labels[i, :end] = self.ignore_index
                if len(response_idxs) < len(human_idxs):
                    labels[i, human_idxs[-1]:] = self.ignore_index
            if self.padding_free:
                attn = batch.pop("attention_mask").bool()
                batch["input_ids"] = batch["input_ids"][attn].unsqueeze(0)
                batch["position_ids"] = (attn.long().cumsum(1)[attn] - 1).unsqueeze(0)
                batch["labels"] = labels[attn].unsqueeze(0)
                batch["labels"][batch["position_ids"] == 0] = self.ignore_index
            return batch

    DataCollatorForCompletionOnlyLM.__module__ = "trl.trainer.utils"
    DataCollatorForCompletionOnlyLM.__qualname__ = NAME
    return DataCollatorForCompletionOnlyLM


def is_completion_only_collator(obj) -> bool:
    return type(obj).__name__ == NAME or any(c.__name__ == NAME for c in type(obj).__mro__)


def refuse_packing(call) -> None:
    """Step (TRL >= 0.20): TRL <= 0.14 refused DCCOLM with packing; keep refusing where trlshim provides it."""
    collator = call.kwargs.get("data_collator")
    if collator is not None and is_completion_only_collator(collator):
        if call.get("packing"):
            raise ValueError(
                f"You passed a `{NAME}` to the SFTTrainer. This is not compatible with the `packing` argument "
                f"(packed rows mix examples; {installed_label()}). Use packing=False, or completion_only_loss=True "
                "with a prompt/completion dataset."
            )
        report.decided(
            "collators.dccolm",
            f"trlshim: {NAME} provided by trlshim ({installed_label()} removed it in 0.20); the collator builds the "
            "labels from input_ids, as in TRL 0.19",
        )


for _module in ("trl.trainer.utils", "trl.trainer", "trl"):
    row(
        f"collators.completion_only[{_module}]", _module, NAME, ">=0.20",
        "TRL 0.20 removed DataCollatorForCompletionOnlyLM: provide TRL 0.19's implementation",
        kind=INJECT, factory=completion_only_collator_class,
    )
