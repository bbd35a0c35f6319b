"""audit against moto (mock_aws): ket-infra's own rules are no excess; each kind of excess someone
seeds is reported, exactly that and nothing else; and detach_groups moves a cluster off a foreign
group only once the flows are proven open without it."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import replace
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest
import yaml

from ket_infra.audit import (
    AuditReport,
    Excess,
    Open,
    SgRule,
    audit,
    junit_report,
    markdown_report,
    opening,
    read_members,
    read_other_interfaces,
    read_rules,
    read_subnets,
    text_report,
)
from ket_infra.aws import DETACHED_TAG, AwsError, Counter, Discovery, NodeInterface, discover
from ket_infra.detach import (
    Checked,
    CheckRecord,
    Record,
    _members,
    _referrers,
    apply_detach,
    not_proven,
    reattach,
    recorded,
)
from ket_infra.errors import EnvironmentFileError, KetInfraError
from ket_infra.layout import layout
from ket_infra.plan import load_plan
from tests.conftest import EXAMPLES, base_plan, node, write_yaml
from tests.test_judge import acl
from tests.test_verify import Cloud, allow_all, build, env_for, permission

ALL_NODES = [
    "etcd01", "etcd02", "etcd03", "master01", "master02", "worker01", "worker02", "worker03", "ingress01", "storage01",
]  # fmt: skip
WORKERS = ["worker01", "worker02", "worker03"]


def foreign_group(cloud: Cloud, name: str, permissions: list[dict[str, Any]], hosts: list[str] | None = None) -> str:
    """A group another tool made, with PERMISSIONS inbound, put on HOSTS' interfaces (all by default)."""
    gid = str(cloud.ec2.create_security_group(GroupName=name, Description=name, VpcId=cloud.vpc)["GroupId"])
    if permissions:
        cloud.ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=permissions)
    for host in hosts if hosts is not None else list(cloud.enis):
        eni = cloud.enis[host]
        now = cloud.ec2.describe_network_interfaces(NetworkInterfaceIds=[eni])["NetworkInterfaces"][0]["Groups"]
        cloud.ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=[g["GroupId"] for g in now] + [gid])
    return gid


def groups_sent(env: Any) -> tuple[Any, list[list[str]]]:
    """An EC2 client for ENV's region, and the groups of every ModifyNetworkInterfaceAttribute it sends."""
    import boto3

    ec2 = boto3.client("ec2", region_name=env.aws.region)
    sent: list[list[str]] = []
    ec2.meta.events.register(
        "provide-client-params.ec2.ModifyNetworkInterfaceAttribute", lambda params, **_: sent.append(params["Groups"])
    )
    return ec2, sent


def tcp_from_groups(port: int, *groups: str) -> dict[str, Any]:
    """An inbound permission: tcp PORT from the members of GROUPS."""
    return {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, "UserIdGroupPairs": [{"GroupId": g} for g in groups]}


def rule_ids(cloud: Cloud, gid: str) -> list[str]:
    rules = cloud.ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [gid]}])
    return sorted(r["SecurityGroupRuleId"] for r in rules["SecurityGroupRules"] if not r["IsEgress"])


def groups_on(cloud: Cloud, host: str) -> list[str]:
    eni = cloud.ec2.describe_network_interfaces(NetworkInterfaceIds=[cloud.enis[host]])["NetworkInterfaces"][0]
    return [g["GroupId"] for g in eni["Groups"]]


def tag_on(cloud: Cloud, host: str) -> str | None:
    eni = cloud.ec2.describe_network_interfaces(NetworkInterfaceIds=[cloud.enis[host]])["NetworkInterfaces"][0]
    return next((t["Value"] for t in eni.get("TagSet", []) if t["Key"] == DETACHED_TAG), None)


# ---------------------------------------------------------------- the traffic sets


def test_traffic_sets_subtract_and_describe() -> None:
    everything = Open(rest=True)
    needed = opening("tcp", 179, 179) | opening("4", None, None)
    assert (everything - needed).describe() == "all traffic but IP-in-IP (4) and tcp 179"
    assert (opening("tcp", 0, 65535) - opening("tcp", 22, 22)).describe() == "tcp 0-21, 23-65535"
    assert not (opening("tcp", 10250, 10250) - opening("tcp", 10250, 10255))
    assert (opening("tcp", 1, 100) & opening("tcp", 50, 200)).describe() == "tcp 50-100"
    assert (everything & opening("udp", 53, 53)) == opening("udp", 53, 53)
    assert (
        opening("icmp", 8, 0).describe() == "icmp type 8" and opening("icmp", -1, -1).describe() == "icmp (all types)"
    )
    assert opening("-1", None, None).describe() == "all traffic"
    assert not Open() and not (opening("50", None, None) - everything)
    assert (opening("udp", 0, 65535) - opening("udp", 53, 53) - opening("udp", 8472, 8472)).describe() == (
        "udp 0-52, 54-8471, 8473-65535"
    )
    assert (opening("icmp", -1, -1) - opening("icmp", 8, 0) - opening("icmp", 0, 0)).describe() == (
        "icmp type 1-7, 9-255"
    )
    assert (everything - opening("icmp", 3, 4)).describe() == "all traffic but icmp type 3"
    assert (opening("udp", 53, 53) | opening("tcp", 22, 22)).describe() == "tcp 22, udp 53"
    assert (opening("tcp", 1, 5) | opening("tcp", 6, 10)).describe() == "tcp 1-10"  # adjacent ranges are one
    assert Open(rest=True, by={"icmp": [(0, 255)], "tcp": [(0, 21)]}).describe() == "all traffic but tcp 22-65535"


def test_a_flow_needs_its_icmp_type_alone_and_its_ports_alone() -> None:
    """The preflight's ping needs ICMP echo (type 8), not every ICMP type; a TCP flow its ports."""
    from ket_infra.audit import flow_opening
    from ket_infra.flows import Flow

    ping = Flow("ping", "icmp", (8, 0), ("master",), "ping", "PORTS.md", "ket-preflight", src=("worker",))
    assert flow_opening(ping) == opening("icmp", 8, 0) != opening("icmp", -1, -1)
    api = Flow("api", "tcp", (6443, 6443), ("master",), "api", "PORTS.md", "kubelet", src=("worker",))
    assert flow_opening(api) == opening("tcp", 6443, 6443)


def acl_open(entries: list[Any], source: str, egress: bool = False) -> Open:
    from ket_infra.audit import _acl_open

    net = ipaddress.ip_network(source)
    return _acl_open(sorted(entries, key=lambda e: e.number), egress, int(net.network_address), int(net[-1]))


def test_a_network_acl_lets_through_what_its_first_deciding_entries_allow() -> None:
    """Entries decide in rule-number order; an entry decides for the whole source only when its CIDR holds
    all of it, and one that overlaps the source only at one end still lets its part through."""
    deny_all = acl(32767, False, "-1", False, "0.0.0.0/0")
    ssh = acl(100, False, "tcp", True, "10.9.0.0/16", ports=(22, 22))
    assert acl_open([ssh, deny_all], "10.9.4.0/24") == opening("tcp", 22, 22)
    assert acl_open([ssh, deny_all], "10.9.4.0/24", egress=True) == Open()  # inbound entries only
    assert acl_open([ssh, acl(100, True, "-1", True, "10.9.0.0/16"), deny_all], "10.9.4.0/24", True) == (
        Open(rest=True)
    )
    ping = acl(110, False, "icmp", True, "10.9.0.0/16", icmp=(8, -1))
    assert acl_open([ping, deny_all], "10.9.4.0/24") == opening("icmp", 8, 0)
    assert acl_open([acl(110, False, "icmp", True, "10.9.0.0/16"), deny_all], "10.9.4.0/24") == (
        opening("icmp", -1, -1)
    )
    # an entry for other addresses is passed over, whatever its place: the later ones still decide
    elsewhere = acl(90, False, "-1", False, "10.8.0.0/16")
    assert acl_open([elsewhere, ssh, deny_all], "10.9.4.0/24") == opening("tcp", 22, 22)
    assert acl_open([acl(90, False, "-1", True, "10.8.0.0/16"), deny_all], "10.9.4.0/24") == Open()
    below, above = acl(90, False, "-1", False, "10.9.3.255/32"), acl(91, False, "-1", False, "10.9.5.0/32")
    assert acl_open([below, above, acl(100, False, "-1", True, "0.0.0.0/0")], "10.9.4.0/24") == Open(rest=True)
    # ... and one that touches the source's first or last address only is not
    first, last = acl(100, False, "-1", True, "10.9.4.0/32"), acl(100, False, "-1", True, "10.9.4.255/32")
    assert acl_open([first, deny_all], "10.9.4.0/24") == Open(rest=True)
    assert acl_open([last, deny_all], "10.9.4.0/24") == Open(rest=True)
    # a deny for part of the source leaves the rest to later entries
    half = acl(100, False, "-1", False, "10.9.4.0/25")
    assert acl_open([half, acl(200, False, "-1", True, "0.0.0.0/0"), deny_all], "10.9.4.0/24") == Open(rest=True)
    # a deny for all of it decides: nothing later gets a say
    assert (
        acl_open([acl(100, False, "-1", False, "10.9.0.0/16"), acl(200, False, "-1", True, "0.0.0.0/0")], "10.9.4.0/24")
        == Open()
    )
    # a deny for one port decides for that port alone
    no_ssh = acl(100, False, "tcp", False, "0.0.0.0/0", ports=(22, 22))
    assert acl_open([no_ssh, acl(200, False, "tcp", True, "0.0.0.0/0", ports=(0, 65535))], "10.9.4.0/24") == (
        opening("tcp", 0, 21) | opening("tcp", 23, 65535)
    )


# ---------------------------------------------------------------- audit


@pytest.mark.parametrize("example", ["calico-overlay", "calico-routed", "weave-encrypted", "contiv", "v1-4-legacy"])
def test_ket_infras_own_rules_are_no_excess(aws: None, example: str) -> None:
    _cloud, plan, env, rules = build(EXAMPLES / f"{example}.yaml")
    counter = Counter()
    report = audit(plan, env, rules, counter)
    assert report.ok, [e.as_json() for e in report.excess]
    assert report.rules_checked > len(plan.nodes)
    # a fixed number of calls: the account, instances, the nodes' interfaces, groups, ACLs, rules, subnets,
    # the members of referenced groups
    assert counter.calls == {
        "GetCallerIdentity": 1,
        "DescribeInstances": 1,
        "DescribeSecurityGroups": 1,
        "DescribeNetworkAcls": 1,
        "DescribeSecurityGroupRules": 1,
        "DescribeNetworkInterfaces": 2,
        "DescribeSubnets": 1,
    }
    assert report.api_calls == 8
    assert 0 < report.seconds < 60  # how long reading and judging took (the JUnit report's time)
    assert report.as_json() == {
        "ok": True,
        "excess": [],
        "counts": {
            "world": 0,
            "vpc": 0,
            "cluster": 0,
            "excess": 0,
            "nodes": len(plan.nodes),
            "rules_checked": report.rules_checked,
            "api_calls": 8,
        },
    }


def test_another_accounts_cloud_is_refused(aws: None) -> None:
    """Instances at the plan's addresses in another account are not the cluster: audit refuses, as plan does."""
    _cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    elsewhere = replace(env, aws=replace(env.aws, account_id="210987654321"))
    with pytest.raises(AwsError) as info:
        audit(plan, elsewhere, rules)
    assert str(info.value) == (
        "t.yaml: aws.account_id: the credentials are for account 123456789012, not 210987654321; "
        "use credentials of the right account or fix account_id"
    )
    assert audit(plan, replace(env, aws=replace(env.aws, account_id="123456789012")), rules).ok


def test_no_inbound_rule_read_is_no_verdict(aws: None) -> None:
    """Nodes whose groups hold no inbound rule at all judge nothing: never "clean"."""
    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    default = cloud.default_group()
    for eni in cloud.enis.values():
        cloud.ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=[default])
    cloud.ec2.revoke_security_group_ingress(GroupId=default, SecurityGroupRuleIds=rule_ids(cloud, default))
    report = audit(plan, env, rules)
    assert report.rules_checked == 0 and report.nodes == 10 and not report.excess
    assert not report.ok and report.as_json()["ok"] is False
    text = text_report(report, "lab", plan.cluster).splitlines()
    assert text[0] == (
        "audit lab (cluster prod-east): not judged: no inbound rule was read on the 1 security group(s) of the "
        "10 nodes (7 AWS API calls); nothing is clean until something is read: are these the cluster's nodes? "
        "run ket-infra verify"
    )
    assert not [ln for ln in text if "clean" in ln.split(":")[1:2] or ln.startswith("OK")]
    assert text[-1].startswith("NOT JUDGED: ")
    root = ET.fromstring(junit_report(report, "lab", plan.cluster))
    assert root.get("failures") == "1"
    assert markdown_report(report, "lab", plan.cluster).splitlines()[2] == text[0]


