"""The Trainer's per-step walks (patches/common/bookkeeping.py): ``model.train()`` skips its walk only when no
module would change, and the parameter count behind ``total_flos`` is the original's, recounted after any
registration."""
from __future__ import annotations

import helpers
import pytest

torch = pytest.importorskip("torch")


@pytest.fixture
def patched():
    import trlshim

    trlshim.patch()
    import trl  # noqa: F401  (the rows apply once TRL is imported)
    from transformers.modeling_utils import PreTrainedModel

    if not hasattr(PreTrainedModel.num_parameters, "__wrapped__"):
        pytest.skip("the bookkeeping rows are not applied here")
    return PreTrainedModel


@pytest.fixture
def counted_module_train(monkeypatch):
    calls = []
    original = torch.nn.Module.train

    def train(self, mode=True):
        calls.append(type(self).__name__)
        return original(self, mode)

    monkeypatch.setattr(torch.nn.Module, "train", train)
    return calls


def test_train_skips_only_when_every_module_is_already_in_that_mode(patched, counted_module_train):
    if "train" not in patched.__dict__:
        pytest.skip("this transformers has no PreTrainedModel.train")
    model = helpers.make_model().train()
    counted_module_train.clear()
    assert model.train() is model
    assert counted_module_train == []  # nothing to change: no walk
    mlp = model.model.layers[0].mlp
    mlp.eval()  # one module in the other mode: the original runs and puts it back
    counted_module_train.clear()
    model.train()
    assert mlp.training and counted_module_train
    model.eval()
    assert not any(m.training for m in model.modules())
    counted_module_train.clear()
    model.eval()
    assert counted_module_train == []


def test_train_runs_the_original_for_a_class_with_its_own_train(patched, counted_module_train):
    if "train" not in patched.__dict__:
        pytest.skip("this transformers has no PreTrainedModel.train")
    seen = []

    class Custom(torch.nn.Module):
        def train(self, mode=True):
            seen.append(mode)
            return super().train(mode)

    model = helpers.make_model().train()
    model.model.extra = Custom()
    model.train()
    assert seen == [True]


def test_switched_off_it_always_walks(patched, counted_module_train, monkeypatch):
    if "train" not in patched.__dict__:
        pytest.skip("this transformers has no PreTrainedModel.train")
    monkeypatch.setenv("TRLSHIM_FAST_BOOKKEEPING", "0")
    model = helpers.make_model().train()
    counted_module_train.clear()
    model.train()
    assert "LlamaDecoderLayer" in counted_module_train  # the original walk


def test_parameter_count_is_the_originals_and_follows_registrations(patched):
    model = helpers.make_model()
    original = patched.num_parameters.__wrapped__
    for exclude in (False, True):
        assert model.num_parameters(exclude_embeddings=exclude) == original(model, exclude_embeddings=exclude)
    before = model.num_parameters(exclude_embeddings=True)
    model.model.extra = torch.nn.Linear(4, 5)  # a module registered after the first count
    assert model.num_parameters(exclude_embeddings=True) == before + 25 == original(model, exclude_embeddings=True)
    model.model.register_parameter("scale", torch.nn.Parameter(torch.ones(3)))
    assert model.num_parameters(exclude_embeddings=True) == before + 28


@pytest.fixture
def walked(monkeypatch):
    """A model, and a list that grows each time its parameters are walked (what a count costs)."""
    model = helpers.make_model()
    walks = []
    named = model.named_parameters

    def counted(*args, **kwargs):
        walks.append(1)
        return named(*args, **kwargs)

    monkeypatch.setattr(model, "named_parameters", counted)
    return model, walks


def test_the_count_walks_the_parameters_only_after_a_registration(patched, walked):
    model, walks = walked
    first = model.num_parameters(exclude_embeddings=True)
    assert walks  # the first count walks
    walks.clear()
    for _ in range(3):  # the Trainer's next steps
        assert model.num_parameters(exclude_embeddings=True) == first
    assert walks == []
    model.model.extra = torch.nn.Linear(4, 5)
    assert model.num_parameters(exclude_embeddings=True) == first + 25 and walks


def test_a_forward_pass_keeps_the_count(patched, walked):
    """Llama-family forwards slice ``self.layers[:n]`` (a new ModuleList registering every layer again) on recent
    transformers: registrations outside the counted model change nothing it counts, so the count stays kept."""
    model, walks = walked
    first = model.num_parameters(exclude_embeddings=True)
    walks.clear()
    torch.nn.ModuleList(list(model.model.layers))  # what the slice does: every layer registered into a new list
    with torch.no_grad():
        model(input_ids=torch.tensor([[3, 4, 5, 6]]))
    assert model.num_parameters(exclude_embeddings=True) == first
    assert walks == []
    model.model.layers[0].mlp.register_buffer("seen", torch.zeros(2))  # into the model: counted again
    model.model.layers[0].mlp.register_parameter("gain", torch.nn.Parameter(torch.ones(3)))
    assert model.num_parameters(exclude_embeddings=True) == first + 3 and walks


def test_only_trainable_is_never_cached(patched):
    model = helpers.make_model()
    model.model.extra = torch.nn.Linear(4, 5)
    trainable = model.num_parameters(only_trainable=True)
    model.model.extra.weight.requires_grad_(False)  # requires_grad registers nothing: never cached
    assert model.num_parameters(only_trainable=True) == trainable - 20


def test_unpatch_removes_the_registration_hooks(patched):
    from torch.nn.modules import module

    import trlshim

    helpers.make_model().num_parameters()  # installs the hooks
    from trlshim.patches.common import bookkeeping

    assert bookkeeping._STATE["hooks"]
    trlshim.unpatch()
    try:
        assert not bookkeeping._STATE["hooks"]
        assert bookkeeping._bump not in module._global_module_registration_hooks.values()
        assert not hasattr(patched.num_parameters, "__wrapped__")
    finally:
        trlshim.patch()
