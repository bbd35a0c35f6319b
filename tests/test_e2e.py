"""End to end: the real Terraform CLI and AWS provider against the sandbox's
moto server. render, init, plan, apply, second plan empty, destroy; and each
refusal with its one line and exit 1.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ket_infra.sandbox import sandbox_down, sandbox_up
from tests.conftest import EXAMPLES, base_plan, free_port, node, sandbox_client, wait_until_shown, write_yaml
from tests.tf import PLUGIN_DIR, needs_terraform

pytestmark = [needs_terraform, pytest.mark.e2e]
TAG = "ket-infra/cluster"


class Sandbox:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.env_file = root / "environments" / "sandbox.yaml"

    def up(self, plan: Path, preflight: bool = True) -> Path:
        """Seed the sandbox for PLAN; preflight=False keeps the run short (about half the rules)."""
        path = sandbox_up(plan, self.port, self.env_file, self.root / ".work", progress=lambda _m: None)
        if not preflight:
            data = yaml.safe_load(path.read_text())
            data["preflight"] = False
            path.write_text(yaml.safe_dump(data))
        return path

    def client(self, service: str = "ec2") -> Any:
        return sandbox_client(self.port, service)

    def command(
        self, *args: str, env_file: Path | None = None, extra: dict[str, str] | None = None
    ) -> tuple[list[str], dict[str, str]]:
        env = {**os.environ, "KET_INFRA_TF_PLUGIN_DIR": PLUGIN_DIR or "", **(extra or {})}
        env.pop("AWS_PROFILE", None)
        return [sys.executable, "-m", "ket_infra", *args, "--env", str(env_file or self.env_file)], env

    def run(
        self, *args: str, env_file: Path | None = None, extra: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        cmd, env = self.command(*args, env_file=env_file, extra=extra)
        return subprocess.run(cmd, cwd=cwd or self.root, capture_output=True, text=True, env=env, timeout=600)

    def run_rules(self, plan: Path) -> subprocess.CompletedProcess[str]:
        """`ket-infra rules PLAN --env ... --format json` for this sandbox's environment."""
        return self.run("rules", str(plan), "--format", "json")

    def env_with(self, name: str, **changes: Any) -> Path:
        data = yaml.safe_load(self.env_file.read_text())
        for key, value in changes.items():
            section, _, sub = key.partition(".")
            if sub:
                data.setdefault(section, {})[sub] = value
            else:
                data[key] = value
        path = self.env_file.parent / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    def ket_groups(self) -> list[dict[str, Any]]:
        pages = (
            self.client()
            .get_paginator("describe_security_groups")
            .paginate(Filters=[{"Name": "tag-key", "Values": [TAG]}])
        )
        return [g for page in pages for g in page["SecurityGroups"]]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    box = Sandbox(tmp_path_factory.mktemp("e2e"))
    yield box
    sandbox_down(box.port, box.root / ".work")


def processes_in(folder: Path) -> list[str]:
    """The command lines of the processes whose working directory is FOLDER (Terraform and its provider)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cwd").resolve() == folder.resolve():
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The error line of a failed run: exit 1, and one `error: ` line that is the last thing on stderr.

    Progress lines may come before it; nothing may follow it (a message that runs on to a second
    line, or a traceback, fails here).
    """
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.rstrip("\n").split("\n")
    errors = [i for i, ln in enumerate(lines) if ln.startswith("error: ")]
    assert errors == [len(lines) - 1], f"want one error line, last on stderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return lines[-1]


