"""The agreement table (docs/results/agreement.md) names, in every row, tests that exist and what they compare with."""
from __future__ import annotations

import re

from conftest import ROOT


def agreement_rows() -> list[list[str]]:
    text = (ROOT / "docs" / "results" / "agreement.md").read_text()
    section = text.split("# Agreement with the reference code", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("| ")]
    assert lines[0].startswith("| piece | the reference's definition") and "held by" in lines[0]
    return [[cell.strip() for cell in ln.strip("|").split(" | ")] for ln in lines[2:]]


def test_every_row_names_existing_tests_and_a_comparison():
    rows = agreement_rows()
    assert len(rows) >= 15
    for piece, _, held_by, compared in rows:
        assert compared, piece
        named, current = [], None
        for ref in re.findall(r"`([\w./]*(?:\.py)?(?:::\w+)?)`", held_by):
            path, _, func = ref.partition("::")
            current = path or current
            assert current and current.endswith(".py"), (piece, ref)
            named.append((current, func))
        assert named, piece
        for path, func in named:
            source = (ROOT / "tests" / path).read_text()
            assert not func or re.search(rf"^def {func}\(", source, re.M), (piece, path, func)