def test_a_world_open_port_is_reported_alone(aws: None) -> None:
    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    ssh = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
    gid = foreign_group(cloud, "hand-made", [ssh], hosts=WORKERS)
    report = audit(plan, env, rules)
    assert [e.as_json() for e in report.excess] == [
        {
            "severity": "world",
            "protocol": "tcp",
            "from_port": 22,
            "to_port": 22,
            "source": "0.0.0.0/0",
            "targets": WORKERS,
            "via": {"group_id": gid, "group_name": "hand-made", "rule_id": rule_ids(cloud, gid)[0]},
            "reason": "open to the internet: tcp 22 from the internet; tcp 22 from etcd, master, "
            "worker, ingress, storage nodes is more than the plan needs",
        }
    ]
    assert report.counts()["world"] == 1 and report.counts()["vpc"] == report.counts()["cluster"] == 0


def test_the_senders_are_named_in_kets_role_order(aws: None, tmp_path: Path) -> None:
    """A node holding two roles is one group of senders, named by its roles and placed by its first."""
    data = base_plan({"provider": "calico", "options": {"calico": {"mode": "overlay"}}})
    data["worker"] = {"expected_count": 2, "nodes": [node("master01", "10.0.1.21"), node("worker02", "10.0.1.32")]}
    path = write_yaml(tmp_path / "plan.yaml", data)
    plan, env = load_plan(path), env_for(path)
    rules = layout(plan, env)
    cloud = Cloud(plan, rules)
    ssh = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
    foreign_group(cloud, "hand-made", [ssh], hosts=["worker02"])
    (excess,) = audit(plan, env, rules).excess
    assert excess.reason.endswith("; tcp 22 from etcd, master-worker nodes is more than the plan needs")


def test_ssh_open_to_the_installer_only_is_no_excess(aws: None) -> None:
    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    ssh = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "10.0.9.5/32"}]}
    foreign_group(cloud, "installer-ssh", [ssh])
    assert audit(plan, env, rules).ok


def test_a_vpc_wide_cidr_is_reported_alone(aws: None) -> None:
    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    kubelet = {"IpProtocol": "tcp", "FromPort": 10250, "ToPort": 10250, "IpRanges": [{"CidrIp": "10.0.0.0/16"}]}
    gid = foreign_group(cloud, "vpc-wide", [kubelet])
    report = audit(plan, env, rules)
    assert [(e.severity, e.source_label, e.rule.group_id) for e in report.excess] == [("vpc", "10.0.0.0/16", gid)]
    excess = report.excess[0]
    assert excess.targets == ALL_NODES
    # the masters need tcp 10250 from the nodes; nobody else needs it from anyone
    assert excess.reason.startswith("open to addresses outside the cluster: tcp 10250 from 10.0.0.0/16 beyond ")


def test_all_protocols_between_nodes_is_reported_alone(aws: None) -> None:
    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    gid = foreign_group(cloud, "nodes", [])
    cloud.ec2.authorize_security_group_ingress(
        GroupId=gid, IpPermissions=[{"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": gid}]}]
    )
    report = audit(plan, env, rules)
    assert [(e.severity, e.what, e.source_label) for e in report.excess] == [
        ("cluster", "all traffic", f"{gid} (nodes)")
    ]
    assert report.excess[0].targets == ALL_NODES


def test_a_wide_port_range_from_one_role_is_what_it_opens_beyond_the_catalog(aws: None) -> None:
    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    worker, master = cloud.groups["worker"], cloud.groups["master"]
    cloud.ec2.authorize_security_group_ingress(
        GroupId=worker,
        IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 0, "ToPort": 65535, "UserIdGroupPairs": [{"GroupId": master}]}
        ],
    )
    report = audit(plan, env, rules)
    assert len(report.excess) == 1
    e = report.excess[0]
    assert (e.severity, e.targets, e.group_name) == ("cluster", WORKERS, "prod-east-worker")
    # masters reach workers on BGP (179) and the kubelet (10250): the rest is excess
    assert "tcp 0-178, 180-10249, 10251-65535 from master nodes" in e.reason