def on_terminal(sandbox: Sandbox, *args: str, answer: str) -> tuple[int, str]:
    """Run ket-infra with a terminal as its stdin, ANSWER typed ahead; (exit code, stdout and stderr)."""
    import pty

    cmd, env = sandbox.command(*args)
    main, side = pty.openpty()
    proc = subprocess.Popen(
        cmd, cwd=sandbox.root, env=env, stdin=side, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    os.close(side)
    try:
        os.write(main, f"{answer}\n".encode())  # the terminal holds it until the question reads it
        out, _ = proc.communicate(timeout=600)
    finally:
        os.close(main)
    return proc.returncode, out


def test_plan_apply_replan_destroy(sandbox: Sandbox) -> None:
    sandbox.up(EXAMPLES / "calico-overlay.yaml", preflight=False)
    first = sandbox.run("plan", "--detailed-exitcode")
    assert first.returncode == 2, first.stdout + first.stderr
    assert "+ ingress rule worker-in-proto4-from-master: Calico IP-in-IP tunnel" in first.stdout

    applied = sandbox.run("apply")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert (
        applied.stdout.rstrip().splitlines()[-1] == "applied: environment sandbox is ready for kismatic install apply"
    )
    # Terraform's progress, live on stderr: the phase with its total, then what was done and how long it took
    progress = [ln for ln in applied.stderr.splitlines() if ln.startswith("terraform apply: ")]
    assert progress[0] == "terraform apply: starting"
    assert re.fullmatch(r"terraform apply: applying \d+ resource change\(s\)", progress[1]), progress
    assert re.fullmatch(r"terraform apply: \d+ added, 0 changed, 0 removed in \d+ s", progress[-1]), progress

    groups = {g["GroupId"]: g for g in sandbox.ket_groups()}
    assert {g["GroupName"] for g in groups.values()} == {
        f"prod-east-{n}" for n in ("etcd", "master", "worker", "ingress", "storage")
    }
    enis = sandbox.client().describe_network_interfaces()["NetworkInterfaces"]
    by_host = {}
    for eni in enis:
        ours = [g["GroupId"] for g in eni["Groups"] if g["GroupId"] in groups]
        by_host[eni["PrivateIpAddress"]] = ours
    assert len(by_host) == 10
    assert all(len(ours) == 1 for ours in by_host.values()), by_host
    worker_sg = next(g for g in groups.values() if g["GroupName"] == "prod-east-worker")
    assert by_host["10.0.2.31"] == [worker_sg["GroupId"]]
    assert not any(
        r.get("CidrIp") == "0.0.0.0/0"
        for g in groups.values()
        for p in g["IpPermissions"] + g["IpPermissionsEgress"]
        for r in p["IpRanges"]
    )

    verified = sandbox.run("verify", "--format", "json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    doc = json.loads(verified.stdout)
    assert doc["ok"] is True and doc["checks"] and doc["host_settings"] == []
    # the layout's warnings, as `rules` shows them: in the JSON; on stderr one note names them (plan said them)
    warnings = json.loads(sandbox.run_rules(EXAMPLES / "calico-overlay.yaml").stdout)["warnings"]
    assert doc["warnings"] == warnings and any("egress_cidrs is not set" in w for w in warnings)
    assert not [ln for ln in verified.stderr.splitlines() if ln.startswith("warning: ")]
    assert [ln for ln in verified.stderr.splitlines() if ln.startswith(f"note: {len(warnings)} warning(s) apply (")]
    # the default group lets the downloads out (as AWS's does), so verify passes them
    assert {c["status"] for c in doc["checks"] if c["rule"].startswith("downloads-")} == {"allowed"}

    # a plan saved now has nothing to change (--detailed-exitcode: 0) ...
    planned = sandbox.run("plan", "--detailed-exitcode")
    assert planned.returncode == 0 and "No changes" in planned.stdout, planned.stdout + planned.stderr

    # ... then someone removes IP-in-IP from the workers into the masters by hand: verify finds it, and only it
    ec2 = sandbox.client()
    master_sg = next(g for g in groups.values() if g["GroupName"] == "prod-east-master")["GroupId"]
    rules = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [master_sg]}])[
        "SecurityGroupRules"
    ]
    ipip = [
        r["SecurityGroupRuleId"]
        for r in rules
        if r["IpProtocol"] == "4"
        and not r["IsEgress"]
        and r.get("ReferencedGroupInfo", {}).get("GroupId") == worker_sg["GroupId"]
    ]
    ec2.revoke_security_group_ingress(GroupId=master_sg, SecurityGroupRuleIds=ipip)
    broken = sandbox.run("verify", "--format", "json")
    assert broken.returncode == 3, broken.stdout + broken.stderr
    bad = [c for c in json.loads(broken.stdout)["checks"] if c["status"] == "blocked"]
    assert {(c["rule"], c["source_role"], c["target_role"]) for c in bad} == {("calico-ipip", "worker", "master")}
    text = sandbox.run("verify")
    assert text.returncode == 3
    assert "BLOCKED: no ingress rule on" in text.stdout and "allows IP-in-IP (4)" in text.stdout
    assert (
        "calico-ipip: IP-in-IP (4) from worker (worker01, worker02, worker03) to master (master01, master02)"
        in text.stdout
    )

    # the saved plan, older than that change, applies nothing: apply judges what it left, and says not
    # ready (the blocked flow named, plan again), exit 3, never "ready"
    stale = sandbox.run("apply")
    assert stale.returncode == 3, stale.stdout + stale.stderr
    assert "ready for kismatic install apply" not in stale.stdout + stale.stderr
    assert stale.stdout.rstrip().splitlines()[-3:] == [
        "applied, but environment sandbox is not ready: verify finds 1 required flow blocked; the cloud changed "
        "after the saved plan was made (a rule removed by hand?), or something ket-infra does not manage "
        "(a network ACL) blocks it",
        "  calico-ipip: IP-in-IP (4) from worker to master",
        f"run ket-infra plan --env {sandbox.env_file} again, then apply (ket-infra verify --env "
        f"{sandbox.env_file} names the causes)",
    ], stale.stdout

    # the next apply puts it back (and says so); --verify proves it
    healed = sandbox.run("apply", "--auto-approve", "--verify")
    assert "+ ingress rule master-in-proto4-from-worker" in healed.stdout
    # (that plan was started while the nodes were looked up, the folder being unchanged: it still saw the drift)
    assert (
        "terraform plan (saved to tfplan), started while the nodes were looked up" in healed.stdout + healed.stderr
    ), healed.stdout
    assert healed.returncode == 0, healed.stdout + healed.stderr
    assert "OK: every required flow is open" in healed.stdout

    # a network ACL that ket-infra does not manage cuts BGP into the worker subnet: apply has nothing
    # to change, and --verify says what stays blocked, with exit 3
    subnet = ec2.describe_subnets(Filters=[{"Name": "cidr-block", "Values": ["10.0.2.0/24"]}])["Subnets"][0]
    acl = ec2.create_network_acl(VpcId=subnet["VpcId"])["NetworkAcl"]["NetworkAclId"]
    for number, egress, action, port in (
        (5, False, "deny", {"From": 179, "To": 179}),
        (100, False, "allow", None),
        (100, True, "allow", None),
    ):
        ec2.create_network_acl_entry(
            NetworkAclId=acl,
            RuleNumber=number,
            Protocol="-1" if port is None else "6",
            RuleAction=action,
            Egress=egress,
            CidrBlock="0.0.0.0/0",
            **({"PortRange": port} if port else {}),
        )
    association = next(
        a
        for n in ec2.describe_network_acls()["NetworkAcls"]
        for a in n["Associations"]
        if a["SubnetId"] == subnet["SubnetId"]
    )
    ec2.replace_network_acl_association(AssociationId=association["NetworkAclAssociationId"], NetworkAclId=acl)
    stays = sandbox.run("apply", "--auto-approve", "--verify")
    assert stays.returncode == 3, stays.stdout + stays.stderr
    assert "No changes: the cloud already matches the plan file." in stays.stdout
    assert f"BLOCKED: network ACL {acl} rule 5 denies tcp 179 inbound ({subnet['SubnetId']})" in stays.stdout
    assert stays.stdout.rstrip().endswith("FAILED: fix the causes above, then run verify again")
    default_acl = association["NetworkAclId"]
    current = next(
        a
        for n in ec2.describe_network_acls()["NetworkAcls"]
        for a in n["Associations"]
        if a["SubnetId"] == subnet["SubnetId"]
    )
    ec2.replace_network_acl_association(AssociationId=current["NetworkAclAssociationId"], NetworkAclId=default_acl)

    # destroy lists what it removes and asks; without a terminal it needs --auto-approve
    refused = one_line_error(sandbox.run("destroy"))
    assert refused.endswith("run ket-infra destroy --env " + str(sandbox.env_file) + " --auto-approve"), refused
    code, said = on_terminal(sandbox, "destroy", answer="no")
    assert code == 1, said
    assert "ket-infra will destroy for environment sandbox:" in said
    assert "    - ingress rule worker-in-proto4-from-master" in said
    assert re.search(r"Destroy: \d+ to remove\r?\n", said), said
    assert said.rstrip().endswith(
        "error: destroy cancelled (the answer was not yes): nothing of environment sandbox was changed"
    )
    assert len(sandbox.ket_groups()) == 5
    assert not (sandbox.root / ".work" / "sandbox" / "destroy.tfplan").exists()  # a declined plan is not kept
    code, said = on_terminal(sandbox, "destroy", answer="yes")
    assert code == 0, said
    assert "destroyed: ket-infra's groups and rules for environment sandbox are gone" in said
    assert sandbox.ket_groups() == []
    rules = sandbox.client().describe_security_group_rules()["SecurityGroupRules"]
    assert not [r for r in rules if any(t["Key"] == TAG for t in r.get("Tags", []))]


