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
