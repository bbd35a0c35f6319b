"""A pytest plugin for `make mutants`: count what the CLI's child processes reach.

mutmut runs, for each mutant, only the tests it saw reach the mutated function, and it sees
only the test process itself. Most tests of the command line start `python -m ket_infra` as a
child (the way a user runs it), so without this plugin mutmut would think no test reaches most
of workflow.py and would not run them. While mutmut maps the tests, this plugin puts
bench/mutmut_site on the children's PYTHONPATH (its sitecustomize notes what a child reaches)
and adds what they noted to the test that started them.

pyproject.toml's [tool.mutmut] pytest_add_cli_args loads it; `make test` does not.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

SITE = Path(__file__).resolve().parent / "mutmut_site"
HITS = "KET_INFRA_MUTMUT_HITS"


def mapping() -> bool:
    return os.environ.get("MUTANT_UNDER_TEST") == "stats"


def pytest_configure(config: pytest.Config) -> None:
    if not mapping():
        return
    os.environ[HITS] = tempfile.mkdtemp(prefix="ket-infra-mutmut-")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(SITE), os.environ.get("PYTHONPATH")) if p)


@pytest.hookimpl(tryfirst=True)  # before mutmut's own teardown hook files what this test reached
def pytest_runtest_teardown(item: pytest.Item, nextitem: Any) -> None:
    hits = os.environ.get(HITS)
    if not hits or not mapping():
        return
    from mutmut.state import state

    for noted in Path(hits).glob("*.hits"):
        state()._stats.update(noted.read_text().split())
        noted.unlink()


def pytest_unconfigure(config: pytest.Config) -> None:
    hits = os.environ.pop(HITS, None)
    if hits:
        shutil.rmtree(hits, ignore_errors=True)
        site = str(SITE)
        rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != site]
        if rest:
            os.environ["PYTHONPATH"] = os.pathsep.join(rest)
        else:
            os.environ.pop("PYTHONPATH", None)