def test_routed_mode_turns_source_dest_check_off(sandbox: Sandbox) -> None:
    sandbox.up(EXAMPLES / "calico-routed.yaml")
    result = sandbox.run("apply", "--auto-approve")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "source/dest check off for 5 node(s)" in result.stderr  # progress
    ec2 = sandbox.client()
    instances = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
    assert len(instances) == 5
    for inst in instances:
        attr = ec2.describe_instance_attribute(InstanceId=inst["InstanceId"], Attribute="sourceDestCheck")
        assert attr["SourceDestCheck"]["Value"] is False, inst["PrivateIpAddress"]
    assert sandbox.run("verify").returncode == 0
    node02 = next(i for i in instances if i["PrivateIpAddress"] == "10.0.3.22")
    ec2.modify_instance_attribute(InstanceId=node02["InstanceId"], SourceDestCheck={"Value": True})
    broken = sandbox.run("verify", "--format", "json")
    assert broken.returncode == 3
    doc = json.loads(broken.stdout)
    assert [c for c in doc["checks"] if c["status"] == "blocked"] == []
    assert [
        (h["node"], h["source_dest_check"], h["status"]) for h in doc["host_settings"] if h["status"] == "blocked"
    ] == [("node02", True, "blocked")]
    assert sandbox.run("destroy", "--auto-approve").returncode == 0
    for inst in instances:
        attr = ec2.describe_instance_attribute(InstanceId=inst["InstanceId"], Attribute="sourceDestCheck")
        assert attr["SourceDestCheck"]["Value"] is True


