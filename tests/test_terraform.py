"""The Terraform driver with the real CLI, fast: a root module of Terraform's
built-in `terraform_data` resources needs no provider, so init, plan, apply,
state and destroy run in about a second each. What the AWS provider adds is
covered end to end in test_e2e.py.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from ket_infra.environment import AwsConfig, Environment, TerraformConfig
from ket_infra.progress import Live
from ket_infra.terraform import (
    PLAN_FILE,
    Change,
    PlanSummary,
    Terraform,
    TerraformError,
    _last_error,
    _lock_holder,
    _Watch,
    summarize_changes,
    summary_lines,
)
from tests.tf import needs_terraform_cli

MODULE = """
resource "terraform_data" "rule" {
  for_each = toset(var.names)
  input    = each.key
}

variable "names" {
  type = list(string)
}
"""


def env(binary: str = "terraform") -> Environment:
    return Environment(
        name="unit",
        path="environments/unit.yaml",
        plan_file=Path("plan.yaml"),
        aws=AwsConfig("eu-west-1"),
        terraform=TerraformConfig(binary=binary),
    )


def module(work: Path, names: list[str]) -> Terraform:
    work.mkdir(parents=True, exist_ok=True)
    (work / "main.tf").write_text(MODULE)
    (work / "names.auto.tfvars.json").write_text(json.dumps({"names": names}))
    lines: list[str] = []
    tf = Terraform(env(), work, lines.append)
    tf.lines = lines  # type: ignore[attr-defined]
    return tf


@needs_terraform_cli
def test_init_plan_apply_state_destroy(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    tf = module(tmp_path / "work", ["a", "b"])
    assert tf.check_version().startswith("1.")
    tf.init()
    summary = tf.plan()
    assert (tmp_path / "work" / PLAN_FILE).exists()
    assert [(c.action, c.kind, c.name) for c in summary.changes] == [("create", "other", "a"), ("create", "other", "b")]
    assert summary.counts() == {"create": 2, "update": 0, "replace": 0, "delete": 0, "import": 0}
    tf.apply()
    assert sorted(tf.state_resources()) == ['terraform_data.rule["a"]', 'terraform_data.rule["b"]']

    (tmp_path / "work" / "names.auto.tfvars.json").write_text(json.dumps({"names": ["b", "c"]}))
    again = tf.plan()
    assert [(c.action, c.name) for c in again.changes] == [("delete", "a"), ("create", "c")]
    assert summary_lines(again)[-1] == "Plan: 1 to add, 0 to change, 0 to replace, 1 to remove."
    tf.apply()
    assert not tf.plan().has_changes
    tf.init()  # nothing init depends on changed
    going = tf.plan_destroy()
    assert [(c.action, c.name) for c in going.changes] == [("delete", "b"), ("delete", "c")]
    assert sorted(tf.state_resources()) == ['terraform_data.rule["b"]', 'terraform_data.rule["c"]']  # only planned
    capfd.readouterr()
    tf.destroy()
    said = capfd.readouterr().err.splitlines()
    assert said[:2] == ["terraform destroy: starting", "terraform destroy: destroying 2 resource change(s)"]
    assert re.fullmatch(r"terraform destroy: 0 added, 0 changed, 2 removed in \d+ s", said[-1]), said
    assert tf.state_resources() == []
    assert not (tmp_path / "work" / "destroy.tfplan").exists()
    with pytest.raises(TerraformError, match=r"destroy\.tfplan"):  # a destroy plan is applied once
        tf.destroy()
    assert tf.lines == [  # type: ignore[attr-defined]
        f"terraform init in {tmp_path / 'work'}",
        "terraform plan (saved to tfplan)",
        "terraform apply tfplan",
        "terraform plan (saved to tfplan)",
        "terraform apply tfplan",
        "terraform plan (saved to tfplan)",
        f"terraform init: up to date in {tmp_path / 'work'}",
        "terraform plan -destroy (saved to destroy.tfplan)",
        "terraform apply destroy.tfplan",
        "terraform apply destroy.tfplan",  # the second time, with no plan left to apply
    ]


@needs_terraform_cli
def test_init_runs_again_when_the_root_module_or_the_mirror_changes(tmp_path: Path) -> None:
    work = tmp_path / "work"
    tf = module(work, ["a"])
    tf.init()
    tf.init()
    (work / "main.tf").write_text(MODULE + "\n# changed\n")
    tf.init()
    tf.env = replace(tf.env, terraform=replace(tf.env.terraform, plugin_dir=str(tmp_path)))
    tf.init()
    assert [ln.split(" in ")[0].split(":")[0] for ln in tf.lines] == ["terraform init"] * 4  # type: ignore[attr-defined]
    assert tf.lines[1].startswith("terraform init: up to date")  # type: ignore[attr-defined]
    assert [ln.startswith("terraform init in") for ln in tf.lines] == [True, False, True, True]  # type: ignore[attr-defined]


@needs_terraform_cli
def test_an_init_without_its_provider_names_plugin_dir(tmp_path: Path) -> None:
    """Offline with a mirror that lacks the provider (or no mirror at all): one line naming the fix."""
    work = tmp_path / "work"
    tf = module(work, ["a"])
    (work / "main.tf").write_text(
        MODULE + '\nterraform {\n  required_providers {\n    aws = { source = "hashicorp/aws" }\n  }\n}\n'
    )
    empty = tmp_path / "mirror"
    empty.mkdir()
    tf.env = replace(tf.env, terraform=replace(tf.env.terraform, plugin_dir=str(empty)))
    with pytest.raises(TerraformError) as info:
        tf.init()
    message = str(info.value)
    assert message.startswith(
        f"terraform init in {work} could not get the AWS provider (plugin_dir {empty} lacks it): "
    )
    assert message.endswith(
        "offline, set terraform.plugin_dir in environments/unit.yaml (or KET_INFRA_TF_PLUGIN_DIR) to a mirror made "
        "with `terraform providers mirror DIR` on a connected machine"
    )
    assert "\n" not in message
    assert not (work / ".terraform" / "ket-infra-init.sha256").exists()  # a failed init is not remembered


@needs_terraform_cli
def test_progress_is_shown_live_on_stderr(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    tf = module(tmp_path / "work", ["a", "b", "c"])
    tf.init()
    capfd.readouterr()
    tf.plan()
    tf.apply()
    out, err = capfd.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert lines[:2] == ["terraform plan: starting", "terraform plan: planning"]
    assert re.fullmatch(r"terraform plan: 3 to add, 0 to change, 0 to remove in \d+ s", lines[2]), lines
    assert lines[3:5] == ["terraform apply: starting", "terraform apply: applying 3 resource change(s)"]
    assert re.fullmatch(r"terraform apply: 3 added, 0 changed, 0 removed in \d+ s", lines[-1]), lines


@needs_terraform_cli
def test_a_failing_plan_reports_terraforms_diagnostic_on_one_line(tmp_path: Path) -> None:
    work = tmp_path / "work"
    tf = module(work, ["a"])
    tf.init()
    (work / "names.auto.tfvars.json").write_text(json.dumps({"names": "not a list"}))
    with pytest.raises(TerraformError) as info:
        tf.plan()
    message = str(info.value)
    assert message.startswith(f"terraform plan failed in {work}: Error: Invalid value for input variable ")
    assert "\n" not in message and "{" not in message


@needs_terraform_cli
def test_state_addresses_come_whole_from_the_state(tmp_path: Path) -> None:
    """Keys with spaces, quotes or emoji are one address each (`terraform state list` split them on spaces)."""
    names = ["worker 01", 'say "hi"', "node 😀"]
    tf = module(tmp_path / "work", names)
    tf.init()
    tf.plan()
    tf.apply()
    assert sorted(tf.state_resources()) == sorted(
        f"terraform_data.rule[{json.dumps(n, ensure_ascii=False)}]" for n in names
    )


@needs_terraform_cli
def test_state_addresses_of_child_modules_counts_and_single_resources(tmp_path: Path) -> None:
    """Every shape of address the state can hold, read from `state pull`, equals Terraform's own listing."""
    tf = module(tmp_path / "work", ["a"])
    (tmp_path / "work" / "child").mkdir()
    (tmp_path / "work" / "child" / "main.tf").write_text(
        'resource "terraform_data" "counted" {\n  count = 2\n}\n\nresource "terraform_data" "one" {}\n'
    )
    with (tmp_path / "work" / "main.tf").open("a") as main:
        main.write('\nmodule "child" {\n  source   = "./child"\n  for_each = toset(["x y"])\n}\n')
        main.write('\nresource "terraform_data" "single" {}\n')
        main.write(
            '\ndata "terraform_remote_state" "read" {\n  backend = "local"\n  config  = { path = "other.tfstate" }\n}\n'
        )
    other = {"version": 4, "serial": 1, "lineage": "other", "outputs": {}, "resources": []}
    (tmp_path / "work" / "other.tfstate").write_text(json.dumps(other))  # what the data source reads
    tf.init()
    tf.plan()
    tf.apply()
    listed = subprocess.run(
        ["terraform", "state", "list"], cwd=tmp_path / "work", capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert sorted(tf.state_resources()) == sorted(listed)
    assert 'module.child["x y"].terraform_data.counted[1]' in listed and "terraform_data.single" in listed
    assert "data.terraform_remote_state.read" in listed


@needs_terraform_cli
def test_state_of_a_folder_never_applied_is_empty(tmp_path: Path) -> None:
    tf = module(tmp_path / "work", ["a"])
    tf.init()
    assert tf.state_resources() == []


@needs_terraform_cli
def test_a_failing_command_is_one_line_naming_the_command_and_folder(tmp_path: Path) -> None:
    work = tmp_path / "work"
    tf = module(work, ["a"])
    (work / "main.tf").write_text(MODULE + '\nresource "no_such_thing" "x" {\n')
    with pytest.raises(TerraformError) as info:
        tf.init()
    message = str(info.value)
    assert message.startswith(f"terraform init failed in {work}: Error: ")
    assert "\n" not in message and "│" not in message


def executable(tmp_path: Path, content: str | bytes, name: str = "terraform") -> Path:
    """A stand-in for the terraform binary, to see how the driver takes an answer Terraform cannot be made to give."""
    path = tmp_path / "bin" / name
    path.parent.mkdir(exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def fake_terraform(tmp_path: Path, version_json: str) -> str:
    """An executable that answers `version -json` like a Terraform of another version would."""
    return str(executable(tmp_path, f"#!/bin/sh\ncat <<'EOF'\n{version_json}\nEOF\n", "old-terraform"))


def test_terraform_older_than_1_5_is_refused(tmp_path: Path) -> None:
    old = fake_terraform(tmp_path, '{"terraform_version": "1.4.7", "platform": "linux_amd64"}')
    tf = Terraform(env(old), tmp_path / "work", lambda _m: None)
    with pytest.raises(TerraformError) as info:
        tf.check_version()
    assert str(info.value) == (
        f"{old} is version 1.4.7, older than 1.5; install Terraform >= 1.5 (or OpenTofu) or set terraform.binary "
        "in environments/unit.yaml"
    )


def test_a_state_file_being_written_does_not_stop_a_command(tmp_path: Path) -> None:
    """Another Terraform writing terraform.tfstate leaves it empty for a moment: ket-infra never reads it
    (python-terraform's constructor did, and failed with a JSON traceback)."""
    fake = fake_terraform(tmp_path, '{"terraform_version": "1.11.0", "platform": "linux_amd64"}')
    work = tmp_path / "work"
    work.mkdir()
    (work / "terraform.tfstate").write_text("")
    assert Terraform(env(fake), work, lambda _m: None).check_version() == "1.11.0"


@pytest.mark.parametrize("version", ["1.5.0", "1.10.2", "2.0.0"])
def test_terraform_1_5_and_later_is_accepted(tmp_path: Path, version: str) -> None:
    new = fake_terraform(tmp_path, json.dumps({"terraform_version": version}))
    assert Terraform(env(new), tmp_path / "work", lambda _m: None).check_version() == version


def test_a_version_answer_without_a_version_is_refused(tmp_path: Path) -> None:
    odd = fake_terraform(tmp_path, "not json")
    with pytest.raises(TerraformError, match=r"version printed no version; install Terraform >= 1\.5"):
        Terraform(env(odd), tmp_path / "work", lambda _m: None).check_version()


def test_missing_binary_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(TerraformError) as info:
        Terraform(env("no-such-terraform-here"), tmp_path, lambda _m: None).check_version()
    assert str(info.value).startswith(
        "environments/unit.yaml: terraform.binary: 'no-such-terraform-here' not found on PATH; install Terraform"
    )


LOCKED = """
╷
│ Error: Error acquiring the state lock
│
│ Error message: resource temporarily unavailable
│ Lock Info:
│   ID:        5f3c1b8e-7f63-4b8e-9b57-2b7d0c1f9a10
│   Path:      s3://bucket/ket/terraform.tfstate
│   Operation: OperationTypeApply
│   Who:       ci@runner-7
│   Version:   1.11.4
│   Created:   2026-11-27 17:02:11.123 +0000 UTC
│   Info:
╵
"""


def test_lock_holder_is_read_from_terraforms_message() -> None:
    assert _lock_holder("Error: something else") is None
    assert _lock_holder(LOCKED) == {
        "ID": "5f3c1b8e-7f63-4b8e-9b57-2b7d0c1f9a10",
        "Path": "s3://bucket/ket/terraform.tfstate",
        "Operation": "OperationTypeApply",
        "Who": "ci@runner-7",
        "Version": "1.11.4",
        "Created": "2026-11-27 17:02:11.123 +0000 UTC",
        "Info": "",
    }


def test_locked_message_names_holder_and_unlock_command(tmp_path: Path) -> None:
    tf = Terraform(env(), tmp_path, lambda _m: None)
    holder = _lock_holder(LOCKED)
    assert holder is not None
    assert tf._locked_message(holder) == (
        "the Terraform state of environment unit is locked by ci@runner-7 since 2026-11-27 17:02:11.123 +0000 UTC "
        "(operation OperationTypeApply): another run is still going, or one was killed. If none is running, "
        f"unlock it with: terraform -chdir={tmp_path} force-unlock -force 5f3c1b8e-7f63-4b8e-9b57-2b7d0c1f9a10 "
        "-- then run ket-infra plan --env unit again"
    )


def test_last_error_keeps_the_error_on_one_line() -> None:
    stderr = "There are some problems with the CLI configuration:\n" + LOCKED
    assert _last_error(stderr, "") == (
        "Error: Error acquiring the state lock Error message: resource temporarily unavailable Lock Info: "
        "ID: 5f3c1b8e-7f63-4b8e-9b57-2b7d0c1f9a10 Path: s3://bucket/ket/terraform.tfstate Operation: "
        "OperationTypeApply Who: ci@runner-7 Version: 1.11.4 Created: 2026-11-27 17:02:11.123 +0000 UTC Info:"
    )
    assert _last_error("", "a\nb\nc\nd\ne\nf\ng\nh") == "c d e f g h"  # no Error line: the last six lines
    assert _last_error("", "") == "no error output"
    assert len(_last_error("Error: " + "x " * 1000, "")) == 600


def planned(resource_type: str, key: str | None, action: str) -> str:
    """One planned_change message of Terraform's machine-readable UI."""
    addr = f"module.m.{resource_type}.this" + (f'["{key}"]' if key is not None else "")
    resource = {"addr": addr, "resource_type": resource_type, "resource_key": key}
    return json.dumps({"type": "planned_change", "change": {"resource": resource, "action": action}})


def test_the_summary_comes_from_the_plans_own_messages() -> None:
    watch = _Watch(Live("terraform plan", stream=io.StringIO(), tty=False), "planning")
    for line in [
        '{"type": "version", "terraform": "1.11.4"}',
        "not json at all",
        "[1, 2]",
        planned("aws_network_interface_sg_attachment", "a1", "create"),
        planned("aws_security_group", "b", "update"),
        planned("aws_vpc_security_group_egress_rule", "e1", "delete"),
        planned("aws_vpc_security_group_ingress_rule", "i2", "replace"),
        planned("aws_vpc_security_group_ingress_rule", "i3", "create"),
        planned("aws_vpc_security_group_ingress_rule", "i1", "noop"),
        planned("aws_vpc_security_group_ingress_rule", "i4", "import"),
        planned("terraform_data", None, "read"),
        planned("terraform_data", None, "remove"),
        '{"type": "change_summary", "changes": {"add": 3, "change": 1, "import": 1, "remove": 2}}',
    ]:
        watch.line(line)
    purposes = {
        "aws_vpc_security_group_ingress_rule/i2": "in",
        "aws_vpc_security_group_egress_rule/e1": "out",
        "aws_security_group/b": "g",
        "aws_security_group/i2": "not this one: another resource type",
    }
    summary = summarize_changes(watch.changes(), purposes)
    assert summary.changes == (
        Change("replace", "ingress", "i2", "in"),
        Change("create", "ingress", "i3", ""),
        Change("import", "ingress", "i4", ""),
        Change("delete", "egress", "e1", "out"),
        Change("update", "group", "b", "g"),
        Change("create", "attachment", "a1", ""),
        Change("forget", "other", "module.m.terraform_data.this", ""),
    )
    assert summary_lines(summary) == [
        "  -/+ ingress rule i2: in",
        "    + ingress rule i3",
        "   <= ingress rule i4",
        "    - egress rule e1: out",
        "    ~ group b: g",
        "    + attachment a1",
        "    . other module.m.terraform_data.this",
        "Plan: 2 to add, 1 to change, 1 to replace, 1 to remove, 1 to import.",
    ]
    assert summary_lines(PlanSummary()) == ["No changes: the cloud already matches the plan file."]


def test_errors_are_taken_from_json_diagnostics() -> None:
    watch = _Watch(Live("terraform plan", stream=io.StringIO(), tty=False), "planning")
    watch.line(json.dumps({"type": "diagnostic", "@level": "warning", "diagnostic": {"summary": "w", "detail": ""}}))
    watch.line(
        json.dumps({"type": "diagnostic", "@level": "error", "diagnostic": {"summary": "Bad", "detail": "x\ny"}})
    )
    assert watch.errors == ["Error: Bad\nx\ny"]
    assert _last_error("\n".join(watch.errors), "") == "Error: Bad x y"


def test_fingerprint_follows_content_and_forget_plan_removes_it(tmp_path: Path) -> None:
    tf = Terraform(env(), tmp_path, lambda _m: None)
    first = tf.fingerprint([("a", b"one"), ("b", b"<missing>")])
    assert first == tf.fingerprint([("a", b"one"), ("b", b"<missing>")])
    assert tf.fingerprint([("a", b"one"), ("b", b"")]) != first  # a file that appears counts
    assert tf.fingerprint([("b", b"one"), ("a", b"<missing>")]) != first  # names count
    second = tf.fingerprint([("a", b"two"), ("b", b"")])
    assert second != first
    assert tf.saved_fingerprint() is None
    tf.save_fingerprint(second)
    assert tf.saved_fingerprint() is None  # no saved plan beside it
    (tmp_path / PLAN_FILE).write_text("plan")
    assert tf.saved_fingerprint() == second
    tf.forget_plan()
    assert not (tmp_path / PLAN_FILE).exists() and tf.saved_fingerprint() is None


def test_locked_message_when_terraform_says_little(tmp_path: Path) -> None:
    tf = Terraform(env("tofu"), tmp_path, lambda _m: None)
    assert tf._locked_message({}) == (
        "the Terraform state of environment unit is locked by unknown since an unknown time (operation unknown): "
        "another run is still going, or one was killed. If none is running, unlock it with: "
        f"tofu -chdir={tmp_path} force-unlock -force ID -- then run ket-infra plan --env unit again"
    )


@needs_terraform_cli
def test_terraform_asks_no_outside_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No version check against checkpoint-api.hashicorp.com: only the endpoints the user configured."""
    monkeypatch.setenv("TF_LOG", "DEBUG")
    monkeypatch.setenv("TF_LOG_PATH", str(tmp_path / "tf.log"))
    monkeypatch.delenv("CHECKPOINT_DISABLE", raising=False)
    tf = module(tmp_path / "work", ["a"])
    tf.init()
    tf.plan()
    log = (tmp_path / "tf.log").read_text()
    assert "terraform plan" in " ".join(tf.lines) and "CLI args" in log  # type: ignore[attr-defined]
    assert "checkpoint" not in log.lower()


def test_terraform_runs_in_automation_mode_without_news(tmp_path: Path) -> None:
    """TF_IN_AUTOMATION trims Terraform's advice meant for people; CHECKPOINT_DISABLE stops its version check."""
    tf = Terraform(env(), tmp_path, lambda _m: None)
    assert tf.extra_env["TF_IN_AUTOMATION"] == "1" and tf.extra_env["CHECKPOINT_DISABLE"] == "1"


@needs_terraform_cli
def test_the_work_folder_is_made_with_its_parents(tmp_path: Path) -> None:
    work = tmp_path / "a" / "b" / "work"
    assert Terraform(env(), work, lambda _m: None).check_version()
    assert work.is_dir()


def version_failure(binary: Path, tmp_path: Path) -> str:
    """The one-line error `check_version` gives with BINARY standing in for Terraform."""
    with pytest.raises(TerraformError) as info:
        Terraform(env(str(binary)), tmp_path / "work", lambda _m: None).check_version()
    return str(info.value)


def test_a_binary_that_cannot_run_is_one_line(tmp_path: Path) -> None:
    broken = executable(tmp_path, b"\x7fELF not really")
    message = version_failure(broken, tmp_path)
    assert message == (
        f"cannot run {broken}: Exec format error; install Terraform >= 1.5 (or OpenTofu) or set terraform.binary "
        "in environments/unit.yaml"
    )


def test_an_error_said_on_stdout_is_reported(tmp_path: Path) -> None:
    chatty = executable(tmp_path, "#!/bin/sh\necho 'Error: said on stdout'\nexit 1\n")
    message = version_failure(chatty, tmp_path)
    assert message == f"{chatty} version failed in {tmp_path / 'work'}: Error: said on stdout"


@needs_terraform_cli
def test_state_of_a_folder_without_state_is_empty(tmp_path: Path) -> None:
    tf = module(tmp_path / "work", ["a"])  # never initialised: `terraform state list` exits 1
    assert tf.state_resources() == []


@needs_terraform_cli
def test_plan_errors_are_plain_text(tmp_path: Path) -> None:
    tf = module(tmp_path / "work", ["a"])
    tf.init()
    (tmp_path / "work" / "names.auto.tfvars.json").write_text(json.dumps({"names": "not a list"}))
    with pytest.raises(TerraformError) as info:
        tf.plan()
    message = str(info.value)
    assert message.startswith(f"terraform plan failed in {tmp_path / 'work'}: Error: Invalid value for input variable")
    assert "\x1b[" not in message  # -no-color: no terminal colour codes in a message


@needs_terraform_cli
def test_init_again_after_the_backend_moved(tmp_path: Path) -> None:
    """`-reconfigure`: a changed backend (another state path) is taken as the new truth, no question asked."""
    work = tmp_path / "work"
    tf = module(work, ["a"])
    (work / "backend.tf").write_text('terraform {\n  backend "local" {\n    path = "one.tfstate"\n  }\n}\n')
    tf.init()
    (work / "backend.tf").write_text('terraform {\n  backend "local" {\n    path = "two.tfstate"\n  }\n}\n')
    tf.init()
    tf.plan()
    tf.apply()
    assert (work / "two.tfstate").exists()


@needs_terraform_cli
def test_a_held_lock_is_reported_with_its_holder(tmp_path: Path) -> None:
    """Another run holds the state (a slow apply): plan, apply and destroy fail at once, naming it."""
    import os
    import subprocess
    import time

    work = tmp_path / "work"
    tf = module(work, ["a"])
    (work / "slow.tf").write_text(
        'resource "terraform_data" "slow" {\n  provisioner "local-exec" {\n    command = "sleep 20"\n  }\n}\n'
    )
    tf.init()
    holder = subprocess.Popen(
        ["terraform", "apply", "-auto-approve", "-input=false", "-no-color"],
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "CHECKPOINT_DISABLE": "1"},
    )
    try:
        deadline = time.monotonic() + 20
        while not (work / ".terraform.tfstate.lock.info").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (work / ".terraform.tfstate.lock.info").exists(), "the holder never took the lock"
        for step in (tf.plan, tf.plan_destroy):
            with pytest.raises(TerraformError) as info:
                step()
            message = str(info.value)
            assert message.startswith("the Terraform state of environment unit is locked by "), message
            assert "(operation OperationTypeApply)" in message
            assert f"unlock it with: terraform -chdir={work} force-unlock -force " in message
    finally:
        holder.kill()
        holder.wait()


def test_fingerprint_names_each_file(tmp_path: Path) -> None:
    tf = Terraform(env(), tmp_path, lambda _m: None)
    assert tf.fingerprint([("a", b"same")]) != tf.fingerprint([("b", b"same")])  # same bytes, another file
    tf.forget_plan()  # nothing to forget: fine
    assert tf.saved_fingerprint() is None


def test_summarize_tolerates_what_it_does_not_know() -> None:
    assert summarize_changes([], {}) == PlanSummary()
    summary = summarize_changes([("forget", "x", "f"), ("frobnicate", "x", "g")], {})
    assert [(c.action, c.kind, c.name) for c in summary.changes] == [
        ("forget", "other", "f"),
        ("frobnicate", "other", "g"),
    ]
    assert summary.counts() == {
        "create": 0,
        "update": 0,
        "replace": 0,
        "delete": 0,
        "import": 0,
        "forget": 1,
        "frobnicate": 1,
    }
    assert summary_lines(summary)[:2] == ["    . other f", "    ? other g"]


def test_plugin_dir_from_the_environment_file_else_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KET_INFRA_TF_PLUGIN_DIR", raising=False)
    plain = env()
    assert Terraform(plain, tmp_path).plugin_dir() is None
    monkeypatch.setenv("KET_INFRA_TF_PLUGIN_DIR", "/from/variable")
    assert Terraform(plain, tmp_path).plugin_dir() == "/from/variable"
    named = replace(plain, terraform=replace(plain.terraform, plugin_dir="/from/file"))
    assert Terraform(named, tmp_path).plugin_dir() == "/from/file"
    monkeypatch.setenv("KET_INFRA_TF_PLUGIN_DIR", "")
    assert Terraform(plain, tmp_path).plugin_dir() is None


@needs_terraform_cli
def test_apply_and_destroy_errors_are_plain_text(tmp_path: Path) -> None:
    work = tmp_path / "work"
    tf = module(work, [])
    (work / "fails.tf").write_text(
        'resource "terraform_data" "fails" {\n'
        '  provisioner "local-exec" {\n    command = "exit 3"\n  }\n}\n'
        'resource "terraform_data" "undoes" {\n'
        '  provisioner "local-exec" {\n    when    = destroy\n    command = "exit 4"\n  }\n}\n'
    )
    tf.init()
    tf.plan()
    with pytest.raises(TerraformError) as info:
        tf.apply()
    assert str(info.value).startswith(f"terraform apply failed in {work}: Error: local-exec provisioner error")
    assert "\x1b[" not in str(info.value)
    tf.plan_destroy()
    with pytest.raises(TerraformError) as info:
        tf.destroy()
    assert str(info.value).startswith(f"terraform destroy failed in {work}: Error: local-exec provisioner error")
    assert "\x1b[" not in str(info.value)


@needs_terraform_cli
def test_init_installs_the_aws_provider_from_the_mirror(tmp_path: Path) -> None:
    from tests.tf import PLUGIN_DIR

    if PLUGIN_DIR is None:
        pytest.skip("needs Terraform: no offline provider mirror")
    work = tmp_path / "work"
    work.mkdir()
    (work / "main.tf").write_text(
        'terraform {\n  required_providers {\n    aws = {\n      source = "hashicorp/aws"\n    }\n  }\n}\n'
    )
    from dataclasses import replace

    plain = env()
    tf = Terraform(replace(plain, terraform=replace(plain.terraform, plugin_dir=PLUGIN_DIR)), work, lambda _m: None)
    tf.init()
    assert (work / ".terraform" / "providers" / "registry.terraform.io" / "hashicorp" / "aws").is_dir()


def test_a_silent_failure_still_says_something(tmp_path: Path) -> None:
    mute = executable(tmp_path, "#!/bin/sh\nexit 1\n")
    message = version_failure(mute, tmp_path)
    assert message == f"{mute} version failed in {tmp_path / 'work'}: no error output"


WARNING_BOX = """There are some problems with the CLI configuration:
╷
│ Warning: Unable to open CLI configuration file
│
│ The CLI configuration file at "/root/.terraformrc" does not exist.
╵
"""


def test_a_killed_terraform_is_said_to_be_killed(tmp_path: Path) -> None:
    """Not the CLI-configuration warning it printed first: which signal, and that a rerun converges."""
    killed = executable(tmp_path, f"#!/bin/sh\ncat >&2 <<'EOF'\n{WARNING_BOX}EOF\nkill -KILL $$\n")
    message = version_failure(killed, tmp_path)
    assert message == (
        f"{killed} version was killed by SIGKILL in {tmp_path / 'work'}; Terraform keeps its state as it goes: "
        "run the same ket-infra command for environment unit again, it converges"
    )


def test_a_warning_box_is_not_the_error(tmp_path: Path) -> None:
    for name, after, shown in (
        ("noisy", "Error: the real cause", "Error: the real cause"),
        ("quiet", "something broke", "something broke"),
    ):
        fake = executable(tmp_path, f"#!/bin/sh\ncat >&2 <<'EOF'\n{WARNING_BOX}{after}\nEOF\nexit 1\n", name)
        message = version_failure(fake, tmp_path)
        assert message == f"{fake} version failed in {tmp_path / 'work'}: {shown}"


INTERRUPTIBLE = """#!/bin/sh
trap 'echo "stopping gracefully" >&2; sleep 0.2; echo stopped > "$MARK.end"; exit 1' INT TERM
touch "$MARK"
i=0
while [ $i -lt 40 ]; do sleep 0.05; i=$((i+1)); done
echo finished > "$MARK.end"
"""

DRIVER = """
import signal
import sys
# Python's own Ctrl-C handling, as from a terminal: a job started in the background of a script
# inherits SIGINT ignored, and a plan started ahead would hand that on to the stand-in's shell,
# which cannot trap a signal ignored on entry (Terraform can: Go's signal.Notify takes it back).
signal.signal(signal.SIGINT, signal.default_int_handler)
from pathlib import Path
from ket_infra.environment import AwsConfig, Environment, TerraformConfig
from ket_infra.errors import Interrupted
from ket_infra.terraform import Terraform
env = Environment(name="unit", path="unit.yaml", plan_file=Path("plan.yaml"), aws=AwsConfig("eu-west-1"),
                  terraform=TerraformConfig(binary=sys.argv[1]))
tf = Terraform(env, Path(sys.argv[2]), print)
try:
    if sys.argv[3] == "apply":
        tf.apply()
    elif sys.argv[3] == "plan ahead":  # as if an earlier run had initialised the folder
        (tf.work / ".terraform").mkdir(parents=True, exist_ok=True)
        (tf.work / ".terraform" / "ket-infra-init.sha256").write_text(tf._init_inputs())
        tf.plan_ahead().result()
    else:
        tf.plan()
except Interrupted as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(130)
"""


def interrupt(tmp_path: Path, command: str, signals: list[signal.Signals]) -> tuple[int, str, str]:
    """Run COMMAND on a stand-in Terraform that takes 2 s, send SIGNALS once it runs; (exit, stderr, how it ended)."""
    fake = executable(tmp_path, INTERRUPTIBLE)
    mark = tmp_path / "started"
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(fake), str(tmp_path / "work"), command],
        env={**os.environ, "MARK": str(mark)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not mark.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert mark.exists(), proc.communicate(timeout=5)
    said = ""
    for i, sig in enumerate(signals):
        proc.send_signal(sig)  # to ket-infra only: Terraform runs in a session of its own
        if i + 1 < len(signals):
            # Signals are not queued: two sent before the first is handled arrive as one. Wait until
            # ket-infra has taken this one (it says so when it holds a first Ctrl-C).
            assert proc.stderr is not None
            said = ""
            while not said.startswith("interrupt: "):  # past the progress lines
                said = proc.stderr.readline()
                assert said, "ket-infra ended without saying it took the signal"
            assert said.startswith("interrupt: letting "), said
    _out, err = proc.communicate(timeout=30)
    return proc.returncode, said + err, (tmp_path / "started.end").read_text().strip()


def test_a_first_ctrl_c_lets_an_apply_finish(tmp_path: Path) -> None:
    """An AWS call in flight when Terraform stops is lost to the state: the first Ctrl-C waits for the apply."""
    code, err, ended = interrupt(tmp_path, "apply", [signal.SIGINT])
    assert (code, ended) == (130, "finished")
    assert next(ln for ln in err.splitlines() if ln.startswith("interrupt: ")) == (
        f"interrupt: letting {tmp_path / 'bin' / 'terraform'} apply finish so that the Terraform state stays whole; "
        "press Ctrl-C again to stop it now"
    )
    assert err.splitlines()[-1] == (
        f"error: interrupted by SIGINT: {tmp_path / 'bin' / 'terraform'} apply in {tmp_path / 'work'} was let finish "
        "(exit 0), so its state is whole, and nothing after it ran; run the same ket-infra command for environment "
        "unit again, it converges"
    )


@pytest.mark.parametrize(
    ("command", "signals"),
    [
        ("apply", [signal.SIGINT, signal.SIGINT]),
        ("apply", [signal.SIGTERM]),
        ("plan", [signal.SIGINT]),
        ("plan ahead", [signal.SIGINT]),
    ],
    ids=["apply, Ctrl-C twice", "apply, SIGTERM", "plan, Ctrl-C", "plan started ahead, Ctrl-C"],
)
def test_a_signal_handed_to_terraform_stops_it_cleanly(
    tmp_path: Path, command: str, signals: list[signal.Signals]
) -> None:
    """Ctrl-C once killed ket-infra at once, Terraform with it: now Terraform is asked to stop, finishes its own
    shutdown (it saves its state), and only then does ket-infra exit 130 saying what was interrupted."""
    code, err, ended = interrupt(tmp_path, command, signals)
    assert (code, ended) == (130, "stopped")
    said = command.split()[0]
    assert err.splitlines()[-1] == (
        f"error: interrupted by {signals[0].name}: {tmp_path / 'bin' / 'terraform'} {said} in {tmp_path / 'work'} "
        "was asked to stop, finished the calls it had under way and stopped (exit 1); run the same ket-infra "
        "command for environment unit again, it converges"
    )


def test_a_signal_before_terraform_starts_is_handed_on_once_it_runs() -> None:
    """The handlers are in place before the process exists: nothing slips between start and handler."""
    from ket_infra.terraform import _Signals

    signals = _Signals("terraform apply", hold=True)
    signals.take(signal.SIGINT, None)  # a first Ctrl-C: held
    signals.take(signal.SIGTERM, None)  # handed on, but there is no process yet
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
    signals.started(proc)
    assert proc.wait(timeout=10) == -signal.SIGTERM
    assert signals.caught == [("SIGINT", False), ("SIGTERM", True)]


def test_sighup_is_handed_to_terraform_as_sigterm() -> None:
    """A closed terminal (SIGHUP) stops Terraform as a pipeline's SIGTERM does: gracefully (SIGHUP would kill
    it outright), even during an apply, and ket-infra's exit names SIGHUP (128 + 1)."""
    from ket_infra.terraform import _Signals

    signals = _Signals("terraform apply", hold=True)
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
    signals.started(proc)
    signals.take(signal.SIGHUP, None)
    assert proc.wait(timeout=10) == -signal.SIGTERM
    assert signals.caught == [("SIGHUP", True)] and signals.first == signal.SIGHUP
    tf = Terraform(env(), Path("work"), lambda _m: None)
    assert tf._interrupted("terraform apply", signals, -signal.SIGTERM).signum == signal.SIGHUP


def test_progress_follows_terraforms_messages() -> None:
    out = io.StringIO()
    watch = _Watch(Live("terraform apply", stream=out, tty=False), "applying")
    for _ in range(2):
        watch.line(json.dumps({"type": "refresh_start"}))
        watch.line(json.dumps({"type": "refresh_complete"}))
    assert (watch.live.phase, watch.live.done) == ("refreshing", 2)
    for action in ("create", "noop", "delete"):
        watch.line(planned("aws_security_group", action, action))
    assert watch.live.phase == "refreshing"  # an apply lists its changes without planning again
    watch.line(json.dumps({"type": "apply_start"}))
    assert (watch.live.phase, watch.live.total, watch.live.done) == ("applying", 2, 0)  # the no-op is no work
    watch.line(json.dumps({"type": "apply_complete"}))
    watch.line(json.dumps({"type": "apply_errored"}))
    assert watch.live.done == 2
    assert out.getvalue().splitlines() == [
        "terraform apply: refreshing",
        "terraform apply: applying 2 resource change(s)",
    ]
    watch.line(json.dumps({"type": "diagnostic", "@level": "error", "diagnostic": {"summary": "Only a summary"}}))
    watch.line(json.dumps({"type": "diagnostic", "@level": "error", "diagnostic": {"detail": "only a detail"}}))
    assert watch.errors == ["Error: Only a summary\n", "Error: \nonly a detail"]


def initialised(tf: Terraform) -> Terraform:
    """As if an earlier run had initialised TF's folder."""
    (tf.work / ".terraform").mkdir(parents=True, exist_ok=True)
    (tf.work / ".terraform" / "ket-infra-init.sha256").write_text(tf._init_inputs() + "\n")
    return tf


@needs_terraform_cli
def test_a_plan_started_ahead_is_the_plan(tmp_path: Path) -> None:
    """Started before discovery, kept when nothing changed: the same plan a plan after discovery makes."""
    tf = module(tmp_path / "work", ["a", "b"])
    assert tf.plan_ahead() is None  # a folder never initialised: nothing to start from
    tf.init()
    after = tf.plan()
    tf.forget_plan()
    ahead = tf.plan_ahead()
    assert ahead is not None
    summary = ahead.result({"terraform_data/a": "the first"})
    assert [(c.action, c.name, c.purpose) for c in summary.changes] == [
        ("create", "a", "the first"),
        ("create", "b", ""),
    ]
    assert list(summary.changes) == [replace(c, purpose="the first" if c.name == "a" else "") for c in after.changes]
    assert tf.lines[-1] == "terraform plan (saved to tfplan), started while the nodes were looked up"  # type: ignore[attr-defined]
    tf.apply()  # the plan it saved is the one applied
    assert sorted(tf.state_resources()) == ['terraform_data.rule["a"]', 'terraform_data.rule["b"]']


def test_only_a_local_backend_plans_ahead(tmp_path: Path) -> None:
    """A lock in S3 would outlive a plan killed half-way: there the plan waits for discovery."""
    from ket_infra.environment import Backend

    local = initialised(module(tmp_path / "work", ["a"]))
    s3 = Terraform(
        replace(env(), terraform=TerraformConfig(backend=Backend(type="s3", bucket="b", key="k"))), local.work
    )
    assert s3.initialised() and s3.plan_ahead() is None


PROVIDER_LIKE = """#!/bin/sh
sleep 30 &
echo $! > "$MARK.child"
touch "$MARK"
wait
echo finished > "$MARK.end"
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_cancel_kills_terraform_and_its_provider_and_forgets_the_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What discovery found changes the folder: the plan started ahead stops at once, child processes too."""
    fake = executable(tmp_path, PROVIDER_LIKE)
    mark = tmp_path / "started"
    monkeypatch.setenv("MARK", str(mark))
    tf = initialised(Terraform(env(str(fake)), tmp_path / "work", lambda _m: None))
    ahead = tf.plan_ahead()
    assert ahead is not None
    deadline = time.monotonic() + 20
    while not mark.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    child = int((tmp_path / "started.child").read_text())
    assert alive(child)
    (tf.work / PLAN_FILE).write_text("half a plan")
    start = time.monotonic()
    ahead.cancel()
    ahead.cancel()  # once is enough
    assert time.monotonic() - start < 5
    assert ahead.cancelled and not (tmp_path / "started.end").exists()
    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(child)
    assert not (tf.work / PLAN_FILE).exists()


@needs_terraform_cli
def test_a_plan_cancelled_after_it_finished_leaves_no_plan(tmp_path: Path) -> None:
    tf = module(tmp_path / "work", ["a"])
    tf.init()
    ahead = tf.plan_ahead()
    assert ahead is not None
    ahead._thread.join()
    assert (tf.work / PLAN_FILE).exists()
    ahead.cancel()
    assert not (tf.work / PLAN_FILE).exists()
    tf.plan()  # and the state is not locked
    assert (tf.work / PLAN_FILE).exists()


def test_a_cancel_before_terraform_runs_kills_it_as_it_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARK", str(tmp_path / "started"))
    tf = initialised(Terraform(env(str(executable(tmp_path, "#!/bin/sh\n"))), tmp_path / "work", lambda _m: None))
    ahead = tf.plan_ahead()
    assert ahead is not None
    ahead._thread.join(timeout=20)
    ahead.cancelled = True  # cancel() came before the process was there to kill
    proc = subprocess.Popen([str(executable(tmp_path, PROVIDER_LIKE, "slow"))], start_new_session=True)
    ahead._started(proc)
    assert proc.wait(timeout=5) == -signal.SIGKILL


def interrupted_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, signals: list[signal.Signals]
) -> tuple[Exception | None, str, list[int]]:
    """COMMAND on the 2 s stand-in Terraform in this process, SIGNALS sent to this process once it runs:
    (what it raised, how the stand-in ended, signals that reached no ket-infra handler).

    The same paths as `interrupt`, in-process, so that they count for the functions they reach.
    A fallback handler is in place throughout: a signal ket-infra fails to take is recorded, not
    turned into a KeyboardInterrupt of the test run.
    """
    import threading

    fake = executable(tmp_path, INTERRUPTIBLE)
    mark = tmp_path / "started"
    monkeypatch.setenv("MARK", str(mark))
    tf = Terraform(env(str(fake)), tmp_path / "work", lambda _m: None)
    stray: list[int] = []
    saved = {s: signal.signal(s, lambda n, _f: stray.append(n)) for s in (signal.SIGINT, signal.SIGTERM)}

    def send() -> None:
        deadline = time.monotonic() + 20
        while not mark.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        for sig in signals:
            time.sleep(0.3)
            os.kill(os.getpid(), sig)

    sender = threading.Thread(target=send)
    sender.start()
    raised: Exception | None = None
    try:
        if command == "apply":
            tf.apply()
        elif command == "plan":
            tf.plan()
        else:
            ahead = initialised(tf).plan_ahead()
            assert ahead is not None
            ahead.result()
    except Exception as exc:  # what ket-infra raises is the point
        raised = exc
    finally:
        sender.join()
        for s, handler in saved.items():
            signal.signal(s, handler)
    return raised, (tmp_path / "started.end").read_text().strip(), stray


