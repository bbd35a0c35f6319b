"""The sandbox refuses what AWS refuses (ket_infra.sandbox_aws): each behaviour asked of one real sandbox
with boto3, expecting EC2's error, and what ket-infra does on it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from ket_infra.sandbox import configure, refusals, sandbox_down, sandbox_up
from ket_infra.sandbox_aws import Behaviours
from tests.conftest import base_plan, free_port, write_yaml

pytest.importorskip("moto.server", reason="moto[server] is not installed")

pytestmark = pytest.mark.e2e  # a moto server process; not part of the mutation runs


@dataclass
class Box:
    port: int
    root: Path
    env_file: Path
    vpc: str
    eni: str  # worker01's interface

    def ec2(self, retries: int = 1, validate: bool = True) -> Any:
        """A boto3 client of the sandbox; RETRIES attempts (1: an error is seen as AWS answered it)."""
        import boto3

        config = Config(retries={"mode": "standard", "max_attempts": retries}, parameter_validation=validate)
        return boto3.client(
            "ec2",
            region_name="eu-west-1",
            endpoint_url=f"http://127.0.0.1:{self.port}",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=config,
        )

    def behave(self, **changes: Any) -> None:
        configure(self.port, Behaviours(**{**DEFAULTS.__dict__, **changes}))

    def group(self, name: str) -> str:
        return str(self.ec2().create_security_group(GroupName=name, Description=name, VpcId=self.vpc)["GroupId"])


# consistency off between the tests that are not about it: each creates and then describes at once
DEFAULTS = Behaviours(consistency_delay=0)


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    root = tmp_path_factory.mktemp("sandbox-aws")
    plan = write_yaml(root / "plan.yaml", base_plan())
    port = free_port()
    env_file = sandbox_up(plan, port, root / "environments" / "sandbox.yaml", root / "state", lambda _m: None)
    try:
        ec2 = Box(port, root, env_file, "", "").ec2()
        vpc = next(v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"] if not v["IsDefault"])
        eni = ec2.describe_network_interfaces(Filters=[{"Name": "private-ip-address", "Values": ["10.0.1.31"]}])
        made = Box(port, root, env_file, vpc, eni["NetworkInterfaces"][0]["NetworkInterfaceId"])
        made.behave()
        yield made
    finally:
        sandbox_down(port, root / "state")


def refused(call: Callable[..., Any], **kwargs: Any) -> str:
    """The error code AWS (the sandbox) answers CALL(**KWARGS) with."""
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    return str(info.value.response["Error"]["Code"])


def test_the_defaults_are_on(box: Box) -> None:
    """`sandbox up` with no flags enforces every behaviour: consistency delay and throttling included."""
    on = configure(box.port, Behaviours())
    assert (on.consistency_delay, on.throttle_bucket, on.rules_quota, on.groups_per_interface) == (0.5, 500, 60, 5)
    box.behave()


def test_at_most_five_groups_per_interface(box: Box) -> None:
    ec2 = box.ec2()
    groups = [box.group(f"five-{i}") for i in range(6)]
    assert refused(lambda: ec2.modify_network_interface_attribute(NetworkInterfaceId=box.eni, Groups=groups)) == (
        "SecurityGroupsPerInterfaceLimitExceeded"
    )
    ec2.modify_network_interface_attribute(NetworkInterfaceId=box.eni, Groups=groups[:5])
    ec2.modify_network_interface_attribute(NetworkInterfaceId=box.eni, Groups=groups[:1])


def test_the_values_of_a_filter_are_joined_with_or(box: Box) -> None:
    """An interface carrying one group asked for and one not is found, as EC2 finds it (the sandbox_server
    fix: moto alone wants the interface's groups to be a subset or superset of those asked for)."""
    ec2 = box.ec2()
    carried, other, asked = box.group("or-carried"), box.group("or-other"), box.group("or-asked")
    ec2.modify_network_interface_attribute(NetworkInterfaceId=box.eni, Groups=[carried, other])
    try:
        found = ec2.describe_network_interfaces(Filters=[{"Name": "group-id", "Values": [carried, asked]}])
        assert [e["NetworkInterfaceId"] for e in found["NetworkInterfaces"]] == [box.eni]
        none = ec2.describe_network_interfaces(Filters=[{"Name": "group-id", "Values": [asked, box.group("or-no")]}])
        assert none["NetworkInterfaces"] == []
    finally:
        ec2.modify_network_interface_attribute(NetworkInterfaceId=box.eni, Groups=[carried])


def _cidrs(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"IpProtocol": "tcp", "FromPort": 1000 + i, "ToPort": 1000 + i, "IpRanges": [{"CidrIp": "10.9.0.0/16"}]}
        for i in range(start, start + n)
    ]