def test_an_inbound_rule_no_sources_egress_can_use_opens_nothing_between_nodes(aws: None) -> None:
    """Between nodes, what a rule lets in is only what the source's egress lets out to that node: an egress rule
    to another group's members is no way out to this one."""
    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    everything = [{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]
    cloud.ec2.revoke_security_group_egress(GroupId=cloud.default_group(), IpPermissions=everything)
    worker, master, etcd = cloud.groups["worker"], cloud.groups["master"], cloud.groups["etcd"]

    def tcp(direction: str, group: str, ports: tuple[int, int], peer: str) -> None:
        call = getattr(cloud.ec2, f"authorize_security_group_{direction}")
        pair = {"IpProtocol": "tcp", "FromPort": ports[0], "ToPort": ports[1], "UserIdGroupPairs": [{"GroupId": peer}]}
        call(GroupId=group, IpPermissions=[pair])

    tcp("ingress", worker, (9000, 9999), master)
    tcp("egress", master, (9000, 9999), etcd)  # out to the etcd nodes only
    assert audit(plan, env, rules).excess == []
    tcp("egress", master, (9990, 9999), worker)  # of what the workers let in, the masters send only this
    report = audit(plan, env, rules)
    assert [(e.severity, e.targets) for e in report.excess] == [("cluster", WORKERS)]
    assert report.excess[0].reason.endswith(": tcp 9990-9999 from master nodes is more than the plan needs")


def test_a_network_acl_wider_than_needed_is_no_excess(aws: None) -> None:
    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    for subnet in cloud.subnets:
        cloud.own_acl(subnet, allow_all())
    assert audit(plan, env, rules).ok


def test_a_network_acl_that_denies_the_world_open_port_removes_the_excess(aws: None) -> None:
    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    ssh = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
    foreign_group(cloud, "hand-made", [ssh], hosts=WORKERS)
    deny = {
        "RuleNumber": 5,
        "Protocol": "6",
        "RuleAction": "deny",
        "Egress": False,
        "CidrBlock": "0.0.0.0/0",
        "PortRange": {"From": 22, "To": 22},
    }
    cloud.own_acl("10.0.2.0/24", [deny, *allow_all()])
    report = audit(plan, env, rules)
    # from outside, the ACL stops it; from the nodes and other hosts of the same subnet it still gets in
    assert [(e.severity, e.targets) for e in report.excess] == [("vpc", WORKERS)]
    assert "tcp 22 from 0.0.0.0/0 beyond the nodes and named CIDRs" in report.excess[0].reason
    assert "tcp 22 from worker, ingress, storage nodes" in report.excess[0].reason


def test_reports_lead_with_the_verdict(aws: None) -> None:
    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    assert text_report(audit(plan, env, rules), "lab", plan.cluster).startswith(
        "audit lab (cluster prod-east): clean: nothing is open beyond the required flows on 10 nodes ("
    )
    everything = {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
    gid = foreign_group(cloud, "kismatic-open", [everything])
    report = audit(plan, env, rules)
    rule = rule_ids(cloud, gid)[0]
    text = text_report(report, "lab", plan.cluster)
    assert text.splitlines()[0] == (
        "audit lab (cluster prod-east): 1 rule(s) open more than the plan needs; worst (world): all traffic from "
        f"0.0.0.0/0 to 10 node(s) via {gid} (kismatic-open) rule {rule}"
    )
    assert "WORLD (1): open to the internet" in text and text.rstrip().splitlines()[-1].startswith("EXCESS: ")
    markdown = markdown_report(report, "lab", plan.cluster)
    assert "| severity | open | source | targets | via | why |" in markdown
    assert "| world | all traffic | `0.0.0.0/0` | etcd01, etcd02, etcd03, master01, master02, worker01, " in markdown
    root = ET.fromstring(junit_report(report, "lab", plan.cluster))
    assert (root.get("tests"), root.get("failures")) == ("3", "1")
    failure = root.find(".//failure")
    assert failure is not None and failure.get("type") == "excess" and "targets: etcd01, " in (failure.text or "")
    assert json.loads(json.dumps(report.as_json()))["excess"][0]["via"]["rule_id"] == rule


def test_each_report_format_in_full() -> None:
    """Every line of each format, for a report with a world and a cluster excess (no vpc one): the JUnit
    cases (a passing one for the clean severity), the markdown table (a "|" in a name escaped), the text
    (at most five targets named)."""
    world = SgRule("sgr-1", "sg-1", False, "tcp", 22, 22, cidr="0.0.0.0/0")
    wide = SgRule("sgr-2", "sg-2", False, "all", None, None, group="sg-9")
    report = AuditReport(
        excess=[
            Excess(
                "world",
                world,
                "open|one",
                "0.0.0.0/0",
                ["w1", "w2", "w3", "w4", "w5", "w6"],
                "open to the internet: tcp 22 from the internet is more than the plan needs",
            ),
            Excess(
                "cluster",
                wide,
                "peers",
                "sg-9 (peers)",
                ["m1"],
                "open between nodes wider than the catalog requires: x",
            ),
        ],
        nodes=6,
        rules_checked=4,
        api_calls=8,
        groups=2,
    )
    assert junit_report(report, "lab", "c") == (
        '<?xml version="1.0" encoding="UTF-8"?>\n<testsuites name="ket-infra audit" tests="3" failures="2" errors="0" skipped="0">\n  <testsuite name="audit lab (cluster c)" tests="3" failures="2" errors="0" skipped="0" time="0.000">\n    <properties>\n      <property name="nodes" value="6" />\n      <property name="rules_checked" value="4" />\n      <property name="aws_api_calls" value="8" />\n    </properties>\n    <testcase classname="ket-infra.lab.audit" name="world: tcp 22 from 0.0.0.0/0 via sg-1 (open|one) rule sgr-1" time="0.000">\n      <failure type="excess" message="open to the internet: tcp 22 from the internet is more than the plan needs">open to the internet: tcp 22 from the internet is more than the plan needs\ntargets: w1, w2, w3, w4, w5, w6</failure>\n    </testcase>\n    <testcase classname="ket-infra.lab.audit" name="nothing open (vpc): open to addresses outside the cluster" time="0.000" />\n    <testcase classname="ket-infra.lab.audit" name="cluster: all traffic from sg-9 (peers) via sg-2 (peers) rule sgr-2" time="0.000">\n      <failure type="excess" message="open between nodes wider than the catalog requires: x">open between nodes wider than the catalog requires: x\ntargets: m1</failure>\n    </testcase>\n  </testsuite>\n</testsuites>\n'
    )
    assert markdown_report(report, "lab", "c") == (
        "# Network exposure audit: lab (cluster c)\n\naudit lab (cluster c): 2 rule(s) open more than the plan needs; worst (world): tcp 22 from 0.0.0.0/0 to 6 node(s) via sg-1 (open|one) rule sgr-1\n\n| severity | open | source | targets | via | why |\n|---|---|---|---|---|---|\n| world | tcp 22 | `0.0.0.0/0` | w1, w2, w3, w4, w5, w6 | `sg-1` (open\\|one), rule `sgr-1` | open to the internet: tcp 22 from the internet is more than the plan needs |\n| cluster | all traffic | `sg-9 (peers)` | m1 | `sg-2` (peers), rule `sgr-2` | open between nodes wider than the catalog requires: x |\n\n1 world, 0 vpc, 1 cluster; 4 inbound rules checked on 6 nodes.\n"
    )
    assert text_report(report, "lab", "c") == (
        "audit lab (cluster c): 2 rule(s) open more than the plan needs; worst (world): tcp 22 from 0.0.0.0/0 to 6 node(s) via sg-1 (open|one) rule sgr-1\n\nWORLD (1): open to the internet\n  tcp 22 from 0.0.0.0/0 to w1, w2, w3, w4, w5 and 1 more via sg-1 (open|one) rule sgr-1\n    open to the internet: tcp 22 from the internet is more than the plan needs\n\nCLUSTER (1): open between nodes wider than the catalog requires\n  all traffic from sg-9 (peers) to m1 via sg-2 (peers) rule sgr-2\n    open between nodes wider than the catalog requires: x\n\nEXCESS: remove those rules, or move the cluster off a foreign group with detach_groups in the environment file (ket-infra apply detaches it once the flows are proven open without it)\n"
    )


@pytest.mark.parametrize(
    ("nodes", "unread"),
    [(0, "no node was read"), (1, "no inbound rule was read on the 2 security group(s) of the 1 nodes")],
)
def test_a_report_over_nothing_read_says_not_judged_in_every_format(nodes: int, unread: str) -> None:
    report = AuditReport(nodes=nodes, rules_checked=0, api_calls=3, groups=2)
    said = (
        f"audit lab (cluster c): not judged: {unread} (3 AWS API calls); nothing is clean until something is "
        "read: are these the cluster's nodes? run ket-infra verify"
    )
    assert text_report(report, "lab", "c").splitlines() == [
        said,
        "",
        "NOT JUDGED: no verdict without inbound rules read on the cluster's nodes (exit 3)",
    ]
    suite = ET.fromstring(junit_report(report, "lab", "c")).find("testsuite")
    assert suite is not None and suite.get("failures") == "1" and suite.get("tests") == "4"
    unjudged = [c for c in suite.iter("testcase") if c.find("failure") is not None]
    assert [c.get("name") for c in unjudged] == ["something read to judge"]
    failure = unjudged[0].find("failure")
    assert failure is not None and failure.get("message") == said and failure.text == said


def test_reports_name_up_to_their_limit_of_targets_and_keep_a_table_row_on_one_line() -> None:
    """Text names five targets, markdown eight, then counts the rest; a reason's newline stays inside its cell."""

    def report(n: int) -> AuditReport:
        rule = SgRule("sgr-1", "sg-1", False, "tcp", 22, 22, cidr="0.0.0.0/0")
        why = "open to the internet\nsecond line"
        return AuditReport([Excess("world", rule, "g", "0.0.0.0/0", [f"n{i}" for i in range(1, n + 1)], why)], 9, 1)

    five = text_report(report(5), "lab", "c")
    assert "to n1, n2, n3, n4, n5 via" in five and " more via" not in five
    nine = markdown_report(report(9), "lab", "c")
    assert "| n1, n2, n3, n4, n5, n6, n7, n8 and 1 more |" in nine
    assert "| open to the internet second line |" in nine


def test_traffic_sets_equal_only_when_they_open_the_same() -> None:
    assert Open(by={"tcp": [(22, 22)]}) == Open(by={"tcp": [(22, 22)]})
    assert Open(by={"tcp": [(22, 22)]}) != Open(by={"tcp": [(23, 23)]})
    assert Open(rest=True) != Open(by={"tcp": [(22, 22)]})


# ---------------------------------------------------------------- detach_groups


LB = ("10.0.1.100/32",)  # the example's master.load_balancer, named so that ket-infra opens 6443 to it
WIDE_OPEN = [{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]


def named() -> tuple[Cloud, Any, Any, Any]:
    """The example cluster with its load balancer named in api_cidrs (and the installer in installer_cidr)."""
    plan = load_plan(EXAMPLES / "calico-overlay.yaml")
    env = replace(env_for(EXAMPLES / "calico-overlay.yaml"), api_cidrs=LB)
    rules = layout(plan, env)
    return Cloud(plan, rules), plan, env, rules


@pytest.fixture
def record(tmp_path: Path) -> Record:
    """ket-infra's record of what it detached, where a local backend keeps it: beside the state."""
    return Record(tmp_path / "terraform.tfstate.detached-groups.json")


def test_a_proven_group_is_detached_recorded_and_put_back(aws: None, record: Record) -> None:
    cloud, plan, env, rules = named()
    gid = foreign_group(cloud, "kismatic-open", WIDE_OPEN)
    assert not audit(plan, env, rules).ok
    said: list[str] = []
    found = discover(plan, env)
    apply_detach(plan, replace(env, detach_groups=("kismatic-open",)), rules, found, said.append, record=record)
    assert all(gid not in groups_on(cloud, h) for h in ALL_NODES)
    assert all(tag_on(cloud, h) == gid for h in ALL_NODES)
    assert record.read() == {cloud.enis[h]: (gid,) for h in ALL_NODES}
    assert said[0].startswith("detach_groups: every required flow is open without " + f"{gid} (kismatic-open) (")
    assert said[0].endswith(" checks); taking it off 10 interface(s)")
    assert said[-1] == "detach_groups: done on 10 interface(s); destroy puts the groups back"
    assert audit(plan, env, rules).ok
    # a second run changes nothing
    said.clear()
    apply_detach(plan, replace(env, detach_groups=(gid,)), rules, discover(plan, env), said.append, record=record)
    assert said == [f"detach_groups: {gid} (kismatic-open) already off every node's interface"]
    # what destroy lists before it asks: each node and the group it gets back (a node outside the plan by its
    # interface id)
    assert recorded(env, discover(plan, env), record=record) == {h: [gid] for h in ALL_NODES}
    smaller = replace(plan, nodes=tuple(n for n in plan.nodes if n.host != "worker03"))
    by_id = recorded(env, discover(smaller, env), record=record)
    assert by_id[cloud.enis["worker03"]] == [gid] and "worker03" not in by_id and len(by_id) == 10
    assert reattach(env, discover(plan, env), said.append, record=record) == 10
    assert all(gid in groups_on(cloud, h) and tag_on(cloud, h) is None for h in ALL_NODES)
    assert record.read() == {} and not record.path.exists()


def test_the_groups_the_nodes_carry_now_are_judged_not_those_found_before_the_apply(aws: None, record: Record) -> None:
    """The nodes are found before Terraform attaches ket-infra's groups: detach judges the flows by the groups
    the interfaces carry when it runs."""
    cloud, plan, env, rules = named()
    gid = foreign_group(cloud, "kismatic-open", WIDE_OPEN)
    eni, ours = cloud.enis["worker01"], groups_on(cloud, "worker01")
    cloud.ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=[gid])  # before the apply
    found = discover(plan, env)
    cloud.ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=ours)  # the apply attached ours
    apply_detach(plan, replace(env, detach_groups=(gid,)), rules, found, lambda _s: None, record=record)
    assert all(gid not in groups_on(cloud, h) for h in ALL_NODES)


@pytest.mark.parametrize("where", ["in the plan", "gone from the plan"])
def test_a_detached_group_deleted_since_is_dropped_by_the_next_apply(aws: None, record: Record, where: str) -> None:
    """The operator deleted a group ket-infra had detached, then the next apply runs (of the same plan, or of
    one without that node): the group is not sent back (AWS would refuse it) and leaves the record."""

    cloud, plan, env, rules = named()
    gid = foreign_group(cloud, "old", WIDE_OPEN, hosts=["worker01"])
    apply_detach(plan, replace(env, detach_groups=(gid,)), rules, discover(plan, env), print, record=record)
    cloud.ec2.delete_security_group(GroupId=gid)
    if where == "gone from the plan":
        plan = replace(plan, nodes=tuple(n for n in plan.nodes if n.host != "worker01"))
    ec2, sent = groups_sent(env)
    said: list[str] = []
    apply_detach(plan, env, rules, discover(plan, env), said.append, ec2=ec2, record=record)
    assert record.read() == {} and not [groups for groups in sent if gid in groups]
    assert said[-1] == "detach_groups: done on 1 interface(s); destroy puts the groups back"


def test_a_group_no_longer_listed_is_put_back_by_the_next_apply(aws: None, record: Record) -> None:
    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    gid = foreign_group(cloud, "old", [])
    apply_detach(plan, replace(env, detach_groups=("old",)), rules, discover(plan, env), lambda _s: None, record=record)
    assert all(gid not in groups_on(cloud, h) for h in ALL_NODES)
    apply_detach(plan, env, rules, discover(plan, env), lambda _s: None, record=record)
    assert all(gid in groups_on(cloud, h) and tag_on(cloud, h) is None for h in ALL_NODES)


def test_a_group_the_flows_still_need_is_not_detached(aws: None, record: Record) -> None:
    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    gid = foreign_group(cloud, "kismatic-open", WIDE_OPEN)
    cloud.revoke_ipip_from_workers()  # only the foreign group still lets IP-in-IP into the masters
    before = {h: groups_on(cloud, h) for h in ALL_NODES}
    with pytest.raises(KetInfraError) as exc:
        apply_detach(
            plan, replace(env, detach_groups=("kismatic-open",)), rules, discover(plan, env), print, record=record
        )
    message = str(exc.value)
    assert message.startswith(
        f"t.yaml: detach_groups: nothing was detached: without {gid} (kismatic-open) 4 required flow check(s) would "
        "be blocked (calico-ipip from worker to master: no ingress rule on "
    )
    assert "\n" not in message and message.endswith("open what is missing (extra_rules) or keep the group")
    assert message.count("; calico-ipip from worker") == 2 and " and 1 more); ket-infra's groups" in message  # 3 shown
    assert {h: groups_on(cloud, h) for h in ALL_NODES} == before


def test_why_a_detach_is_not_proven_shows_three_of_each_kind_and_counts_the_rest(aws: None) -> None:
    from ket_infra.verify import HostCheck, Report
    from ket_infra.verify import verify as judge

    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    cloud.revoke_ipip_from_workers()
    report = judge(plan, env, rules)
    blocked = [c for c in report.checks if c.status == "blocked"]
    allowed = [c for c in report.checks if c.status != "blocked"]
    assert len(blocked) == 4 and allowed
    said = [f"{c.rule} from {c.source.label} to {c.target.label}: {c.reason}" for c in blocked]
    for n in (1, 3, 4):
        shown = "; ".join(said[: min(n, 3)]) + (" and 1 more" if n == 4 else "")
        assert not_proven(replace(report, checks=allowed + blocked[:n])) == (
            f"{n} required flow check(s) would be blocked ({shown})"
        )
    node = next(n for n in discover(plan, env).nodes if n.host == "worker01")
    wrong = [HostCheck(replace(node, host=f"worker{i:02}", source_dest_check=True), False) for i in range(1, 5)]
    right = HostCheck(replace(node, source_dest_check=False), False)
    problem = "source/dest check is on, must be off (Calico routed mode); run ket-infra apply to set it"
    hosts = "; ".join(f"worker{i:02}: {problem}" for i in range(1, 4))
    assert not_proven(replace(report, checks=allowed, host_settings=[right, *wrong[:3]])) == (
        f"3 host setting(s) wrong ({hosts})"
    )
    assert not_proven(replace(report, checks=allowed + blocked[:1], host_settings=[right, *wrong])) == (
        f"1 required flow check(s) would be blocked ({said[0]}); 4 host setting(s) wrong ({hosts} and 1 more)"
    )
    assert (
        not_proven(Report(nodes=10))
        == not_proven(replace(report, nodes=0))
        == ("nothing could be judged (no node found, or no flow the plan requires)")
    )


def test_a_detach_is_refused_while_a_host_setting_is_wrong(aws: None, record: Record) -> None:
    cloud, plan, env, rules = build(EXAMPLES / "calico-routed.yaml")
    gid = foreign_group(cloud, "kismatic-open", WIDE_OPEN)
    cloud.ec2.modify_instance_attribute(InstanceId=cloud.instances["node02"], SourceDestCheck={"Value": True})
    with pytest.raises(KetInfraError) as exc:
        apply_detach(plan, replace(env, detach_groups=(gid,)), rules, discover(plan, env), print, record=record)
    assert all(gid in groups_on(cloud, n.host) for n in plan.nodes) and record.read() == {}
    assert str(exc.value) == (
        f"t.yaml: detach_groups: nothing was detached: without {gid} (kismatic-open) 1 host setting(s) wrong "
        "(node02: source/dest check is on, must be off (Calico routed mode); run ket-infra apply to set it); "
        "ket-infra's groups and rules are applied; open what is missing (extra_rules) or keep the group"
    )


def test_detach_groups_naming_nothing_or_ket_infras_own_group_is_refused(aws: None, record: Record) -> None:
    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    found = discover(plan, env)
    with pytest.raises(EnvironmentFileError) as info:
        apply_detach(plan, replace(env, detach_groups=("kismatic-open",)), rules, found, print, record=record)
    carried = sorted({g for h in ALL_NODES for g in groups_on(cloud, h)})
    names = {
        g["GroupId"]: g["GroupName"] for g in cloud.ec2.describe_security_groups(GroupIds=carried)["SecurityGroups"]
    }
    assert len(carried) > 1 and str(info.value) == (
        "t.yaml: detach_groups: kismatic-open is on none of the cluster's interfaces (they carry "
        f"{', '.join(f'{g} ({names[g]})' for g in carried)}); give the id (sg-...) or name of a group the nodes "
        "carry, or remove the entry; ket-infra's groups and rules are applied, nothing was detached"
    )
    with pytest.raises(EnvironmentFileError) as info:
        apply_detach(plan, replace(env, detach_groups=("kismatic-open", "sg-0123")), rules, found, print, record=record)
    assert str(info.value).startswith("t.yaml: detach_groups: kismatic-open, sg-0123 are on none of the cluster's ")
    with pytest.raises(EnvironmentFileError) as info:
        apply_detach(plan, replace(env, detach_groups=("prod-east-worker",)), rules, found, print, record=record)
    assert str(info.value) == (
        f"t.yaml: detach_groups[0]: prod-east-worker is ket-infra's own group for this cluster "
        f"({cloud.groups['worker']}); list only the foreign groups to take off the nodes"
    )
    assert all(cloud.groups[plan.node(h).group] in groups_on(cloud, h) for h in ALL_NODES)


def refusal(cloud: Any, plan: Any, env: Any, rules: Any, record: Record, group: str) -> str:
    """The one line apply_detach refuses with; nothing on any interface changed."""
    before = {h: groups_on(cloud, h) for h in ALL_NODES}
    with pytest.raises(KetInfraError) as exc:
        apply_detach(plan, replace(env, detach_groups=(group,)), rules, discover(plan, env), print, record=record)
    assert {h: groups_on(cloud, h) for h in ALL_NODES} == before and record.read() == {}
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_the_only_path_of_an_unnamed_installer_is_not_detached(aws: None, record: Record) -> None:
    """installer_cidr unset: the foreign group's tcp 22 from 10.0.0.0/8 may be how the installer gets in."""
    cloud, plan, env, rules = named()
    env = replace(env, installer_cidr=None)
    ssh = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}
    gid = foreign_group(cloud, "kismatic-ssh", [ssh])
    assert refusal(cloud, plan, env, rules, record, "kismatic-ssh") == (
        f"t.yaml: detach_groups: nothing was detached: {gid} (kismatic-ssh) is the only path for the installer "
        "(installer_cidr is not set) (ssh: tcp 22 from 10.0.0.0/8 to 10 node(s)); name it in the environment "
        "file (installer_cidr) so ket-infra opens it, or keep the group"
    )
    # once installer_cidr names it, ket-infra's groups open it and the group comes off
    opened = replace(env, installer_cidr="10.0.9.5/32", detach_groups=(gid,))
    apply_detach(plan, opened, rules, discover(plan, env), print, record=record)
    assert all(gid not in groups_on(cloud, h) for h in ALL_NODES)