@pytest.mark.parametrize(
    ("command", "signals", "ended", "how"),
    [
        (
            "apply",
            [signal.SIGINT],
            "finished",
            "was let finish (exit 0), so its state is whole, and nothing after it ran",
        ),
        ("apply", [signal.SIGINT, signal.SIGINT], "stopped", "was asked to stop"),
        ("apply", [signal.SIGTERM], "stopped", "was asked to stop"),
        ("plan", [signal.SIGINT], "stopped", "was asked to stop"),
        ("plan ahead", [signal.SIGINT], "stopped", "was asked to stop"),
    ],
    ids=["apply, Ctrl-C", "apply, Ctrl-C twice", "apply, SIGTERM", "plan, Ctrl-C", "plan started ahead, Ctrl-C"],
)
def test_signals_in_process(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    command: str,
    signals: list[signal.Signals],
    ended: str,
    how: str,
) -> None:
    from ket_infra.errors import Interrupted

    raised, end, stray = interrupted_in_process(tmp_path, monkeypatch, command, signals)
    assert stray == [] and end == ended
    assert isinstance(raised, Interrupted), raised
    said = command.split()[0]
    tail = "" if ended == "finished" else " under way and stopped (exit 1)"
    assert str(raised).startswith(
        f"interrupted by {signals[0].name}: {tmp_path / 'bin' / 'terraform'} {said} in {tmp_path / 'work'} {how}"
    ), raised
    assert tail in str(raised)
    assert str(raised).endswith("; run the same ket-infra command for environment unit again, it converges")
    err = capfd.readouterr().err
    held = [ln for ln in err.splitlines() if ln.startswith("interrupt: ")]
    if command == "apply" and signals[0] == signal.SIGINT:  # the first Ctrl-C of an apply is held, and said so
        assert held == [
            f"interrupt: letting {tmp_path / 'bin' / 'terraform'} apply finish so that the Terraform state stays "
            "whole; press Ctrl-C again to stop it now"
        ]
    else:
        assert held == []


