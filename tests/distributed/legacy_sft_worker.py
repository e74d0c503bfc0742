"""A TRL-0.8-style SFT script run by tests/reliability/test_distributed.py, once under
``accelerate launch --cpu --num_processes 2`` and once as a single process at the same global batch.
Each rank writes what it saw to ``<out>/rank<R>.json``: whether trlshim's rows were active, the rows
its model was fed at each step, the losses TRL logged, and whether ``trlshim.unpatch()`` restored the
original ``SFTTrainer.__init__``. With a third argument ``fsdp2`` the script also asks the Trainer for
FSDP2 (``fsdp="full_shard"``, ``fsdp_config={"version": 2, ...}``) and records the engine accelerate
actually chose (``distributed_type``) and the LM head's weight type after training (a DTensor when
sharded); a construction error is recorded, not raised. Not a test module (no ``test_`` prefix)."""
from __future__ import annotations

import json
import os
import sys

import trlshim  # noqa: F401  (before TRL, as the README says)

os.environ.setdefault("WANDB_DISABLED", "true")


def main(out_dir: str, per_device_batch: int, mode: str = "ddp") -> None:
    import torch
    from datasets import Dataset
    from transformers import TrainingArguments
    from trl import SFTTrainer

    from trlshim import hooks, report, tiny

    texts = tiny.sentences(32, seed=3, words=("alpha beta gamma delta epsilon zeta eta theta iota kappa " * 3).split(),
                           n_min=30, n_max=40)  # every row longer than max_seq_length: equal-length rows
    tok = tiny.make_tokenizer(tiny.tokenizer_json(texts, vocab_size=120))
    model = tiny.make_model(vocab_size=len(tok), seed=0)
    fed = []
    model.register_forward_pre_hook(
        lambda m, args, kwargs: fed.append(kwargs["input_ids"].tolist()) if m.training else None, with_kwargs=True)
    targs = dict(output_dir=out_dir, max_steps=3, per_device_train_batch_size=per_device_batch, learning_rate=1e-2,
                 report_to="none", save_strategy="no", logging_steps=1, seed=0, disable_tqdm=True,
                 dataloader_num_workers=0)
    targs["use_cpu" if "use_cpu" in TrainingArguments.__dataclass_fields__ else "no_cuda"] = True
    if mode == "fsdp2":
        targs.update(fsdp="full_shard", fsdp_config={"version": 2, "transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"]})
    rank = int(os.environ.get("RANK", "0"))
    init = SFTTrainer.__init__
    try:
        trainer = SFTTrainer(model=model, args=TrainingArguments(**targs), train_dataset=Dataset.from_list(
            [{"text": t} for t in texts]), tokenizer=tok, dataset_text_field="text", max_seq_length=16, packing=False)
    except Exception as e:
        if mode == "ddp":
            raise
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump({"rank": rank, "error": f"{type(e).__name__}: {e}"}, f)
        return
    engine = str(trainer.accelerator.state.distributed_type)
    trainer.train()
    active = sorted(hooks.applied())
    trlshim.unpatch()
    restored = not hooks.applied() and type(SFTTrainer.__init__) is not type(init)
    record = {
        "rank": rank, "world_size": int(os.environ.get("WORLD_SIZE", "1")), "active_rows": active,
        "translations": report.applied(), "fed": fed, "restored": restored,
        "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
        "threads": torch.get_num_threads(), "distributed_type": engine,
        "head_weight": type(trainer.model.lm_head.weight).__name__,
    }
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(record, f)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), *sys.argv[3:])
    # Leave without the interpreter's teardown: gloo's threads can abort a process at exit ("terminate called
    # without an active exception", seen on a CI-like machine) after its record was written.
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
