"""The workflow in-process, against the sandbox with the real Terraform CLI and
AWS provider, on the smallest cluster (one node with every required role, no
preflight): plan, apply, plan again, destroy, and what each step says. Small
enough to run in seconds; the CLI's view of the same path is in test_e2e.py.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ket_infra import workflow
from ket_infra.aws import AwsError
from ket_infra.detach import Record
from ket_infra.errors import KetInfraError
from ket_infra.sandbox import sandbox_down, sandbox_up
from ket_infra.terraform import TerraformError
from tests.conftest import base_plan, node, sandbox_client, wait_until_shown, write_yaml
from tests.tf import PLUGIN_DIR, needs_terraform, terraform

pytestmark = [needs_terraform, pytest.mark.slow]


class Box:
    def __init__(self, root: Path) -> None:
        from tests.conftest import free_port

        self.root = root
        self.port = free_port()
        self.lines: list[str] = []

    def context(self, env_file: Path) -> workflow.Context:
        self.lines.clear()
        return workflow.context(str(env_file), self.lines.append, base=self.root / ".work")


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    b = Box(tmp_path_factory.mktemp("workflow"))
    yield b
    sandbox_down(b.port, b.root / ".work")


def one_node(box: Box, cni: dict[str, object], name: str) -> Path:
    data = base_plan(cni)
    for role in ("etcd", "master", "worker"):
        data[role]["nodes"] = [node("solo01", "10.0.1.11")]
    plan = write_yaml(box.root / f"{name}.yaml", data)
    env_file = sandbox_up(
        plan, box.port, box.root / "environments" / f"{name}.yaml", box.root / ".work", lambda _m: None
    )
    doc = yaml.safe_load(env_file.read_text())
    doc["preflight"] = False
    doc["terraform"]["plugin_dir"] = PLUGIN_DIR
    env_file.write_text(yaml.safe_dump(doc))
    return env_file


def test_plan_apply_replan_destroy_in_process(box: Box) -> None:
    env_file = one_node(box, {"provider": "calico", "options": {"calico": {"mode": "routed"}}}, "solo")
    ctx = box.context(env_file)
    work = box.root / ".work" / "solo"
    assert ctx.work == work
    with pytest.raises(KetInfraError) as info:
        workflow.apply(ctx, auto_approve=False)
    assert str(info.value) == (
        f"no saved plan for environment solo in {work}; run ket-infra plan --env {env_file} first "
        "(or apply --auto-approve)"
    )

    summary = workflow.plan(ctx)
    assert ctx.imports == [] and not (work / "imports.tf").exists()  # nothing of ket-infra's in AWS yet
    wanted = json.loads((work / "ket-infra.auto.tfvars.json").read_text())
    n_rules = len(wanted["ingress_rules"]) + len(wanted["egress_rules"])
    # the environment shapes the rules: the installer's address is let in (for SSH, at least)
    installer = yaml.safe_load(env_file.read_text())["installer_cidr"]
    assert [r for r in wanted["ingress_rules"].values() if r["cidr"] == installer and r["from_port"] == 22]
    assert summary.counts() == {"create": n_rules + 2, "update": 0, "replace": 0, "delete": 0, "import": 0}
    assert box.lines[0] == "checking AWS account and finding 1 node(s) in eu-west-1"
    assert box.lines[1].startswith(f"rendered {work} (VPC vpc-") and box.lines[1].endswith(
        f"1 groups, {n_rules} rules)"
    )
    assert box.lines[-1] == f"Plan: {n_rules + 2} to add, 0 to change, 0 to replace, 0 to remove."
    # each rule with its purpose, taken from the rendered rules (the plan's own messages name only the resource)
    shown = [ln for ln in box.lines if ln.startswith("    + ingress rule ")]
    assert len(shown) == len(wanted["ingress_rules"])
    for name, rule in wanted["ingress_rules"].items():
        assert f"    + ingress rule {name}: {rule['description']}" in shown
    group = wanted["groups"]
    assert len(group) == 1
    ((name, doc),) = group.items()
    assert f"    + group {name}: {doc['description']}" in box.lines, box.lines
    assert (work / "tfplan").exists() and (work / "tfplan.fingerprint").exists()

    # a stale plan is refused before Terraform runs
    env_doc = env_file.read_text()
    env_file.write_text(yaml.safe_dump({**yaml.safe_load(env_doc), "installer_cidr": "10.0.1.200/32"}))
    with pytest.raises(KetInfraError, match="the saved plan for environment solo is stale"):
        workflow.apply(box.context(env_file), auto_approve=False)
    env_file.write_text(env_doc)
    # so is one whose rendered module was edited by hand (Terraform would apply what the plan was not made from)
    module = sorted((work / "modules").rglob("*.tf"))[-1]
    module_text = module.read_text()
    module.write_text(module_text + "# edited\n")
    with pytest.raises(KetInfraError, match="the saved plan for environment solo is stale"):
        workflow.apply(box.context(env_file), auto_approve=False)
    module.write_text(module_text)
    # a comment, a reformat or keys in another order change the bytes, not what the files say: the saved plan
    # stays good
    plan_file = box.root / "solo.yaml"
    plan_doc = plan_file.read_text()
    reordered = dict(reversed(list(yaml.safe_load(env_doc).items())))
    env_file.write_text("# reviewed\n" + yaml.safe_dump(reordered, indent=4, sort_keys=False))
    plan_file.write_text(plan_doc + "# a comment\n")

    ctx = box.context(env_file)
    workflow.apply(ctx, auto_approve=False)
    # (the sandbox, as EC2, shows what was just made only after a delay: apply waits for it, saying so)
    assert all(ln.startswith("EC2 shows ") for ln in box.lines[2:-3]), box.lines
    assert box.lines[:2] + box.lines[-3:-2] == [
        f"terraform init: up to date in {work}",
        "terraform apply tfplan",
        "source/dest check off for 1 node(s)",
    ]
    assert re.fullmatch(r"  solo01 \(i-[0-9a-f]+\): source/dest check off", box.lines[-2]), box.lines
    assert box.lines[-1:] == ["applied: environment solo is ready for kismatic install apply"]
    assert not (work / "tfplan").exists()

    ctx = box.context(env_file)
    again = workflow.plan(ctx)
    assert not again.has_changes
    assert box.lines[-1] == "No changes: the cloud already matches the plan file."
    assert not [ln for ln in box.lines if ln.startswith("adopting")]

    # the state loses everything (as when a run is killed before Terraform writes it): the next plan adopts
    # each group, rule and attachment, not a duplicate
    lost = ctx.tf.state_resources()
    assert len(lost) == n_rules + 2
    terraform("state", "rm", *lost, cwd=work)
    # and a rule ket-infra once made that the plan no longer wants: left alone, and said so
    ec2 = _ec2(box)
    ((key, _),) = wanted["groups"].items()
    (group,) = ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [f"{wanted['cluster_name']}-{key}"]}]
    )["SecurityGroups"]
    (retired,) = ec2.authorize_security_group_ingress(
        GroupId=group["GroupId"],
        IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 7777, "ToPort": 7777, "IpRanges": [{"CidrIp": "10.0.1.250/32"}]}
        ],
        TagSpecifications=[{"ResourceType": "security-group-rule", "Tags": [{"Key": "Name", "Value": "retired"}]}],
    )["SecurityGroupRules"]
    wait_until_shown(ec2, group["GroupId"], retired["SecurityGroupRuleId"])
    ctx = box.context(env_file)
    workflow.apply(ctx, auto_approve=True)  # plans (adopting) and applies at once
    adopting = [ln for ln in box.lines if ln.startswith("adopting ")]
    n_in, n_out = len(wanted["ingress_rules"]), len(wanted["egress_rules"])
    kinds = f"1 group, {n_in} ingress rule{'s' * (n_in != 1)}, {n_out} egress rule{'s' * (n_out != 1)}, 1 attachment"
    assert len(adopting) == 1, box.lines
    assert adopting[0].startswith(f"adopting {n_rules + 2} orphan(s) ({kinds}): ket-infra made them"), adopting
    assert adopting[0].endswith(f"(see {work / 'imports.tf'}); 1 other(s) the plan no longer wants are left alone"), (
        adopting
    )
    imports_tf = (work / "imports.tf").read_text()
    assert all(f"import {{\n  to = {a}\n" in imports_tf for a in lost)
    assert f"Plan: 0 to add, 0 to change, 0 to replace, 0 to remove, {n_rules + 2} to import." in box.lines
    assert sorted(i.address for i in ctx.imports) == sorted(lost)
    assert sorted({i.kind for i in ctx.imports}) == ["attachment", "egress", "group", "ingress"]
    assert box.lines[-1] == "applied: environment solo is ready for kismatic install apply"
    assert sorted(ctx.tf.state_resources()) == sorted(lost)

    # destroy from a folder that lost its rendered module (a fresh checkout with the state kept); it lists what
    # it removes and restores before asking (declining is test_e2e.py's, on a terminal)
    (work / "main.tf").unlink()
    ctx = box.context(env_file)
    listed: list[str] = []

    def approve(listing: list[str]) -> bool:
        assert len(ctx.tf.state_resources()) == n_rules + 2  # asked before anything is removed
        listed.extend(listing)
        return True

    workflow.destroy(ctx, approve)
    assert box.lines[0] == f"rendered {work} to read the Terraform state (no nodes needed)"
    assert listed[-2:] == [
        "  ~ source/dest check back as it was before ket-infra for 1 node(s): solo01 (on)",
        f"Destroy: {n_rules + 2} to remove, 1 host setting(s) to restore",
    ]
    assert [ln for ln in listed if ln.startswith("    - group ")] and "    - attachment solo01" in listed
    assert sum(1 for ln in listed if ln.startswith("    - ingress rule ")) == len(wanted["ingress_rules"])
    assert box.lines[-1] == "destroyed: ket-infra's groups and rules for environment solo are gone"
    assert "source/dest check back as it was before ket-infra for 1 node(s)" in box.lines
    assert ctx.tf.state_resources() == []
    assert not (work / "destroy.tfplan").exists()


def _ec2(box: Box) -> Any:
    return sandbox_client(box.port)


def _source_dest_check(box: Box) -> bool:
    ec2 = _ec2(box)
    (instance,) = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
    attr = ec2.describe_instance_attribute(InstanceId=instance["InstanceId"], Attribute="sourceDestCheck")
    return bool(attr["SourceDestCheck"]["Value"])


ROUTED = {"provider": "calico", "options": {"calico": {"mode": "routed"}}}


def test_host_settings_alone_set_then_restore_the_check(box: Box) -> None:
    """The step after Terraform's apply on its own: routed Calico turns the check off, destroy puts back what it was."""
    env_file = one_node(box, ROUTED, "hosts")
    ctx = box.context(env_file)
    workflow.host_settings(ctx, restore=False)
    assert box.lines[0] == "source/dest check off for 1 node(s)"
    assert re.fullmatch(r"  solo01 \(i-[0-9a-f]+\): source/dest check off", box.lines[1]), box.lines
    assert len(box.lines) == 2 and _source_dest_check(box) is False
    ctx = box.context(env_file)
    workflow.host_settings(ctx, restore=False)  # a rerun changes nothing and says so
    assert box.lines == ["source/dest check off for 1 node(s)", "  already set"]
    ctx = box.context(env_file)
    workflow.host_settings(ctx, restore=True)
    assert box.lines[0] == "source/dest check back as it was before ket-infra for 1 node(s)" and len(box.lines) == 2
    assert re.fullmatch(r"  solo01 \(i-[0-9a-f]+\): source/dest check on, as it was", box.lines[1]), box.lines
    assert _source_dest_check(box) is True
    assert not (box.root / ".work" / "hosts" / "terraform.tfstate.source-dest-check.json").exists()


