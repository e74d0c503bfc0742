"""embedding_learning_rate: embeddings/lm_head in their own optimizer group, at their own rate."""
from __future__ import annotations

import helpers
import pytest

EMB_LR, LR = 0.5, 1e-3


def _cfg(**kw):
    return dict(embedding_learning_rate=EMB_LR, learning_rate=LR, optim="sgd", lr_scheduler_type="constant",
                max_grad_norm=0.0, weight_decay=0.0, max_length=16, **kw)


def _tied_model():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=320, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, bos_token_id=1, eos_token_id=2,
                      pad_token_id=3, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg)


def _groups(trainer):
    opt = trainer.create_optimizer()
    opt = getattr(opt, "optimizer", opt)
    return opt.param_groups


def _check_groups(groups, emb_params):
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))  # no parameter twice
    emb_ids = {id(p) for p in emb_params}
    for g in groups:
        in_group = {id(p) for p in g["params"]}
        if in_group & emb_ids:
            assert in_group <= emb_ids and g["lr"] == EMB_LR
        else:
            assert g["lr"] == LR
    assert emb_ids <= set(ids)


@pytest.mark.parametrize("tied", [False, True])
def test_full_finetune_groups_and_step(tmp_path, tied):
    import torch
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    model = _tied_model() if tied else helpers.make_model()
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    assert (emb is head) == tied
    other = model.model.layers[0].mlp.up_proj.weight
    _, trainer = helpers.run_sft(tmp_path, helpers.text_dataset(8), model=model, train=False, **_cfg())
    _check_groups(_groups(trainer), [emb, head])
    trainer.optimizer = None  # built again by train()

    grads = {}

    def grab(opt, args, kwargs):
        grads.update(emb=emb.grad.clone(), other=other.grad.clone())
        grads.update(before_emb=emb.detach().clone(), before_other=other.detach().clone())

    handle = register_optimizer_step_pre_hook(grab)
    try:
        trainer.train()
    finally:
        handle.remove()
    assert torch.allclose(emb.detach() - grads["before_emb"], -EMB_LR * grads["emb"], atol=1e-6)
    assert torch.allclose(other.detach() - grads["before_other"], -LR * grads["other"], atol=1e-7)
    assert grads["emb"].abs().sum() > 0


def test_lora_modules_to_save(tmp_path):
    peft = pytest.importorskip("peft")

    model = peft.get_peft_model(helpers.make_model(), peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], modules_to_save=["embed_tokens", "lm_head"],
        task_type="CAUSAL_LM"))
    _, trainer = helpers.run_sft(tmp_path, helpers.text_dataset(8), model=model, train=False, **_cfg())
    emb = [p for n, p in model.named_parameters() if p.requires_grad and ("embed_tokens" in n or "lm_head" in n)]
    assert len(emb) == 2 and all("modules_to_save" in n for n, p in model.named_parameters()
                                 if p.requires_grad and ("embed_tokens" in n or "lm_head" in n))
    groups = _groups(trainer)
    _check_groups(groups, emb)
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    assert lora and all(any(p is q for g in groups if g["lr"] == LR for q in g["params"]) for p in lora)


def test_without_option_nothing_changes(tmp_path):
    model = helpers.make_model()
    _, trainer = helpers.run_sft(tmp_path, helpers.text_dataset(8), model=model, train=False, learning_rate=LR,
                                 optim="sgd", max_length=16)
    assert {g["lr"] for g in _groups(trainer)} == {LR}
