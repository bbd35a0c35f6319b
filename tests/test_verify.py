"""verify against moto (mock_aws): the clean state passes, and each kind of
breakage is found, with nothing else reported."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest

from ket_infra.aws import AwsError, Counter
from ket_infra.environment import AwsConfig, Environment
from ket_infra.layout import RuleSet, layout
from ket_infra.plan import Plan, load_plan
from ket_infra.sandbox import image_id, network_for
from ket_infra.verify import Report, junit_report, text_report, verify
from tests.conftest import EXAMPLES, write_yaml

REGION = "eu-west-1"


def protocol(p: str) -> str:
    return "-1" if p == "all" else p


def permission(rule: Any, group_ids: dict[str, str]) -> dict[str, Any]:
    perm: dict[str, Any] = {"IpProtocol": protocol(rule.protocol)}
    if rule.protocol in ("tcp", "udp", "icmp"):
        perm.update(FromPort=rule.from_port, ToPort=rule.to_port)
    elif rule.protocol != "all":
        perm.update(FromPort=-1, ToPort=-1)
    if rule.peer.group is not None:
        perm["UserIdGroupPairs"] = [{"GroupId": group_ids[rule.peer.group]}]
    else:
        perm["IpRanges"] = [{"CidrIp": rule.peer.cidr}]
    return perm


class Cloud:
    """A moto VPC holding the plan's nodes, with the RuleSet's groups applied by boto3."""

    def __init__(self, plan: Plan, rules: RuleSet) -> None:
        self.ec2 = boto3.client("ec2", region_name=REGION)
        self.plan = plan
        vpc_net, subnet_nets = network_for(plan)
        vpc = self.ec2.create_vpc(CidrBlock=str(vpc_net))["Vpc"]["VpcId"]
        self.vpc = vpc
        self.subnets = {
            str(n): self.ec2.create_subnet(VpcId=vpc, CidrBlock=str(n))["Subnet"]["SubnetId"] for n in subnet_nets
        }
        ami = image_id(self.ec2)
        self.instances: dict[str, str] = {}
        self.enis: dict[str, str] = {}
        for node in plan.nodes:
            net = next(str(n) for n in subnet_nets if ipaddress.ip_address(node.address) in n)
            inst = self.ec2.run_instances(
                ImageId=ami,
                MinCount=1,
                MaxCount=1,
                InstanceType="t3.medium",
                SubnetId=self.subnets[net],
                PrivateIpAddress=node.address,
            )["Instances"][0]
            self.instances[node.host] = inst["InstanceId"]
            self.enis[node.host] = inst["NetworkInterfaces"][0]["NetworkInterfaceId"]
        self.groups = {
            g.name: self.ec2.create_security_group(
                GroupName=f"{rules.cluster}-{g.name}", Description=g.name, VpcId=vpc
            )["GroupId"]
            for g in rules.groups
        }
        for gid in self.groups.values():  # as Terraform does: no default allow-all egress
            self.ec2.revoke_security_group_egress(
                GroupId=gid, IpPermissions=[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]
            )
        # each group's rules of one direction in one call (as many as AWS takes in one), not one call per rule:
        # what Describe answers is the same, and it is most of what building the cloud costs
        batches: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for r in rules.rules:
            batches.setdefault((r.group, r.direction), []).append(permission(r, self.groups))
        for (group, direction), permissions in batches.items():
            call = getattr(self.ec2, f"authorize_security_group_{direction}")
            call(GroupId=self.groups[group], IpPermissions=permissions)
        for node in plan.nodes:
            eni = self.ec2.describe_network_interfaces(NetworkInterfaceIds=[self.enis[node.host]])["NetworkInterfaces"][
                0
            ]
            current = [g["GroupId"] for g in eni["Groups"]]
            self.ec2.modify_network_interface_attribute(
                NetworkInterfaceId=self.enis[node.host], Groups=[*current, self.groups[node.group]]
            )
        for h in rules.host_settings:
            for node in plan.nodes:
                if node.group == h.group:
                    self.ec2.modify_instance_attribute(
                        InstanceId=self.instances[node.host], SourceDestCheck={"Value": False}
                    )

    def default_group(self) -> str:
        """The VPC's default group: every instance carries it besides ket-infra's."""
        return str(
            self.ec2.describe_security_groups(
                Filters=[{"Name": "group-name", "Values": ["default"]}, {"Name": "vpc-id", "Values": [self.vpc]}]
            )["SecurityGroups"][0]["GroupId"]
        )

    def on_node(self, group: str) -> str:
        """How verify names the groups on a node of GROUP: the default group, then ket-infra's."""
        return f"{self.default_group()} (default), {self.groups[group]} (test-{group})"

    def lock_down_default_group(self) -> None:
        """A locked-down VPC: the default group allows no egress, so only ket-infra's egress counts."""
        default = self.ec2.describe_security_groups(
            Filters=[{"Name": "group-name", "Values": ["default"]}, {"Name": "vpc-id", "Values": [self.vpc]}]
        )["SecurityGroups"][0]
        self.ec2.revoke_security_group_egress(GroupId=default["GroupId"], IpPermissions=default["IpPermissionsEgress"])

    def revoke_ipip_from_workers(self) -> None:
        """Someone removes IP-in-IP from the workers into the masters by hand."""
        worker = self.groups["worker"]
        self.revoke(
            "master",
            "ingress",
            lambda r: r["IpProtocol"] == "4" and r.get("ReferencedGroupInfo", {}).get("GroupId") == worker,
        )

    def revoke(self, group: str, direction: str, match: Any) -> None:
        rules = self.ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [self.groups[group]]}])[
            "SecurityGroupRules"
        ]
        ids = [r["SecurityGroupRuleId"] for r in rules if r["IsEgress"] == (direction == "egress") and match(r)]
        assert ids, f"no such rule on {group}"
        if direction == "egress":
            self.ec2.revoke_security_group_egress(GroupId=self.groups[group], SecurityGroupRuleIds=ids)
        else:
            self.ec2.revoke_security_group_ingress(GroupId=self.groups[group], SecurityGroupRuleIds=ids)

    def own_acl(self, subnet_cidr: str, entries: list[dict[str, Any]]) -> str:
        subnet = self.subnets[subnet_cidr]
        acl = self.ec2.create_network_acl(VpcId=self.vpc)["NetworkAcl"]["NetworkAclId"]
        for e in entries:
            self.ec2.create_network_acl_entry(NetworkAclId=acl, **e)
        assoc = next(
            a["NetworkAclAssociationId"]
            for n in self.ec2.describe_network_acls()["NetworkAcls"]
            for a in n["Associations"]
            if a["SubnetId"] == subnet
        )
        self.ec2.replace_network_acl_association(AssociationId=assoc, NetworkAclId=acl)
        return acl


def allow_all(rule: int = 100) -> list[dict[str, Any]]:
    return [
        {"RuleNumber": rule, "Protocol": "-1", "RuleAction": "allow", "Egress": egress, "CidrBlock": "0.0.0.0/0"}
        for egress in (False, True)
    ]


