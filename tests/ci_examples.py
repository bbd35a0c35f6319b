"""The pipeline examples in examples/ci/, read as the CI systems read them: which shell lines each
network job runs, in order. test_ci_examples.py checks their shape and that every ket-infra
command parses; test_packaging.py runs them, with the installed wheel, against the sandbox.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.conftest import EXAMPLES

GITHUB = EXAMPLES / "ci" / "github-actions.yml"
GITLAB = EXAMPLES / "ci" / "gitlab-ci.yml"
NETWORK_JOBS = {GITHUB: ("network",), GITLAB: ("network-plan", "network-apply")}
INSTALL_JOB = "install"
GITLAB_RESERVED = {"stages", "variables", "default", "include", "workflow"}


def load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict), path
    return doc


def jobs(path: Path) -> dict[str, dict[str, Any]]:
    doc = load(path)
    if path == GITHUB:
        return dict(doc["jobs"])
    return {k: v for k, v in doc.items() if k not in GITLAB_RESERVED and not k.startswith(".")}


def _lines(block: str | list[str]) -> list[str]:
    items = [block] if isinstance(block, str) else block
    return [ln.strip() for item in items for ln in item.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def shell_lines(path: Path) -> list[str]:
    """The shell lines the network jobs run, in order, without installing ket-infra (that is given)."""
    out: list[str] = []
    for name in NETWORK_JOBS[path]:
        job = jobs(path)[name]
        if path == GITHUB:
            blocks = [step["run"] for step in job["steps"] if "run" in step]
        else:
            blocks = [job.get("script", []), job.get("after_script", [])]
        out += [ln for block in blocks for ln in _lines(block) if not ln.startswith("pip install")]
    return out


def ket_commands(path: Path) -> list[str]:
    return [ln for ln in shell_lines(path) if ln.startswith("ket-infra ")]


def variables(path: Path) -> dict[str, str]:
    doc = load(path)
    return {k: str(v) for k, v in (doc["env"] if path == GITHUB else doc["variables"]).items()}