def test_a_warning_box_on_stdout_is_not_the_error_either() -> None:
    """Terraform said nothing on stderr: the error comes from stdout, still without the warning."""
    assert _last_error("", f"{WARNING_BOX}something broke\n") == "something broke"


def test_counts_take_a_replacement_as_one_added_and_one_removed() -> None:
    from ket_infra.terraform import _counted

    summary = summarize_changes([("create", "aws_security_group", "a"), ("replace", "aws_security_group", "b")], {})
    assert _counted(summary, "to add", "to change", "to remove") == "2 to add, 0 to change, 1 to remove"


def test_attachments_come_before_what_ket_infra_does_not_know() -> None:
    summary = summarize_changes(
        [
            ("create", "terraform_data", "z"),
            ("create", "aws_network_interface_sg_attachment", "worker01"),
            ("create", "aws_security_group", "worker"),
        ],
        {},
    )
    assert [c.kind for c in summary.changes] == ["group", "attachment", "other"]


def test_drift_is_not_a_planned_change() -> None:
    """Terraform's `resource_drift` messages carry a change too: what changed outside, not what the plan does."""
    watch = _Watch(Live("terraform plan", stream=io.StringIO(), tty=False), "planning")
    drift = json.loads(planned("aws_security_group", "worker", "update"))
    watch.line(json.dumps({**drift, "type": "resource_drift"}))
    watch.line(planned("aws_security_group", "master", "create"))
    assert watch.changes() == [("create", "aws_security_group", "master")]