def test_an_installer_inside_the_group_keeps_its_path_or_the_group_stays(aws: None, record: Record) -> None:
    """The VPC's default group lets its members in; an instance outside the cluster carrying it may be the installer."""
    cloud, plan, env, rules = named()
    env = replace(env, installer_cidr=None)
    gid = foreign_group(cloud, "shared", [])
    cloud.ec2.authorize_security_group_ingress(
        GroupId=gid, IpPermissions=[{"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": gid}]}]
    )
    subnet = next(iter(cloud.subnets.values()))
    cloud.ec2.create_network_interface(SubnetId=subnet, Groups=[gid], PrivateIpAddress="10.0.1.250")
    assert refusal(cloud, plan, env, rules, record, "shared") == (
        f"t.yaml: detach_groups: nothing was detached: {gid} (shared) is the only path for the installer "
        f"(installer_cidr is not set) (apiserver-installer: tcp 6443 from 10.0.1.250 (a member of {gid}) to 2 "
        f"node(s); ssh: tcp 22 from 10.0.1.250 (a member of {gid}) to 10 node(s)); name it in the environment file (installer_cidr) "
        "so ket-infra opens it, or keep the group"
    )


def test_an_installer_carrying_other_groups_too_is_found_whatever_else_is_detached(aws: None, record: Record) -> None:
    """Two groups to detach are asked about at once; the installer carries one of them and a group of its own."""
    cloud, plan, env, rules = named()
    env = replace(env, installer_cidr=None)
    gid, spare = foreign_group(cloud, "shared", []), foreign_group(cloud, "spare", [])
    for g in (gid, spare):  # each lets its own members in
        cloud.ec2.authorize_security_group_ingress(
            GroupId=g, IpPermissions=[{"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": g}]}]
        )
    own = foreign_group(cloud, "installer-own", [], hosts=[])
    subnet = next(iter(cloud.subnets.values()))
    cloud.ec2.create_network_interface(SubnetId=subnet, Groups=[gid, own], PrivateIpAddress="10.0.1.250")
    before = {h: groups_on(cloud, h) for h in ALL_NODES}
    with pytest.raises(KetInfraError) as exc:
        apply_detach(plan, replace(env, detach_groups=(gid, spare)), rules, discover(plan, env), print, record=record)
    assert f"{gid} (shared) is the only path for the installer" in str(exc.value)
    assert "10.0.1.250 (a member of" in str(exc.value)
    assert {h: groups_on(cloud, h) for h in ALL_NODES} == before and record.read() == {}


def test_the_only_path_of_the_load_balancer_is_not_detached(aws: None, record: Record, tmp_path: Path) -> None:
    """master.load_balancer is a DNS name and endpoint_cidrs names none of its addresses: ket-infra's groups
    cannot open the masters to it, so the wide-open group is its only path to 6443."""
    doc = yaml.safe_load((EXAMPLES / "calico-overlay.yaml").read_text())
    doc["master"]["load_balancer"] = "api.cluster.internal:6443"
    cloud, plan, env, rules = build(write_yaml(tmp_path / "dns-lb.yaml", doc))
    gid = foreign_group(cloud, "kismatic-open", WIDE_OPEN)
    assert refusal(cloud, plan, env, rules, record, "kismatic-open") == (
        f"t.yaml: detach_groups: nothing was detached: {gid} (kismatic-open) is the only path for "
        "master.load_balancer api.cluster.internal:6443 (apiserver-from-lb: tcp 6443 from 0.0.0.0/0 to 2 node(s)); "
        "name it in the environment file (endpoint_cidrs.load_balancer) so ket-infra opens it, or keep the group"
    )


def test_a_load_balancer_named_in_endpoint_cidrs_keeps_its_path_in_ket_infras_groups(
    aws: None, record: Record, tmp_path: Path
) -> None:
    """endpoint_cidrs names the DNS-named balancer's addresses: ket-infra's groups open 6443 to them, so the
    wide-open group is no longer its only path and comes off."""
    doc = yaml.safe_load((EXAMPLES / "calico-overlay.yaml").read_text())
    doc["master"]["load_balancer"] = "api.cluster.internal:6443"
    path = write_yaml(tmp_path / "dns-lb.yaml", doc)
    plan = load_plan(path)
    env = replace(env_for(path), endpoint_cidrs=(("load_balancer", ("10.0.1.100/32",)),))
    rules = layout(plan, env)
    cloud = Cloud(plan, rules)
    gid = foreign_group(cloud, "kismatic-open", WIDE_OPEN)
    apply_detach(plan, replace(env, detach_groups=(gid,)), rules, discover(plan, env), print, record=record)
    assert all(gid not in groups_on(cloud, h) for h in ALL_NODES)


def test_a_load_balancer_at_an_address_keeps_the_path_from_that_address_alone(
    aws: None, record: Record, tmp_path: Path
) -> None:
    """master.load_balancer is master01's public address, which no rule of ket-infra's can open the masters to:
    only a rule whose source holds that address is its path; a rule for another address is not, and comes off."""
    doc = yaml.safe_load((EXAMPLES / "calico-overlay.yaml").read_text())
    doc["master"]["load_balancer"] = "203.0.113.21:6443"
    cloud, plan, env, rules = build(write_yaml(tmp_path / "ip-lb.yaml", doc))
    api = {"IpProtocol": "tcp", "FromPort": 6443, "ToPort": 6443}
    near = foreign_group(cloud, "lb-net", [{**api, "IpRanges": [{"CidrIp": "203.0.113.0/24"}]}], hosts=["master01"])
    assert refusal(cloud, plan, env, rules, record, "lb-net") == (
        f"t.yaml: detach_groups: nothing was detached: {near} (lb-net) is the only path for "
        "master.load_balancer 203.0.113.21:6443 (apiserver-clients: tcp 6443 from 203.0.113.0/24 to 1 node(s)); "
        "name it in the environment file (endpoint_cidrs.load_balancer) so ket-infra opens it, or keep the group"
    )
    other = foreign_group(cloud, "other-host", [{**api, "IpRanges": [{"CidrIp": "198.51.100.9/32"}]}])
    # nor is a rule letting in the members of a group, none of them at the balancer's address
    peers = foreign_group(cloud, "peers", [], hosts=[])
    subnet = next(iter(cloud.subnets.values()))
    cloud.ec2.create_network_interface(SubnetId=subnet, Groups=[peers], PrivateIpAddress="10.0.1.250")
    by_group = foreign_group(cloud, "from-peers", [{**api, "UserIdGroupPairs": [{"GroupId": peers}]}])
    detach = (other, by_group)
    said: list[str] = []
    apply_detach(plan, replace(env, detach_groups=detach), rules, discover(plan, env), said.append, record=record)
    assert all(g not in groups_on(cloud, h) for h in ALL_NODES for g in detach)
    both = ", ".join(f"{g} ({n})" for g, n in sorted([(other, "other-host"), (by_group, "from-peers")]))
    assert said[0].startswith(f"detach_groups: every required flow is open without {both} (")


def test_a_path_among_rules_that_open_nothing_of_it_is_still_found(aws: None, record: Record) -> None:
    """installer_cidr unset: the group's rules for other ports and protocols come before the one that opens SSH."""
    cloud, plan, env, rules = named()
    env = replace(env, installer_cidr=None)
    wide = {"IpRanges": [{"CidrIp": "10.0.0.0/8"}]}
    foreign_group(
        cloud,
        "kismatic-misc",
        [
            {"IpProtocol": "udp", "FromPort": 22, "ToPort": 22, **wide},
            {"IpProtocol": "tcp", "FromPort": 21, "ToPort": 21, **wide},
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, **wide},
            {"IpProtocol": "tcp", "FromPort": 23, "ToPort": 23, **wide},
        ],
    )
    assert "(ssh: tcp 22 from 10.0.0.0/8 to 10 node(s))" in refusal(cloud, plan, env, rules, record, "kismatic-misc")


def test_a_rule_that_opens_none_of_an_unnamed_dependency_is_no_path_of_it(aws: None, record: Record) -> None:
    """installer_cidr unset: a foreign group opening other ports, another protocol on the SSH port, or the SSH
    port to a group whose only member carries another group, is no path of the installer's: it comes off."""
    cloud, plan, env, rules = named()
    env = replace(env, installer_cidr=None)
    other = foreign_group(cloud, "other", [], hosts=[])
    empty = foreign_group(cloud, "empty", [], hosts=[])
    subnet = next(iter(cloud.subnets.values()))
    cloud.ec2.create_network_interface(SubnetId=subnet, Groups=[other], PrivateIpAddress="10.0.1.250")
    gid = foreign_group(
        cloud,
        "kismatic-misc",
        [
            {"IpProtocol": "udp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]},
            {"IpProtocol": "tcp", "FromPort": 2222, "ToPort": 2222, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]},
            {"IpProtocol": "tcp", "FromPort": 2222, "ToPort": 2222, "UserIdGroupPairs": [{"GroupId": other}]},
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "UserIdGroupPairs": [{"GroupId": empty}]},
        ],
    )
    apply_detach(plan, replace(env, detach_groups=(gid,)), rules, discover(plan, env), print, record=record)
    assert all(gid not in groups_on(cloud, h) for h in ALL_NODES)


def dead_ec2() -> Any:
    """An EC2 client for an endpoint nothing listens on, failing at once."""
    import boto3
    from botocore.config import Config

    from tests.conftest import free_port

    return boto3.client(
        "ec2",
        region_name="eu-west-1",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1),
    )