def test_host_settings_do_nothing_for_an_overlay(box: Box) -> None:
    env_file = one_node(box, {"provider": "weave"}, "overlay")
    ctx = box.context(env_file)
    workflow.host_settings(ctx, restore=False)
    workflow.host_settings(ctx, restore=True)
    assert box.lines == [] and _source_dest_check(box) is True


def test_destroy_before_any_apply(box: Box) -> None:
    """Nothing in the state: with no host settings there is nothing to do; with them, only the check to restore."""
    env_file = one_node(box, {"provider": "weave"}, "never")
    ctx = box.context(env_file)
    workflow.destroy(ctx, lambda listing: pytest.fail(f"asked to approve {listing}"))
    work = box.root / ".work" / "never"
    assert box.lines[0] == f"rendered {work} to read the Terraform state (no nodes needed)"
    assert "terraform plan -destroy (saved to destroy.tfplan)" in box.lines
    assert box.lines[-1] == "nothing to destroy: the Terraform state of environment never holds nothing"
    assert not (work / "destroy.tfplan").exists()

    env_file = one_node(box, ROUTED, "routed-never")
    ctx = box.context(env_file)
    workflow.destroy(ctx, lambda listing: pytest.fail(f"asked to approve {listing}"))
    # ket-infra never changed the check here (no record of it): destroy leaves it as it is, not AWS's default
    assert box.lines[-1] == "nothing to destroy: the Terraform state of environment routed-never holds nothing"
    assert _source_dest_check(box) is True


