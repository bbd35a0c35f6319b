"""Every example plan loads, and its checked-in port matrix is current."""

from __future__ import annotations

import pytest

from ket_infra.layout import layout
from ket_infra.plan import load_plan
from ket_infra.report import render
from tests.conftest import EXAMPLES
from tests.golden import check_golden

PLANS = sorted(EXAMPLES.glob("*.yaml"))


def test_there_are_examples() -> None:
    assert {p.stem for p in PLANS} >= {"calico-overlay", "calico-routed", "weave-encrypted", "contiv", "v1-4-legacy"}


@pytest.mark.parametrize("plan", PLANS, ids=[p.stem for p in PLANS])
def test_example_markdown_is_current(plan) -> None:
    check_golden(plan.with_suffix(".rules.md"), render(layout(load_plan(plan)), "markdown"))


def test_each_promise_in_the_readme_names_a_test_that_exists() -> None:
    import re

    from tests.conftest import ROOT

    text = (ROOT / "README.md").read_text()
    section = text.split("## Promises", 1)[1].split("\n## ", 1)[0]
    named = re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?`", section)
    assert len(named) >= 10
    for path, name in named:
        source = (ROOT / path).read_text()
        assert not name or re.search(rf"^def {name}\(", source, re.M), f"{path}::{name} is no test"
