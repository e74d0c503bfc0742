import pytest


@pytest.fixture(autouse=True)
def _no_auto_padding_free_for_argument_tests(request, monkeypatch):
    """test_sft_trainer.py checks padded rows (Recorder.rows uses the attention mask); auto
    padding-free (patches/packing.py) would flatten them on TRL >= 1.10. Those tests are about
    argument translation, so they run with it off; test_packing.py covers it."""
    if request.module.__name__.endswith("test_sft_trainer"):
        monkeypatch.setenv("TRLSHIM_AUTO_PADDING_FREE", "0")
    yield
