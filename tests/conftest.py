import helpers
import pytest


@pytest.fixture
def tokenizer():
    return helpers.make_tokenizer()


@pytest.fixture
def model():
    return helpers.make_model()


@pytest.fixture(autouse=True)
def _fresh_reports():
    from trlshim import report

    report.reset()
    yield


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """accelerate keeps its state (mixed precision included) in process-wide singletons, and
    transformers' TrainingArguments writes ACCELERATE_MIXED_PRECISION into os.environ: restore both
    so one test's bf16 run does not decide the precision of the next test's trainer."""
    import os

    saved = {k: v for k, v in os.environ.items() if k.startswith("ACCELERATE_")}
    yield
    for k in [k for k in os.environ if k.startswith("ACCELERATE_")]:
        del os.environ[k]
    os.environ.update(saved)
    from corpus._support import reset_accelerate

    reset_accelerate()
