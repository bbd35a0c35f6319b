"""The command line as a new user meets it, in-process: streams, warnings, errors, help.

Commands run through ket_infra.cli.main (what the console script runs) inside click's
CliRunner isolation, so stdout and stderr are told apart. Terraform is a small script
speaking its `-json` UI; AWS is moto in-process (fixture `aws`).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from tests.conftest import EXAMPLES, base_plan, write_yaml


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str


def ket(*args: str, env: dict[str, str | None] | None = None, stdin: str | None = None) -> Ran:
    """Run `ket-infra ARGS` in this process as the console script does; the working folder is kept."""
    from ket_infra.cli import main

    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    cwd = os.getcwd()
    argv = sys.argv
    code: Any = 0
    try:
        with CliRunner().isolation(input=stdin, env={"KET_INFRA_ENV": None, **(env or {})}) as (out, err, _):
            sys.argv = ["ket-infra", *args]
            try:
                main()
            except SystemExit as exc:
                code = exc.code or 0
            stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    finally:
        sys.argv = argv
        os.chdir(cwd)
        for s, h in handlers.items():
            signal.signal(s, h)
    return Ran(int(code), stdout, stderr)


# --- a cluster in moto, and a Terraform that speaks the -json UI -----------------------------------

FAKE_TERRAFORM = """#!/bin/sh
case "$1" in
  init) [ -n "$FAKE_TF_SLOW" ] && sleep "$FAKE_TF_SLOW" ;;
  version) echo '{"terraform_version": "1.11.0", "platform": "linux_amd64"}' ;;
  plan)
    action=create; rc=0
    for a in "$@"; do
      case "$a" in -out=*) : > "${a#-out=}" ;; -destroy*) action=delete ;; -detailed-exitcode*) rc=2 ;; esac
    done
    [ -n "$FAKE_TF_CHANGES" ] && { printf '%s\n' "$FAKE_TF_CHANGES"; exit $rc; }
    echo '{"type":"planned_change","change":{"action":"'$action'","resource":{"addr":"x","resource_type":"aws_security_group","resource_key":"worker"}}}'
    exit $rc ;;
  apply) echo '{"type":"apply_start"}'; echo '{"type":"apply_complete"}' ;;
  show) case "$*" in *tfplan*) printf '%s\n' "${FAKE_TF_SHOW:-null}" ;; *) echo '{"format_version":"1.0"}' ;; esac ;;