def _interface(box: Box) -> dict[str, Any]:
    (eni,) = _ec2(box).describe_network_interfaces()["NetworkInterfaces"]
    return eni


def test_detach_groups_refused_while_ket_infras_groups_are_not_applied(box: Box) -> None:
    """The step after apply on its own: without ket-infra's groups in place the default group is still needed."""
    env_file = one_node(box, {"provider": "weave"}, "keep")
    ctx = box.context(env_file)
    workflow.foreign_groups(ctx)  # nothing listed, nothing recorded: nothing to do
    assert box.lines == []
    doc = yaml.safe_load(env_file.read_text())
    doc["detach_groups"] = ["default"]
    env_file.write_text(yaml.safe_dump(doc))
    before = _interface(box)["Groups"]
    with pytest.raises(KetInfraError) as info:
        workflow.foreign_groups(box.context(env_file))
    said = str(info.value)
    assert said.startswith(f"{env_file}: detach_groups: nothing was detached: without "), said
    assert "required flow check(s) would be blocked" in said
    assert _interface(box)["Groups"] == before and box.lines == []


def test_destroy_puts_back_what_detach_groups_took_off_first(box: Box) -> None:
    """A node whose default group ket-infra recorded taking off: destroy lists it, then re-attaches it."""
    env_file = one_node(box, {"provider": "weave"}, "putback")
    ec2 = _ec2(box)
    eni = _interface(box)
    (default,) = [g["GroupId"] for g in eni["Groups"]]
    vpc = eni["VpcId"]
    stand_in = ec2.create_security_group(GroupName="stand-in", Description="stand-in", VpcId=vpc)["GroupId"]
    ec2.modify_network_interface_attribute(NetworkInterfaceId=eni["NetworkInterfaceId"], Groups=[stand_in])
    ec2.create_tags(
        Resources=[eni["NetworkInterfaceId"]], Tags=[{"Key": "ket-infra/detached-groups", "Value": default}]
    )
    asked: list[list[str]] = []
    ctx = box.context(env_file)
    Record.of(ctx.env, ctx.work).write({eni["NetworkInterfaceId"]: (default,)})  # ket-infra's record, beside the state
    workflow.destroy(ctx, lambda listing: asked.append(listing) or True)
    assert asked == [[f"  + re-attach {default} (detach_groups) to 1 node(s) first", "Destroy: 0 to remove"]]
    assert "re-attaching the groups detach_groups took off 1 node(s)" in box.lines
    at = box.lines.index("re-attaching the groups detach_groups took off 1 node(s)")
    assert box.lines[at + 1] == f"  solo01 ({eni['NetworkInterfaceId']}): re-attached {default}"
    assert at < box.lines.index("terraform apply destroy.tfplan"), box.lines  # before ket-infra's groups go
    assert box.lines[-1] == "destroyed: ket-infra's groups and rules for environment putback are gone"
    after = _interface(box)
    assert sorted(g["GroupId"] for g in after["Groups"]) == sorted([stand_in, default])
    assert not [t for t in after.get("TagSet", []) if t["Key"] == "ket-infra/detached-groups"]
    assert Record.of(ctx.env, ctx.work).read() == {}


