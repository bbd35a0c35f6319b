"""The README's benchmark table is the one bench/report.py makes from bench/results.json."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT


def test_readme_table_matches_results() -> None:
    result = subprocess.run([sys.executable, "bench/report.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_results_have_every_benchmark() -> None:
    doc = json.loads((ROOT / "bench" / "results.json").read_text())
    assert {"rules", "startup", "plan", "verify", "audit"} <= set(doc)
    assert [r["nodes"] for r in doc["rules"]] == [3, 100, 1000, 5000]
    assert [r["nodes"] for r in doc["verify"]] == [10, 300, 1000]
    assert [(r["nodes"], r["excess"]) for r in doc["audit"]] == [(10, 0), (300, 0), (1000, 0)]


def _report() -> Any:
    spec = importlib.util.spec_from_file_location("report", ROOT / "bench" / "report.py")
    assert spec is not None and spec.loader is not None
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    return report


AUDIT_DOC = {
    "verify": [
        {"nodes": 10, "verify_s": 0.63, "api_calls": 3, "checks": 182, "node_pairs": 297},
    ],
    "audit": [
        {"nodes": 10, "audit_s": 1.234, "api_calls": 4, "rules_checked": 81, "excess": 0, "runs": 3},
        {"nodes": 1000, "audit_s": 9.5, "api_calls": 13, "rules_checked": 223, "excess": 0, "runs": 3},
    ],
}


def test_audit_rows_render_in_the_generated_block_after_verify() -> None:
    report = _report()
    readme = f"# ket-infra\n\nbefore\n\n{report.START}\nstale\n{report.END}\n\nafter\n"
    out = report.render(readme, AUDIT_DOC)
    head, rest = out.split(report.START, 1)
    block, tail = rest.split(report.END, 1)
    assert head == "# ket-infra\n\nbefore\n\n" and tail == "\n\nafter\n"
    assert "stale" not in block
    lines = block.splitlines()
    assert lines.index("`ket-infra audit` after an apply in the sandbox:") > lines.index(
        "`ket-infra verify` after an apply in the sandbox:"
    )
    start = lines.index("| nodes | audit | AWS API calls | inbound rules checked | excess |")
    assert lines[start + 1 : start + 4] == [
        "|---:|---:|---:|---:|---:|",
        "| 10 | 1.23 s | 4 | 81 | 0 |",
        "| 1000 | 9.50 s | 13 | 223 | 0 |",
    ]


def test_no_audit_rows_no_audit_table() -> None:
    assert "ket-infra audit" not in _report().table({"verify": AUDIT_DOC["verify"]})


def test_print_renders_other_figures_and_writes_nothing(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    results.write_text(json.dumps(AUDIT_DOC))
    readme = (ROOT / "README.md").read_text()
    result = subprocess.run(
        [sys.executable, "bench/report.py", "--results", str(results), "--print"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "| 1000 | 9.50 s | 13 | 223 | 0 |" in result.stdout.splitlines()
    assert (ROOT / "README.md").read_text() == readme


def test_each_known_breakage_still_finds_its_line() -> None:
    """bench/breakages.py edits one exact line per row; a refactor that moves the line must move the row too
    (`make mutants` runs the rows: a stale one stops it)."""
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