PROXY = "10.0.9.10/32"  # where the nodes download packages and images (egress_cidrs)


def env_for(plan_path: Path) -> Environment:
    return Environment(
        name="t",
        path="t.yaml",
        plan_file=plan_path,
        aws=AwsConfig(REGION),
        installer_cidr="10.0.9.5/32",
        egress_cidrs=(PROXY,),
    )


def build(plan_path: Path) -> tuple[Cloud, Plan, Environment, RuleSet]:
    plan = load_plan(plan_path)
    env = env_for(plan_path)
    rules = layout(plan, env)
    return Cloud(plan, rules), plan, env, rules


def blocked(report: Report) -> set[tuple[str, str, str]]:
    return {(c.rule, c.source.label, c.target.label) for c in report.checks if c.status == "blocked"}


def test_clean_state_verifies(aws: None) -> None:
    _cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    counter = Counter()
    report = verify(plan, env, rules, counter)
    assert report.ok, [c.reason for c in report.checks if c.status == "blocked"]
    assert report.checks and all(c.status == "allowed" for c in report.checks)
    assert sum(c.pairs for c in report.checks) > len(report.checks)
    assert counter.calls == {
        "GetCallerIdentity": 1,
        "DescribeInstances": 1,
        "DescribeSecurityGroups": 1,
        "DescribeNetworkAcls": 1,
    }
    assert report.api_calls == counter.total == 4  # the account check and the node lookup are counted too


def test_another_accounts_cloud_is_refused(aws: None) -> None:
    """Instances at the plan's addresses in another account are not the cluster: verify refuses, as plan does."""
    _cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    assert verify(plan, env, rules).ok  # moto's account, 123456789012, and no account named: judged
    elsewhere = replace(env, aws=replace(env.aws, account_id="210987654321"))
    with pytest.raises(AwsError) as info:
        verify(plan, elsewhere, rules)
    assert str(info.value) == (
        "t.yaml: aws.account_id: the credentials are for account 123456789012, not 210987654321; "
        "use credentials of the right account or fix account_id"
    )
    assert verify(plan, replace(env, aws=replace(env.aws, account_id="123456789012")), rules).ok


def test_nothing_checked_is_no_verdict() -> None:
    """Zero checks or zero nodes judge nothing: never "every required flow is open"."""
    for report in (Report(), Report(nodes=3)):
        assert not report.ok and report.as_json()["ok"] is False
        text = text_report(report, "lab", "c").splitlines()
        assert "OK" not in text[-1] and "every required flow is open" not in "\n".join(text)
        assert text[-1].startswith("NOT JUDGED: nothing was checked")
        assert 'failures="1"' in junit_report(report, "lab", "c")


def test_before_apply_everything_is_blocked(aws: None) -> None:
    cloud, plan, env, rules = build(EXAMPLES / "contiv.yaml")
    assert verify(plan, env, rules).ok
    for node in plan.nodes:
        eni = cloud.enis[node.host]
        default = next(
            g["GroupId"]
            for g in cloud.ec2.describe_network_interfaces(NetworkInterfaceIds=[eni])["NetworkInterfaces"][0]["Groups"]
        )
        cloud.ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=[default])
    report = verify(plan, env, rules)
    assert not report.ok
    assert {c.rule for c in report.checks if c.status == "blocked"} >= {"contiv-vxlan", "etcd-client", "kubelet-api"}


def test_ipip_revoked_from_one_group(aws: None) -> None:
    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    cloud.revoke_ipip_from_workers()
    report = verify(plan, env, rules)
    assert blocked(report) == {("calico-ipip", "worker", "master")}
    reason = next(c.reason for c in report.checks if c.status == "blocked")
    assert "no ingress rule on" in reason and "prod-east-master" in reason and "IP-in-IP (4)" in reason
    bad = [c for c in report.as_json()["checks"] if c["status"] == "blocked"]
    assert sorted({n for c in bad for n in c["source_nodes"]}) == ["worker01", "worker02", "worker03"]
    assert sorted({n for c in bad for n in c["target_nodes"]}) == ["master01", "master02"]
    # and on which interface: the one holding each node's plan address
    assert {h: e for c in bad for h, e in c["target_interfaces"].items()} == {
        h: cloud.enis[h] for h in ("master01", "master02")
    }
    assert {h: e for c in bad for h, e in c["source_interfaces"].items()} == {
        h: cloud.enis[h] for h in ("worker01", "worker02", "worker03")
    }
    assert sum(c["pairs"] for c in bad) == 6
    assert all(c["protocol"] == "4" and c["from_port"] is None and c["source_role"] == "worker" for c in bad)
    allowed = [c for c in report.as_json()["checks"] if c["status"] == "allowed"]
    assert allowed and not [c for c in allowed if "source_nodes" in c or "target_nodes" in c]
    text = text_report(report, "lab", plan.cluster)
    assert f"BLOCKED: {reason}" in text
    assert "  calico-ipip: IP-in-IP (4) from worker (worker01, worker02, worker03) to master (master01" in text


def test_acl_denies_bgp_inbound(aws: None) -> None:
    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    deny = {
        "RuleNumber": 5,
        "Protocol": "6",
        "RuleAction": "deny",
        "Egress": False,
        "CidrBlock": "0.0.0.0/0",
        "PortRange": {"From": 179, "To": 179},
    }
    acl = cloud.own_acl("10.0.2.0/24", [deny, *allow_all()])
    report = verify(plan, env, rules)
    # workers, ingress and storage live in 10.0.2.0/24: BGP from the masters (10.0.1.0/24) is cut;
    # BGP inside the subnet never meets the ACL.
    assert blocked(report) == {("calico-bgp", "master", t) for t in ("worker", "ingress", "storage")}
    assert all(
        f"network ACL {acl} rule 5 denies tcp 179 inbound" in c.reason for c in report.checks if c.status == "blocked"
    )


def test_egress_removed_from_one_group(aws: None) -> None:
    cloud, plan, env, rules = build(EXAMPLES / "weave-encrypted.yaml")
    cloud.lock_down_default_group()
    assert verify(plan, env, rules).ok
    master = cloud.groups["master"]
    cloud.revoke(
        "worker",
        "egress",
        lambda r: r["IpProtocol"] == "50" and r.get("ReferencedGroupInfo", {}).get("GroupId") == master,
    )
    report = verify(plan, env, rules)
    assert blocked(report) == {("weave-esp", "worker", "master")}
    assert all("no egress rule on" in c.reason for c in report.checks if c.status == "blocked")