def test_a_failed_apply_says_what_may_be_half_done_and_how_to_converge(box: Box) -> None:
    """AWS gone between plan and apply: Terraform fails, and the one line says a rerun converges."""
    env_file = one_node(box, {"provider": "weave"}, "broken")
    doc = yaml.safe_load(env_file.read_text())
    doc["detach_groups"] = ["default", "legacy"]
    env_file.write_text(yaml.safe_dump(doc))
    workflow.plan(box.context(env_file))
    assert box.lines[-1] == (
        "after the apply: detach_groups default, legacy come off the nodes' interfaces once every required flow "
        "is proven open without them (nothing is detached otherwise)"
    )
    sandbox_down(box.port, box.root / ".work")
    try:
        with pytest.raises(TerraformError) as info:
            workflow.apply(box.context(env_file), auto_approve=False)
    finally:
        one_node(box, {"provider": "weave"}, "broken")  # the sandbox back for the tests after this one
    said = str(info.value)
    assert "\n" not in said.strip()
    assert said.endswith(
        f" -- the apply may have made part of its changes; run ket-infra plan --env {env_file} "
        "to see what is left, then apply again (a rerun converges)"
    ), said


def _cluster(box: Box, cni: dict[str, object], name: str, nodes: dict[str, tuple[str, str]]) -> Path:
    """A sandbox environment for a plan with one node per role: role -> (host, address)."""
    data = base_plan(cni)
    for role, (host, ip) in nodes.items():
        data[role]["nodes"] = [node(host, ip)]
    plan = write_yaml(box.root / f"{name}.yaml", data)
    return sandbox_up(plan, box.port, box.root / "environments" / f"{name}.yaml", box.root / ".work", lambda _m: None)