esac
exit 0
"""


def cluster(root: Path, monkeypatch: Any, **env: Any) -> Path:
    """A three-node plan whose nodes run in moto with ket-infra's groups applied (by boto3), and an
    environment file naming it; a Terraform script stands first on PATH as `terraform`."""
    from ket_infra.layout import layout
    from ket_infra.plan import load_plan
    from tests.test_verify import Cloud

    plan_path = write_yaml(root / "plan.yaml", base_plan())
    (root / "bin").mkdir()
    fake = root / "bin" / "terraform"
    fake.write_text(FAKE_TERRAFORM)
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    doc = {
        "plan_file": "../plan.yaml",
        "aws": {"region": "eu-west-1"},
        "installer_cidr": "10.0.9.5/32",
        **env,
    }
    (root / "environments").mkdir()
    env_file = write_yaml(root / "environments" / "t.yaml", doc)
    from ket_infra.environment import load_environment

    Cloud(load_plan(plan_path), layout(load_plan(plan_path), load_environment(env_file)))
    return env_file


PROGRESS = ("warning: ", "note: ", "checking AWS", "rendered ", "terraform ", "finding ", "still ")


def data_only(ran: Ran, fmt: str = "text") -> None:
    """Nothing of the progress on stdout; nothing on stderr that is not progress, a warning or a note.
    (A machine format is checked by parsing it: a JUnit report's system-out holds the warnings.)"""
    if fmt in ("text", "table"):
        assert not [ln for ln in ran.stdout.splitlines() if ln.startswith(PROGRESS)], ran.stdout
    assert all(ln.startswith(PROGRESS) or ln.startswith(" ") for ln in ran.stderr.splitlines()), ran.stderr


def parses(fmt: str, text: str) -> None:
    if fmt == "json":
        json.loads(text)
    elif fmt == "junit":
        ET.fromstring(text)
    elif fmt == "markdown":
        assert text.startswith(("# ", "Current choice: "))  # a document (compare's leads with the choice)
    elif fmt == "mermaid":
        assert text.startswith("flowchart LR\n")


def test_every_command_and_format_keeps_data_on_stdout(aws: None, tmp_path: Path, monkeypatch: Any) -> None:
    """One rule for streams: the chosen format on stdout and nothing else; progress, warnings, notes on stderr."""
    plan = str(EXAMPLES / "calico-routed.yaml")
    for fmt in ("table", "json", "markdown", "mermaid"):
        ran = ket("rules", plan, "--format", fmt)
        assert ran.code == 0, ran.stderr
        data_only(ran, fmt)
        parses(fmt, ran.stdout)
        assert "warning: " in ran.stderr and "[calico-routed-subnet]" in ran.stderr  # not at the table's bottom
    for fmt in ("table", "json", "markdown"):
        ran = ket("compare", plan, "--format", fmt)
        assert ran.code == 0, ran.stderr
        data_only(ran, fmt)
        parses(fmt, ran.stdout)

    env_file = cluster(tmp_path, monkeypatch)
    monkeypatch.chdir(tmp_path)
    ran = ket("compare", "--env", "t", "--format", "json")
    assert ran.code == 0 and json.loads(ran.stdout) and ran.stderr.startswith("finding 3 node(s)"), ran.stderr
    ran = ket("render", "--env", "t")
    assert (ran.code, ran.stdout) == (0, ""), ran.stderr
    data_only(ran)

    ran = ket("plan", "--env", "t")
    assert ran.code == 0, ran.stderr
    data_only(ran)
    assert ran.stdout.splitlines() == [
        "    + group worker: " + next(ln for ln in ran.stdout.splitlines() if "group worker" in ln).split(": ", 1)[1],
        "Plan: 1 to add, 0 to change, 0 to replace, 0 to remove.",
    ]
    assert "checking AWS account and finding 3 node(s) in eu-west-1" in ran.stderr.splitlines()
    ran = ket("plan", "--env", "t", "--format", "json", "--detailed-exitcode")
    assert ran.code == 2, ran.stderr
    data_only(ran, "json")
    assert json.loads(ran.stdout)["counts"]["create"] == 1

    ran = ket("apply", "--env", "t")
    assert ran.code == 0, ran.stderr
    data_only(ran)
    assert ran.stdout == "applied: environment t is ready for kismatic install apply\n"

    for command, formats in (("verify", ("text", "json", "junit")), ("audit", ("text", "json", "markdown", "junit"))):
        for fmt in formats:
            ran = ket(command, "--env", str(env_file), "--format", fmt)
            assert ran.code in (0, 3), ran.stderr
            data_only(ran, fmt)
            parses(fmt, ran.stdout)

    ran = ket("destroy", "--env", "t", "--auto-approve")
    assert ran.code == 0, ran.stderr
    data_only(ran)
    lines = ran.stdout.splitlines()
    assert lines[0] == "ket-infra will destroy for environment t:"
    assert lines[-1] == "destroyed: ket-infra's groups and rules for environment t are gone"


def test_quiet_keeps_errors_and_the_final_line(aws: None, tmp_path: Path, monkeypatch: Any) -> None:
    cluster(tmp_path, monkeypatch)
    monkeypatch.chdir(tmp_path)
    ran = ket("plan", "--env", "t", "--quiet")
    assert (ran.code, ran.stderr, ran.stdout) == (0, "", "Plan: 1 to add, 0 to change, 0 to replace, 0 to remove.\n")
    ran = ket("-q", "apply", "--env", "t")
    assert (ran.code, ran.stderr, ran.stdout) == (0, "", "applied: environment t is ready for kismatic install apply\n")
    ran = ket("verify", "--env", "t", "-q")
    assert (ran.code, ran.stderr) == (0, "") and len(ran.stdout.splitlines()) == 1
    assert ran.stdout.startswith("OK: ")
    assert json.loads(ket("verify", "--env", "t", "-q", "--format", "json").stdout)["ok"] is True  # whole
    ran = ket("rules", "--env", "t", "--quiet")
    assert ran.code == 0 and ran.stderr == "" and ran.stdout.startswith("cluster test;")
    ran = ket("destroy", "--env", "t", "--auto-approve", "--quiet")
    assert (ran.code, ran.stderr) == (0, "")
    assert ran.stdout == "destroyed: ket-infra's groups and rules for environment t are gone\n"
    ran = ket("rules", "missing.yaml", "--quiet")  # errors stay
    assert (ran.code, ran.stdout, ran.stderr) == (
        1,
        "",
        "error: missing.yaml: KET plan file not found; check the path\n",
    )


def test_warnings_are_said_once_and_only_while_they_apply(aws: None, tmp_path: Path, monkeypatch: Any) -> None:
    """The routed-mode subnet warning goes once discovery proved the kubelet nodes share one subnet; the commands
    after plan name the warnings in one note instead of repeating them."""
    cluster(tmp_path, monkeypatch)
    data = base_plan({"provider": "calico", "options": {"calico": {"mode": "routed"}}})
    write_yaml(tmp_path / "plan.yaml", data)
    monkeypatch.chdir(tmp_path)
    offline = ket("rules", "--env", "t")
    assert "[calico-routed-subnet]" in offline.stderr  # offline, nobody knows the subnets yet
    ran = ket("plan", "--env", "t")
    assert ran.code == 0, ran.stderr
    warned = [ln for ln in ran.stderr.splitlines() if ln.startswith("warning: ")]
    assert warned and not [w for w in warned if "calico-routed-subnet" in w]
    assert len(warned) == len(set(warned))
    doc = json.loads(ket("plan", "--env", "t", "--format", "json").stdout)
    assert doc["warnings"] and not [w for w in doc["warnings"] if w.startswith("Calico routed mode")]
    for command in ("apply", "verify", "audit"):
        ran = ket(command, "--env", "t")
        assert not [ln for ln in ran.stderr.splitlines() if ln.startswith("warning: ")], ran.stderr
        assert [ln for ln in ran.stderr.splitlines() if ln.startswith("note: ") and "warning(s) apply (" in ln]


def test_a_warning_is_acknowledged_by_its_id_in_the_environment_file(tmp_path: Path) -> None:
    plan = write_yaml(tmp_path / "plan.yaml", base_plan())
    env = {"plan_file": "plan.yaml", "aws": {"region": "eu-west-1"}, "acknowledge": ["preflight-open"]}
    env_file = write_yaml(tmp_path / "env.yaml", env)
    ran = ket("rules", str(plan), "--env", str(env_file), "--format", "json")
    assert ran.code == 0, ran.stderr
    assert "preflight" not in " ".join(ln for ln in ran.stderr.splitlines() if ln.startswith("warning: "))
    assert f"note: 1 warning(s) acknowledged in {env_file}: preflight-open" in ran.stderr.splitlines()
    doc = json.loads(ran.stdout)
    assert [a["id"] for a in doc["acknowledged"]] == ["preflight-open"]
    assert doc["acknowledged"][0]["warning"].startswith("preflight rules (kismatic-inspector")
    assert not [w for w in doc["warnings"] if w.startswith("preflight rules")]
    write_yaml(env_file, {**env, "acknowledge": ["preflight-opn"]})
    ran = ket("rules", str(plan), "--env", str(env_file))
    assert (ran.code, ran.stderr) == (
        1,
        f"error: {env_file}: acknowledge[0]: 'preflight-opn' is not a warning id; did you mean preflight-open?\n",
    )


def test_every_warning_has_an_id_it_can_be_acknowledged_by() -> None:
    from ket_infra.layout import WARNING_IDS, Warn, layout
    from ket_infra.plan import load_plan

    for path in sorted(EXAMPLES.glob("*.yaml")):
        for w in layout(load_plan(path)).warnings:
            assert isinstance(w, Warn) and w.id in WARNING_IDS, (path, w)


# --- errors that point at the real mistake ---------------------------------------------------------


def test_a_plan_file_and_an_environment_file_swapped_are_recognised(tmp_path: Path) -> None:
    plan = write_yaml(tmp_path / "mine.yaml", base_plan())
    env = write_yaml(tmp_path / "env.yaml", {"plan_file": "mine.yaml", "aws": {"region": "eu-west-1"}})
    ran = ket("plan", "--env", str(plan))
    assert (ran.code, ran.stderr) == (
        1,
        f"error: {plan}: this is a KET plan file, not an environment file; pass it as PLAN_FILE (ket-infra rules "
        f"{plan}), or name it in an environment file's plan_file: (see environments/example.yaml)\n",
    )
    ran = ket("rules", str(env))
    assert (ran.code, ran.stderr) == (
        1,
        f"error: {env}: this is a ket-infra environment file, not a KET plan file; pass it as --env (ket-infra "
        f"rules --env {env}); its plan_file: names the plan\n",
    )


def test_an_environment_name_without_a_file_lists_those_there_are(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    ran = ket("verify", "--env", "staging")
    assert ran.stderr == (
        "error: environments/staging.yaml: environment file not found; there is no environments/ folder with an "
        f"environment file in {tmp_path}; run from the folder that holds it (or -C DIR), pass its path, or write "
        "one (see environments/example.yaml)\n"
    )
    (tmp_path / "environments").mkdir()
    for name in ("prod.yaml", "sandbox.yml", "notes.txt"):
        (tmp_path / "environments" / name).write_text("")
    ran = ket("plan", "--env", "staging")
    assert (ran.code, ran.stderr) == (
        1,
        "error: environments/staging.yaml: environment file not found; environments here: prod, sandbox; or pass "
        "the path of an environment file\n",
    )


def test_a_misspelt_required_key_is_named(tmp_path: Path) -> None:
    data = base_plan()
    networking = data["cluster"]["networking"]
    networking["pod_cidr_blok"] = networking.pop("pod_cidr_block")
    plan = write_yaml(tmp_path / "plan.yaml", data)
    ran = ket("rules", str(plan))
    assert ran.stderr == (
        f"error: {plan}: cluster.networking.pod_cidr_block: is required; found pod_cidr_blok: did you mean "
        "pod_cidr_block? else set it to an IPv4 CIDR such as 172.16.0.0/16\n"
    )
    env = write_yaml(tmp_path / "env.yaml", {"plan_file": "plan.yaml", "aws": {"regoin": "eu-west-1"}})
    assert ket("rules", "--env", str(env)).stderr.startswith(
        f"error: {env}: aws.regoin: unknown key; did you mean region?"
    )


def test_rules_takes_the_environments_plan_and_refuses_another(tmp_path: Path, monkeypatch: Any) -> None:
    plan = write_yaml(tmp_path / "plan.yaml", base_plan())
    other = write_yaml(tmp_path / "other.yaml", base_plan({"provider": "weave"}))
    env = write_yaml(tmp_path / "env.yaml", {"plan_file": "plan.yaml", "aws": {"region": "eu-west-1"}})
    alone = ket("rules", "--env", str(env), "--format", "json")
    assert alone.code == 0 and json.loads(alone.stdout) == json.loads(
        ket("rules", str(plan), "--env", str(env), "--format", "json").stdout
    )
    said = (
        f"{other} is not the plan of environment env{{}}: {env}: plan_file names {plan}; drop PLAN_FILE to use "
        f"that plan, or pass the environment of {other}"
    )
    ran = ket("rules", str(other), "--env", str(env))
    assert (ran.code, ran.stdout, ran.stderr) == (1, "", f"error: {said.format('')}\n")
    ran = ket("rules", str(other), env={"KET_INFRA_ENV": str(env)})
    assert (ran.code, ran.stderr) == (1, f"error: {said.format(' (from KET_INFRA_ENV)')}\n")
    ran = ket("rules")
    assert ran.stderr == (
        "error: give PLAN_FILE, or --env ENV whose plan_file names it (or set KET_INFRA_ENV) "
        "(see ket-infra rules --help)\n"
    )


def test_a_stale_plan_names_the_file_and_key_that_changed(aws: None, tmp_path: Path, monkeypatch: Any) -> None:
    env_file = cluster(tmp_path, monkeypatch)
    monkeypatch.chdir(tmp_path)
    assert ket("plan", "--env", "t", "-q").code == 0
    doc = yaml.safe_load(env_file.read_text())
    write_yaml(env_file, {**doc, "installer_cidr": "10.0.9.6/32"})
    ran = ket("apply", "--env", "t")
    assert (ran.code, ran.stderr.splitlines()[-1]) == (
        1,
        "error: the saved plan for environment t is stale: the environment file environments/t.yaml "
        "(installer_cidr) changed since it was made; run ket-infra plan --env t again",
    )
    assert ket("plan", "--env", "t", "-q").code == 0
    module = tmp_path / ".work" / "t" / "main.tf"
    module.write_text(module.read_text() + "# edited\n")
    data = yaml.safe_load((tmp_path / "plan.yaml").read_text())
    data["cluster"]["name"] = "renamed"
    write_yaml(tmp_path / "plan.yaml", data)
    ran = ket("apply", "--env", "t")
    assert ran.stderr.splitlines()[-1] == (
        f"error: the saved plan for environment t is stale: the plan file {tmp_path / 'plan.yaml'} (cluster.name) "
        f"and the rendered module ({module}) changed since it was made; run ket-infra plan --env t again"
    )


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["plan"], "error: Missing option '--env'. (see ket-infra plan --help)\n"),
        (["sandbox", "up"], "error: Missing argument 'PLAN_FILE'. (see ket-infra sandbox up --help)\n"),
        (["nonsense"], "error: No such command 'nonsense'. (see ket-infra --help)\n"),
    ],
)
def test_usage_errors_point_at_the_subcommands_help(args: list[str], said: str) -> None:
    ran = ket(*args)
    assert (ran.code, ran.stderr) == (1, said)


