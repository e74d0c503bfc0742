"""A 0.14-era GRPO script (reward functions without **kwargs, ``max_prompt_length``, ``tokenizer=``) trains
with its meaning on every release with GRPO: what the reward functions receive, how long the prompts the
model is fed are, and that the parameters move. Tiny model, 1 step, no vLLM."""
from __future__ import annotations

import asyncio
import inspect

import helpers
import pytest
import torch

import trlshim
from trlshim import report
from trlshim.versions import trl_in, trl_version

TRL = trl_version()
pytestmark = pytest.mark.skipif(not trl_in(">=0.14"), reason=f"TRL {TRL} has no GRPO (introduced in TRL 0.14.0)")

LIMIT, COMPLETION = 5, 4  # max_prompt_length, max_completion_length
# Completions per reward call with per_device_train_batch_size=2, num_generations=2: TRL 0.14 counted prompts
# in the batch size (2 prompts x 2 generations), 0.15+ counts completions (1 prompt x 2).
PER_CALL = 4 if trl_in("<0.15") else 2


def _expected_extra_kwargs() -> set:
    """What TRL itself passes a reward function besides prompts/completions/columns (research doc, section 2.3)."""
    extra = set()
    if trl_in(">=0.18"):
        extra.add("completion_ids")
    if trl_in(">=0.20"):
        extra.add("trainer_state")
    if trl_in(">=1.0"):
        extra |= {"log_extra", "log_metric"}
    return extra


def _tokenizer():
    tok = helpers.make_tokenizer()
    tok.model_input_names = ["input_ids", "attention_mask"]  # a causal LM's tokenizer (0.19-0.2x pass all to generate)
    return tok


def _dataset(n=8):
    from datasets import Dataset

    return Dataset.from_list([{"prompt": t, "answer": f"a{i}"}
                              for i, t in enumerate(helpers.texts(n, seed=3, n_min=10, n_max=14))])


class _Fed:
    """Every forward call's input width and attended lengths (generation and loss alike); the attended prompt ids
    of each row ``generate()`` was given; the attended ids of each row of the forwards with gradients (the loss)."""

    def __init__(self, model):
        self.widths, self.lengths, self.generated, self.trained = [], [], [], []
        self.model = model
        self.handle = model.register_forward_pre_hook(self._hook, with_kwargs=True)
        generate = model.generate

        def recording(*args, **kwargs):  # 0.14 passes the ids positionally, later releases by name
            ids = kwargs.get("input_ids", args[0] if args else None)
            self.generated += _attended(ids, kwargs.get("attention_mask"), model.config.pad_token_id)
            return generate(*args, **kwargs)

        model.generate = recording

    def _hook(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        if ids is not None:
            self.widths.append(ids.shape[1])
        if mask is not None:
            self.lengths.extend(mask.sum(-1).tolist())
        if ids is not None and torch.is_grad_enabled():
            self.trained += _attended(ids, mask, module.config.pad_token_id)

    def remove(self):
        self.handle.remove()
        del self.model.generate


def _attended(ids, mask, pad=None) -> list:
    """Each row's attended ids; without a mask (TRL 0.14's loss forward) the ids after the left padding."""
    if mask is None:
        mask = torch.cumsum(ids != pad, dim=1) > 0
    return [[t for t, m in zip(row, keep) if m] for row, keep in zip(ids.tolist(), mask.tolist())]


def _config(tmp_path, **kw):
    import trl

    base = helpers.training_kwargs(tmp_path, max_steps=1, per_device_train_batch_size=2,
                                   gradient_accumulation_steps=1)  # 0.14 defaulted to 8
    base.pop("use_cpu", None)
    base.pop("no_cuda", None)  # a 0.14-era script names no device; trlshim keeps the CPU run runnable
    return trl.GRPOConfig(**{**base, "num_generations": 2, "max_completion_length": COMPLETION, **kw})


def _train(tmp_path, reward_funcs, trainer_cls=None, copy_config=None, **config):
    import trl

    tok, model = _tokenizer(), helpers.make_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    fed = _Fed(model)
    cls = trainer_cls or trl.GRPOTrainer
    args = _config(tmp_path, **config)
    if copy_config is not None:
        args = copy_config(args)
    trainer = cls(model=model, reward_funcs=reward_funcs, args=args, train_dataset=_dataset(),
                  tokenizer=tok)  # GRPO never took tokenizer=: trlshim renames it
    trainer.train()
    fed.remove()
    moved = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])]
    return fed, moved, tok