def test_an_unreachable_endpoint_while_reading_a_groups_members_says_what_was_being_read(aws: None) -> None:
    _cloud, plan, env, _rules = named()
    dead = dead_ec2()
    with pytest.raises(AwsError) as info:
        _members(env, discover(plan, env), {"sg-0123456789abcdef0"}, dead)
    assert str(info.value).startswith("reading which interfaces carry the groups to detach: cannot reach ")
    with pytest.raises(AwsError) as info:
        _referrers(env, {"sg-0123456789abcdef0"}, {}, dead)
    assert str(info.value).startswith("reading which groups refer to the groups to detach: cannot reach ")


def test_the_s3_record_is_encrypted_and_an_unreadable_bucket_is_one_line(aws: None, tmp_path: Path) -> None:
    """The record is stored with server-side encryption, as Terraform's s3 backend stores the state; a bucket
    that is not there is one line saying which record was being read or written. A local backend keeps the
    record beside its state file."""
    import boto3

    from ket_infra.environment import Backend, TerraformConfig

    _cloud, _plan, env, _rules = named()
    local = Record.of(env, tmp_path)
    assert local.path == tmp_path / "terraform.tfstate.detached-groups.json"
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="states")
    backend = Backend(type="s3", bucket="states", key="ket/t.tfstate", region="us-east-1")
    record = Record.of(replace(env, terraform=TerraformConfig(backend=backend)), tmp_path)
    record.write({"eni-1": ("sg-1",)})
    head = s3.head_object(Bucket="states", Key="ket/t.tfstate.detached-groups.json")
    assert head["ServerSideEncryption"] == "AES256"
    assert record.read() == {"eni-1": ("sg-1",)}
    gone = Record.of(replace(env, terraform=TerraformConfig(backend=replace(backend, bucket="nowhere"))), tmp_path)
    for act, verb in ((gone.read, "reading"), (lambda: gone.write({"eni-1": ("sg-1",)}), "writing")):
        with pytest.raises(KetInfraError) as info:
            act()
        assert f"{verb} ket-infra's" in str(info.value) and gone.where in str(info.value), str(info.value)


def test_the_s3_record_goes_to_the_backends_own_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An s3 backend with an endpoint_url (a MinIO, the sandbox) keeps the record there, not in AWS's S3."""
    import boto3
    from moto.server import ThreadedMotoServer

    from ket_infra.environment import Backend, TerraformConfig
    from tests.conftest import free_port

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        url = f"http://127.0.0.1:{port}"
        s3 = boto3.client(
            "s3", region_name="us-east-1", endpoint_url=url, aws_access_key_id="x", aws_secret_access_key="y"
        )
        s3.create_bucket(Bucket="states")
        backend = Backend(type="s3", bucket="states", key="t.tfstate", region="us-east-1", endpoint_url=url)
        env = replace(env_for(EXAMPLES / "calico-overlay.yaml"), terraform=TerraformConfig(backend=backend))
        Record.of(env, tmp_path).write({"eni-1": ("sg-1",)})
        assert [o["Key"] for o in s3.list_objects_v2(Bucket="states")["Contents"]] == ["t.tfstate.detached-groups.json"]
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("allowed", "said"),
    [
        ({"IpProtocol": "tcp", "FromPort": 3128, "ToPort": 3128}, "tcp 3128"),
        ({"IpProtocol": "tcp", "FromPort": 8000, "ToPort": 8080}, "tcp 8000-8080"),
        ({"IpProtocol": "-1"}, "all traffic"),
        ({"IpProtocol": "icmp", "FromPort": -1, "ToPort": -1}, "icmp"),
    ],
)
def test_a_group_another_groups_rule_refers_to_is_not_detached(
    aws: None, record: Record, allowed: dict[str, Any], said: str
) -> None:
    """A proxy's group lets the nodes in by the foreign group: taking it off cuts them from the proxy."""
    cloud, plan, env, rules = named()
    gid = foreign_group(cloud, "kismatic-open", WIDE_OPEN)
    proxy = cloud.ec2.create_security_group(GroupName="proxy", Description="proxy", VpcId=cloud.vpc)["GroupId"]
    cloud.ec2.authorize_security_group_ingress(
        GroupId=proxy, IpPermissions=[{**allowed, "UserIdGroupPairs": [{"GroupId": gid}]}]
    )
    (rule,) = rule_ids(cloud, proxy)
    assert refusal(cloud, plan, env, rules, record, "kismatic-open") == (
        f"t.yaml: detach_groups: nothing was detached: {proxy} (proxy) lets {gid} (kismatic-open) in by its rule "
        f"{rule} (ingress {said} from {gid}): taking {gid} off the nodes cuts them from what {proxy} guards; "
        f"let ket-infra's groups in by that rule instead, or keep the group"
    )


def test_an_egress_rule_that_reaches_the_group_keeps_it_too(aws: None, record: Record) -> None:
    """A registry's group lets its traffic out to the foreign group (rules that name other peers come first or
    after): taking the group off cuts the nodes from what that egress rule reaches."""
    cloud, plan, env, rules = named()
    gid = foreign_group(cloud, "kismatic-open", WIDE_OPEN)
    registry = cloud.ec2.create_security_group(GroupName="registry", Description="r", VpcId=cloud.vpc)["GroupId"]
    others = [
        {"IpProtocol": "tcp", "FromPort": p, "ToPort": p, "IpRanges": [{"CidrIp": f"10.0.{p % 200}.0/24"}]}
        for p in range(5000, 5006)
    ]
    cloud.ec2.authorize_security_group_egress(GroupId=registry, IpPermissions=others)
    back = {"IpProtocol": "tcp", "FromPort": 5000, "ToPort": 5001, "UserIdGroupPairs": [{"GroupId": gid}]}
    cloud.ec2.authorize_security_group_egress(GroupId=registry, IpPermissions=[back])
    rule = next(
        r["SecurityGroupRuleId"]
        for r in cloud.ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [registry]}])[
            "SecurityGroupRules"
        ]
        if r.get("ReferencedGroupInfo", {}).get("GroupId") == gid
    )
    assert refusal(cloud, plan, env, rules, record, "kismatic-open") == (
        f"t.yaml: detach_groups: nothing was detached: {registry} (registry) reaches {gid} (kismatic-open) by its "
        f"rule {rule} (egress tcp 5000-5001 to {gid}): taking {gid} off the nodes cuts them from what {registry} "
        "guards; let ket-infra's groups in by that rule instead, or keep the group"
    )


def test_an_unreachable_endpoint_while_reading_the_referring_groups_says_so(aws: None) -> None:
    from ket_infra.detach import _referrers

    _cloud, _plan, env, _rules = named()
    dead = dead_ec2()
    with pytest.raises(AwsError) as info:
        _referrers(env, {"sg-0123456789abcdef0"}, {}, dead)
    assert "reading which groups refer to the groups to detach" in str(info.value)


ENDPOINTS = {
    "load_balancer": "10.0.1.100:6443",  # the example's own: an internal balancer on no master
    "nfs_host": "172.31.8.5",  # a filer outside the VPC
    "http_proxy": "http://10.0.9.200:3128",  # a proxy outside the VPC
}


@pytest.mark.parametrize(
    ("flow", "kind", "key"),
    [
        ("apiserver-lb", "load_balancer", "master.load_balancer"),
        ("nfs", "nfs", "nfs.nfs_volume[].nfs_host"),
        ("http-proxy", "http_proxy", "cluster.networking.http_proxy"),
    ],
)
def test_a_group_that_is_the_only_egress_to_an_endpoint_is_not_detached(
    aws: None, record: Record, tmp_path: Path, flow: str, kind: str, key: str
) -> None:
    """ket-infra's egress rule to an endpoint the plan names is removed by hand: the foreign group's allow-all
    egress is then the nodes' only way to it, and detach refuses naming the flow and the plan key."""
    doc = yaml.safe_load((EXAMPLES / "calico-overlay.yaml").read_text())
    assert doc["master"]["load_balancer"] == ENDPOINTS["load_balancer"]
    doc["nfs"] = {"nfs_volume": [{"nfs_host": ENDPOINTS["nfs_host"], "mount_path": "/exports"}]}
    doc["cluster"]["networking"]["http_proxy"] = ENDPOINTS["http_proxy"]
    cloud, plan, env, rules = build(write_yaml(tmp_path / "endpoints.yaml", doc))
    cloud.lock_down_default_group()  # else the VPC's default group would still let the nodes out
    gid = foreign_group(cloud, "kismatic-open", WIDE_OPEN)
    egress = cloud.ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"][0]["IpPermissionsEgress"]
    assert [(p["IpProtocol"], p["IpRanges"]) for p in egress] == [("-1", [{"CidrIp": "0.0.0.0/0"}])]
    (cut,) = [r for r in rules.rules if flow in r.flows and r.group == "worker" and r.direction == "egress"]
    cloud.revoke("worker", "egress", lambda r: r.get("CidrIpv4") == cut.peer.cidr and r["FromPort"] == cut.from_port)
    message = refusal(cloud, plan, env, rules, record, "kismatic-open")
    assert message.startswith(
        f"t.yaml: detach_groups: nothing was detached: without {gid} (kismatic-open) 2 required flow check(s) "
        f"would be blocked ({flow} from worker to {kind}: no egress rule on "
    ), message  # two classes of workers: worker01 is also the preflight inspector's source
    assert f"allows tcp {cut.from_port} to {cut.peer.cidr} (needed for plan key {key}); {flow} from worker" in message
    # with ket-infra's rule back, the group comes off
    cloud.ec2.authorize_security_group_egress(
        GroupId=cloud.groups["worker"], IpPermissions=[permission(cut, cloud.groups)]
    )
    apply_detach(plan, replace(env, detach_groups=(gid,)), rules, discover(plan, env), print, record=record)
    assert all(gid not in groups_on(cloud, h) for h in ALL_NODES)


def test_a_forged_record_on_an_interface_is_ignored(aws: None, record: Record) -> None:
    """Anyone who can tag an interface could name a group for ket-infra to attach: only its own record counts."""
    cloud, plan, env, rules = named()
    evil = cloud.ec2.create_security_group(GroupName="evil", Description="evil", VpcId=cloud.vpc)["GroupId"]
    cloud.ec2.create_tags(Resources=[cloud.enis["worker01"]], Tags=[{"Key": DETACHED_TAG, "Value": evil}])
    said: list[str] = []
    apply_detach(plan, env, rules, discover(plan, env), said.append, record=record)
    assert evil not in groups_on(cloud, "worker01")
    ignored = (
        f"  worker01 ({cloud.enis['worker01']}): ignored the {DETACHED_TAG} tag naming {evil}: ket-infra's record "
        f"({record.where}) does not hold it, so it is not attached"
    )
    assert said == [ignored]
    said.clear()
    assert reattach(env, discover(plan, env), said.append, record=record) == 0
    assert said == [ignored] and evil not in groups_on(cloud, "worker01")
    assert recorded(env, discover(plan, env), record=record) == {}  # destroy's listing: nothing, and no line
    # two groups named: both are ignored, in one line
    worse = cloud.ec2.create_security_group(GroupName="worse", Description="worse", VpcId=cloud.vpc)["GroupId"]
    cloud.ec2.create_tags(Resources=[cloud.enis["worker01"]], Tags=[{"Key": DETACHED_TAG, "Value": f"{evil} {worse}"}])
    said.clear()
    assert reattach(env, discover(plan, env), said.append, record=record) == 0
    assert said == [
        f"  worker01 ({cloud.enis['worker01']}): ignored the {DETACHED_TAG} tag naming {', '.join(sorted([evil, worse]))}: "
        f"ket-infra's record ({record.where}) does not hold them, so they are not attached"
    ]


def test_the_record_is_read_and_carried_out_through_the_client_given(aws: None, record: Record) -> None:
    """destroy hands reattach and its listing the EC2 client whose calls it counts: every call goes through it
    (an environment pointing elsewhere, here another region with nothing in it, is not asked)."""
    import boto3

    cloud, plan, env, rules = named()
    gid = foreign_group(cloud, "kismatic-open", WIDE_OPEN)
    found = discover(plan, env)
    apply_detach(plan, replace(env, detach_groups=(gid,)), rules, found, print, record=record)
    elsewhere = replace(env, aws=replace(env.aws, region="ap-southeast-2"))
    ec2 = boto3.client("ec2", region_name=env.aws.region)
    assert recorded(elsewhere, found, ec2=ec2, record=record) == {h: [gid] for h in ALL_NODES}
    assert reattach(elsewhere, found, lambda _s: None, ec2=ec2, record=record) == 10
    assert all(gid in groups_on(cloud, h) for h in ALL_NODES) and record.read() == {}