def test_the_rules_quota_is_60_and_settable(box: Box) -> None:
    ec2 = box.ec2()
    full = box.group("quota-full")
    assert refused(lambda: ec2.authorize_security_group_ingress(GroupId=full, IpPermissions=_cidrs(61))) == (
        "RulesPerSecurityGroupLimitExceeded"
    )
    group = box.group("quota")
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=_cidrs(60))
    # a raised quota, emulated: a rule naming a group counts as one, as one naming a CIDR does
    box.behave(rules_quota=62)
    peer = box.group("quota-peer")
    ec2.authorize_security_group_ingress(
        GroupId=group,
        IpPermissions=[{"IpProtocol": "udp", "FromPort": 1, "ToPort": 1, "UserIdGroupPairs": [{"GroupId": peer}]}],
    )
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=_cidrs(1, 60))
    assert refused(lambda: ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=_cidrs(1, 61))) == (
        "RulesPerSecurityGroupLimitExceeded"
    )
    box.behave()


BAD_TEXT: list[tuple[str, dict[str, Any], str]] = [
    ("a description of 256 characters", {"Description": "d" * 256}, "InvalidParameterValue"),
    ("a description EC2 does not allow", {"Description": "Calico BGP \u2013 peering"}, "InvalidParameterValue"),
    ("a name of 256 characters", {"GroupName": "n" * 256}, "InvalidParameterValue"),
    ("a name starting with sg-", {"GroupName": "sg-prod-master"}, "InvalidParameterValue"),
    ("a tag key starting with aws:", {"Tags": [{"Key": "aws:owner", "Value": "x"}]}, "InvalidParameterValue"),
    ("a tag key of 129 characters", {"Tags": [{"Key": "k" * 129, "Value": "x"}]}, "InvalidParameterValue"),
    ("a tag value of 257 characters", {"Tags": [{"Key": "k", "Value": "v" * 257}]}, "InvalidParameterValue"),
    ("51 tags", {"Tags": [{"Key": f"k{i}", "Value": "v"} for i in range(51)]}, "TagLimitExceeded"),
]


@pytest.mark.parametrize(("what", "bad", "code"), BAD_TEXT, ids=[b[0] for b in BAD_TEXT])
def test_names_descriptions_and_tags_as_ec2_allows(box: Box, what: str, bad: dict[str, Any], code: str) -> None:
    ec2 = box.ec2()
    args: dict[str, Any] = {"GroupName": f"text-{len(what)}", "Description": "ok", "VpcId": box.vpc}
    args.update({k: v for k, v in bad.items() if k != "Tags"})
    if "Tags" in bad:
        args["TagSpecifications"] = [{"ResourceType": "security-group", "Tags": bad["Tags"]}]
    assert refused(lambda: ec2.create_security_group(**args)) == code


def test_a_rule_description_ec2_does_not_allow(box: Box) -> None:
    ec2 = box.ec2()
    group = box.group("rule-text")
    rule = {"IpProtocol": "tcp", "FromPort": 179, "ToPort": 179, "IpRanges": [{"CidrIp": "10.0.0.0/16"}]}
    for bad in ("BGP é", "x" * 256):
        rule["IpRanges"][0]["Description"] = bad
        assert refused(ec2.authorize_security_group_ingress, GroupId=group, IpPermissions=[rule]) == (
            "InvalidParameterValue"
        )
    rule["IpRanges"][0]["Description"] = "Calico BGP peering [calico]"
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[rule])
    assert refused(lambda: ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[rule])) == (
        "InvalidPermission.Duplicate"
    )


def test_200_filter_values_and_max_results_in_range(box: Box) -> None:
    ec2 = box.ec2(validate=False)  # botocore checks the minimum itself: ask the server
    values = [f"10.0.{i // 250}.{i % 250}" for i in range(201)]
    ec2.describe_instances(Filters=[{"Name": "private-ip-address", "Values": values[:200]}])
    assert refused(lambda: ec2.describe_instances(Filters=[{"Name": "private-ip-address", "Values": values}])) == (
        "FilterLimitExceeded"
    )
    split = [{"Name": "private-ip-address", "Values": values[:150]}, {"Name": "vpc-id", "Values": values[150:]}]
    assert refused(lambda: ec2.describe_instances(Filters=split)) == "FilterLimitExceeded"
    for bad in (4, 1001):
        assert refused(ec2.describe_security_groups, MaxResults=bad) == "InvalidParameterValue"
    assert refused(lambda: ec2.describe_managed_prefix_lists(MaxResults=101)) == "InvalidParameterValue"
    ec2.describe_security_groups(MaxResults=5)


def test_a_group_something_depends_on_is_not_deleted(box: Box) -> None:
    ec2 = box.ec2()
    carried, referred, referring = box.group("carried"), box.group("referred"), box.group("referring")
    ec2.modify_network_interface_attribute(NetworkInterfaceId=box.eni, Groups=[carried])
    assert refused(lambda: ec2.delete_security_group(GroupId=carried)) == "DependencyViolation"
    pair = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "UserIdGroupPairs": [{"GroupId": referred}]}
    ec2.authorize_security_group_ingress(GroupId=referring, IpPermissions=[pair])
    assert refused(lambda: ec2.delete_security_group(GroupId=referred)) == "DependencyViolation"
    ec2.revoke_security_group_ingress(GroupId=referring, IpPermissions=[pair])
    ec2.delete_security_group(GroupId=referred)
    ec2.modify_network_interface_attribute(NetworkInterfaceId=box.eni, Groups=[referring])
    ec2.delete_security_group(GroupId=carried)