def test_grpo_014_script_trains_with_its_meaning(tmp_path):
    seen = {"positional": [], "kwargs": []}

    def exact(prompts, completions):  # a 0.14 reward function: no **kwargs
        seen["positional"].append((len(prompts), len(completions), all(isinstance(c, str) for c in completions)))
        return [float(i) for i in range(len(completions))]  # differs within each group: non-zero advantages

    def open_ended(completions, **kw):
        seen["kwargs"].append(set(kw))
        return [0.0] * len(completions)

    fed, moved, tok = _train(tmp_path, [exact, open_ended], max_prompt_length=LIMIT)

    assert seen["positional"] and all(c == (PER_CALL, PER_CALL, True) for c in seen["positional"])
    assert seen["kwargs"] and all(k == {"prompts", "answer"} | _expected_extra_kwargs() for k in seen["kwargs"])
    untruncated = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in _dataset()["prompt"]]
    assert min(untruncated) > LIMIT  # so the limit below is trlshim's / TRL's truncation, not short data
    assert fed.widths[0] == LIMIT  # the first forward: the prompts' prefill, cut to their last LIMIT tokens
    assert max(fed.widths) <= LIMIT + COMPLETION and max(fed.lengths) <= LIMIT + COMPLETION
    assert moved, "no parameter changed in the training step"
    if trl_in(">=0.18"):  # TRL passes more than `exact` takes: reported once
        assert any("'exact' takes no" in m for m in report.applied())


def test_grpo_stable_trainer_same_meaning(tmp_path):
    calls = []

    def reward(prompts, completions):
        calls.append(len(completions))
        return [float(i) for i in range(len(completions))]

    fed, moved, _ = _train(tmp_path, reward, trainer_cls=trlshim.GRPOTrainer, max_prompt_length=LIMIT)
    import trl

    assert issubclass(trlshim.GRPOTrainer, trl.GRPOTrainer)
    assert calls and set(calls) == {PER_CALL}
    assert fed.widths[0] == LIMIT and moved


def test_grpo_missing_required_reward_argument_is_named(tmp_path):
    import trl

    def reward(completions, solution):  # the dataset has no 'solution' column
        return [0.0] * len(completions)

    with pytest.raises(TypeError, match=r"'reward'.*'solution'") as err:
        trl.GRPOTrainer(model=helpers.make_model(), reward_funcs=reward, args=_config(tmp_path),
                        train_dataset=_dataset(), processing_class=_tokenizer())
    assert str(TRL) in str(err.value)


def test_grpo_reward_adapter_keeps_name_async_and_kwargs_functions():
    from trlshim.patches.grpo import rewards

    def with_kwargs(completions, **kw):
        return [0.0] * len(completions)

    async def scored(prompts, completions):
        return [1.0] * len(completions)

    assert rewards.adapt(with_kwargs) is with_kwargs  # nothing to filter: TRL's own call
    wrapped = rewards.adapt(scored)
    assert wrapped.__name__ == "scored"
    assert inspect.iscoroutinefunction(wrapped.__call__)  # TRL >= 0.27 awaits it
    out = asyncio.run(wrapped(prompts=["p"], completions=["c"], completion_ids=[[1]], trainer_state=None))
    assert out == [1.0]


def test_grpo_positionals_by_name_and_both_tokenizer_spellings(tmp_path):
    import trl

    def reward(prompts, completions):
        return [0.0] * len(completions)

    tok, model, cfg, data = _tokenizer(), helpers.make_model(), _config(tmp_path), _dataset()
    trainer = trl.GRPOTrainer(model, reward, cfg, data, None, tok)  # the positions every release agrees on
    assert trainer.processing_class is tok
    assert [f.__name__ for f in trainer.reward_funcs] == ["reward"]  # TRL logs rewards under this name
    with pytest.raises(TypeError, match=r"'processing_class' and 'tokenizer'|'tokenizer' and 'processing_class'"):
        trl.GRPOTrainer(model=model, reward_funcs=reward, args=cfg, train_dataset=data, tokenizer=tok,
                        processing_class=_tokenizer())
    with pytest.raises(TypeError, match="positional"):
        trl.GRPOTrainer(model, reward, cfg, data, None, tok, None)  # later positions differ (1.8 inserted one)


def _prompt_ids(tok, prompt) -> list:
    """A prompt's ids as every release tokenizes it for generation (the tiny tokenizer adds no special tokens)."""
    text = prompt if isinstance(prompt, str) else tok.apply_chat_template(prompt, tokenize=False,
                                                                           add_generation_prompt=True)
    return tok(text, add_special_tokens=False)["input_ids"]