def test_an_empty_state_answer_is_no_resources(tmp_path: Path) -> None:
    """`state pull` that prints nothing (no state yet) is an empty state, not a parse error."""
    silent = executable(tmp_path, "#!/bin/sh\nexit 0\n")
    assert Terraform(env(str(silent)), tmp_path / "work", lambda _m: None).state_resources() == []


TWO_DIAGNOSTICS = "".join(
    "echo '" + json.dumps({"type": "diagnostic", "@level": "error", "diagnostic": {"summary": s, "detail": ""}}) + "'\n"
    for s in ("One", "Two")
)


@pytest.mark.parametrize(
    ("says", "message"),
    [
        # dies before it can speak JSON (a crash, a broken plugin): the error is taken from stderr
        ("echo 'not json'\necho 'Error: the provider crashed' >&2\n", "Error: the provider crashed"),
        # fails before its machine-readable UI starts, saying why on stdout only
        ("echo 'Error: first part'\necho 'second part'\n", "Error: first part second part"),
        (TWO_DIAGNOSTICS, "Error: One Error: Two"),
    ],
    ids=["stderr", "stdout only", "two diagnostics"],
)
def test_a_failing_plan_says_why_on_one_line(tmp_path: Path, says: str, message: str) -> None:
    fake = executable(tmp_path, f"#!/bin/sh\n{says}exit 1\n")
    with pytest.raises(TerraformError) as info:
        Terraform(env(str(fake)), tmp_path / "work", lambda _m: None).plan()
    assert str(info.value) == f"{fake} plan failed in {tmp_path / 'work'}: {message}"


