"""The README's benchmark table is the one bench/report.py makes from bench/results.json."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def test_readme_table_matches_results() -> None:
    result = subprocess.run([sys.executable, "bench/report.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_results_have_every_benchmark() -> None:
    doc = json.loads((ROOT / "bench" / "results.json").read_text())
    assert {"rules", "startup", "plan", "verify"} <= set(doc)
    assert [r["nodes"] for r in doc["rules"]] == [3, 100, 1000, 5000]
    assert [r["nodes"] for r in doc["verify"]] == [10, 300, 1000]


def test_each_known_breakage_still_finds_its_line() -> None:
    """bench/breakages.py edits one exact line per row; a refactor that moves the line must move the row too
    (`make mutants` runs the rows: a stale one stops it)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("breakages", ROOT / "bench" / "breakages.py")
    assert spec is not None and spec.loader is not None
    breakages = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(breakages)
    assert len(breakages.ROWS) == 9
    for behaviour, path, text, broken, tests in breakages.ROWS:
        if "mutmut" in (ROOT / path).read_text():
            pytest.skip("ket_infra here is mutmut's instrumented copy; the rows are checked against the source")
        assert (ROOT / path).read_text().count(text) == 1, f"{behaviour}: {text!r} is not once in {path}"
        assert broken != text and tests
