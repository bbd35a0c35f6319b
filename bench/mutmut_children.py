"""A pytest plugin for `make mutants`: count what the CLI's child processes reach.

mutmut runs, for each mutant, only the tests it saw reach the mutated function, and it sees
only the test process itself. Most tests of the command line start `python -m ket_infra` as a
child (the way a user runs it), so without this plugin mutmut would think no test reaches most
of workflow.py and would not run them. While mutmut maps the tests, this plugin names a folder
(KET_INFRA_MUTMUT_HITS) where each child writes what it reached (tests/conftest.py's child_env
puts bench/mutmut_site, whose sitecustomize does that, on the child's PYTHONPATH), and adds what
they noted to the test that started them.

pyproject.toml's [tool.mutmut] pytest_add_cli_args loads it; `make test` does not.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

HITS = "KET_INFRA_MUTMUT_HITS"


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("MUTANT_UNDER_TEST") != "stats":  # mutmut maps the tests
        return
    os.environ[HITS] = tempfile.mkdtemp(prefix="ket-infra-mutmut-")


@pytest.hookimpl(tryfirst=True)  # before mutmut's own teardown hook files what this test reached
def pytest_runtest_teardown(item: pytest.Item, nextitem: Any) -> None:
    hits = os.environ.get(HITS)
    if not hits:  # named only while mapping
        return
    from mutmut.state import state

    for noted in Path(hits).glob("*.hits"):
        state()._stats.update(noted.read_text().split())
        noted.unlink()


def pytest_unconfigure(config: pytest.Config) -> None:
    hits = os.environ.pop(HITS, None)
    if hits:
        shutil.rmtree(hits, ignore_errors=True)