@pytest.mark.parametrize(
    ("protocol", "ports", "opens"),
    [
        ("tcp", (2000, 3000), True),  # shares its first port with the rule's last
        ("tcp", (500, 1000), True),  # shares its last port with the rule's first
        ("tcp", (1500, 2500), True),  # starts inside, ends beyond
        ("tcp", (2001, 3000), False),
        ("tcp", (500, 999), False),
        ("udp", (53, 53), False),  # the rule is TCP's
        ("icmp", (8, 0), False),
    ],
)
def test_a_rule_opens_a_flow_when_it_lets_any_of_its_ports_through(
    protocol: str, ports: tuple[int, int], opens: bool
) -> None:
    from ket_infra import detach, verify

    tcp = verify.Permission("sg-1", "tcp", 1000, 2000, frozenset(), (verify.Net("10.0.0.0/8"),))
    assert detach._opens(tcp, verify.Traffic(protocol, ports)) is opens


@pytest.mark.parametrize(
    ("permission", "traffic", "opens"),
    [
        (("udp", 53, 53), ("udp", (53, 53)), True),
        (("udp", 53, 53), ("udp", (54, 60)), False),
        (("icmp", -1, -1), ("icmp", (8, 0)), True),  # any ICMP: no ports to compare
        (("icmp", 8, -1), ("icmp", (3, 4)), False),
        (("4", None, None), ("4", None), True),  # IP-in-IP
        (("-1", None, None), ("udp", (8472, 8472)), True),
    ],
)
def test_a_rule_of_another_protocol_opens_what_it_names(
    permission: tuple[str, int | None, int | None], traffic: tuple[str, tuple[int, int] | None], opens: bool
) -> None:
    from ket_infra import detach, verify

    p = verify.Permission("sg-1", *permission, frozenset(), (verify.Net("10.0.0.0/8"),))
    assert detach._opens(p, verify.Traffic(*traffic)) is opens


def test_the_record_lives_in_the_s3_backend_and_a_fresh_folder_puts_the_groups_back(aws: None) -> None:
    import boto3

    from ket_infra.environment import Backend, TerraformConfig

    cloud, plan, env, rules = named()
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="states")
    backend = Backend(type="s3", bucket="states", key="ket/t.tfstate", region="us-east-1")
    env = replace(env, terraform=TerraformConfig(backend=backend))
    gid = foreign_group(cloud, "kismatic-open", WIDE_OPEN)
    first = Record.of(env, Path("/nonexistent/one"))
    assert first.where == "s3://states/ket/t.tfstate.detached-groups.json"
    s3, bucket, _env = first._s3()
    assert (s3.meta.region_name, bucket) == ("us-east-1", "states")  # the backend's region, not the nodes'
    assert env.aws.region != "us-east-1"
    apply_detach(plan, replace(env, detach_groups=(gid,)), rules, discover(plan, env), print, record=first)
    assert all(gid not in groups_on(cloud, h) for h in ALL_NODES)
    again = Record.of(env, Path("/nonexistent/two"))  # another job, another (empty) work folder
    assert reattach(env, discover(plan, env), print, record=again) == 10
    assert all(gid in groups_on(cloud, h) for h in ALL_NODES) and again.read() == {}


@pytest.mark.parametrize("deleted", [1, 2])
def test_a_deleted_group_is_skipped_and_never_sent(aws: None, record: Record, deleted: int) -> None:
    """The operator deleted a group ket-infra had detached: AWS would refuse it (InvalidGroup.NotFound)."""

    cloud, plan, env, rules = named()
    gone = tuple(foreign_group(cloud, f"old{i}", WIDE_OPEN, hosts=["worker01"]) for i in range(deleted))
    apply_detach(plan, replace(env, detach_groups=gone), rules, discover(plan, env), print, record=record)
    for g in gone:
        cloud.ec2.delete_security_group(GroupId=g)
    assert not cloud.ec2.describe_security_groups(Filters=[{"Name": "group-id", "Values": list(gone)}])[
        "SecurityGroups"
    ]
    ec2, sent = groups_sent(env)
    said: list[str] = []
    assert reattach(env, discover(plan, env), said.append, ec2=ec2, record=record) == 0
    assert sent == [] and record.read() == {} and tag_on(cloud, "worker01") is None
    assert said == [
        f"  worker01 ({cloud.enis['worker01']}): {', '.join(sorted(gone))} no longer exist{'s' * (deleted == 1)} "
        "(deleted since ket-infra took it off): not re-attached, dropped from the record"
    ]


def test_a_node_gone_from_the_plan_is_put_back_too(aws: None, record: Record) -> None:
    """A node removed from the plan after the detach still carries the record: destroy restores it."""
    cloud, plan, env, rules = named()
    gid = foreign_group(cloud, "kismatic-open", WIDE_OPEN)
    apply_detach(plan, replace(env, detach_groups=(gid,)), rules, discover(plan, env), print, record=record)
    smaller = replace(plan, nodes=tuple(n for n in plan.nodes if n.host != "storage01"))
    said: list[str] = []
    assert reattach(env, discover(smaller, env), said.append, record=record) == 10
    assert gid in groups_on(cloud, "storage01") and tag_on(cloud, "storage01") is None
    assert f"  {cloud.enis['storage01']} (not in the plan): re-attached {gid}" in said
    assert record.read() == {}


def test_a_rerun_after_a_kill_mid_reattach_says_only_what_it_did(aws: None, record: Record) -> None:
    cloud, plan, env, rules = named()
    gid = foreign_group(cloud, "kismatic-open", WIDE_OPEN)
    apply_detach(plan, replace(env, detach_groups=(gid,)), rules, discover(plan, env), print, record=record)
    # killed after putting the group back on worker01, before its record was cleared
    eni = cloud.enis["worker01"]
    cloud.ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=[*groups_on(cloud, "worker01"), gid])
    said: list[str] = []
    assert reattach(env, discover(plan, env), said.append, record=record) == 9
    assert len(said) == 9 and all(line.endswith(f"re-attached {gid}") for line in said)
    assert not [line for line in said if line.startswith("  worker01")]
    assert all(gid in groups_on(cloud, h) and tag_on(cloud, h) is None for h in ALL_NODES) and record.read() == {}


def test_without_a_record_given_the_one_beside_the_state_is_used(
    aws: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """apply, destroy's listing and destroy itself find the record where a local backend keeps it: in the
    environment's work folder, beside terraform.tfstate (as the CLI calls them, with no record or client)."""
    monkeypatch.chdir(tmp_path)  # the environment file t.yaml is here: its work folder is .work/t
    cloud, plan, env, rules = named()
    gid = foreign_group(cloud, "kismatic-open", WIDE_OPEN)
    apply_detach(plan, replace(env, detach_groups=(gid,)), rules, discover(plan, env), lambda _s: None)
    beside = Record(tmp_path / ".work" / "t" / "terraform.tfstate.detached-groups.json")
    assert beside.read() == {cloud.enis[h]: (gid,) for h in ALL_NODES}
    assert recorded(env, discover(plan, env)) == {h: [gid] for h in ALL_NODES}
    assert reattach(env, discover(plan, env), lambda _s: None) == 10
    assert all(gid in groups_on(cloud, h) for h in ALL_NODES) and not beside.path.exists()


def test_the_record_names_every_interface_before_the_first_one_changes(aws: None, record: Record) -> None:
    """A run killed after its first interface changed still knows, for every interface it was about to change,
    each group to put back: the one it takes, and the one an earlier run took that it was giving back."""
    import boto3

    cloud, plan, env, rules = named()
    old = foreign_group(cloud, "old", WIDE_OPEN)
    apply_detach(plan, replace(env, detach_groups=(old,)), rules, discover(plan, env), print, record=record)
    gid = foreign_group(cloud, "kismatic-open", WIDE_OPEN)
    ec2 = boto3.client("ec2", region_name=env.aws.region)
    calls: list[str] = []

    def killed_after_the_first(params: dict[str, Any], **_: Any) -> None:
        calls.append(params["NetworkInterfaceId"])
        if len(calls) > 1:
            raise KeyboardInterrupt  # the run stops here

    ec2.meta.events.register("provide-client-params.ec2.ModifyNetworkInterfaceAttribute", killed_after_the_first)
    said: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        apply_detach(plan, replace(env, detach_groups=(gid,)), rules, discover(plan, env), said.append, ec2, record)
    changed = [h for h in ALL_NODES if gid not in groups_on(cloud, h)]
    assert len(changed) == 1 and old in groups_on(cloud, changed[0])  # one interface changed: old back, gid off
    host = changed[0]
    assert said[-1] == f"  {host} ({cloud.enis[host]}): detached {gid} (kismatic-open); re-attached {old} (old)"
    assert {eni: set(groups) for eni, groups in record.read().items()} == {cloud.enis[h]: {old, gid} for h in ALL_NODES}
    assert reattach(env, discover(plan, env), print, record=record) == 10
    assert all({old, gid} <= set(groups_on(cloud, h)) for h in ALL_NODES) and record.read() == {}


def test_the_records_are_read_back_as_written_and_refuse_what_ket_infra_does_not_write(tmp_path: Path) -> None:
    """Both records beside the state: sorted, indented JSON a person can read and restore, read back whole;
    anything else is refused naming the file. The check record's name is the state's with its own suffix."""
    groups = Record(tmp_path / "groups.json")
    groups.write({"eni-2": ["sg-b", "sg-a"], "eni-1": ["sg-c"], "eni-3": []})
    doc = {"detached": {"eni-1": ["sg-c"], "eni-2": ["sg-a", "sg-b"]}}
    assert groups.raw() == json.dumps(doc, indent=2) + "\n"
    assert groups.read() == {"eni-1": ("sg-c",), "eni-2": ("sg-a", "sg-b")}
    env = env_for(EXAMPLES / "calico-overlay.yaml")
    checks = CheckRecord.of(env, tmp_path)
    assert checks.record.path == tmp_path / "terraform.tfstate.source-dest-check.json"
    book = {"i-2": Checked("worker01", True), "i-1": Checked("master01", False)}
    checks.write(book)
    doc2 = {"source_dest_check": {"i-1": {"host": "master01", "was": False}, "i-2": {"host": "worker01", "was": True}}}
    assert checks.record.raw() == json.dumps(doc2, indent=2) + "\n"
    assert checks.read() == book
    for bad in ('{"source_dest_check": {"i-1": {"host": "master01"}}}', "[]", "{"):
        checks.record.put(bad)
        with pytest.raises(KetInfraError) as info:
            checks.read()
        assert str(info.value) == (
            f"{checks.record.path}: ket-infra's record of the source/dest checks it changed is not what ket-infra "
            "writes; restore it from the state's backup"
        )
    checks.write({})
    assert not checks.record.path.exists() and checks.read() == {}
    checks.write({})  # nothing to record and no record yet: nothing to remove either
    assert not checks.record.path.exists()


# ---------------------------------------------------------------- the diagram


def test_the_diagram_marks_the_excess_paths(aws: None) -> None:
    from ket_infra.report import to_mermaid

    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    ssh = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
    foreign_group(cloud, "hand-made", [ssh], hosts=WORKERS)
    cloud.ec2.authorize_security_group_ingress(
        GroupId=cloud.groups["worker"],
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 0,
                "ToPort": 65535,
                "UserIdGroupPairs": [{"GroupId": cloud.groups["master"]}],
            }
        ],
    )
    doc = json.loads(json.dumps(audit(plan, env, rules).as_json()))
    plain = to_mermaid(rules).splitlines()
    marked = to_mermaid(rules, doc).splitlines()
    assert marked[: len(plain)] == plain  # the diagram as it was, then the excess
    links = sum(1 for ln in plain if " -->|" in ln)
    assert marked[len(plain) :] == [
        '    x_0_0_0_0_0(["0.0.0.0/0"]):::excess',
        '    g_master -.->|"EXCESS cluster: tcp 0-65535 via prod-east-worker"| g_worker',
        '    x_0_0_0_0_0 -.->|"EXCESS world: tcp 22 via hand-made"| g_worker',
        "    classDef excess fill:#fdd,stroke:#c00,color:#600",
        f"    linkStyle {links},{links + 1} stroke:#c00,color:#c00",
    ]


