"""The release list has one source (trlshim/data/matrix.txt); the constraints files agree with it."""
from pathlib import Path

from trlshim import versions

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "trlshim" / "data" / "constraints"


def test_constraints_agree_with_the_matrix():
    for release, specs in versions.MATRIX.items():
        pinned = dict(line.split("==", 1) for line in (CONSTRAINTS / f"trl-{release}.txt").read_text().split()
                      if "==" in line)
        for spec in specs:
            if "==" in spec:
                name, version = spec.split("==", 1)
                assert pinned.get(name) == version, (release, spec, pinned.get(name))
    files = {p.name for p in CONSTRAINTS.glob("trl-*.txt")}
    assert files == {f"trl-{r}.txt" for r in versions.MATRIX}


def test_tested_and_range_come_from_the_matrix():
    assert versions.TESTED["1.16.0"] == "5.19.0" and list(versions.TESTED) == list(versions.MATRIX)
    assert versions.TESTED_RANGE.contains("0.8.6") and not versions.TESTED_RANGE.contains("1.17.0")


def test_the_trl_extra_declares_the_tested_range():
    """pyproject's `trl` extra (what `pip install trlshim[trl]` resolves) is the range trlshim tests."""
    import re

    text = (ROOT / "pyproject.toml").read_text()
    spec = re.search(r'^trl = \["trl([^"]+)"\]', text, re.M).group(1)
    from packaging.specifiers import SpecifierSet

    assert SpecifierSet(spec) == versions.TESTED_RANGE


def test_untested_release_warns_once_and_doctor_fails_on_a_known_bad_pair(monkeypatch, capsys):
    import warnings

    import trl  # noqa: F401  (patch() applies now, not at trl's import)
    from packaging.version import Version

    import trlshim
    from trlshim import cli, report

    monkeypatch.setenv("TRLSHIM_TRL_VERSION", "1.17.0")
    report.reset()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trlshim.patch()
        trlshim.patch()
    try:
        msgs = [str(w.message) for w in caught if w.category is report.UntestedReleaseWarning]
        assert len(msgs) == 1 and "1.17.0" in msgs[0] and "outside the tested range" in msgs[0]
    finally:
        monkeypatch.delenv("TRLSHIM_TRL_VERSION")
        trlshim.patch()
    assert not versions.outside_tested_range(Version("1.16.3")) and versions.outside_tested_range(Version("0.7.11"))
    monkeypatch.setattr(versions, "installed", lambda name: Version("5.0.0") if name == "transformers"
                        else Version("0.11.4") if name == "trl" else None)
    assert cli.doctor() == 1
    assert "KNOWN NOT TO WORK" in capsys.readouterr().out


def test_doctor_names_a_missing_dependency_a_release_needs(monkeypatch, capsys):
    """Issue 9 item 11: TRL 1.15 without triton fails at the first step inside TRL; doctor says so and exits 1."""
    from packaging.version import Version

    from trlshim import cli

    real = versions.installed
    monkeypatch.setattr(versions, "installed", lambda name: None if name == "triton" else real(name))
    monkeypatch.setenv("TRLSHIM_TRL_VERSION", "1.15.0")
    assert versions.dependency_problems(Version("1.15.0")) and not versions.dependency_problems(Version("1.16.0"))
    assert cli.doctor() == 1
    out = capsys.readouterr().out
    assert "pip install triton" in out and "loss_type='nll'" in out
