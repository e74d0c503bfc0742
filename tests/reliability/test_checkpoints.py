"""Issue 9 item 8: a checkpoint written while trlshim is active loads with the same TRL and no trlshim.

``training_args.bin`` is the pickled config. trlshim's own config classes (``trl.SFTConfig`` on TRL < 0.9,
``trlshim.SFTConfig`` everywhere) pickle as the release's own class with the same attributes; loaded where
trlshim is, the trainer still reads trlshim's options back."""
from __future__ import annotations

import pickle

import helpers
from reliability_support import run_scenario

import trlshim

LOAD_WITHOUT_TRLSHIM = """
    import os, sys
    sys.modules["trlshim"] = None  # as on a machine without trlshim: any import of it fails
    import torch
    args = torch.load(os.environ["CKPT"], weights_only=False)
    from reliability_support import emit
    emit({"type": type(args).__module__ + "." + type(args).__name__, "output_dir": args.output_dir,
          "max_len": getattr(args, "max_length", None) or getattr(args, "max_seq_length", None),
          "lr": getattr(args, "embedding_learning_rate", None)})
"""


def _config(tmp_path):
    return trlshim.SFTConfig(**helpers.training_kwargs(tmp_path), dataset_text_field="text", max_seq_length=8,
                             embedding_learning_rate=1e-4)


def test_training_args_bin_loads_without_trlshim(tmp_path):
    import trl

    cfg = _config(tmp_path / "out")
    trainer = trl.SFTTrainer(model=helpers.make_model(), args=cfg, train_dataset=helpers.text_dataset(8),
                             processing_class=helpers.make_tokenizer())
    trainer.save_model(str(tmp_path / "ckpt"))
    path = tmp_path / "ckpt" / "training_args.bin"
    assert b"trlshim" not in path.read_bytes().split(b"embedding_learning_rate")[0]  # no class from trlshim
    r = run_scenario(LOAD_WITHOUT_TRLSHIM, env={"CKPT": str(path)})
    assert not r["type"].startswith("trlshim") and r["max_len"] == 8 and r["output_dir"] == cfg.output_dir
    assert r["lr"] == 1e-4  # trlshim's option is kept as a plain attribute


def test_unpickled_config_still_means_the_same_with_trlshim(tmp_path):
    """Loaded back where trlshim is, the config (now the release's own class) trains as before."""
    import trl

    cfg = pickle.loads(pickle.dumps(_config(tmp_path)))
    assert type(cfg).__module__ != "trlshim"
    trainer = trl.SFTTrainer(model=helpers.make_model(), args=cfg, train_dataset=helpers.text_dataset(8),
                             processing_class=helpers.make_tokenizer())
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["input_ids"].shape[1] <= 8