def test_new_groups_and_rules_are_invisible_for_a_while(box: Box) -> None:
    box.behave(consistency_delay=1.0)
    ec2 = box.ec2()
    group = box.group("eventual")
    added = ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=_cidrs(1))["SecurityGroupRules"]
    rule = added[0]["SecurityGroupRuleId"]
    assert refused(lambda: ec2.describe_security_groups(GroupIds=[group])) == "InvalidGroup.NotFound"
    assert ec2.describe_security_groups(Filters=[{"Name": "group-id", "Values": [group]}])["SecurityGroups"] == []
    assert refused(lambda: ec2.describe_security_group_rules(SecurityGroupRuleIds=[rule])) == (
        "InvalidSecurityGroupRuleId.NotFound"
    )
    time.sleep(1.0)
    (seen,) = ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"]
    assert [p["FromPort"] for p in seen["IpPermissions"]] == [1000]
    assert ec2.describe_security_group_rules(SecurityGroupRuleIds=[rule])["SecurityGroupRules"][0]["FromPort"] == 1000
    box.behave()


def test_calls_past_the_rate_are_throttled(box: Box) -> None:
    box.behave(throttle_bucket=3, throttle_rate=0.2)
    ec2 = box.ec2()
    for _ in range(3):
        ec2.describe_vpcs()
    assert refused(ec2.describe_vpcs) == "RequestLimitExceeded"
    ec2.describe_subnets()  # a bucket per action
    box.behave()


# --- what ket-infra does on them ----------------------------------------------------------------------


def _apply_by_hand(box: Box, ctx: Any) -> None:
    """What Terraform's apply makes of ctx's rules (groups, rules, attachments), in a handful of calls."""
    from ket_infra.aws import discover

    ec2 = box.ec2()
    cluster = ctx.rules.cluster
    ids = {
        g.name: ec2.create_security_group(GroupName=f"{cluster}-{g.name}", Description="x", VpcId=box.vpc)["GroupId"]
        for g in ctx.rules.groups
    }
    for group, gid in ids.items():
        for direction in ("ingress", "egress"):
            perms = []
            for r in (r for r in ctx.rules.rules if r.group == group and r.direction == direction):
                perm: dict[str, Any] = {"IpProtocol": "-1" if r.protocol == "all" else r.protocol}
                if r.protocol in ("tcp", "udp", "icmp"):
                    perm.update(FromPort=r.from_port, ToPort=r.to_port)
                elif r.protocol != "all":
                    perm.update(FromPort=-1, ToPort=-1)
                if r.peer.group:
                    perm["UserIdGroupPairs"] = [{"GroupId": ids[r.peer.group]}]
                else:
                    perm["IpRanges"] = [{"CidrIp": r.peer.cidr}]
                perms.append(perm)
            if perms:
                authorize = getattr(ec2, f"authorize_security_group_{direction}")
                authorize(GroupId=gid, IpPermissions=perms)
    for n in discover(ctx.plan, ctx.env).nodes:
        ec2.modify_network_interface_attribute(
            NetworkInterfaceId=n.network_interface_id, Groups=[ids[ctx.plan.node(n.host).group]]
        )


def test_apply_judges_again_until_what_it_made_shows(box: Box) -> None:
    """Right after an apply EC2 may not show the new rules yet: `apply` judges again (with backoff) before it
    says "not ready", and says "ready" once they show."""
    from ket_infra import workflow

    box.behave(consistency_delay=2.5)  # longer than making them takes: the first judgement sees none
    lines: list[str] = []
    ctx = workflow.context(str(box.env_file), lines.append)
    _apply_by_hand(box, ctx)
    assert workflow.proven(ctx, settling=True).ok
    waits = [ln for ln in lines if ln.startswith("not every required flow shows open yet")]
    assert waits, lines  # it was judged blocked first, then again
    assert lines[-1] == "applied: environment sandbox is ready for kismatic install apply"
    box.behave()


def test_ket_infra_converges_when_throttled(box: Box) -> None:
    """boto3's standard retry mode backs off on RequestLimitExceeded: verify's reading converges."""
    from ket_infra import workflow
    from ket_infra.verify import verify

    ctx = workflow.context(str(box.env_file), lambda _m: None)
    box.behave(throttle_bucket=1, throttle_rate=1)
    before = refusals(box.port).get("RequestLimitExceeded", 0)
    for _ in range(3):
        verify(ctx.plan, ctx.env, ctx.rules)
    assert refusals(box.port).get("RequestLimitExceeded", 0) > before
    box.behave()