def test_acl_denies_the_return_path(aws: None) -> None:
    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    # the etcd/master subnet may not answer to ports 40000-60999 in 10.0.2.0/24 (inside
    # Linux's ephemeral range, above every required port, so only return paths are cut)
    deny = {
        "RuleNumber": 10,
        "Protocol": "6",
        "RuleAction": "deny",
        "Egress": True,
        "CidrBlock": "10.0.2.0/24",
        "PortRange": {"From": 40000, "To": 60999},
    }
    cloud.own_acl("10.0.1.0/24", [deny, *allow_all()])
    report = verify(plan, env, rules)
    found = blocked(report)
    assert found, "a denied return path must be found"
    assert all(src in ("worker", "ingress", "storage", "worker[0]") for _rule, src, _dst in found)
    assert all("the return path tcp 32768-60999 outbound" in c.reason for c in report.checks if c.status == "blocked")
    assert ("apiserver", "worker", "master") in found and ("calico-bgp", "worker", "master") in found
    assert ("calico-ipip", "worker", "master") not in found  # IP-in-IP has no return path of its own


def test_source_dest_check_back_on(aws: None) -> None:
    cloud, plan, env, rules = build(EXAMPLES / "calico-routed.yaml")
    assert verify(plan, env, rules).ok
    cloud.ec2.modify_instance_attribute(InstanceId=cloud.instances["node02"], SourceDestCheck={"Value": True})
    report = verify(plan, env, rules)
    assert blocked(report) == set()
    bad = [h for h in report.host_settings if h.status == "blocked"]
    assert [(h.node.host, h.node.source_dest_check, h.expected) for h in bad] == [("node02", True, False)]
    assert not report.ok
    text = text_report(report, "lab", plan.cluster).splitlines()
    assert (
        f"BLOCKED: node02 ({cloud.instances['node02']}): source/dest check is on, must be off (Calico routed mode); "
        "run ket-infra apply to set it"
    ) in text
    assert text[-1] == "FAILED: fix the causes above, then run verify again"
    assert [h["node"] for h in report.as_json()["host_settings"] if h["status"] == "blocked"] == ["node02"]


def test_text_report_when_all_is_open(aws: None) -> None:
    _cloud, plan, env, rules = build(EXAMPLES / "calico-routed.yaml")
    report = verify(plan, env, rules)
    text = text_report(report, "lab", plan.cluster).splitlines()
    pairs = sum(c.pairs for c in report.checks)
    assert text[0] == (
        f"verify lab (cluster {plan.cluster}): {len(report.checks)} checks covering {pairs} node pairs over 5 nodes; "
        f"0 blocked; {report.api_calls} AWS API calls"
    )
    assert "host settings: source/dest check as required on 5 node(s)" in text
    assert text[-1] == "OK: every required flow is open"
    assert not [ln for ln in text if ln.startswith("BLOCKED")]


def test_hand_made_rule_elsewhere_is_honoured(aws: None) -> None:
    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    cloud.revoke_ipip_from_workers()
    assert blocked(verify(plan, env, rules)) == {("calico-ipip", "worker", "master")}
    # someone's own group on the masters opens IP-in-IP from the whole worker subnet
    own = cloud.ec2.create_security_group(GroupName="ops-tunnels", Description="ops", VpcId=cloud.vpc)["GroupId"]
    cloud.ec2.authorize_security_group_ingress(
        GroupId=own,
        IpPermissions=[{"IpProtocol": "4", "FromPort": -1, "ToPort": -1, "IpRanges": [{"CidrIp": "10.0.2.0/24"}]}],
    )
    for host in ("master01", "master02"):
        eni = cloud.enis[host]
        groups = [
            g["GroupId"]
            for g in cloud.ec2.describe_network_interfaces(NetworkInterfaceIds=[eni])["NetworkInterfaces"][0]["Groups"]
        ]
        cloud.ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=[*groups, own])
    report = verify(plan, env, rules)
    assert report.ok, blocked(report)


def test_node_specific_hand_rule_splits_the_class(aws: None) -> None:
    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    cloud.revoke_ipip_from_workers()
    cloud.ec2.authorize_security_group_ingress(
        GroupId=cloud.groups["master"],
        IpPermissions=[{"IpProtocol": "4", "FromPort": -1, "ToPort": -1, "IpRanges": [{"CidrIp": "10.0.2.32/32"}]}],
    )
    report = verify(plan, env, rules)
    bad = [c for c in report.checks if c.status == "blocked"]
    sources = {n.host for c in bad for n in c.source.nodes}
    assert sources == {"worker01", "worker03"}  # worker02 (10.0.2.32) is allowed by the hand-made rule


def test_source_dest_check_setting_is_idempotent(aws: None) -> None:
    from ket_infra.aws import discover, set_source_dest_check

    cloud, plan, env, _rules = build(EXAMPLES / "calico-routed.yaml")
    found = discover(plan, env)
    lines: list[str] = []
    targets = list(found.nodes)
    assert set_source_dest_check(env, targets, True, lines.append) == 5  # the Cloud turned them off
    assert set_source_dest_check(env, targets, True, lines.append) == 0
    assert len(lines) == 5 and all("source/dest check on" in ln for ln in lines)
    attr = cloud.ec2.describe_instance_attribute(InstanceId=cloud.instances["cp01"], Attribute="sourceDestCheck")
    assert attr["SourceDestCheck"]["Value"] is True


def test_routed_pod_egress_revoked_in_a_single_class(aws: None, tmp_path: Path) -> None:
    from tests.conftest import base_plan, node, write_yaml

    data = base_plan({"provider": "calico", "options": {"calico": {"mode": "routed"}}})
    data["master"] = {"expected_count": 2, "nodes": [node("n1", "10.0.1.21"), node("n2", "10.0.1.22")]}
    data["worker"] = {"expected_count": 2, "nodes": [node("n1", "10.0.1.21"), node("n2", "10.0.1.22")]}
    cloud, plan, env, rules = build(write_yaml(tmp_path / "plan.yaml", data))
    cloud.lock_down_default_group()
    assert verify(plan, env, rules).ok
    cloud.revoke("master-worker", "egress", lambda r: r["IpProtocol"] == "-1" and r.get("CidrIpv4") == "172.16.0.0/16")
    report = verify(plan, env, rules)
    assert blocked(report) == {("calico-pod-traffic", "pod_cidr", "master")}
    assert all(
        "no egress rule" in c.reason and "172.16.0.0/16" in c.reason for c in report.checks if c.status == "blocked"
    )


