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


def test_the_readme_points_only_at_what_the_repository_holds() -> None:
    """Every file or folder the README names by path exists here; no document outside it is cited."""
    import re

    from tests.conftest import ROOT

    text = (ROOT / "README.md").read_text()
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        assert target.startswith("https://") or (ROOT / target).exists(), target
    named = set(re.findall(r"`((?:examples|environments|tests|bench|ket_infra)/[\w./-]*)`", text))
    assert len(named) >= 10
    for path in named:
        if re.search(r"[A-Z]{3,}", path):  # a placeholder such as environments/ENV.yaml
            continue
        assert (ROOT / path).exists() or list(ROOT.glob(path)), path
    for outside in ("DESIGN.md", "PORTS.md", "STYLE.md"):
        assert outside not in text
