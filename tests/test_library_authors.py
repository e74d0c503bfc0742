"""Issue 14 parts 2-3: the tested matrix as an API, and the pytest plugin (--trlshim-strict / --trlshim-report)."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from trlshim import cli, matrix, versions

pytest_plugins = ["pytester"]


def test_matrix_api_gives_the_tested_releases_and_their_pins():
    assert matrix.releases() == list(versions.MATRIX) and matrix.releases()[0] == "0.8.6"
    for release in matrix.releases():
        pins = matrix.pins(release)
        assert f"trl=={release}" in pins and f"transformers=={matrix.transformers_for(release)}" in pins
        full = set(matrix.constraints(release))
        assert Path(matrix.constraints_file(release)).is_file()
        assert {p for p in pins if "==" in p} <= full  # the constraints resolve the top-level pins exactly
    with pytest.raises(ValueError, match="not in trlshim's tested matrix"):
        matrix.pins("0.7.0")


def test_table_json_is_the_matrix(capsys):
    assert cli.main(["table", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert list(data) == matrix.releases() and data["1.16.0"]["pins"] == matrix.pins("1.16.0")


CANDIDATES = ({"max_seq_length": 8}, {"max_length": 8}, {"evaluation_strategy": "no"}, {"eval_strategy": "no"})


def _translated_call() -> dict:
    """Keyword arguments of an SFTConfig call that the installed release spells differently (0.16-0.19 accept both
    max_length spellings, so the call is chosen by trying: the first one trlshim translates here)."""
    import tempfile

    import trl

    from trlshim import report

    for kw in CANDIDATES:
        seen = []
        listener = lambda key, message, site, seen=seen: seen.append(message)  # noqa: E731
        report.add_listener(listener)
        try:
            trl.SFTConfig(output_dir=tempfile.mkdtemp(), report_to="none", **kw)
        except Exception:
            continue
        finally:
            report.remove_listener(listener)
        if seen:
            return kw
    pytest.skip("no candidate call is a translation on this release")


def _legacy_call_test() -> str:
    """A test file making one call that the installed release spells differently (a translation here)."""
    (name, value), = _translated_call().items()
    return textwrap.dedent(f"""
        import trlshim, trl

        def test_legacy(tmp_path):
            cfg = trl.SFTConfig(output_dir=str(tmp_path), report_to="none", {name}={value!r})
            assert cfg is not None
    """)


PLUGIN = ("-p", "no:trlshim", "-p", "trlshim.pytest_plugin")  # whether or not the entry point is installed


@pytest.fixture(autouse=True)
def _modules_loaded(tmp_path):
    """The inner runs are in-process (a subprocess costs ~30 s of imports per run) and pytester restores
    sys.modules after each: everything the inner test imports must be loaded before (torch and pyarrow
    cannot be imported twice)."""
    import trl

    trl.SFTConfig(output_dir=str(tmp_path), report_to="none")


def test_strict_fails_at_the_callers_line(pytester):
    pytester.makepyfile(test_legacy=_legacy_call_test())
    result = pytester.runpytest(*PLUGIN, "--trlshim-strict", "-q")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "TranslationError" in out and "TRLSHIM_STRICT=1 forbids translations" in out
    assert "test_legacy.py:4]" in out  # the line of the legacy call in the caller's file


def test_report_lists_each_translation_with_its_call_site(pytester):
    pytester.makepyfile(test_legacy=_legacy_call_test())
    result = pytester.runpytest(*PLUGIN, "--trlshim-report", "-q")
    result.assert_outcomes(passed=1)
    out = result.stdout.str()
    assert "trlshim translations" in out
    assert "test_legacy.py:4" in out.split("trlshim translations", 1)[1]


def test_without_options_the_plugin_changes_nothing(pytester):
    pytester.makepyfile(test_legacy=_legacy_call_test())
    result = pytester.runpytest(*PLUGIN, "-q")
    result.assert_outcomes(passed=1)
    assert "trlshim translations" not in result.stdout.str()