def test_least_privilege_udp_acl_is_not_blocked(aws: None, tmp_path: Path) -> None:
    # an ACL that opens exactly the flows (no udp ephemeral range) passes: udp has no return path to check
    from tests.conftest import base_plan, node, write_yaml

    data = base_plan({"provider": "weave"})
    data["etcd"]["nodes"] = [node("etcd01", "10.1.1.11")]
    data["master"]["nodes"] = [node("master01", "10.1.1.21")]
    data["worker"]["nodes"] = [node("worker01", "10.1.2.31")]
    cloud, plan, env, rules = build(write_yaml(tmp_path / "plan.yaml", data))
    assert len(cloud.subnets) == 2
    tcp_all = [
        {"RuleNumber": 100 + i, "Protocol": p, "RuleAction": "allow", "Egress": e, "CidrBlock": "10.0.0.0/8", **kw}
        for i, (p, e, kw) in enumerate(
            [
                ("6", False, {"PortRange": {"From": 0, "To": 65535}}),
                ("6", True, {"PortRange": {"From": 0, "To": 65535}}),
                ("17", False, {"PortRange": {"From": 6783, "To": 6784}}),
                ("17", True, {"PortRange": {"From": 6783, "To": 6784}}),
                ("50", False, {}),
                ("50", True, {}),
                ("1", False, {"IcmpTypeCode": {"Type": -1, "Code": -1}}),
                ("1", True, {"IcmpTypeCode": {"Type": -1, "Code": -1}}),
            ]
        )
    ]
    for cidr in cloud.subnets:
        cloud.own_acl(cidr, tcp_all)
    assert verify(plan, env, rules).ok
    # and without udp 6784 the Weave fast datapath is found blocked, both ways
    narrow = [e if e["Protocol"] != "17" else {**e, "PortRange": {"From": 6783, "To": 6783}} for e in tcp_all]
    for cidr in cloud.subnets:
        cloud.own_acl(cidr, narrow)
    assert {rule for rule, _s, _t in blocked(verify(plan, env, rules))} == {"weave-data"}


def test_acl_judges_sources_outside_the_cluster(aws: None) -> None:
    """The installer, API clients and ingress clients are CIDRs, not nodes: the target subnet's ACL still applies."""
    from dataclasses import replace

    plan = load_plan(EXAMPLES / "calico-overlay.yaml")
    env = replace(
        env_for(EXAMPLES / "calico-overlay.yaml"), api_cidrs=("192.0.2.0/24",), ingress_cidrs=("198.51.100.0/24",)
    )
    rules = layout(plan, env)
    cloud = Cloud(plan, rules)
    assert verify(plan, env, rules).ok

    def deny(number: int, cidr: str, port: int, egress: bool = False) -> dict[str, Any]:
        return {
            "RuleNumber": number,
            "Protocol": "6",
            "RuleAction": "deny",
            "Egress": egress,
            "CidrBlock": cidr,
            "PortRange": {"From": port, "To": port},
        }

    masters = cloud.own_acl("10.0.1.0/24", [deny(5, "10.0.9.5/32", 22), deny(6, "192.0.2.0/24", 6443), *allow_all()])
    others = cloud.own_acl("10.0.2.0/24", [deny(5, "198.51.100.0/24", 443), *allow_all()])
    report = verify(plan, env, rules)
    assert blocked(report) == {
        ("ssh", "installer_cidr", "etcd"),
        ("ssh", "installer_cidr", "master"),
        ("apiserver-clients", "api_cidrs", "master"),
        ("ingress-https", "ingress_cidrs", "ingress"),
    }
    reasons = {(c.rule, c.target.label): c.reason for c in report.checks if c.status == "blocked"}
    assert (
        reasons[("ssh", "etcd")]
        == f"network ACL {masters} rule 5 denies tcp 22 inbound ({cloud.subnets['10.0.1.0/24']})"
    )
    assert reasons[("ingress-https", "ingress")] == (
        f"network ACL {others} rule 5 denies tcp 443 inbound ({cloud.subnets['10.0.2.0/24']})"
    )
    out = report.as_json()
    ssh = [c for c in out["checks"] if c["rule"] == "ssh" and c["target_role"] == "master"]
    assert all(c["status"] == "blocked" and c["source_nodes"] == ["10.0.9.5/32"] for c in ssh)
    assert sorted(n for c in ssh for n in c["target_nodes"]) == ["master01", "master02"]
    assert sum(c["pairs"] for c in ssh) == 2

    # the return path: the API's answers to the clients' ephemeral ports are cut
    cloud.own_acl("10.0.1.0/24", [deny(7, "192.0.2.0/24", 50000, egress=True), *allow_all()])
    cloud.own_acl("10.0.2.0/24", allow_all())
    report = verify(plan, env, rules)
    assert blocked(report) == {("apiserver-clients", "api_cidrs", "master")}
    assert (
        "denies the return path tcp 32768-60999 outbound"
        in report.checks[next(i for i, c in enumerate(report.checks) if c.status == "blocked")].reason
    )


def test_acl_denies_the_echo_reply(aws: None) -> None:
    """Preflight pings need the echo reply back: an ACL that drops icmp type 0 outbound blocks them."""
    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    deny_reply = {
        "RuleNumber": 5,
        "Protocol": "1",
        "RuleAction": "deny",
        "Egress": True,
        "CidrBlock": "0.0.0.0/0",
        "IcmpTypeCode": {"Type": 0, "Code": -1},
    }
    acl = cloud.own_acl("10.0.1.0/24", [deny_reply, *allow_all()])
    report = verify(plan, env, rules)
    # pings from the other subnet to etcd and masters; pings inside 10.0.1.0/24 never meet the ACL
    assert blocked(report) == {("ping-worker-master", "worker", "master"), ("ping-ingress-master", "ingress", "master")}
    assert all(
        c.reason
        == f"network ACL {acl} rule 5 denies the return path icmp type 0 outbound ({cloud.subnets['10.0.1.0/24']})"
        for c in report.checks
        if c.status == "blocked"
    )


def routed_pair(tmp_path: Path, worker_ip: str = "10.0.1.31") -> Path:
    from tests.conftest import base_plan, node, write_yaml

    data = base_plan({"provider": "calico", "options": {"calico": {"mode": "routed"}}})
    data["worker"]["nodes"] = [node("worker01", worker_ip)]
    return write_yaml(tmp_path / "plan.yaml", data)


def test_routed_pod_ingress_revoked(aws: None, tmp_path: Path) -> None:
    cloud, plan, env, rules = build(routed_pair(tmp_path))
    assert verify(plan, env, rules).ok
    cloud.revoke("worker", "ingress", lambda r: r["IpProtocol"] == "-1" and r.get("CidrIpv4") == "172.16.0.0/16")
    report = verify(plan, env, rules)
    assert blocked(report) == {("calico-pod-traffic", "pod_cidr", "worker")}
    (check,) = [c for c in report.checks if c.status == "blocked"]
    assert check.reason == f"no ingress rule on {cloud.on_node('worker')} allows all traffic from 172.16.0.0/16"
    assert check.as_json()["source_nodes"] == ["172.16.0.0/16"] and check.as_json()["target_nodes"] == ["worker01"]


