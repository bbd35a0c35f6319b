"""examples/ci/: the pipeline files a user copies. Their shape (network stage before the install,
the order of the steps, the reports) and every ket-infra command in them, parsed by the real CLI.
Running them end to end against the sandbox is in test_packaging.py."""

from __future__ import annotations

import shlex

import click
import pytest

from ket_infra.cli import cli
from tests.ci_examples import GITHUB, GITLAB, INSTALL_JOB, NETWORK_JOBS, jobs, ket_commands, variables

FILES = [GITHUB, GITLAB]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_ket_infra_command_parses(path) -> None:
    commands = ket_commands(path)
    assert commands
    for line in commands:
        words = shlex.split(line.split(" > ")[0].split(" || ")[0])
        assert words[0] == "ket-infra"
        try:
            parent = click.Context(cli, info_name="ket-infra")
            name, command, rest = cli.resolve_command(parent, words[1:])
            assert command is not None and name is not None, line
            command.make_context(name, rest, parent=parent)
        except click.ClickException as exc:
            pytest.fail(f"{path.name}: {line}: {exc.format_message()}")


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_the_network_stage_comes_first_and_in_order(path) -> None:
    verbs = [shlex.split(line)[1] for line in ket_commands(path)]
    assert verbs == ["rules", "plan", "apply", "verify"], verbs
    commands = ket_commands(path)
    assert "--format markdown" in commands[0] and "> rules.md" in commands[0]
    assert "--detailed-exitcode" in commands[1] and commands[1].endswith("|| [ $? -eq 2 ]")  # 2: changes, fine
    assert "--verify" in commands[2]
    assert "--format junit > verify.xml" in commands[3]
    install = jobs(path)[INSTALL_JOB]
    needs = install["needs"]
    assert set(needs if isinstance(needs, list) else [needs]) & set(NETWORK_JOBS[path])
    assert "kismatic install apply" in str(install)
    assert set(variables(path)) >= {"KET_ENV", "KET_PLAN"}


def test_the_reports_are_where_the_ci_systems_show_them() -> None:
    gitlab = jobs(GITLAB)
    assert gitlab["network-apply"]["artifacts"]["reports"]["junit"] == "verify.xml"
    assert gitlab["network-apply"]["artifacts"]["when"] == "always"
    assert "rules.md" in gitlab["network-plan"]["artifacts"]["paths"]
    assert gitlab["network-plan"]["artifacts"]["expose_as"]  # shown on the merge request
    github = jobs(GITHUB)["network"]["steps"]
    uploads = [s["with"]["path"] for s in github if str(s.get("uses", "")).startswith("actions/upload-artifact")]
    assert any("rules.md" in p for p in uploads) and any("verify.xml" in p for p in uploads)
    assert any("GITHUB_STEP_SUMMARY" in s.get("run", "") for s in github)
