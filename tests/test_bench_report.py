"""The README's benchmark table is the one bench/report.py makes from bench/results.json."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT


def test_readme_table_matches_results() -> None:
    result = subprocess.run([sys.executable, "bench/report.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_results_have_every_benchmark() -> None:
    doc = json.loads((ROOT / "bench" / "results.json").read_text())
    assert {"rules", "startup", "plan", "verify"} <= set(doc)
    assert [r["nodes"] for r in doc["rules"]] == [3, 100, 1000, 5000]
    assert [r["nodes"] for r in doc["verify"]] == [10, 300, 1000]