PLAN_LIKE = """#!/bin/sh
echo '{"type": "planned_change", "change": {"resource": {"addr": "a", "resource_type": "aws_security_group", "resource_key": "worker"}, "action": "create"}}'
exit 2
"""


def test_a_plan_started_ahead_says_nothing_until_its_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    fake = executable(tmp_path, PLAN_LIKE)
    lines: list[str] = []
    tf = initialised(Terraform(env(str(fake)), tmp_path / "work", lines.append))
    ahead = tf.plan_ahead()
    assert ahead is not None and not ahead.cancelled
    ahead._thread.join(timeout=20)
    assert capfd.readouterr().err == "" and lines == []  # hidden while discovery may still throw it away
    summary = ahead.result({"aws_security_group/worker": "the workers"})
    assert [(c.action, c.kind, c.name, c.purpose) for c in summary.changes] == [
        ("create", "group", "worker", "the workers")
    ]
    assert lines == ["terraform plan (saved to tfplan), started while the nodes were looked up"]
    err = capfd.readouterr().err.splitlines()
    assert err[0] == f"{fake} plan: planning"  # where it stands (it has finished), then how it ended
    assert re.fullmatch(re.escape(f"{fake} plan: 1 to add, 0 to change, 0 to remove in ") + r"\d+ s", err[1]), err
    assert len(err) == 2


def test_a_cancel_with_no_plan_saved_is_fine(tmp_path: Path) -> None:
    tf = initialised(Terraform(env(str(executable(tmp_path, "#!/bin/sh\n"))), tmp_path / "work", lambda _m: None))
    ahead = tf.plan_ahead()
    assert ahead is not None
    ahead._thread.join(timeout=20)
    ahead.cancel()
    assert ahead.cancelled and not (tf.work / PLAN_FILE).exists()