def test_routed_mode_across_subnets_is_blocked(aws: None, tmp_path: Path) -> None:
    """Routed pod traffic goes from node to node unencapsulated: the VPC routes no pod address between subnets.

    plan refuses this layout; verify judges it blocked, naming both subnets, whatever the groups and ACLs allow.
    """
    import yaml

    data = yaml.safe_load((EXAMPLES / "calico-routed.yaml").read_text())
    data["worker"]["nodes"][1]["ip"] = "10.0.4.22"  # node02 in a second subnet
    cloud, plan, env, rules = build(write_yaml(tmp_path / "plan.yaml", data))
    here, there = cloud.subnets["10.0.3.0/24"], cloud.subnets["10.0.4.0/24"]
    report = verify(plan, env, rules)
    assert not report.ok
    assert blocked(report) == {
        ("calico-pod-traffic", "pod_cidr", "master"),
        ("calico-pod-traffic", "pod_cidr", "worker"),
    }
    bad = [c for c in report.checks if c.status == "blocked"]
    # every class of targets meets node02's subnet, from one side or the other; the rest is open
    assert {n.host for c in bad for n in c.target.nodes} == {"cp01", "cp02", "cp03", "node01", "node02"}
    for c in bad:
        ends = (here, there) if c.target.rep is not None and c.target.rep.subnet_id == there else (there, here)
        assert c.reason == (
            f"pod traffic from the kubelet nodes in {ends[0]} to those in {ends[1]}: Calico routed mode needs every "
            "kubelet node in one subnet (the VPC routes no pod address between subnets); use mode overlay (IP-in-IP) "
            "or move the nodes into one subnet"
        ), c.reason
    assert {c.rule for c in report.checks if c.status == "blocked"} == {"calico-pod-traffic"}
    # (the same nodes in one subnet pass: test_text_report_when_all_is_open)


def test_an_acl_allowing_part_of_a_named_cidr_leaves_the_rest_blocked(aws: None) -> None:
    """An allow entry for 10.9.0.0/17 does not open a flow from ingress_cidrs 10.9.0.0/16: the other half is denied."""
    plan = load_plan(EXAMPLES / "calico-overlay.yaml")
    env = replace(env_for(EXAMPLES / "calico-overlay.yaml"), ingress_cidrs=("10.9.0.0/16",))
    rules = layout(plan, env)
    cloud = Cloud(plan, rules)
    assert verify(plan, env, rules).ok

    def entries(clients: str) -> list[dict[str, Any]]:
        return [
            {"RuleNumber": 100, "Protocol": "-1", "RuleAction": "allow", "Egress": False, "CidrBlock": "10.0.0.0/16"},
            {"RuleNumber": 110, "Protocol": "-1", "RuleAction": "allow", "Egress": False, "CidrBlock": clients},
            {"RuleNumber": 100, "Protocol": "-1", "RuleAction": "allow", "Egress": True, "CidrBlock": "0.0.0.0/0"},
        ]

    acl = cloud.own_acl("10.0.2.0/24", entries("10.9.0.0/17"))
    report = verify(plan, env, rules)
    assert blocked(report) == {
        ("ingress-http", "ingress_cidrs", "ingress"),
        ("ingress-https", "ingress_cidrs", "ingress"),
    }
    subnet = cloud.subnets["10.0.2.0/24"]
    assert {c.reason for c in report.checks if c.status == "blocked"} == {
        f"no network ACL {acl} entry allows tcp {port} inbound ({subnet}): default deny" for port in (80, 443)
    }
    cloud.own_acl("10.0.2.0/24", entries("10.9.0.0/16"))
    assert verify(plan, env, rules).ok


def test_routed_pod_egress_revoked_on_another_node(aws: None, tmp_path: Path) -> None:
    cloud, plan, env, rules = build(routed_pair(tmp_path))
    cloud.lock_down_default_group()
    assert verify(plan, env, rules).ok
    cloud.revoke("worker", "egress", lambda r: r["IpProtocol"] == "-1" and r.get("CidrIpv4") == "172.16.0.0/16")
    report = verify(plan, env, rules)
    # the worker's pods can no longer reach the master's pods; the worker's own pods still reach each other
    assert blocked(report) == {("calico-pod-traffic", "pod_cidr", "master")}
    assert [c.reason for c in report.checks if c.status == "blocked"] == [
        f"no egress rule on {cloud.on_node('worker')} allows all traffic to 172.16.0.0/16"
    ]


def test_host_settings_json(aws: None) -> None:
    cloud, plan, env, rules = build(EXAMPLES / "calico-routed.yaml")
    cloud.ec2.modify_instance_attribute(InstanceId=cloud.instances["node02"], SourceDestCheck={"Value": True})
    doc = verify(plan, env, rules).as_json()
    assert doc["ok"] is False
    by_node = {h["node"]: h for h in doc["host_settings"]}
    assert by_node["node02"] == {
        "node": "node02",
        "instance_id": cloud.instances["node02"],
        "source_dest_check": True,
        "expected": False,
        "status": "blocked",
    }
    assert by_node["cp01"] == {
        "node": "cp01",
        "instance_id": cloud.instances["cp01"],
        "source_dest_check": False,
        "expected": False,
        "status": "allowed",
    }


def test_text_report_names_a_few_nodes_and_counts_the_rest(aws: None, tmp_path: Path) -> None:
    from tests.conftest import base_plan, node, write_yaml

    data = base_plan({"provider": "weave"})
    data["worker"] = {"expected_count": 7, "nodes": [node(f"worker{i:02}", f"10.0.1.{40 + i}") for i in range(1, 8)]}
    cloud, plan, env, rules = build(write_yaml(tmp_path / "plan.yaml", data))
    cloud.revoke(
        "master",
        "ingress",
        lambda r: (
            r["IpProtocol"] == "tcp"
            and r["FromPort"] == 6443
            and r.get("ReferencedGroupInfo", {}).get("GroupId") == cloud.groups["worker"]
        ),
    )
    report = verify(plan, env, rules)
    text = text_report(report, "lab", plan.cluster)
    reason = f"no ingress rule on {cloud.on_node('master')} allows tcp 6443 from the nodes in {cloud.on_node('worker')}"
    assert [c.reason for c in report.checks if c.status == "blocked"] == [reason]
    assert text.split("\n")[1:] == [
        "",
        f"BLOCKED: {reason}",
        # worker01 is worker[0]: the preflight rule from its address still lets it reach 6443
        "  apiserver: tcp 6443 from worker (worker02, worker03, worker04, worker05, worker06 and 1 more) "
        "to master (master01)",
        "",
        "FAILED: fix the causes above, then run verify again",
        "",
    ]