def _cut_prompt_run(tmp_path, kind, config=None, **fields):
    """Two steps on one long and one short prompt (both in every batch): what generation and the loss were fed, and
    each prompt the reward function saw with its tokenized ids. ``config``: a GRPOConfig built elsewhere (else one
    from ``fields``)."""
    import trl
    from datasets import Dataset

    long, short = helpers.texts(1, seed=5, n_min=10, n_max=12)[0], "cat"
    prompts = [long, short] if kind == "text" else [[{"role": "user", "content": p}] for p in (long, short)]
    tok, model = _tokenizer(), helpers.make_model()
    seen = []

    def reward(prompts, completions):
        seen.extend(prompts)
        return [float(i) for i in range(len(completions))]

    fed = _Fed(model)
    per_step = 2 if trl_in("<0.15") else 4  # two prompts a step: 0.14 counted prompts, 0.15+ completions
    cfg = config or _config(tmp_path, max_steps=2, per_device_train_batch_size=per_step, **fields)
    trainer = trl.GRPOTrainer(model=model, reward_funcs=reward, args=cfg, processing_class=tok,
                              train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]))
    trainer.train()
    fed.remove()
    return fed, {repr(p): _prompt_ids(tok, p) for p in seen}


@pytest.mark.parametrize("kind", ["text", "chat"])
def test_grpo_prompts_fed_are_their_last_max_prompt_length_ids(tmp_path, kind):
    """TRL 0.14-0.23 kept each prompt's last max_prompt_length ids (a left-padded batch's last columns) before
    generation; the same ids reach generation and the loss on every release: natively before 0.26, by trlshim
    after (0.26-0.28: the generation path's batch, 0.29+: _tokenize_prompts)."""
    fed, tokenized = _cut_prompt_run(tmp_path, kind, max_prompt_length=LIMIT)
    lengths = sorted(len(ids) for ids in tokenized.values())
    assert len(lengths) == 2 and lengths[0] <= LIMIT < lengths[1]  # one prompt to cut, one left whole
    cut = {tuple(ids[-LIMIT:]) for ids in tokenized.values()}  # the short one: all of it
    assert {tuple(row) for row in fed.generated} == cut
    assert fed.trained and all(any(tuple(row[: len(c)]) == c for c in cut) for row in fed.trained)
    assert {c for c in cut if any(tuple(row[: len(c)]) == c for row in fed.trained)} == cut  # both reach the loss
    if trl_in(">=0.26"):
        assert any("max_prompt_length" in m and "as TRL 0.14-0.23 did" in m for m in report.applied())


def test_grpo_prompts_fed_whole_without_max_prompt_length(tmp_path):
    """The control: with the option unset the long prompt reaches generation whole (0.14-0.25: None set)."""
    fed, tokenized = _cut_prompt_run(tmp_path, "text", max_prompt_length=None)
    assert {tuple(row) for row in fed.generated} == {tuple(ids) for ids in tokenized.values()}


@pytest.mark.parametrize("setting", ["use_vllm", "use_transformers_paged", "tools", "rollout_func"])
def test_grpo_max_prompt_length_refused_where_trlshim_cannot_cut(tmp_path, setting):
    """0.26-0.28 (trlshim cuts the transformers generation path's batch): vLLM, paged generation, the tool loop and
    rollout_func tokenize the prompts elsewhere; 0.29+: rollout_func. A TypeError naming the option and release."""
    import trl

    if not trl_in(">=0.26") or (trl_in(">=0.29") and setting != "rollout_func"):
        pytest.skip(f"TRL {TRL} applies max_prompt_length itself or trlshim cuts it there")

    def lookup(city: str) -> str:
        """A tool.

        Args:
            city: a city
        """
        return city

    config, kwargs = {}, {}
    if setting in ("use_vllm", "use_transformers_paged"):
        config[setting] = True
    elif setting == "tools":
        kwargs["tools"] = [lookup]
    else:
        kwargs["rollout_func"] = lambda prompts, trainer: {}
    with pytest.raises(TypeError, match=rf"max_prompt_length.*{setting}|{setting}.*max_prompt_length") as err:
        trl.GRPOTrainer(model=helpers.make_model(), reward_funcs=lambda completions, **kw: [0.0] * len(completions),
                        args=_config(tmp_path, max_prompt_length=LIMIT, **config), train_dataset=_dataset(),
                        processing_class=_tokenizer(), **kwargs)
    assert str(TRL) in str(err.value)


