"""The release list has one source (trlshim/data/matrix.txt); the constraints files agree with it."""
from pathlib import Path

from trlshim import versions

ROOT = Path(__file__).resolve().parents[1]


def test_constraints_agree_with_the_matrix():
    for release, specs in versions.MATRIX.items():
        pinned = dict(line.split("==", 1) for line in (ROOT / "constraints" / f"trl-{release}.txt").read_text().split()
                      if "==" in line)
        for spec in specs:
            if "==" in spec:
                name, version = spec.split("==", 1)
                assert pinned.get(name) == version, (release, spec, pinned.get(name))
    files = {p.name for p in (ROOT / "constraints").glob("trl-*.txt")}
    assert files == {f"trl-{r}.txt" for r in versions.MATRIX}


def test_tested_and_range_come_from_the_matrix():
    assert versions.TESTED["1.16.0"] == "5.19.0" and list(versions.TESTED) == list(versions.MATRIX)
    assert versions.TESTED_RANGE.contains("0.8.6") and not versions.TESTED_RANGE.contains("1.17.0")