# --- help and commands -------------------------------------------------------------------------------


def test_help_lists_the_commands_in_workflow_order_each_with_help_and_examples() -> None:
    import click

    from ket_infra.cli import cli

    ran = ket("--help")
    listed = ran.stdout.split("Commands:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    names = [ln.split()[0] for ln in listed]
    assert names == [
        "rules",
        "compare",
        "plan",
        "apply",
        "verify",
        "audit",
        "destroy",
        "render",
        "iam-policy",
        "sandbox",
        "lab",
        "version",
    ]
    assert not [ln for ln in listed if ln.rstrip().endswith("...")], listed  # no summary cut mid-phrase

    def commands(group: click.Group, path: list[str]) -> list[tuple[list[str], click.Command]]:
        out: list[tuple[list[str], click.Command]] = []
        for name, command in group.commands.items():
            out.append(([*path, name], command))
            if isinstance(command, click.Group):
                out += commands(command, [*path, name])
        return out

    for path, command in commands(cli, []):
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"ket-infra {' '.join(path)} {param.opts[0]} has no help"
        page = ket(*path, "--help").stdout
        assert "Example" in page.split("Options:")[-1], f"ket-infra {' '.join(path)} --help ends in no example"
    assert "--env-file" in ket("sandbox", "up", "--help").stdout.split("Options:")[0]


def test_version_names_ket_infra_terraform_and_the_mirror(tmp_path: Path, monkeypatch: Any) -> None:
    from ket_infra import __version__

    fake = tmp_path / "terraform"
    fake.write_text('#!/bin/sh\necho \'{"terraform_version": "1.9.8"}\'\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("KET_INFRA_TF_PLUGIN_DIR", "/srv/mirror")
    ran = ket("version")
    assert (ran.code, ran.stdout) == (
        0,
        f"ket-infra {__version__}\nterraform: {fake} 1.9.8\nprovider mirror: /srv/mirror\n",
    )
    assert ket("--version").stdout == f"ket-infra, version {__version__}\n"


def test_ket_infra_env_stands_in_for_env_and_chdir_runs_elsewhere(tmp_path: Path) -> None:
    (tmp_path / "environments").mkdir()
    write_yaml(tmp_path / "plan.yaml", base_plan())
    write_yaml(tmp_path / "environments" / "lab.yaml", {"plan_file": "../plan.yaml", "aws": {"region": "eu-west-1"}})
    ran = ket("-C", str(tmp_path), "rules", "--format", "json", env={"KET_INFRA_ENV": "lab"})
    assert ran.code == 0, ran.stderr
    assert json.loads(ran.stdout)["cluster"] == "test"
    ran = ket("--chdir", str(tmp_path / "nowhere"), "rules", "plan.yaml")
    assert ran.code == 1 and "nowhere: No such file or directory; give an existing folder" in ran.stderr


def test_progress_says_something_at_least_every_interval_outside_terraforms_stream_too(
    aws: None, tmp_path: Path, monkeypatch: Any
) -> None:
    """A silent step (here an init that takes a while; a node lookup, a verify after the apply) still gets a
    line every INTERVAL (10 s; 0.2 s here), naming where the command is."""
    from ket_infra import progress

    cluster(tmp_path, monkeypatch)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(progress, "INTERVAL", 0.2)
    monkeypatch.setenv("FAKE_TF_SLOW", "1")
    ran = ket("plan", "--env", "t")
    assert ran.code == 0, ran.stderr
    beats = [ln for ln in ran.stderr.splitlines() if ln.startswith("still working: terraform init in ")]
    assert len(beats) >= 2, ran.stderr
    assert not [ln for ln in ran.stdout.splitlines() if ln.startswith("still")]


def test_plan_json_changes_carry_protocol_ports_peer_and_what_an_update_changes(
    aws: None, tmp_path: Path, monkeypatch: Any
) -> None:
    """A created rule as the rendered rules want it, a removed one as the saved plan's state has it (its peer
    group named), an update with the attributes it changes, before and after."""
    cluster(tmp_path, monkeypatch)
    monkeypatch.chdir(tmp_path)
    ingress, egress = "aws_vpc_security_group_ingress_rule", "aws_vpc_security_group_egress_rule"

    def change(action: str, kind: str, key: str) -> str:
        resource = {"addr": f"module.net.{kind}.this[{key!r}]", "resource_type": kind, "resource_key": key}
        return json.dumps({"type": "planned_change", "change": {"action": action, "resource": resource}})

    monkeypatch.setenv(
        "FAKE_TF_CHANGES",
        "\n".join(
            [
                change("create", ingress, "master-in-tcp-179-from-worker"),
                change("update", ingress, "master-in-proto4-from-worker"),
                change("delete", egress, "worker-out-tcp-9999-to-master"),
            ]
        ),
    )
    rule = {"ip_protocol": "4", "from_port": -1, "to_port": -1, "referenced_security_group_id": "sg-w"}
    shown = {
        "resource_changes": [
            {"type": "aws_security_group", "index": "master", "change": {"before": {"id": "sg-m"}, "after": {}}},
            {
                "type": ingress,
                "index": "master-in-proto4-from-worker",
                "change": {"before": {**rule, "description": None}, "after": {**rule, "description": "IP-in-IP"}},
            },
            {
                "type": egress,
                "index": "worker-out-tcp-9999-to-master",
                "change": {
                    "before": {"ip_protocol": "tcp", "from_port": 9999, "to_port": 9999,
                               "referenced_security_group_id": "sg-m"},
                    "after": None,
                },
            },
        ]
    }  # fmt: skip
    monkeypatch.setenv("FAKE_TF_SHOW", json.dumps(shown))
    ran = ket("plan", "--env", "t", "--format", "json")
    assert ran.code == 0, ran.stderr
    changes = {c["action"]: c for c in json.loads(ran.stdout)["changes"]}
    created, updated, deleted = changes["create"], changes["update"], changes["delete"]
    assert {k: created[k] for k in ("protocol", "from_port", "to_port", "source")} == {
        "protocol": "tcp", "from_port": 179, "to_port": 179, "source": {"group": "worker"}
    }  # fmt: skip
    assert updated["protocol"] == "4" and updated["source"] == {"group": "worker"}
    assert (updated["before"], updated["after"]) == ({"description": None}, {"description": "IP-in-IP"})
    assert {k: deleted[k] for k in ("action", "protocol", "from_port", "to_port", "destination")} == {
        "action": "delete", "protocol": "tcp", "from_port": 9999, "to_port": 9999, "destination": {"group": "master"}
    }  # fmt: skip


def test_the_digests_a_stale_plan_is_judged_by_hold_no_password_of_its_own() -> None:
    """A per-key digest of a short password could be guessed back: passwords count only in the whole file's."""
    from ket_infra.workflow import input_digests

    plan = {"cluster": {"name": "a", "admin_password": "hunter2"}, "add_ons": {"cni": {"options": {"weave": {}}}}}
    plan["add_ons"]["cni"]["options"]["weave"]["password"] = "s3cr3t"
    digests = input_digests([("p.yaml", json.dumps(plan).encode()), ("e.yaml", b"{}"), ("main.tf", b"x")])
    assert set(digests) == {"p.yaml#cluster.name", "p.yaml#*", "e.yaml#", "e.yaml#*", "main.tf"}