def test_routed_mode_is_refused_across_subnets_before_anything_is_rendered(box: Box) -> None:
    nodes = {"etcd": ("etcd01", "10.0.1.11"), "master": ("master01", "10.0.1.12"), "worker": ("worker01", "10.0.2.12")}
    env_file = _cluster(box, ROUTED, "split", nodes)
    ctx = box.context(env_file)
    with pytest.raises(AwsError) as info:
        workflow.discover_and_render(ctx)
    assert str(info.value).startswith(
        f"{box.root / 'split.yaml'}: add_ons.cni.options.calico.mode: routed needs every kubelet node in one subnet, "
        "but they are in 2 ("
    )
    assert not (ctx.work / "main.tf").exists()
    with pytest.raises(AwsError, match="routed needs every kubelet node in one subnet"):
        workflow.plan(box.context(env_file))  # the same from plan, with no Terraform plan started ahead
    # etcd alone elsewhere is fine: it runs no kubelet and carries no pod traffic
    nodes = {"etcd": ("etcd01", "10.0.2.11"), "master": ("master01", "10.0.1.12"), "worker": ("worker01", "10.0.1.13")}
    ctx = box.context(_cluster(box, ROUTED, "etcd-apart", nodes))
    found = workflow.discover_and_render(ctx)
    assert ctx.found is found and (ctx.work / "main.tf").exists()
    assert {n.host for n in found.nodes} == {"etcd01", "master01", "worker01"}


def test_an_interface_with_no_room_for_a_group_is_refused_unless_one_is_ket_infras(box: Box) -> None:
    env_file = one_node(box, {"provider": "weave"}, "full")
    ctx = box.context(env_file)
    ec2 = _ec2(box)
    eni = _interface(box)
    extra = [
        ec2.create_security_group(GroupName=f"extra-{i}", Description="x", VpcId=eni["VpcId"])["GroupId"]
        for i in range(4)
    ]
    groups = [g["GroupId"] for g in eni["Groups"]] + extra  # the AWS limit, 5
    ec2.modify_network_interface_attribute(NetworkInterfaceId=eni["NetworkInterfaceId"], Groups=groups)
    with pytest.raises(AwsError) as info:
        workflow.discover_and_render(ctx)
    assert str(info.value) == (
        f"{box.root / 'full.yaml'}: solo01 ({eni['NetworkInterfaceId']}) already carry 5 security groups, "
        "the AWS limit per interface; detach one before applying"
    )
    # a rerun, where one of the five is ket-infra's own group, goes on
    (own,) = ctx.rules.groups
    ours = ec2.create_security_group(GroupName=f"{ctx.rules.cluster}-{own.name}", Description="x", VpcId=eni["VpcId"])
    ec2.modify_network_interface_attribute(
        NetworkInterfaceId=eni["NetworkInterfaceId"], Groups=[*groups[:4], ours["GroupId"]]
    )
    ctx = box.context(env_file)
    workflow.discover_and_render(ctx)
    assert (ctx.work / "main.tf").exists()


