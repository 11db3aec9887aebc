"""docs/reliability.md lists each guarantee under concurrency and bad luck with the test that
shows it (tests/faults/guarantees.py): every named test exists, and the page shows every line."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from faults.guarantees import GUARANTEES, markdown

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("test", sorted({t for _w, _d, t in GUARANTEES}))
def test_every_named_test_exists(test: str) -> None:
    path, name = test.split("::")
    tree = ast.parse((ROOT / path).read_text())
    names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    assert name in names, f"{test}: no such test"


def test_the_reliability_page_shows_every_guarantee() -> None:
    page = (ROOT / "docs" / "reliability.md").read_text()
    missing = [line for line in markdown().splitlines() if line not in page]
    assert not missing, ("docs/reliability.md lacks these lines of tests/faults/guarantees.py; "
                         "`make faults` writes the page:\n" + "\n".join(missing))