def test_rules_takes_an_audit_only_for_a_diagram(tmp_path: Path) -> None:
    from tests.test_cli import run

    plan = str(EXAMPLES / "calico-overlay.yaml")
    good = tmp_path / "audit.json"
    good.write_text(json.dumps({"ok": True, "excess": [], "counts": {}}))
    assert run("rules", plan, "--format", "mermaid", "--audit", str(good)).returncode == 0
    table = run("rules", plan, "--audit", str(good))
    assert (table.returncode, table.stderr) == (1, f"error: --audit {good} marks a diagram: add --format mermaid\n")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    bad = run("rules", plan, "--format", "mermaid", "--audit", str(broken))
    assert bad.returncode == 1 and bad.stderr.startswith(f"error: {broken}: not JSON (")
    assert bad.stderr.endswith("; give the file ket-infra audit --format json wrote\n")
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"excess": [{"severity": "world"}]}))
    said = run("rules", plan, "--format", "mermaid", "--audit", str(wrong)).stderr
    assert said == (
        f"error: {wrong}: excess[0] lacks severity, protocol, source or targets; "
        "give the file ket-infra audit --format json wrote\n"
    )


# ---------------------------------------------------------------- no way to be fooled into "clean"


def bystander(cloud: Cloud, address: str, groups: list[str] | None = None) -> str:
    """An ordinary instance (no cluster node) at ADDRESS, in the subnet that holds it; returns its interface."""
    from ket_infra.sandbox import image_id

    subnet = next(s for cidr, s in cloud.subnets.items() if ipaddress.ip_address(address) in ipaddress.ip_network(cidr))
    extra = {"SecurityGroupIds": groups} if groups else {}
    inst = cloud.ec2.run_instances(
        ImageId=image_id(cloud.ec2), MinCount=1, MaxCount=1, SubnetId=subnet, PrivateIpAddress=address, **extra
    )["Instances"][0]
    return str(inst["NetworkInterfaces"][0]["NetworkInterfaceId"])


def deny_in(number: int, cidr: str) -> dict[str, Any]:
    return {"RuleNumber": number, "Protocol": "-1", "RuleAction": "deny", "Egress": False, "CidrBlock": cidr}


def deny_tcp_out(number: int, cidr: str, port: int) -> dict[str, Any]:
    return {
        "RuleNumber": number,
        "Protocol": "6",
        "RuleAction": "deny",
        "Egress": True,
        "CidrBlock": cidr,
        "PortRange": {"From": port, "To": port},
    }


ETCD = ["etcd01", "etcd02", "etcd03"]


def test_an_acl_does_not_filter_a_host_in_the_targets_own_subnet(aws: None) -> None:
    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    bystander(cloud, "10.0.1.50")
    everything = {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "10.0.1.50/32"}]}
    gid = foreign_group(cloud, "from-a-neighbour", [everything], hosts=ETCD)
    cloud.own_acl("10.0.1.0/24", [deny_in(5, "10.0.1.50/32"), *allow_all()])
    report = audit(plan, env, rules)
    assert [(e.severity, e.what, e.source_label, e.rule.group_id, e.targets) for e in report.excess] == [
        ("vpc", "all traffic", "10.0.1.50/32", gid, ETCD)
    ]


def test_an_acl_does_not_filter_a_referenced_groups_member_in_the_targets_own_subnet(aws: None) -> None:
    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    admins = foreign_group(cloud, "admins", [], hosts=[])
    bystander(cloud, "10.0.1.50", [admins])
    everything = {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": admins}]}
    foreign_group(cloud, "from-admins", [everything], hosts=ETCD)
    cloud.own_acl("10.0.1.0/24", [deny_in(5, "10.0.1.50/32"), *allow_all()])
    report = audit(plan, env, rules)
    assert [(e.severity, e.what, e.source_label, e.targets) for e in report.excess] == [
        ("vpc", "all traffic", admins, ETCD)
    ]
    assert f"all traffic from {admins} beyond the nodes and named CIDRs" in report.excess[0].reason


def test_a_cidr_straddling_the_targets_subnet_is_split_at_its_edge(aws: None) -> None:
    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    port = {"IpProtocol": "tcp", "FromPort": 9999, "ToPort": 9999, "IpRanges": [{"CidrIp": "10.0.0.0/16"}]}
    foreign_group(cloud, "vpc-9999", [port], hosts=ETCD)
    # the ACL stops all of 10.0.0.0/16, but not the etcd subnet's own addresses
    cloud.own_acl("10.0.1.0/24", [deny_in(5, "10.0.0.0/16"), *allow_all()])
    report = audit(plan, env, rules)
    assert [(e.severity, e.what, e.targets) for e in report.excess] == [("vpc", "tcp 9999", ETCD)]
    assert "tcp 9999 from 10.0.0.0/16 beyond the nodes and named CIDRs" in report.excess[0].reason


def second_interface(cloud: Cloud, host: str, groups: list[str], device: int = 1, cidr: str | None = None) -> str:
    """Another interface attached to HOST's instance (at DEVICE), carrying GROUPS, in the subnet of CIDR
    (HOST's own by default)."""
    own = cloud.ec2.describe_network_interfaces(NetworkInterfaceIds=[cloud.enis[host]])["NetworkInterfaces"][0]
    subnet_id = cloud.subnets[cidr] if cidr else own["SubnetId"]
    (subnet,) = cloud.ec2.describe_subnets(SubnetIds=[subnet_id])["Subnets"]
    in_use = cloud.ec2.describe_network_interfaces(Filters=[{"Name": "subnet-id", "Values": [subnet_id]}])
    taken = {n.address for n in cloud.plan.nodes} | {e["PrivateIpAddress"] for e in in_use["NetworkInterfaces"]}
    # an address of its own (left to moto, it may pick another node's: two instances would hold one address)
    free = next(
        str(a) for a in reversed(list(ipaddress.IPv4Network(subnet["CidrBlock"]).hosts())) if str(a) not in taken
    )
    eni = cloud.ec2.create_network_interface(SubnetId=subnet_id, Groups=groups, PrivateIpAddress=free)[
        "NetworkInterface"
    ]
    cloud.ec2.attach_network_interface(
        NetworkInterfaceId=eni["NetworkInterfaceId"], InstanceId=cloud.instances[host], DeviceIndex=device
    )
    return str(eni["NetworkInterfaceId"])


def test_a_nodes_other_interface_is_audited(aws: None) -> None:
    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    gid = foreign_group(cloud, "side-door", WIDE_OPEN, hosts=[])
    eni = second_interface(cloud, "worker01", [gid])
    counter = Counter()
    report = audit(plan, env, rules, counter)
    assert [(e.severity, e.what, e.rule.group_id, e.targets) for e in report.excess] == [
        ("world", "all traffic", gid, ["worker01"])
    ]
    assert report.excess[0].group_name == "side-door"  # the group read with the nodes' own
    assert f"(on worker01's interface {eni}, besides the one holding the node's address)" in report.excess[0].reason
    assert counter.calls["DescribeNetworkInterfaces"] == 2  # the nodes' interfaces, the referenced groups' members
    third = second_interface(cloud, "worker01", [gid], device=2)
    (excess,) = audit(plan, env, rules).excess
    both = ", ".join(f"worker01's interface {e}" for e in sorted([eni, third]))
    assert f"(on {both}, besides the one holding the node's address)" in excess.reason
    # the subnet's network ACL filters what comes from outside it to those interfaces too
    cloud.own_acl("10.0.2.0/24", [deny_in(5, "0.0.0.0/0"), *allow_all()])
    assert [(e.severity, e.targets) for e in audit(plan, env, rules).excess] == [("vpc", ["worker01"])]


def test_a_nodes_other_interface_in_another_subnet_is_behind_that_subnets_acl(aws: None) -> None:
    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    gid = foreign_group(cloud, "side-door", WIDE_OPEN, hosts=[])
    second_interface(cloud, "etcd01", [gid], cidr="10.0.2.0/24")  # etcd01 itself is in 10.0.1.0/24
    cloud.own_acl("10.0.2.0/24", [deny_in(5, "0.0.0.0/0"), *allow_all()])
    # the ACL keeps out what comes from outside the interface's subnet; what is inside it still gets in
    assert [(e.severity, e.targets) for e in audit(plan, env, rules).excess] == [("vpc", ["etcd01"])]


@pytest.mark.parametrize("kind", ["no members", "deleted", "other account"])
def test_a_group_source_without_visible_members_is_a_standing_door(aws: None, kind: str) -> None:
    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    pair = {"GroupId": foreign_group(cloud, "nobody-yet", [], hosts=[])}
    if kind == "other account":
        pair["UserId"] = "111122223333"  # a group of another account: its members are not ours to see
    ssh = {"IpProtocol": "tcp", "FromPort": 2379, "ToPort": 2379, "UserIdGroupPairs": [pair]}
    gid = foreign_group(cloud, "from-a-group", [ssh], hosts=ETCD)
    if kind == "deleted":
        cloud.ec2.delete_security_group(GroupId=pair["GroupId"])
    report = audit(plan, env, rules)
    assert [(e.severity, e.what, e.rule.group_id, e.targets) for e in report.excess] == [("vpc", "tcp 2379", gid, ETCD)]
    said = (
        "members unknown: a group of account 111122223333, whatever joins it gets in"
        if kind == "other account"
        else "no members now: whatever joins the group gets in"
    )
    assert report.excess[0].reason == (
        f"open to addresses outside the cluster: tcp 2379 from {pair['GroupId']} ({said}) is more than the plan needs"
    )


@pytest.mark.parametrize(
    "cidrs",
    [["0.0.0.0/1", "128.0.0.0/1"], ["52.0.0.0/8"], ["203.0.113.0/24"]],
    ids=["two-halves", "public-8", "public-24"],
)
def test_public_address_space_is_world_however_it_is_cut(aws: None, cidrs: list[str]) -> None:
    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    perms = [{"IpProtocol": "tcp", "FromPort": 9999, "ToPort": 9999, "IpRanges": [{"CidrIp": c}]} for c in cidrs]
    foreign_group(cloud, "halves", perms, hosts=WORKERS)
    report = audit(plan, env, rules)
    assert sorted((e.severity, e.source_label) for e in report.excess) == [("world", c) for c in cidrs]


def prefix_list(cloud: Cloud, cidrs: list[str], family: str = "IPv4") -> str:
    return str(
        cloud.ec2.create_managed_prefix_list(
            PrefixListName=f"pl-{len(cidrs)}-{cidrs[0].replace('/', '-').replace(':', '-')}",
            AddressFamily=family,
            MaxEntries=10,
            Entries=[{"Cidr": c} for c in cidrs],
        )["PrefixList"]["PrefixListId"]
    )


def test_a_prefix_list_is_judged_by_its_entries(aws: None) -> None:
    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    installer = prefix_list(cloud, ["10.0.9.5/32"])
    ssh = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "PrefixListIds": [{"PrefixListId": installer}]}
    foreign_group(cloud, "installer-ssh", [ssh])
    assert audit(plan, env, rules).ok
    halves = prefix_list(cloud, ["0.0.0.0/1", "128.0.0.0/1"])
    wide = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "PrefixListIds": [{"PrefixListId": halves}]}
    gid = foreign_group(cloud, "the-world-in-halves", [wide], hosts=WORKERS)
    report = audit(plan, env, rules)
    assert [(e.severity, e.source_label, e.rule.group_id, e.targets) for e in report.excess] == [
        ("world", halves, gid, WORKERS)
    ]


@pytest.mark.parametrize(("cidr", "severity"), [("::/0", "world"), ("2001:db8::/32", "world"), ("fd00::/8", "vpc")])
def test_ipv6_sources_are_rated_by_what_they_span(aws: None, cidr: str, severity: str) -> None:
    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    ssh = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "Ipv6Ranges": [{"CidrIpv6": cidr}]}
    foreign_group(cloud, "v6", [ssh], hosts=WORKERS)
    report = audit(plan, env, rules)
    assert [(e.severity, e.source_label, e.targets) for e in report.excess] == [(severity, cidr, WORKERS)]


def test_a_port_one_role_needs_is_excess_from_another(aws: None) -> None:
    """The masters need etcd's client port; the workers do not, and a rule letting them in is excess."""
    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    gid = foreign_group(cloud, "etcd-from-workers", [tcp_from_groups(2379, cloud.groups["worker"])], hosts=ETCD)
    report = audit(plan, env, rules)
    assert [(e.severity, e.rule.group_id, e.targets, e.reason) for e in report.excess] == [
        (
            "cluster",
            gid,
            ETCD,
            "open between nodes wider than the catalog requires: tcp 2379 from worker nodes is more than the plan needs",
        )
    ]