def world_open(box: Box, name: str) -> Path:
    """A one-node cluster that is also an ingress node, its environment opening 80 and 443 to the world."""
    env_file = one_node(box, {"provider": "weave"}, name)
    plan_file = box.root / f"{name}.yaml"
    data = yaml.safe_load(plan_file.read_text())
    data["ingress"] = {"expected_count": 1, "nodes": [node("solo01", "10.0.1.11")]}
    write_yaml(plan_file, data)
    doc = yaml.safe_load(env_file.read_text())
    doc["ingress_cidrs"] = ["0.0.0.0/0"]
    env_file.write_text(yaml.safe_dump(doc))
    return env_file


def narrowed(env_file: Path) -> str:
    """ENV_FILE's text without its ingress_cidrs."""
    doc = yaml.safe_load(env_file.read_text())
    doc.pop("ingress_cidrs")
    return yaml.safe_dump(doc)


def world_rules(box: Box) -> list[str]:
    """The ingress rules ket-infra made in the sandbox that are open to 0.0.0.0/0, by name."""
    pages = _ec2(box).get_paginator("describe_security_group_rules").paginate()
    return sorted(
        next(t["Value"] for t in r["Tags"] if t["Key"] == "Name")
        for page in pages
        for r in page["SecurityGroupRules"]
        if not r["IsEgress"]
        and r.get("CidrIpv4") == "0.0.0.0/0"
        and any(t["Key"] == "ket-infra/cluster" for t in r.get("Tags", []))
    )


def test_an_environment_edited_while_plan_runs_makes_the_saved_plan_stale(box: Box) -> None:
    """The plan is made from the files as they were read: an edit after that is not what the plan applies."""
    env_file = world_open(box, "edited")
    ctx = box.context(env_file)

    def progress(line: str) -> None:
        box.lines.append(line)
        if line.startswith("checking AWS account"):  # both files read, nothing rendered or planned yet
            env_file.write_text(narrowed(env_file))

    ctx.progress = progress
    summary = workflow.plan(ctx)
    opened = [c.name for c in summary.changes if c.action == "create" and c.name.endswith("-from-0.0.0.0-0")]
    assert len(opened) == 2, summary.changes  # the plan of the file as read: 80 and 443 from the world
    with pytest.raises(KetInfraError, match="the saved plan for environment edited is stale"):
        workflow.apply(box.context(env_file), auto_approve=False)
    assert world_rules(box) == []
    fresh = workflow.plan(box.context(env_file))  # a fresh plan reads the file as it is now
    assert not [c.name for c in fresh.changes if c.name.endswith("-from-0.0.0.0-0")], fresh.changes


def test_a_plan_started_ahead_is_not_kept_when_the_folder_changed_under_it(box: Box) -> None:
    """Another run renders the folder while this plan looks the nodes up: the plan started ahead read the old
    files, so it is made again, though this run's own render finds nothing left to change."""
    env_file = world_open(box, "raced")
    workflow.apply(box.context(env_file), auto_approve=True)
    opened = world_rules(box)
    assert len(opened) == 2, opened
    env_file.write_text(narrowed(env_file))
    work = box.root / ".work" / "raced"
    ctx = box.context(env_file)

    def progress(line: str) -> None:
        box.lines.append(line)
        if line.startswith("checking AWS account"):
            deadline = time.monotonic() + 120
            while not (work / "tfplan").exists() and time.monotonic() < deadline:  # the plan ahead is made
                time.sleep(0.05)
            assert (work / "tfplan").exists(), "no plan was started ahead"
            workflow.discover_and_render(workflow.context(str(env_file), lambda _m: None, base=box.root / ".work"))

    ctx.progress = progress
    summary = workflow.plan(ctx)
    assert sorted(c.name for c in summary.changes if c.action == "delete") == opened, summary.changes
    assert "terraform plan (saved to tfplan)" in box.lines  # made again, not the one started ahead
    workflow.apply(box.context(env_file), auto_approve=False)
    assert world_rules(box) == []
