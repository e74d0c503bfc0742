"""README's release table is generated from the registry; this keeps them equal."""
from pathlib import Path

from trlshim.cli import release_table

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_release_table_matches_registry():
    text = README.read_text()
    start, end = "<!-- release-table:start -->\n", "<!-- release-table:end -->"
    block = text[text.index(start) + len(start): text.index(end)].strip()
    assert block == release_table(), "README.md is stale: run `trlshim table` and paste it between the markers"