def test_a_cidr_the_environment_names_for_one_role_is_excess_on_another(aws: None) -> None:
    """api_cidrs naming the whole VPC makes 6443 required on the masters from all of it, and on no one else."""
    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    env = replace(env, api_cidrs=("10.0.0.0/16",))
    api = {"IpProtocol": "tcp", "FromPort": 6443, "ToPort": 6443, "IpRanges": [{"CidrIp": "10.0.0.0/16"}]}
    gid = foreign_group(cloud, "api-from-the-vpc", [api], hosts=["master01", "worker01"])
    report = audit(plan, env, rules)
    assert [(e.severity, e.rule.group_id, e.targets, e.reason) for e in report.excess] == [
        (
            "vpc",
            gid,
            ["worker01"],
            "open to addresses outside the cluster: tcp 6443 from 10.0.0.0/16 beyond the nodes and named CIDRs; "
            "tcp 6443 from etcd, master, worker, ingress, storage nodes is more than the plan needs",
        )
    ]


def test_a_cidr_at_either_edge_of_the_targets_subnet_is_not_filtered_by_its_acl(aws: None) -> None:
    """The subnet's first and last addresses are in it: the ACL that denies all of it does not filter them."""
    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    edges = ["10.0.1.0/28", "10.0.1.240/28"]
    ports = [{"IpProtocol": "tcp", "FromPort": 9999, "ToPort": 9999, "IpRanges": [{"CidrIp": c}]} for c in edges]
    foreign_group(cloud, "subnet-edges", ports, hosts=ETCD)
    cloud.own_acl("10.0.1.0/24", [deny_in(5, "10.0.1.0/24"), *allow_all()])
    report = audit(plan, env, rules)
    assert sorted((e.severity, e.source_label, e.what, tuple(e.targets)) for e in report.excess) == [
        ("vpc", c, "tcp 9999", tuple(ETCD)) for c in edges
    ]


def test_an_empty_prefix_list_is_a_standing_door(aws: None) -> None:
    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    empty = str(
        cloud.ec2.create_managed_prefix_list(PrefixListName="empty", AddressFamily="IPv4", MaxEntries=5)["PrefixList"][
            "PrefixListId"
        ]
    )
    ssh = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "PrefixListIds": [{"PrefixListId": empty}]}
    foreign_group(cloud, "from-an-empty-list", [ssh], hosts=WORKERS)
    (excess,) = audit(plan, env, rules).excess
    assert (excess.severity, excess.targets) == ("vpc", WORKERS)
    assert excess.reason == (
        f"open to addresses outside the cluster: tcp 22 from {empty} "
        "(no entries now: whatever is added to the prefix list gets in) is more than the plan needs"
    )


def test_every_address_of_a_referenced_groups_member_counts(aws: None) -> None:
    """A member's second address is as much a source as its first: an ACL that stops the first alone leaves
    the second let in."""
    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    admins = foreign_group(cloud, "admins", [], hosts=[])
    eni = bystander(cloud, "10.0.2.50", [admins])
    foreign_group(cloud, "from-admins", [tcp_from_groups(9999, admins)], hosts=ETCD)
    cloud.own_acl("10.0.1.0/24", [deny_in(5, "10.0.2.50/32"), *allow_all()])
    assert audit(plan, env, rules).ok
    cloud.ec2.assign_private_ip_addresses(NetworkInterfaceId=eni, PrivateIpAddresses=["10.0.2.60"])
    report = audit(plan, env, rules)
    assert [(e.severity, e.what, e.source_label, e.targets) for e in report.excess] == [
        ("vpc", "tcp 9999", admins, ETCD)
    ]


ONE_NODE = Discovery(
    "vpc-0123456789abcdef0",
    (
        NodeInterface(
            host="etcd01",
            address="10.0.1.11",
            instance_id="i-0123456789abcdef0",
            network_interface_id="eni-0123456789abcdef0",
            subnet_id="subnet-0123456789abcdef0",
            vpc_id="vpc-0123456789abcdef0",
            security_groups=("sg-0123456789abcdef0",),
            source_dest_check=True,
        ),
    ),
)


@pytest.mark.parametrize(
    ("reader", "doing"),
    [
        (lambda env, ec2: read_rules(env, ["sg-0123456789abcdef0"], ec2), "reading security group rules"),
        (
            lambda env, ec2: read_members(env, ["sg-0123456789abcdef0"], ec2),
            "reading the interfaces of referenced security groups",
        ),
        (lambda env, ec2: read_subnets(env, "vpc-0123456789abcdef0", ec2), "reading the VPC's subnets"),
        (
            lambda env, ec2: read_other_interfaces(env, ONE_NODE, ec2),
            "reading the nodes' network interfaces",
        ),
    ],
    ids=["rules", "members", "subnets", "other-interfaces"],
)
def test_an_unreachable_endpoint_while_auditing_says_what_was_being_read(aws: None, reader: Any, doing: str) -> None:
    env = env_for(EXAMPLES / "calico-overlay.yaml")
    with pytest.raises(AwsError) as info:
        reader(env, dead_ec2())
    assert str(info.value).startswith(f"{doing}: cannot reach AWS region eu-west-1 (EndpointConnectionError); ")


def test_a_host_that_joins_a_node_group_among_other_groups_is_found(aws: None) -> None:
    """An ordinary instance carrying the workers' group (and one of its own) gets in wherever workers do.
    EC2 finds it by any of the groups asked about at once (the values of a filter are joined with OR)."""
    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    assert audit(plan, env, rules).ok
    backup = foreign_group(cloud, "backup-agents", [], hosts=[])
    worker = cloud.groups["worker"]
    bystander(cloud, "10.0.2.50", [worker, backup])
    report = audit(plan, env, rules)
    assert report.excess and {(e.severity, e.source_label) for e in report.excess} == {
        ("vpc", f"{worker} (prod-east-worker)")
    }
    assert {t for e in report.excess for t in e.targets} == set(ALL_NODES)


@pytest.mark.parametrize(
    ("cidr", "outside"),
    [("10.0.1.21/32", False), ("10.0.1.12/31", False), ("10.0.1.20/31", True)],
    ids=["one-node", "two-nodes", "a-host-beside-a-node"],
)
def test_a_cidr_of_nodes_alone_is_judged_between_nodes_only(aws: None, cidr: str, outside: bool) -> None:
    """The addresses of a source that are all nodes' are judged as those nodes; one address more is outside."""
    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    port = {"IpProtocol": "tcp", "FromPort": 9999, "ToPort": 9999, "IpRanges": [{"CidrIp": cidr}]}
    foreign_group(cloud, "from-nodes", [port], hosts=WORKERS)
    (excess,) = audit(plan, env, rules).excess
    assert (excess.severity, excess.targets) == ("vpc" if outside else "cluster", WORKERS)
    assert (f"tcp 9999 from {cidr} beyond the nodes and named CIDRs" in excess.reason) == outside


def test_a_source_is_cut_exactly_where_a_named_cidr_ends(aws: None) -> None:
    """10.0.9.0/29 with the installer at 10.0.9.6: the installer's ssh is required and the ACL stops the seven
    others, so nothing is let in beyond the plan; a cut one address off would leave 10.0.9.6 with a neighbour."""
    plan = load_plan(EXAMPLES / "calico-overlay.yaml")
    env = replace(env_for(EXAMPLES / "calico-overlay.yaml"), installer_cidr="10.0.9.6/32")
    rules = layout(plan, env)
    cloud = Cloud(plan, rules)
    ssh = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "10.0.9.0/29"}]}
    foreign_group(cloud, "installer-block", [ssh], hosts=WORKERS)
    installer = {"RuleNumber": 1, "Protocol": "-1", "RuleAction": "allow", "Egress": False, "CidrBlock": "10.0.9.6/32"}
    cloud.own_acl("10.0.2.0/24", [installer, deny_in(2, "10.0.9.0/29"), *allow_all()])
    report = audit(plan, env, rules)
    assert report.ok, [e.reason for e in report.excess]
    cloud.own_acl("10.0.2.0/24", [installer, deny_in(2, "10.0.9.0/30"), *allow_all()])  # 10.0.9.4-7 let in
    (excess,) = audit(plan, env, rules).excess
    assert (excess.severity, excess.what, excess.targets) == ("vpc", "tcp 22", WORKERS)


def test_a_nodes_other_interface_is_open_to_other_nodes_not_to_itself(aws: None) -> None:
    """ingress01 and storage01 are each alone in their group: a rule on ingress01's second interface from both
    lets storage01 in, and ingress01 itself does not count (it does not reach itself through the network)."""
    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    port = tcp_from_groups(9999, cloud.groups["ingress"], cloud.groups["storage"])
    gid = foreign_group(cloud, "side-door", [port], hosts=[])
    second_interface(cloud, "ingress01", [gid])
    report = audit(plan, env, rules)
    assert [(e.severity, e.targets) for e in report.excess] == [("cluster", ["ingress01"])]
    assert report.excess[0].reason.startswith(
        "open between nodes wider than the catalog requires: tcp 9999 from storage nodes is more than the plan needs"
    )


def test_the_source_subnets_outbound_acl_stops_traffic_between_nodes(aws: None) -> None:
    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    foreign_group(cloud, "etcd-9999", [tcp_from_groups(9999, cloud.groups["worker"])], hosts=ETCD)
    assert [e.targets for e in audit(plan, env, rules).excess] == [ETCD]
    cloud.own_acl("10.0.2.0/24", [deny_tcp_out(5, "10.0.1.0/24", 9999), *allow_all()])
    assert audit(plan, env, rules).ok


def test_the_source_subnets_outbound_acl_is_judged_for_the_other_interfaces_own_address(aws: None) -> None:
    """Traffic to a node's other interface goes to that interface's address, not to the node's."""
    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    gid = foreign_group(cloud, "etcd-9999", [tcp_from_groups(9999, cloud.groups["worker"])], hosts=[])
    eni = second_interface(cloud, "etcd01", [gid])
    assert [e.targets for e in audit(plan, env, rules).excess] == [["etcd01"]]
    address = cloud.ec2.describe_network_interfaces(NetworkInterfaceIds=[eni])["NetworkInterfaces"][0][
        "PrivateIpAddress"
    ]
    cloud.own_acl("10.0.2.0/24", [deny_tcp_out(5, f"{address}/32", 9999), *allow_all()])
    assert audit(plan, env, rules).ok


def test_a_flow_the_environment_adds_is_required_too(aws: None) -> None:
    from ket_infra.flows import Flow

    plan = load_plan(EXAMPLES / "calico-overlay.yaml")
    metrics = Flow("node-metrics", "tcp", (9100, 9100), ("worker",), "metrics", "s", "environment", src=("master",))
    env = replace(env_for(EXAMPLES / "calico-overlay.yaml"), extra_flows=(metrics,))
    rules = layout(plan, env)
    Cloud(plan, rules)
    assert audit(plan, env, rules).ok  # ket-infra's own rule for it is no excess
    (excess,) = audit(plan, env_for(EXAMPLES / "calico-overlay.yaml"), rules).excess
    assert (excess.severity, excess.what, excess.targets) == ("cluster", "tcp 9100", WORKERS)


def test_every_inbound_rule_on_the_nodes_is_counted_once(aws: None) -> None:
    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    checked = audit(plan, env, rules).rules_checked
    ssh = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "10.0.9.5/32"}]}
    foreign_group(cloud, "one-more", [ssh], hosts=WORKERS)
    assert audit(plan, env, rules).rules_checked == checked + 1


def test_the_ipv6_block_of_the_vpcs_own_subnet_is_not_the_internet(aws: None) -> None:
    """Amazon's IPv6 blocks are public addresses, but a subnet's own block holds only the VPC's hosts: `vpc`."""
    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    block = cloud.ec2.associate_vpc_cidr_block(VpcId=cloud.vpc, AmazonProvidedIpv6CidrBlock=True)
    subnet = str(next(ipaddress.IPv6Network(block["Ipv6CidrBlockAssociation"]["Ipv6CidrBlock"]).subnets(new_prefix=64)))
    cloud.ec2.associate_subnet_cidr_block(SubnetId=cloud.subnets["10.0.2.0/24"], Ipv6CidrBlock=subnet)
    ssh = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "Ipv6Ranges": [{"CidrIpv6": subnet}]}
    foreign_group(cloud, "from-the-subnets-ipv6", [ssh], hosts=WORKERS)
    report = audit(plan, env, rules)
    assert [(e.severity, e.source_label, e.targets) for e in report.excess] == [("vpc", subnet, WORKERS)]