def test_checks_cover_every_node_pair_once(aws: None, tmp_path: Path) -> None:
    """Node pairs per required flow, counted by hand for 5 nodes (etcd01, master01, w1-w3; Weave)."""
    from collections import Counter

    from tests.conftest import base_plan, node, write_yaml

    data = base_plan({"provider": "weave"})
    data["worker"] = {
        "expected_count": 3,
        "nodes": [node("w1", "10.0.1.31"), node("w2", "10.0.1.32"), node("w3", "10.0.1.33")],
    }
    _cloud, plan, env, rules = build(write_yaml(tmp_path / "plan.yaml", data))
    report = verify(plan, env, rules)
    pairs: Counter[str] = Counter()
    for c in report.as_json()["checks"]:
        pairs[c["rule"]] += c["pairs"]
        if not c["source_role"].endswith("_cidr"):
            assert c["source_node"] != c["target_node"], c  # a pair is two different nodes
    kubelet = 4  # master01, w1, w2, w3
    assert dict(pairs) == {
        "etcd-client": 1,  # master01 -> etcd01
        "apiserver": 3,  # w1-w3 -> master01 (master01 itself needs no network)
        "apiserver-installer": 1,
        "kubelet-api": 3,  # master01 -> w1-w3
        "kubelet-scrape": 9,  # w1-w3 -> the three other kubelet nodes each (metrics-server, heapster)
        "downloads-http": 5,  # every node -> egress_cidrs
        "downloads-https": 5,
        "ssh": 5,  # installer -> every node
        "inspector": 8,  # master[0] and worker[0] (w1) -> the 4 other nodes each
        "inspector-etcd": 2,
        "inspector-etcd-networking-client": 2,
        "inspector-etcd-networking-peer": 2,
        "inspector-apiserver": 1,  # w1 -> master01
        "inspector-scheduler-controller": 1,
        "inspector-kubelet": 6,  # master01 -> w1-w3, w1 -> master01, w2, w3
        "inspector-kube-proxy": 6,
        "ping-master-etcd": 1,
        "ping-worker-master": 3,
        "ping-worker-worker": 6,
        "weave-control": kubelet * (kubelet - 1),
        "weave-data": kubelet * (kubelet - 1),
    }
    assert report.nodes == 5 and report.ok
    text = text_report(report, "lab", plan.cluster)
    assert text.startswith(
        f"verify lab (cluster test): {len(report.checks)} checks covering {sum(pairs.values())} node pairs"
    )


INTERNET = "egress_cidrs (not set: the internet)"


def test_downloads_are_judged_against_the_internet_when_egress_cidrs_is_unset(aws: None) -> None:
    """A default install downloads packages and images: verify says when nothing lets them out, and which key opens it."""
    from dataclasses import replace

    plan = load_plan(EXAMPLES / "calico-overlay.yaml")
    env = replace(env_for(EXAMPLES / "calico-overlay.yaml"), egress_cidrs=())
    rules = layout(plan, env)
    assert not [r for r in rules.rules if r.peer.cidr == "0.0.0.0/0"]  # judged, never opened
    cloud = Cloud(plan, rules)
    assert verify(plan, env, rules).ok  # the VPC's default group allows all egress, as AWS's does
    cloud.lock_down_default_group()
    report = verify(plan, env, rules)
    roles = {"etcd", "master", "worker", "ingress", "storage"}
    assert blocked(report) == {
        (name, role, INTERNET) for name in ("downloads-http", "downloads-https") for role in roles
    } | {("aws-api", role, "aws_api (not set: the internet)") for role in roles - {"etcd"}}  # cloud_provider aws
    https = next(c for c in report.checks if c.status == "blocked" and c.rule == "downloads-https")
    assert "allows tcp 443 to 0.0.0.0/0" in https.reason
    assert https.reason.endswith("; set egress_cidrs so ket-infra opens it")
    assert https.as_json()["target_nodes"] == ["0.0.0.0/0"]
    text = text_report(report, "lab", plan.cluster)
    assert f"downloads-https: tcp 443 from etcd (etcd01, etcd02, etcd03) to {INTERNET} (0.0.0.0/0)" in text


def test_downloads_meet_the_acls_both_ways(aws: None) -> None:
    """Outbound to egress_cidrs crosses the node subnet's ACL out, and its replies come back in."""
    plan = load_plan(EXAMPLES / "calico-overlay.yaml")
    env = env_for(EXAMPLES / "calico-overlay.yaml")
    rules = layout(plan, env)
    assert {r.name for r in rules.rules if r.peer.cidr == PROXY} >= {"etcd-out-tcp-80-to-10.0.9.10-32"}
    cloud = Cloud(plan, rules)
    cloud.lock_down_default_group()
    assert verify(plan, env, rules).ok
    out443 = {
        "RuleNumber": 5,
        "Protocol": "6",
        "RuleAction": "deny",
        "Egress": True,
        "CidrBlock": PROXY,
        "PortRange": {"From": 443, "To": 443},
    }
    replies = {**out443, "RuleNumber": 6, "Egress": False, "PortRange": {"From": 1024, "To": 65535}}
    acl = cloud.own_acl("10.0.1.0/24", [out443, *allow_all()])
    report = verify(plan, env, rules)
    assert blocked(report) == {("downloads-https", r, "egress_cidrs") for r in ("etcd", "master")} | {
        ("aws-api", "master", "aws_api")  # cloud_provider aws: the AWS API through egress_cidrs
    }
    assert all(
        f"network ACL {acl} rule 5 denies tcp 443 outbound" in c.reason for c in report.checks if c.status == "blocked"
    )
    cloud.own_acl("10.0.1.0/24", [replies, *allow_all()])
    report = verify(plan, env, rules)
    # the replies to 80 and 443 come back to ephemeral ports, and the ACL drops them
    assert blocked(report) == {
        (n, r, "egress_cidrs") for n in ("downloads-http", "downloads-https") for r in ("etcd", "master")
    } | {("aws-api", "master", "aws_api")}
    assert all("the return path" in c.reason for c in report.checks if c.status == "blocked")


def test_a_disconnected_install_reaches_its_registry(aws: None, tmp_path: Path) -> None:
    """disconnected_installation with preinstalled packages: only the private registry, at the plan's address and port."""
    from dataclasses import replace

    from tests.conftest import base_plan, write_yaml

    data = base_plan({"provider": "weave"})
    data["cluster"].update(disconnected_installation=True, disable_package_installation=True)
    data["docker_registry"] = {"server": "10.0.9.20:8443"}
    path = write_yaml(tmp_path / "plan.yaml", data)
    plan = load_plan(path)
    env = replace(env_for(path), egress_cidrs=())
    rules = layout(plan, env)
    outbound = {
        (r.group, r.protocol, r.from_port, r.peer.cidr)
        for r in rules.rules
        if r.peer.cidr is not None and r.direction == "egress"
    }
    assert outbound == {(g, "tcp", 8443, "10.0.9.20/32") for g in ("etcd", "master", "worker")}
    assert not [w for w in rules.warnings if "egress_cidrs" in w]
    cloud = Cloud(plan, rules)
    cloud.lock_down_default_group()
    report = verify(plan, env, rules)
    assert report.ok and {c.rule for c in report.checks if c.target.cidr} == {"registry"}
    cloud.revoke("worker", "egress", lambda r: r.get("CidrIpv4") == "10.0.9.20/32")
    assert blocked(verify(plan, env, rules)) == {("registry", "worker", "registry")}


