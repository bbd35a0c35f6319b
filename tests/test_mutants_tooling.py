"""`make mutants` counts what the CLI's child processes reach: the glue that lets it (bench/mutmut_children.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, child_env

SITE = ROOT / "bench" / "mutmut_site"
MUTANT = "ket_infra.workflow.x_plan__mutmut_1"


def _plugin() -> Any:
    from bench import mutmut_children

    return mutmut_children


def _child(tmp_path: Path, mutant: str) -> list[str]:
    """Run a child that reaches one mutated function the way a trampoline notes it; what it wrote."""
    hits = tmp_path / "hits"
    hits.mkdir()
    env = {**os.environ, "MUTANT_UNDER_TEST": mutant, "KET_INFRA_MUTMUT_HITS": str(hits), "PYTHONPATH": str(SITE)}
    reach = "from mutmut.mutation import trampoline; trampoline.record_trampoline_hit('ket_infra.workflow.x_plan')"
    done = subprocess.run([sys.executable, "-c", reach], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return [p.read_text() for p in hits.glob("*.hits")]


def test_a_child_notes_what_it_reaches_while_mutmut_maps_the_tests(tmp_path: Path) -> None:
    # mutmut's own note would read its configuration in the child's working directory, which has none
    assert _child(tmp_path, "stats") == ["ket_infra.workflow.x_plan"]


def test_a_child_running_a_mutant_is_left_as_it_is(tmp_path: Path) -> None:
    env = {**os.environ, "MUTANT_UNDER_TEST": MUTANT, "KET_INFRA_MUTMUT_HITS": str(tmp_path), "PYTHONPATH": str(SITE)}
    seen = "import sys; print('mutmut' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", seen], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout == "False\n", done.stderr
    env["MUTANT_UNDER_TEST"] = "stats"
    done = subprocess.run([sys.executable, "-c", seen], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout == "True\n", done.stderr  # the same check can fail


def test_what_children_noted_goes_to_the_test_that_started_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mutmut.state import state

    plugin = _plugin()
    (tmp_path / "1.hits").write_text("ket_infra.workflow.x_plan\nket_infra.workflow.x_context")
    (tmp_path / "2.hits").write_text("ket_infra.workflow.x_apply")
    monkeypatch.setenv("MUTANT_UNDER_TEST", "stats")
    monkeypatch.setenv(plugin.HITS, str(tmp_path))
    before = set(state()._stats)
    try:
        plugin.pytest_runtest_teardown(None, None)
        assert set(state()._stats) - before == {
            "ket_infra.workflow.x_plan",
            "ket_infra.workflow.x_context",
            "ket_infra.workflow.x_apply",
        }
        assert not list(tmp_path.iterdir())  # read once: the next test starts with none
    finally:
        state()._stats.clear()
        state()._stats.update(before)


def test_the_plugin_does_nothing_outside_the_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    plugin = _plugin()
    monkeypatch.delenv("MUTANT_UNDER_TEST", raising=False)
    monkeypatch.delenv(plugin.HITS, raising=False)
    path = os.environ.get("PYTHONPATH")
    plugin.pytest_configure(None)
    assert plugin.HITS not in os.environ and os.environ.get("PYTHONPATH") == path


def test_a_child_elsewhere_runs_the_mutated_tree(tmp_path: Path) -> None:
    env = child_env(tmp_path, {"MUTANT_UNDER_TEST": MUTANT, "PYTHONPATH": "/elsewhere"})
    assert env == {"MUTANT_UNDER_TEST": MUTANT, "PYTHONPATH": f"{ROOT}{os.pathsep}/elsewhere"}
    assert child_env(ROOT, {"MUTANT_UNDER_TEST": MUTANT}) == {"MUTANT_UNDER_TEST": MUTANT}  # its cwd finds it


def test_while_mapping_a_child_takes_notes_only_with_the_plugin(tmp_path: Path) -> None:
    assert child_env(tmp_path, {"MUTANT_UNDER_TEST": "stats"}) == {}
    marked = child_env(tmp_path, {"MUTANT_UNDER_TEST": "stats", "KET_INFRA_MUTMUT_HITS": "/h", "PYTHONPATH": "/x"})
    assert marked["PYTHONPATH"] == os.pathsep.join([str(ROOT), str(SITE), "/x"])
    # a test that sets its own PYTHONPATH does not lose the child's note-taking
    here = child_env(ROOT, {"MUTANT_UNDER_TEST": "stats", "KET_INFRA_MUTMUT_HITS": "/h", "PYTHONPATH": str(ROOT)})
    assert here["PYTHONPATH"] == os.pathsep.join([str(SITE), str(ROOT)])
    assert child_env(ROOT, {"MUTANT_UNDER_TEST": "stats"}) == {"MUTANT_UNDER_TEST": "stats"}
    assert child_env(tmp_path, {"HOME": "/root"}) == {"HOME": "/root"}  # no mutation testing: as it is