def test_grpo_prompt_cut_proxy_refuses_images_and_unknown_forms():
    """The 0.26-0.28 proxy: a batch with pixel values would lose image tokens (ValueError); a prompt tokenization
    in another form than the generation path's (not left-padded tensors) is not one it knows how to cut."""
    from transformers import BatchEncoding

    from trlshim.patches.grpo.truncation import LastColumns

    class Processor:
        padding_side = "right"

        def __call__(self, text=None, **kw):
            ids = torch.arange(1, 9).repeat(2, 1)
            return BatchEncoding({"input_ids": ids, "attention_mask": torch.ones_like(ids),
                                  **({"pixel_values": torch.zeros(2, 3)} if kw.get("images") else {})})

    left = dict(padding=True, padding_side="left", return_tensors="pt")
    proxy = LastColumns(Processor(), 3)
    assert proxy.padding_side == "right"  # delegated
    assert proxy(text=["x", "y"], **left)["input_ids"].tolist() == [[6, 7, 8]] * 2
    with pytest.raises(ValueError, match="max_prompt_length=3 would cut prompts with images"):
        proxy(text=["x", "y"], images=[1, 2], **left)
    with pytest.raises(TypeError, match=r"max_prompt_length=3.*form trlshim does not cut"):
        proxy(text=["x", "y"])
    assert LastColumns(Processor(), 8)(text=["x"], images=[1], **left)["input_ids"].shape[1] == 8  # nothing cut


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])  # replace: TRL's own GRPOConfig refuses its own copy
def test_grpo_max_prompt_length_survives_config_copies(tmp_path, how):
    """The copies TRL, accelerate and users make of a config keep the emulated max_prompt_length (issue 9)."""
    import copy
    import dataclasses
    import pickle

    copier = {"replace": dataclasses.replace, "deepcopy": copy.deepcopy,
              "pickle": lambda c: pickle.loads(pickle.dumps(c))}[how]

    def reward(prompts, completions):
        return [float(i) for i in range(len(completions))]

    fed, moved, _ = _train(tmp_path, reward, copy_config=copier, max_prompt_length=LIMIT)
    assert fed.widths[0] == LIMIT and moved


@pytest.mark.parametrize("declared", ["0.14.0", "0.16.1"])
def test_grpo_batch_size_keeps_the_prompts_per_step_of_its_release(tmp_path, monkeypatch, declared):
    """per_device_train_batch_size=2, num_generations=2: TRL 0.14 draws 2 prompts a step (4 completions), 0.15+
    1 prompt (2 completions). With written_for, the reward function sees the declared release's prompts per step on
    every installed release (patches/grpo/batch.py); the user's config keeps the number it wrote."""
    import trl

    monkeypatch.setitem(trlshim.flags.written_for, "release", declared)
    calls = []

    def reward(prompts, completions):
        calls.append((len(set(prompts)), len(completions)))
        return [float(i) for i in range(len(completions))]

    cfg = _config(tmp_path, max_steps=2, beta=0.0)  # beta: no reference model (written_for would restore 0.04)
    trainer = trl.GRPOTrainer(model=helpers.make_model(), reward_funcs=reward, args=cfg, train_dataset=_dataset(),
                              processing_class=_tokenizer())
    trainer.train()
    assert cfg.per_device_train_batch_size == 2
    prompts = 2 if declared == "0.14.0" else 1
    assert calls == [(prompts, 2 * prompts)] * 2  # one reward call per step (gradient_accumulation_steps=1)
    if trl_in("<0.15") != (declared == "0.14.0"):
        assert any("GRPOConfig.per_device_train_batch_size=2" in m for m in report.applied())


def test_grpo_batch_size_that_014_cannot_draw_is_an_error(tmp_path, monkeypatch):
    if not trl_in("<0.15"):
        pytest.skip("only TRL 0.14 counts prompts")
    import trl

    monkeypatch.setitem(trlshim.flags.written_for, "release", "0.16.1")
    cfg = _config(tmp_path, per_device_train_batch_size=3)
    with pytest.raises(TypeError, match=r"per_device_train_batch_size=3.*counts prompts.*multiple of num_generations"):
        trl.GRPOTrainer(model=helpers.make_model(), reward_funcs=lambda completions, **kw: [0.0] * len(completions),
                        args=cfg, train_dataset=_dataset(), processing_class=_tokenizer())
