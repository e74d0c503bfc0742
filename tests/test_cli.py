"""trlshim doctor and trlshim demo."""
from __future__ import annotations

import pytest

from trlshim import cli
from trlshim.versions import trl_version


def test_doctor_lists_versions_pair_and_active_patches(capsys):
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert f"trl           {trl_version()}" in out
    assert "tested by the trlshim matrix" in out
    assert "[    active] sft.pipeline" in out


def test_doctor_flags_known_bad_pairs():
    from packaging.version import Version

    from trlshim.versions import pair_problems

    assert pair_problems(Version("0.11.4"), Version("5.0.0"))
    assert pair_problems(Version("0.12.2"), Version("4.47.0"))
    assert pair_problems(Version("0.20.0"), Version("4.45.0"))
    assert not pair_problems(Version("1.16.0"), Version("5.19.0"))


@pytest.mark.parametrize("steps", [12])
def test_demo_trains_and_loss_goes_down(capsys, tmp_path, steps):
    assert cli.main(["demo", "--steps", str(steps), "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "loss went down" in out
    assert "translations applied" in out