SECRET_KEY = "kiSecretAccessKey0123456789abcdefEXAMPLE"
WEAVE_PASSWORD = "s3cr3t-weave-passphrase"


def test_stale_plan_is_refused_and_secrets_stay_out(sandbox: Sandbox) -> None:
    plan_copy = sandbox.root / "weave.yaml"
    plan_copy.write_text((EXAMPLES / "weave-encrypted.yaml").read_text())
    sandbox.up(plan_copy, preflight=False)
    work = sandbox.root / ".work" / "sandbox"
    # render on its own (an environment of its own, so the folder is new): the root module and its data,
    # no Terraform run, no saved plan
    alone = sandbox.env_with("render-only")
    rendered = sandbox.run("render", env_file=alone)
    assert rendered.returncode == 0, rendered.stdout + rendered.stderr
    expected = json.loads(sandbox.run_rules(plan_copy).stdout)
    out = sandbox.root / ".work" / "render-only"
    assert rendered.stderr.splitlines()[-1].startswith(f"rendered {out} (VPC vpc-")
    assert rendered.stderr.splitlines()[-1].endswith(
        f", {len(expected['groups'])} groups, {len(expected['rules'])} rules)"
    )
    tfvars = json.loads((out / "ket-infra.auto.tfvars.json").read_text())
    assert sorted(tfvars["groups"]) == sorted(g["name"] for g in expected["groups"])
    assert len(tfvars["ingress_rules"]) + len(tfvars["egress_rules"]) == len(expected["rules"])
    assert sorted(tfvars["attachments"]) == sorted(n for g in expected["groups"] for n in g["nodes"])
    assert (out / "main.tf").exists() and not (out / ".terraform").exists() and not (out / "tfplan").exists()

    creds = {"AWS_ACCESS_KEY_ID": "AKIAKETINFRATEST0001", "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    planned = sandbox.run("plan", "--format", "json", extra=creds)
    assert planned.returncode == 0, planned.stderr
    doc = json.loads(planned.stdout)
    assert doc["environment"] == "sandbox"
    assert doc["warnings"] == expected["warnings"] and doc["warnings"]
    assert all(f"warning: {w}" in planned.stderr for w in doc["warnings"])
    n_rules, n_groups, n_nodes = len(expected["rules"]), len(expected["groups"]), len(tfvars["attachments"])
    assert doc["counts"] == {
        "create": n_rules + n_groups + n_nodes,
        "update": 0,
        "replace": 0,
        "delete": 0,
        "import": 0,
    }
    assert doc["imports"] == []
    assert [c["kind"] for c in doc["changes"]] == ["ingress"] * len(tfvars["ingress_rules"]) + ["egress"] * len(
        tfvars["egress_rules"]
    ) + ["group"] * n_groups + ["attachment"] * n_nodes
    esp = next(c for c in doc["changes"] if c["name"] == "master-in-proto50-from-worker")
    assert esp == {
        "action": "create",
        "kind": "ingress",
        "name": "master-in-proto50-from-worker",
        "purpose": "Weave encrypted fast datapath (IPsec ESP) [weave]",
        "protocol": "50",  # what it opens, as rules --format json writes it
        "from_port": None,
        "to_port": None,
        "source": {"group": "worker"},
    }
    assert "terraform plan (saved to tfplan)" in planned.stderr  # progress on stderr, JSON alone on stdout
    # the weave password and the AWS secret key appear in no output and no generated file
    outputs = [planned.stdout, planned.stderr]
    files = [p for p in work.rglob("*") if p.is_file() and ".terraform" not in p.parts and p.suffix != ".tfplan"]
    assert files
    for text in outputs + [p.read_text(errors="replace") for p in files]:
        assert WEAVE_PASSWORD not in text and SECRET_KEY not in text
    for p in files:
        assert p.stat().st_mode & 0o002 == 0, f"{p} is world-writable"
    # the plan's nodes change between plan and apply: refused as stale
    original = plan_copy.read_text()
    plan_copy.write_text(
        original.replace("expected_count: 2", "expected_count: 3").replace(
            "    internalip: 10.1.1.32\n",
            "    internalip: 10.1.1.32\n  - host: worker03\n    ip: 198.51.100.33\n    internalip: 10.1.1.33\n",
            1,
        )
    )
    assert "worker03" in plan_copy.read_text()
    assert "is stale" in one_line_error(sandbox.run("apply"))
    plan_copy.write_text(original)
    data = yaml.safe_load(sandbox.env_file.read_text())
    data["installer_cidr"] = "10.1.1.6/32"
    sandbox.env_file.write_text(yaml.safe_dump(data))
    line = one_line_error(sandbox.run("apply"))
    assert "is stale" in line and f"run ket-infra plan --env {sandbox.env_file} again" in line  # --env as given
    assert sandbox.ket_groups() == []

    # the folder is initialised, so the next plan starts Terraform while the nodes are looked up; the new
    # installer address changes the rendered data, so that run is killed before the file changes and the
    # plan is made again: it has the new rule, and nothing of the killed run is left
    ahead = "terraform plan (saved to tfplan), started while the nodes were looked up"
    replanned = sandbox.run("plan", "--format", "json")
    assert replanned.returncode == 0, replanned.stderr
    assert ahead not in replanned.stderr and "terraform plan (saved to tfplan)" in replanned.stderr
    names = {c["name"] for c in json.loads(replanned.stdout)["changes"]}
    assert "master-in-tcp-22-from-10.1.1.6-32" in names
    assert not processes_in(work) and not (work / ".terraform.tfstate.lock.info").exists()
    # nothing changed since: the plan started ahead is kept, and it is the same plan
    again = sandbox.run("plan", "--format", "json")
    assert again.returncode == 0, again.stderr
    assert ahead in again.stderr
    assert json.loads(again.stdout)["changes"] == json.loads(replanned.stdout)["changes"]
    assert (work / "tfplan").exists() and "is stale" not in again.stderr
    # a node that is not in EC2: discovery fails while Terraform runs ahead; the run is killed, no plan is saved
    plan_copy.write_text(original.replace("    internalip: 10.1.1.32\n", "    internalip: 10.1.1.99\n"))
    missing = one_line_error(sandbox.run("plan"))
    assert "not found as EC2 instances" in missing and "10.1.1.99" in missing, missing
    assert not processes_in(work) and not (work / "tfplan").exists()
    plan_copy.write_text(original)
    no_plan = sandbox.env_with("fresh")
    assert "no saved plan" in one_line_error(sandbox.run("apply", env_file=no_plan))


def test_refusals(sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.up(EXAMPLES / "contiv.yaml")

    line = one_line_error(
        sandbox.run("plan", env_file=sandbox.env_with("nobin", **{"terraform.binary": "no-such-terraform"}))
    )
    assert "terraform.binary: 'no-such-terraform' not found on PATH; install Terraform >= 1.5" in line

    line = one_line_error(sandbox.run("plan", env_file=sandbox.env_with("acct", **{"aws.account_id": "999999999999"})))
    assert "aws.account_id: the credentials are for account 123456789012, not 999999999999" in line

    line = one_line_error(
        sandbox.run(
            "plan", env_file=sandbox.env_with("down", **{"aws.endpoint_url": f"http://127.0.0.1:{free_port()}"})
        )
    )
    assert "cannot reach http://127.0.0.1:" in line and "aws.endpoint_url" in line

    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    line = one_line_error(
        sandbox.run("plan", env_file=sandbox.env_with("noprov", **{"terraform.plugin_dir": str(empty)}))
    )
    assert f"terraform init in {sandbox.root / '.work' / 'noprov'} could not get the AWS provider" in line
    assert f"(plugin_dir {empty} lacks it)" in line and "hashicorp/aws" in line
    assert "set terraform.plugin_dir in " in line and "(or KET_INFRA_TF_PLUGIN_DIR)" in line

    data = base_plan({"provider": "contiv"})
    data["worker"] = {"expected_count": 2, "nodes": [node("worker01", "10.2.1.31"), node("ghost01", "10.2.1.99")]}
    data["etcd"]["nodes"] = [node("etcd01", "10.2.1.11")]
    data["master"]["nodes"] = [node("master01", "10.2.1.21")]
    ghost_plan = write_yaml(tmp_path / "ghost.yaml", data)
    line = one_line_error(sandbox.run("plan", env_file=sandbox.env_with("ghost", plan_file=str(ghost_plan))))
    assert "1 node(s) not found as EC2 instances in eu-west-1: ghost01 (10.2.1.99)" in line
    assert sandbox.ket_groups() == []


def test_routed_across_subnets_is_refused(sandbox: Sandbox, tmp_path: Path) -> None:
    data = base_plan({"provider": "calico", "options": {"calico": {"mode": "routed"}}})
    data["worker"]["nodes"] = [node("worker01", "10.0.2.31")]
    plan = write_yaml(tmp_path / "routed-2-subnets.yaml", data)
    sandbox.up(plan)
    line = one_line_error(sandbox.run("plan"))
    assert "routed needs every kubelet node in one subnet, but they are in 2" in line
    assert "use mode overlay" in line
    assert sandbox.ket_groups() == []


def test_two_applies_on_one_s3_backend(sandbox: Sandbox, tmp_path: Path) -> None:
    """Two pipeline runs of one environment, sharing the s3 state: the second stops at once, changes nothing."""
    sandbox.up(EXAMPLES / "contiv.yaml", preflight=False)
    sandbox.client("s3").create_bucket(
        Bucket="ket-state", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    backend = {
        "type": "s3",
        "bucket": "ket-state",
        "key": "contiv/sandbox.tfstate",
        "region": "eu-west-1",
        "use_lockfile": True,
        "endpoint_url": f"http://127.0.0.1:{sandbox.port}",
    }
    shared = sandbox.env_with("shared", **{"terraform.backend": backend})
    cmd, env = sandbox.command("apply", "--auto-approve", env_file=shared)
    first = subprocess.Popen(
        cmd, cwd=sandbox.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert first.stdout is not None
        seen = []
        for line in first.stdout:
            seen.append(line)
            if line.startswith("terraform apply"):
                break
        assert seen and seen[-1].startswith("terraform apply"), "".join(seen)
        # another pipeline runner: its own checkout (so its own work folder), the same state
        other = tmp_path / "runner-2"
        (other / "environments").mkdir(parents=True)
        theirs = yaml.safe_load(shared.read_text())
        theirs["plan_file"] = str((shared.parent / theirs["plan_file"]).resolve())
        (other / "environments" / "shared.yaml").write_text(yaml.safe_dump(theirs))
        start = time.monotonic()
        second = sandbox.run("apply", "--auto-approve", env_file=other / "environments" / "shared.yaml", cwd=other)
        took = time.monotonic() - start
    finally:
        rest = first.communicate(timeout=600)[0]
    assert first.returncode == 0, "".join(seen) + rest
    line = one_line_error(second)
    assert "is locked by" in line and "force-unlock" in line, line
    assert took < 60
    names = sorted(g["GroupName"] for g in sandbox.ket_groups())
    assert names == ["analytics-etcd", "analytics-master", "analytics-storage", "analytics-worker"]
    # the cluster is gone and so is the checkout: a fresh one destroys what the s3 state holds,
    # with no node left to find
    ec2 = sandbox.client()
    ids = [i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
    ec2.terminate_instances(InstanceIds=ids)
    fresh = tmp_path / "runner-3"
    (fresh / "environments").mkdir(parents=True)
    (fresh / "environments" / "shared.yaml").write_text(yaml.safe_dump(theirs))
    gone = sandbox.run("destroy", "--auto-approve", env_file=fresh / "environments" / "shared.yaml", cwd=fresh)
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert f"rendered {fresh / '.work' / 'shared'} to read the Terraform state (no nodes needed)" in gone.stderr
    assert "destroyed: ket-infra's groups and rules for environment shared are gone" in gone.stdout
    assert sandbox.ket_groups() == []


# Endpoints the plan names, inside the sandbox's VPC (10.0.1.0/26 for base_plan's nodes) but on no node,
# and an NFS filer outside it; the flows (verify's rule names) each egress rule to them carries.
LB, PROXY, FILER = "10.0.1.40", "10.0.1.50", "172.31.8.5"
ENDPOINT_FLOWS = {f"{LB}/32": ["apiserver-lb"], f"{FILER}/32": ["nfs"], f"{PROXY}/32": ["http-proxy", "https-proxy"]}


def test_moving_a_kismatic_provision_cluster_off_its_wide_open_group(sandbox: Sandbox, tmp_path: Path) -> None:
    """audit finds the group KET's provisioner opened to the world; apply with detach_groups takes it off
    once the flows are proven open without it; verify and audit pass; destroy puts it back. The plan names an
    internal load balancer, an NFS volume and a proxy, which the wide-open group's allow-all egress reached:
    ket-infra's own egress rules reach them after the move, and each one removed by hand makes verify exit 3
    naming its flow and plan key. Calico routed mode needs the source/dest check off, which kismatic-provision
    leaves off (and someone turned back on on master01): destroy leaves every interface exactly as it was
    before the first apply, its groups and its check, not AWS's default."""
    data = base_plan({"provider": "calico", "options": {"calico": {"mode": "routed"}}})
    data["master"]["load_balancer"] = f"{LB}:6443"
    data["nfs"] = {"nfs_volume": [{"nfs_host": FILER, "mount_path": "/exports"}]}
    data["cluster"]["networking"].update(http_proxy=f"http://{PROXY}:3128", https_proxy=f"http://{PROXY}:3128")
    plan = write_yaml(tmp_path / "plan.yaml", data)
    sandbox_up(plan, sandbox.port, sandbox.env_file, sandbox.root / ".work", progress=lambda _m: None,
               like="kismatic-provision")  # fmt: skip
    ec2 = sandbox.client()
    vpc = ec2.describe_vpcs(Filters=[{"Name": "tag:Name", "Values": ["ket-test"]}])["Vpcs"][0]["CidrBlock"]
    assert vpc == "10.0.1.0/26"  # the balancer and the proxy are in the VPC; the filer is not

    def groups_by_host() -> dict[str, list[str]]:
        enis = ec2.describe_network_interfaces()["NetworkInterfaces"]
        return {e["PrivateIpAddress"]: sorted(g["GroupName"] for g in e["Groups"]) for e in enis}

    def interfaces() -> dict[str, tuple[list[str], bool]]:
        """Each node's address -> the groups on its interface and its instance's source/dest check."""
        checks = {
            i["PrivateIpAddress"]: i["SourceDestCheck"]
            for r in ec2.describe_instances()["Reservations"]
            for i in r["Instances"]
        }
        return {address: (groups, checks[address]) for address, groups in groups_by_host().items()}

    master01 = ec2.describe_instances(Filters=[{"Name": "private-ip-address", "Values": ["10.0.1.21"]}])
    ec2.modify_instance_attribute(
        InstanceId=master01["Reservations"][0]["Instances"][0]["InstanceId"], SourceDestCheck={"Value": True}
    )
    as_it_was = interfaces()
    assert as_it_was == {
        "10.0.1.11": (["default"], False),
        "10.0.1.21": (["default"], True),
        "10.0.1.31": (["default"], False),
    }

    def detached_tags() -> list[str]:
        enis = ec2.describe_network_interfaces()["NetworkInterfaces"]
        return [t["Value"] for e in enis for t in e.get("TagSet", []) if t["Key"] == "ket-infra/detached-groups"]

    before = sandbox.run("audit", "--format", "json")
    assert before.returncode == 3, before.stdout + before.stderr
    excess = json.loads(before.stdout)["excess"]
    assert [(e["severity"], e["protocol"], e["source"], e["via"]["group_name"], e["targets"]) for e in excess] == [
        ("world", "all", "0.0.0.0/0", "default", ["etcd01", "master01", "worker01"])
    ]
    default = excess[0]["via"]["group_id"]

    env = sandbox.env_with("migrate", detach_groups=["default"], preflight=False)
    applied = sandbox.run("apply", "--auto-approve", "--verify", env_file=env)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert (
        "after the apply: detach_groups default come off the nodes' interfaces once every required flow is proven "
        "open without them (nothing is detached otherwise)"
    ) in applied.stderr
    assert f"detach_groups: every required flow is open without {default} (default) (" in applied.stderr
    assert "detach_groups: done on 3 interface(s); destroy puts the groups back" in applied.stderr
    assert "OK: every required flow is open" in applied.stdout
    assert groups_by_host() == {
        "10.0.1.11": ["test-etcd"],
        "10.0.1.21": ["test-master"],
        "10.0.1.31": ["test-worker"],
    }
    assert detached_tags() == [default] * 3
    verified = sandbox.run("verify", env_file=env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    audited = sandbox.run("audit", env_file=env)
    assert audited.returncode == 0, audited.stdout + audited.stderr
    assert audited.stdout.startswith("audit migrate (cluster test): clean: nothing is open beyond the required flows")

    groups = {g["GroupId"]: g["GroupName"] for g in sandbox.ket_groups()}
    owned = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": sorted(groups)}])
    outbound = {
        next(t["Value"] for t in r["Tags"] if t["Key"] == "Name"): r
        for r in owned["SecurityGroupRules"]
        if r["IsEgress"] and r.get("CidrIpv4") in ENDPOINT_FLOWS
    }
    assert sorted(outbound) == sorted(
        [f"{g}-out-tcp-3128-to-{PROXY}-32" for g in ("etcd", "master", "worker")]
        + [f"{g}-out-tcp-{port}-to-{ip}-32" for g in ("master", "worker") for port, ip in ((6443, LB), (2049, FILER))]
    )

    for name, r in sorted(outbound.items()):
        ec2.revoke_security_group_egress(GroupId=r["GroupId"], SecurityGroupRuleIds=[r["SecurityGroupRuleId"]])
        cut = sandbox.run("verify", env_file=env)
        assert cut.returncode == 3, f"{name}: {cut.stdout}{cut.stderr}"
        role = groups[r["GroupId"]].removeprefix("test-")
        for flow in ENDPOINT_FLOWS[r["CidrIpv4"]]:
            assert f"\n  {flow}: tcp {r['FromPort']} from {role} (" in cut.stdout, f"{name}: {cut.stdout}"
        assert f"allows tcp {r['FromPort']} to {r['CidrIpv4']} (needed for plan key " in cut.stdout, cut.stdout
        permission = {
            "IpProtocol": "tcp",
            "FromPort": r["FromPort"],
            "ToPort": r["ToPort"],
            "IpRanges": [{"CidrIp": r["CidrIpv4"]}],
        }
        (put_back,) = ec2.authorize_security_group_egress(
            GroupId=r["GroupId"],
            IpPermissions=[permission],
            TagSpecifications=[{"ResourceType": "security-group-rule", "Tags": r["Tags"]}],
        )["SecurityGroupRules"]
        wait_until_shown(ec2, r["GroupId"], put_back["SecurityGroupRuleId"])
    verified = sandbox.run("verify", env_file=env)
    assert verified.returncode == 0, verified.stdout + verified.stderr

    destroyed = sandbox.run("destroy", "--auto-approve", env_file=env)
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    assert f"  + re-attach {default} (detach_groups) to 3 node(s) first" in destroyed.stdout
    assert "  ~ source/dest check back as it was before ket-infra for 1 node(s): master01 (on)" in destroyed.stdout
    assert interfaces() == as_it_was
    assert detached_tags() == [] and sandbox.ket_groups() == []


def test_audit_finds_what_kops_leaves_open(sandbox: Sandbox, tmp_path: Path) -> None:
    data = base_plan()
    data["worker"] = {"expected_count": 2, "nodes": [node("worker01", "10.0.1.31"), node("worker02", "10.0.1.32")]}
    plan = write_yaml(tmp_path / "plan.yaml", data)
    sandbox_up(plan, sandbox.port, sandbox.env_file, sandbox.root / ".work", progress=lambda _m: None, like="kops")
    audited = sandbox.run("audit", "--format", "json")
    assert audited.returncode == 3, audited.stdout + audited.stderr
    found = sorted(
        (
            e["severity"],
            e["protocol"],
            e["from_port"],
            e["to_port"],
            e["source"].split(" (")[-1],
            e["via"]["group_name"],
        )
        for e in json.loads(audited.stdout)["excess"]
    )
    assert found == sorted(
        [
            ("world", "tcp", 22, 22, "0.0.0.0/0", "masters.test"),
            ("world", "tcp", 22, 22, "0.0.0.0/0", "nodes.test"),
            ("world", "tcp", 443, 443, "0.0.0.0/0", "masters.test"),
            ("cluster", "all", None, None, "masters.test)", "masters.test"),
            ("cluster", "all", None, None, "masters.test)", "nodes.test"),
            ("cluster", "all", None, None, "nodes.test)", "nodes.test"),
            ("cluster", "tcp", 1, 2379, "nodes.test)", "masters.test"),
            ("cluster", "tcp", 2382, 4000, "nodes.test)", "masters.test"),
            ("cluster", "tcp", 4003, 65535, "nodes.test)", "masters.test"),
            ("cluster", "udp", 1, 65535, "nodes.test)", "masters.test"),
        ]
    )


def test_compare_judges_routed_mode_from_the_subnets_aws_has(sandbox: Sandbox) -> None:
    sandbox.up(EXAMPLES / "calico-overlay.yaml")  # masters in 10.0.1.0/24, workers in 10.0.2.0/24: two subnets
    result = sandbox.run("compare", str(EXAMPLES / "calico-overlay.yaml"), "--format", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    subnets = {s["CidrBlock"]: s["SubnetId"] for s in sandbox.client().describe_subnets()["Subnets"] if s["CidrBlock"]}
    routed = next(o for o in json.loads(result.stdout)["options"] if o["mode"] == "routed")
    assert routed["workable"] is False
    assert routed["reasons"][0].startswith("cannot work here: the kubelet nodes are in 2 subnets (")
    assert f"{subnets['10.0.1.0/24']}: master01, master02" in routed["reasons"][0]
    assert f"{subnets['10.0.2.0/24']}: ingress01, storage01, worker01 ..." in routed["reasons"][0]