def test_junit_has_a_case_per_checked_class_and_a_failure_per_blocked_one(aws: None) -> None:
    from xml.etree import ElementTree as ET

    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    cloud.revoke_ipip_from_workers()
    report = verify(plan, env, rules)
    root = ET.fromstring(junit_report(report, "lab", plan.cluster, ["mind the gap"]))
    (suite,) = root.findall("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == len(report.checks) == int(suite.get("tests", ""))
    failed = [c for c in cases if c.find("failure") is not None]
    bad = [c for c in report.checks if c.status == "blocked"]
    assert bad and len(failed) == len(bad) == int(root.get("failures", "")) == int(suite.get("failures", ""))
    for case, check in zip(failed, bad, strict=True):
        failure = case.find("failure")
        assert failure is not None and failure.get("message") == check.reason
        assert case.get("classname") == "ket-infra.lab.calico-ipip"
        assert case.get("name", "").startswith("calico-ipip: IP-in-IP (4) from worker to master (worker0")
        shown = check.as_json()
        assert failure.text == (
            f"{check.reason}\nsource nodes: {', '.join(shown['source_nodes'])}\n"
            f"target nodes: {', '.join(shown['target_nodes'])}"
        )
        assert set(shown["source_nodes"]) <= {"worker01", "worker02", "worker03"}
    # a class of two workers is named whole, in order
    assert sum(1 for f in root.iter("failure") if "source nodes: worker02, worker03\n" in (f.text or "")) == 2
    bgp = [c for c in cases if c.get("classname") == "ket-infra.lab.calico-bgp"]
    assert bgp and all(c.get("name", "").startswith("calico-bgp: tcp 179 from ") for c in bgp)
    assert suite.findtext("system-out") == "warning: mind the gap"
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props == {"nodes": str(report.nodes), "aws_api_calls": str(report.api_calls)}
    # every case carries a time (an even share of the one reading that judged them all), the suite the whole
    assert 0 < float(suite.get("time", "")) == pytest.approx(report.seconds, abs=0.001)
    assert all(float(c.get("time", "")) == pytest.approx(report.seconds / len(cases), abs=0.001) for c in cases)
    singles = [c.get("name", "") for c in cases if c.get("name", "").endswith(", 1 node pair)")]
    assert singles and not [c for c in cases if c.get("name", "").endswith(", 1 node pairs)")]


def test_junit_reports_a_wrong_host_setting(aws: None) -> None:
    from xml.etree import ElementTree as ET

    cloud, plan, env, rules = build(EXAMPLES / "calico-routed.yaml")
    cloud.ec2.modify_instance_attribute(InstanceId=cloud.instances["node02"], SourceDestCheck={"Value": True})
    report = verify(plan, env, rules)
    root = ET.fromstring(junit_report(report, "lab", plan.cluster))
    hosts = [c for c in root.iter("testcase") if c.get("classname") == "ket-infra.lab.host-settings"]
    assert len(hosts) == len(report.host_settings) > 1
    (failed,) = [c for c in hosts if c.find("failure") is not None]
    assert failed.get("name") == f"source/dest check off on node02 ({cloud.instances['node02']})"
    message = failed.find("failure").get("message", "")  # type: ignore[union-attr]
    assert message == "source/dest check is on, must be off (Calico routed mode); run ket-infra apply to set it"
    assert root.get("failures") == "1"


def test_junit_of_a_clean_cluster_has_no_failure(aws: None) -> None:
    from xml.etree import ElementTree as ET

    _cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    root = ET.fromstring(junit_report(verify(plan, env, rules), "lab", plan.cluster))
    assert root.get("failures") == "0" and int(root.get("tests", "0")) > 0
    assert not list(root.iter("failure")) and root.find("testsuite/system-out") is None


def test_node_lists_are_sorted_whatever_the_plan_order(aws: None, tmp_path: Path) -> None:
    import yaml

    data = yaml.safe_load((EXAMPLES / "calico-overlay.yaml").read_text())
    data["worker"]["nodes"].reverse()
    shuffled = tmp_path / "plan.yaml"
    shuffled.write_text(yaml.safe_dump(data))
    cloud, plan, env, rules = build(shuffled)
    assert next(n.host for n in plan.nodes if "worker" in n.roles) == "worker03"
    cloud.revoke_ipip_from_workers()
    report = verify(plan, env, rules)
    text = text_report(report, "lab", plan.cluster)
    assert "calico-ipip: IP-in-IP (4) from worker (worker01, worker02, worker03) to master (master01, master02)" in text
    for check in report.as_json()["checks"]:
        if check["status"] == "blocked":
            assert check["source_nodes"] == sorted(check["source_nodes"])


def test_permissions_are_read_field_by_field() -> None:
    """What describe_security_groups says, as verify judges it: ports only where they mean ports."""
    from ket_infra.verify import Permission, _net, _permissions

    described = [
        {
            "IpProtocol": "tcp",
            "FromPort": 100,
            "ToPort": 178,
            "UserIdGroupPairs": [{"GroupId": "sg-peer"}, {"UserId": "123456789012"}],
            "IpRanges": [{"CidrIp": "10.0.0.0/8"}, {"Description": "no CIDR"}],
        },
        {"IpProtocol": "udp", "FromPort": 8472, "ToPort": 8472, "IpRanges": [{"CidrIp": "10.1.0.0/16"}]},
        {"IpProtocol": "icmp", "FromPort": 8, "ToPort": 0, "UserIdGroupPairs": [{"GroupId": "sg-peer"}]},
        {"IpProtocol": "4", "FromPort": -1, "ToPort": -1, "UserIdGroupPairs": [{"GroupId": "sg-peer"}]},
        {"IpProtocol": "-1", "FromPort": 5, "ToPort": 6},
        {"FromPort": 1, "ToPort": 2},  # no protocol named: all traffic
    ]
    assert _permissions("sg-own", described) == [
        Permission("sg-own", "tcp", 100, 178, frozenset({"sg-peer"}), (_net("10.0.0.0/8"),)),
        Permission("sg-own", "udp", 8472, 8472, frozenset(), (_net("10.1.0.0/16"),)),
        Permission("sg-own", "icmp", 8, 0, frozenset({"sg-peer"}), ()),
        Permission("sg-own", "4", None, None, frozenset({"sg-peer"}), ()),
        Permission("sg-own", "-1", None, None, frozenset(), ()),
        Permission("sg-own", "-1", None, None, frozenset(), ()),
    ]


def test_a_few_names_then_how_many_more() -> None:
    from ket_infra.report import listed

    five = ["a", "b", "c", "d", "e"]
    assert listed(five, 5) == "a, b, c, d, e"
    assert listed([*five, "f"], 5) == "a, b, c, d, e and 1 more"
    assert listed(["a", "b", "c"], limit=2) == "a, b and 1 more"


def test_a_check_names_a_pair_of_two_different_nodes() -> None:
    from ket_infra.aws import NodeInterface
    from ket_infra.verify import Check, Endpoint

    def nodes(*hosts: str) -> tuple[NodeInterface, ...]:
        return tuple(
            NodeInterface(h, f"10.0.0.{i}", f"i-{h}", f"eni-{h}", "subnet-1", "vpc-1", (), True)
            for i, h in enumerate(hosts, 1)
        )

    workers = Endpoint("worker", nodes("worker01", "worker02"))
    masters = Endpoint("master", nodes("master01", "master02"))
    lone = Endpoint("worker", nodes("worker01"))
    within = Check("x", "tcp", 1, 1, workers, workers).as_json()
    assert (within["source_node"], within["target_node"]) == ("worker01", "worker02")  # not a node to itself
    across = Check("x", "tcp", 1, 1, workers, masters).as_json()
    assert (across["source_node"], across["target_node"]) == ("worker01", "master01")
    alone = Check("x", "tcp", 1, 1, lone, lone).as_json()
    assert (alone["source_node"], alone["target_node"]) == ("worker01", "worker01")


def test_acl_entries_judged_one_by_one() -> None:
    from ket_infra.verify import AclEntry, Traffic, _acl_verdict, _net

    anywhere, peer = _net("0.0.0.0/0"), _net("10.0.1.5/32")

    def entry(number: int, protocol: str, allow: bool = True, **kw: object) -> AclEntry:
        return AclEntry(number, False, protocol, allow, anywhere, kw.get("ports"), kw.get("icmp"))  # type: ignore[arg-type]

    echo = Traffic("icmp", (8, 0))
    assert _acl_verdict([entry(100, "icmp", icmp=(-1, -1))], False, echo, peer) is True  # any type, any code
    assert _acl_verdict([entry(100, "icmp", icmp=(8, -1))], False, echo, peer) is True
    assert _acl_verdict([entry(100, "icmp", icmp=(0, -1))], False, echo, peer) is None  # echo reply only
    bgp = Traffic("tcp", (179, 179))
    # an all-protocol entry opens every port, whatever port range it carries
    assert _acl_verdict([entry(100, "-1", ports=(5, 6))], False, bgp, peer) is True
    assert _acl_verdict([entry(100, "tcp", ports=(5, 6))], False, bgp, peer) is None
    # all traffic: an allow of one protocol neither decides nor stops the search
    everything = Traffic("all", None)
    assert _acl_verdict([entry(90, "tcp", ports=(1, 2)), entry(100, "-1")], False, everything, peer) is True
    deny = entry(80, "udp", allow=False, ports=(1, 2))
    assert _acl_verdict([deny, entry(100, "-1")], False, everything, peer) == deny


def test_a_node_with_several_roles_is_named_by_the_role_the_flow_needs(aws: None) -> None:
    cloud, plan, env, rules = build(EXAMPLES / "calico-routed.yaml")  # etcd stacked on the masters
    masters = cloud.groups["etcd-master"]
    cloud.revoke(
        "worker",
        "ingress",
        lambda r: r["IpProtocol"] == "tcp" and r.get("ReferencedGroupInfo", {}).get("GroupId") == masters,
    )
    bad = blocked(verify(plan, env, rules))
    assert bad and {source for _rule, source, _target in bad} == {"master"}, bad
    assert {target for _rule, _source, target in bad} == {"worker"}


def test_a_blocked_cni_flow_ends_with_the_cnis_own_checks(aws: None) -> None:
    from ket_infra.cni_facts import NODE_CHECKS
    from ket_infra.verify import node_checks

    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    assert node_checks(verify(plan, env, rules), plan) == []  # nothing blocked
    cloud.revoke("worker", "ingress", lambda r: r.get("FromPort") == 10250)  # the kubelet API: KET's, not the CNI's
    report = verify(plan, env, rules)
    assert not report.ok and node_checks(report, plan) == []
    cloud.revoke_ipip_from_workers()
    report = verify(plan, env, rules)
    checks = node_checks(report, plan)
    assert checks == list(NODE_CHECKS["calico"]) and "calico/ctl:v1.6.4 node status" in checks[0]
    text = text_report(report, "lab", plan.cluster, checks).splitlines()
    at = text.index("the CNI's own view, once the cloud lets its flows through (KET's documented checks):")
    assert text[at + 1 : at + 3] == [f"  {c}" for c in checks] and text[-1].startswith("FAILED: ")


def test_the_return_path_is_judged_against_the_nodes_ephemeral_ports(aws: None) -> None:
    """Answers to the installer leave the workers' subnet for its ephemeral ports: Linux's 32768-60999
    by default (the environment's ephemeral_ports), not all of 1024-65535."""
    from dataclasses import replace

    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")

    def answers_to_the_installer(lo: int, hi: int) -> list[dict[str, Any]]:
        tcp = {"Protocol": "6", "Egress": True, "CidrBlock": "10.0.9.5/32"}
        return [
            {**tcp, "RuleNumber": 10, "RuleAction": "allow", "PortRange": {"From": lo, "To": hi}},
            {**tcp, "RuleNumber": 20, "RuleAction": "deny", "PortRange": {"From": 0, "To": 65535}},
            *allow_all(),
        ]

    cloud.own_acl("10.0.2.0/24", answers_to_the_installer(32768, 60999))
    assert verify(plan, env, rules).ok
    cloud.own_acl("10.0.2.0/24", answers_to_the_installer(1024, 30000))
    report = verify(plan, env, rules)
    assert {(src, dst) for _rule, src, dst in blocked(report)} == {
        ("installer_cidr", "worker"),
        ("installer_cidr", "ingress"),
        ("installer_cidr", "storage"),
    }
    assert all("the return path tcp 32768-60999 outbound" in c.reason for c in report.checks if c.status == "blocked")
    # nodes set to another range are judged by that one
    assert verify(plan, replace(env, ephemeral_ports=(1024, 30000)), rules).ok


def test_a_flow_through_a_prefix_list_is_open(aws: None) -> None:
    cloud, plan, env, rules = build(EXAMPLES / "calico-overlay.yaml")
    installer = cloud.ec2.create_managed_prefix_list(
        PrefixListName="installer", AddressFamily="IPv4", MaxEntries=5, Entries=[{"Cidr": "10.0.9.5/32"}]
    )["PrefixList"]["PrefixListId"]
    for gid in cloud.groups.values():
        found = cloud.ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [gid]}])
        direct = [r for r in found["SecurityGroupRules"] if r.get("CidrIpv4") == "10.0.9.5/32" and not r["IsEgress"]]
        for r in direct:
            cloud.ec2.revoke_security_group_ingress(GroupId=gid, SecurityGroupRuleIds=[r["SecurityGroupRuleId"]])
            cloud.ec2.authorize_security_group_ingress(
                GroupId=gid,
                IpPermissions=[
                    {
                        "IpProtocol": r["IpProtocol"],
                        "FromPort": r["FromPort"],
                        "ToPort": r["ToPort"],
                        "PrefixListIds": [{"PrefixListId": installer}],
                    }
                ],
            )
    counter = Counter()
    report = verify(plan, env, rules, counter)
    assert report.ok, [c.reason for c in report.checks if c.status == "blocked"]
    assert counter.calls["GetManagedPrefixListEntries"] == 1
