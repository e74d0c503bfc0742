"""A non-editable install (what nox and users get) ships exactly the packages pyproject lists: every
package folder under trlshim/ must be listed there, and the data files trlshim reads must be package data."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_trlshim_package_is_listed_in_pyproject():
    text = (ROOT / "pyproject.toml").read_text()
    listed = set(re.findall(r'"(trlshim(?:\.[a-z_]+)*)"', re.search(r"^packages = \[(.*?)\]", text, re.M | re.S).group(1)))
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "trlshim").rglob("__init__.py")}
    assert found <= listed, sorted(found - listed)


def test_data_files_are_package_data():
    text = (ROOT / "pyproject.toml").read_text()
    patterns = re.search(r"^trlshim = \[(.*?)\]", text, re.M).group(1)
    for path in (ROOT / "trlshim" / "data").rglob("*"):
        if path.is_file():
            rel = path.relative_to(ROOT / "trlshim").as_posix()
            assert any(Path(rel).match(p.strip(' "')) for p in patterns.split(",")), rel
