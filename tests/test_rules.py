"""Flows and layout, table-driven per CNI and mode: the exact rules each needs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from ket_infra.environment import AwsConfig, Environment
from ket_infra.errors import QuotaError
from ket_infra.flows import Flow
from ket_infra.layout import CONTIV_LIMIT, RULE_QUOTA, RuleSet, layout
from ket_infra.plan import load_plan
from tests.conftest import base_plan, node

ENV = Environment(
    name="t",
    path="t.yaml",
    plan_file=Path("plan.yaml"),
    aws=AwsConfig("eu-west-1"),
    egress_cidrs=("10.0.0.10/32",),
    preflight=False,
)


def rules_of(rs: RuleSet, group: str, direction: str = "ingress") -> set[tuple[str, str, str]]:
    return {(r.protocol, r.ports, r.peer.label) for r in rs.rules if r.group == group and r.direction == direction}


def build(plan_file, cni: dict[str, Any] | None, env: Environment | None = ENV, **groups: Any) -> RuleSet:
    data = base_plan(cni)
    data.update(groups)
    return layout(load_plan(plan_file(data)), env)


KET_WORKER = {("tcp", "10250", "master"), ("tcp", "10250", "worker")}
KET_ETCD = {("tcp", "2379", "master"), ("tcp", "2380", "etcd")}
NET_ETCD = {("tcp", "6660", "etcd"), ("tcp", "6666", "master"), ("tcp", "6666", "worker")}
BGP = {("tcp", "179", "master"), ("tcp", "179", "worker")}
IPIP = {("4", "-", "master"), ("4", "-", "worker")}
WEAVE = {
    ("tcp", "6783", "master"),
    ("tcp", "6783", "worker"),
    ("udp", "6783-6784", "master"),
    ("udp", "6783-6784", "worker"),
}
ESP = {("50", "-", "master"), ("50", "-", "worker")}
CONTIV_WORKER = {
    ("udp", "4789", "master"),
    ("udp", "4789", "worker"),
    ("tcp", "9002-9003", "master"),
}

CASES = [
    (
        "calico overlay",
        {"provider": "calico", "options": {"calico": {"mode": "overlay"}}},
        KET_WORKER | BGP | IPIP,
        KET_ETCD | NET_ETCD,
    ),
    ("legacy default", None, KET_WORKER | BGP | IPIP, KET_ETCD | NET_ETCD),
    (
        "calico routed",
        {"provider": "calico", "options": {"calico": {"mode": "routed"}}},
        # node-to-pod traffic opens every tcp and udp port between kubelet nodes; 10250 and 179 merge in
        {(p, "0-65535", g) for p in ("tcp", "udp") for g in ("master", "worker")} | {("all", "all", "172.16.0.0-16")},
        KET_ETCD | NET_ETCD,
    ),
    ("weave", {"provider": "weave"}, KET_WORKER | WEAVE, KET_ETCD),
    (
        "weave encrypted",
        {"provider": "weave", "options": {"weave": {"password": "pw"}}},
        KET_WORKER | WEAVE | ESP,
        KET_ETCD,
    ),
    ("contiv", {"provider": "contiv"}, KET_WORKER | CONTIV_WORKER, KET_ETCD | NET_ETCD),
    ("custom", {"provider": "custom"}, KET_WORKER, KET_ETCD),
    ("disabled", {"disable": True}, KET_WORKER, KET_ETCD),
]


@pytest.mark.parametrize(("case", "cni", "worker", "etcd"), CASES, ids=[c[0] for c in CASES])
def test_cni_rules(plan_file, case: str, cni: dict[str, Any] | None, worker: set[Any], etcd: set[Any]) -> None:
    rs = build(plan_file, cni)
    assert rules_of(rs, "worker") == worker
    assert rules_of(rs, "etcd") == etcd


def test_contiv_master_ports_merge_into_one_range(plan_file) -> None:
    rs = build(plan_file, {"provider": "contiv"})
    master = rules_of(rs, "master")
    # on a master, 9001 (netmaster) touches 9002-9003 (its agent) for the masters; workers reach 9001 only
    assert ("tcp", "9001-9003", "master") in master
    assert ("tcp", "9001", "worker") in master
    assert ("tcp", "9999", "worker") in master
    assert ("tcp", "9002-9003", "master") in rules_of(rs, "worker")
    # agents never call agents
    assert not [
        r
        for r in rs.rules
        if r.from_port == 9002 and "worker" in (r.group, r.peer.group) and "master" not in (r.group, r.peer.group)
    ]


def test_weave_never_opens_tcp_6784(plan_file) -> None:
    rs = build(plan_file, {"provider": "weave", "options": {"weave": {"password": "pw"}}})
    for r in rs.rules:
        if r.protocol == "tcp" and r.from_port is not None and r.to_port is not None:
            assert not r.from_port <= 6784 <= r.to_port, r


def test_every_ingress_between_groups_has_its_egress_twin(plan_file) -> None:
    rs = build(plan_file, {"provider": "weave", "options": {"weave": {"password": "pw"}}})
    egress = {(r.group, r.protocol, r.ports, r.peer.group) for r in rs.rules if r.direction == "egress"}
    for r in rs.rules:
        if r.direction == "ingress" and r.peer.group is not None:
            assert (r.peer.group, r.protocol, r.ports, r.group) in egress, r


def test_routed_mode_turns_source_dest_check_off_on_kubelet_groups(plan_file) -> None:
    rs = build(plan_file, {"provider": "calico", "options": {"calico": {"mode": "routed"}}})
    assert {(h.group, h.source_dest_check) for h in rs.host_settings} == {("master", False), ("worker", False)}
    assert ("all", "all", "172.16.0.0-16") in rules_of(rs, "worker", "egress")
    assert any("one subnet" in w for w in rs.warnings)
    all_rules = [r for r in rs.rules if r.protocol == "all"]
    assert all(r.peer.cidr == "172.16.0.0/16" for r in all_rules)


def test_overlay_has_no_host_settings(plan_file) -> None:
    assert build(plan_file, None).host_settings == ()


def test_stacked_etcd_master_gets_one_group(plan_file) -> None:
    rs = build(plan_file, None, master={"expected_count": 1, "nodes": [node("etcd01", "10.0.1.11")]})
    assert [g.name for g in rs.groups] == ["etcd-master", "worker"]
    etcd_master = rules_of(rs, "etcd-master")
    # etcd client from masters is a self-reference, merged with the peer port
    assert ("tcp", "2379-2380", "etcd-master") in etcd_master
    assert ("tcp", "6666", "worker") in etcd_master


def test_environment_cidrs(plan_file) -> None:
    env = replace(ENV, installer_cidr="10.9.0.5/32", ingress_cidrs=("0.0.0.0/0",), api_cidrs=("10.8.0.0/24",))
    rs = build(plan_file, None, env, ingress={"expected_count": 1, "nodes": [node("ingress01", "10.0.1.41")]})
    for group in ("etcd", "master", "worker", "ingress"):
        assert ("tcp", "22", "10.9.0.5-32") in rules_of(rs, group)
    assert {("tcp", "6443", "10.9.0.5-32"), ("tcp", "6443", "10.8.0.0-24")} <= rules_of(rs, "master")
    world = [r for r in rs.rules if r.peer.cidr == "0.0.0.0/0"]
    assert {(r.group, r.ports) for r in world} == {("ingress", "80"), ("ingress", "443")}


EVERY_ROLE = {
    "ingress": {"expected_count": 1, "nodes": [node("ingress01", "10.0.1.41")]},
    "storage": {"expected_count": 1, "nodes": [node("storage01", "10.0.1.51")]},
}
OUTSIDE = replace(
    ENV, installer_cidr="10.9.9.9/32", api_cidrs=("192.0.2.0/24",), ingress_cidrs=("198.51.100.0/24",), preflight=True
)


@pytest.mark.parametrize("env", [None, ENV, OUTSIDE], ids=["no environment", "defaults", "outside sources"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_no_world_open_rule_by_default(plan_file, case: tuple[Any, ...], env: Environment | None) -> None:
    """Every role present (ingress 80/443, storage, SSH): still no rule open to the world."""
    rs = build(plan_file, case[1], env, **EVERY_ROLE)
    assert {g.name for g in rs.groups} == {"etcd", "master", "worker", "ingress", "storage"}
    cidrs = {str(r.peer.cidr) for r in rs.rules if r.peer.cidr is not None}
    assert not cidrs & {"0.0.0.0/0", "::/0"}
    # master[0], worker[0], the pod CIDR, egress_cidrs
    named = {"10.0.1.21/32", "10.0.1.31/32", "172.16.0.0/16", "10.0.0.10/32"}
    if env is OUTSIDE:
        named |= {"10.9.9.9/32", "192.0.2.0/24", "198.51.100.0/24"}
        assert {"10.9.9.9/32", "198.51.100.0/24"} <= cidrs  # the outside sources really are in play
    assert cidrs <= named


def test_preflight_rules_come_from_master0_and_worker0_only(plan_file) -> None:
    data = base_plan()
    data["worker"] = {"expected_count": 2, "nodes": [node("worker01", "10.0.1.31"), node("worker02", "10.0.1.32")]}
    rs = layout(load_plan(plan_file(data)), replace(ENV, preflight=True))
    cidrs = {r.peer.cidr for r in rs.rules if r.peer.cidr is not None}
    assert cidrs == {"10.0.1.21/32", "10.0.1.31/32", "10.0.0.10/32"}  # master[0], worker[0]; egress_cidrs
    assert ("tcp", "8888", "10.0.1.21-32") in rules_of(rs, "etcd")
    assert ("tcp", "2379-2380", "10.0.1.31-32") in rules_of(rs, "etcd")
    assert ("icmp", "type 8 code 0", "master") in rules_of(rs, "etcd")
    off = layout(load_plan(plan_file(data)), ENV)
    assert not [r for r in off.rules if "ket-preflight" in r.required_by]


def test_custom_cni_uses_extra_rules(plan_file) -> None:
    flannel = Flow(
        "flannel-vxlan",
        "udp",
        (8472, 8472),
        ("master", "worker"),
        "flannel VXLAN",
        "env",
        "environment",
        src=("master", "worker"),
    )
    rs = build(plan_file, {"provider": "custom"}, replace(ENV, extra_flows=(flannel,)))
    assert {("udp", "8472", "master"), ("udp", "8472", "worker")} <= rules_of(rs, "worker")
    assert not any("custom" in w for w in rs.warnings)
    bare = build(plan_file, {"provider": "custom"})
    assert any("extra_rules" in w for w in bare.warnings)


def test_rule_names_are_unique_and_stable(plan_file) -> None:
    rs1 = build(plan_file, {"provider": "contiv"})
    rs2 = build(plan_file, {"provider": "contiv"})
    names = [r.name for r in rs1.rules]
    assert len(names) == len(set(names))
    assert names == [r.name for r in rs2.rules]
    assert "worker-in-tcp-179-from-master" not in names
    assert "worker-in-udp-4789-from-master" in names


ROUTED_WARNING = (
    "Calico routed mode: on AWS all kubelet nodes must share one subnet (the VPC router knows no pod routes) and "
    "need the source/destination check off; across subnets use mode overlay (IP-in-IP)"
)
NO_INSTALLER = "installer_cidr is not set: nothing opens SSH (tcp 22) for the installer; set it in the environment file"
PREFLIGHT_OPEN = (
    "preflight rules (kismatic-inspector from master[0] and worker[0]) are open; set preflight: false in the "
    "environment file once the cluster is installed"
)
WEAVE_MULTICAST = (
    "Weave: an AWS VPC has no native multicast; Weave carries multicast inside its overlay, so nothing is opened for it"
)
NO_EGRESS = (
    "egress_cidrs is not set: nothing opens outbound tcp 80/443 for `kismatic install` to reach package "
    "repositories and image registries (cluster.disconnected_installation is false); set egress_cidrs to your NAT "
    "or proxy, your mirrors, or 0.0.0.0/0, unless another group already allows it (verify checks)"
)
CONTIV_PREVIEW = (
    'KET supports Contiv as a "preview" (still under active development); known issues: contiv/netplugin#940, '
    "contiv/netplugin#937, contiv/netplugin#871, contiv/netplugin#777, contiv/netplugin#942; Contiv does not "
    "support the Kubernetes NetworkPolicy API, it applies policy through its own mechanism (kismatic "
    "docs/networking.md)"
)
FULL = replace(ENV, installer_cidr="10.9.9.9/32", ingress_cidrs=("198.51.100.0/24",))
WARNING_CASES = [
    (
        "routed, no environment",
        {"provider": "calico", "options": {"calico": {"mode": "routed"}}},
        None,
        False,
        [ROUTED_WARNING, NO_INSTALLER, NO_EGRESS, PREFLIGHT_OPEN],
    ),
    (
        "weave, defaults",
        {"provider": "weave"},
        ENV,
        False,
        [
            WEAVE_MULTICAST,
            "Weave without options.weave.password: pod traffic between nodes is not encrypted",
            NO_INSTALLER,
        ],
    ),
    (
        "weave encrypted, full",
        {"provider": "weave", "options": {"weave": {"password": "x"}}},
        FULL,
        False,
        [WEAVE_MULTICAST],
    ),
    (
        "custom, no extra rules",
        {"provider": "custom"},
        FULL,
        False,
        [
            "CNI provider custom: ket-infra knows no ports for it and the environment file has no extra_rules; add "
            "the CNI's flows to extra_rules or its traffic will be blocked"
        ],
    ),
    (
        "disabled",
        {"disable": True},
        FULL,
        False,
        ["add_ons.cni.disable is true: no CNI is installed, so no CNI flows are opened"],
    ),
    (
        "ingress without clients",
        {"provider": "contiv"},
        replace(FULL, ingress_cidrs=()),
        True,
        [
            CONTIV_PREVIEW,
            CONTIV_LIMIT,
            "ingress nodes exist but ingress_cidrs is empty: nothing outside the cluster can reach 80/443",
        ],
    ),
    ("contiv, full", {"provider": "contiv"}, FULL, True, [CONTIV_PREVIEW, CONTIV_LIMIT]),
    (
        "overlay, preflight on",
        {"provider": "calico", "options": {"calico": {"mode": "overlay"}}},
        replace(FULL, preflight=True),
        False,
        [PREFLIGHT_OPEN],
    ),
]


@pytest.mark.parametrize(
    ("case", "cni", "env", "ingress", "warnings"), WARNING_CASES, ids=[c[0] for c in WARNING_CASES]
)
def test_warnings_word_for_word(
    plan_file, case: str, cni: dict[str, Any], env: Environment | None, ingress: bool, warnings: list[str]
) -> None:
    groups = {"ingress": {"expected_count": 1, "nodes": [node("ingress01", "10.0.1.41")]}} if ingress else {}
    assert list(build(plan_file, cni, env, **groups).warnings) == warnings


def extra_ports(n: int) -> tuple[Flow, ...]:
    """N single-port tcp flows from one CIDR to the workers, two apart so that none merge."""
    return tuple(
        Flow(
            f"extra-{i}",
            "tcp",
            (1000 + 2 * i, 1000 + 2 * i),
            ("worker",),
            "x",
            "env",
            "environment",
            src_cidr="10.0.0.0/8",
        )
        for i in range(n)
    )


@pytest.mark.parametrize(("extra", "total"), [(44, 50), (45, 51), (54, 60), (55, 61)])
def test_quota_edges_word_for_word(plan_file, extra: int, total: int) -> None:
    """The worker group of the base plan has 6 ingress rules of its own (calico overlay, no preflight)."""
    env = replace(ENV, extra_flows=extra_ports(extra))
    if total > RULE_QUOTA:
        with pytest.raises(QuotaError) as info:
            build(plan_file, None, env)
        assert str(info.value) == (
            f"t.yaml: rules_per_group_quota: group worker needs {total} ingress rules, {total - RULE_QUOTA} above "
            "the AWS quota of 60 per security group; reduce the number of distinct role combinations in the plan "
            "(each is a group) or the environment's extra rules, or if the account's quota is raised, set "
            "rules_per_group_quota to it"
        )
        return
    rs = build(plan_file, None, env)
    assert len([r for r in rs.rules if r.group == "worker" and r.direction == "ingress"]) == total
    near = [w for w in rs.warnings if "quota" in w]
    if total > 50:
        assert near == [
            f"group worker has {total} ingress rules, near the AWS quota of 60: little room is left for other rules"
        ]
    else:
        assert near == []


def test_json_contract_in_process(plan_file) -> None:
    """`rules --format json` (DESIGN.md): a group-sourced ingress rule, its egress twin and a CIDR rule."""
    from ket_infra.report import as_dict

    rs = build(plan_file, {"provider": "calico", "options": {"calico": {"mode": "routed"}}}, FULL)
    doc = as_dict(rs)
    by_name = {r["name"]: r for r in doc["rules"]}
    assert by_name["etcd-in-tcp-6660-from-etcd"] == {
        "name": "etcd-in-tcp-6660-from-etcd",
        "group": "etcd",
        "direction": "ingress",
        "protocol": "tcp",
        "from_port": 6660,
        "to_port": 6660,
        "source": {"group": "etcd"},
        "purpose": "networking etcd, peer",
        "required_by": "ket",
        "citations": ["kismatic v1.12.0 ansible/group_vars/etcd-networking.yaml"],
    }
    assert by_name["etcd-out-tcp-6660-to-etcd"]["destination"] == {"group": "etcd"}
    assert "source" not in by_name["etcd-out-tcp-6660-to-etcd"]
    # routed mode: every tcp port between kubelet nodes, BGP and the kubelet API merged in, each purpose kept
    merged = by_name["worker-in-tcp-0-65535-from-master"]
    assert (merged["from_port"], merged["to_port"], merged["required_by"]) == (0, 65535, "calico, ket")
    assert merged["purpose"] == (
        "Calico routed: node addresses to pods on other nodes (NodePort, API server proxy); "
        "Calico BGP peering (BIRD mesh); kubelet API (logs, exec, metrics)"
    )
    pods = by_name["worker-in-all-from-172.16.0.0-16"]
    assert (pods["protocol"], pods["from_port"], pods["to_port"], pods["source"]) == (
        "all",
        None,
        None,
        {"cidr": "172.16.0.0/16"},
    )
    assert doc["cni"] == {"provider": "calico", "mode": "routed", "encrypted": False, "disabled": False}
    assert doc["host_settings"][0]["source_dest_check"] is False


@pytest.mark.parametrize(
    ("protocol", "ports", "name", "shown"),
    [
        ("icmp", (3, -1), "worker-in-icmp-type3-from-10.9.0.0-16", "type 3"),
        ("icmp", (3, 4), "worker-in-icmp-type3-code4-from-10.9.0.0-16", "type 3 code 4"),
        ("icmp", (-1, -1), "worker-in-icmp-type-1-from-10.9.0.0-16", "type -1"),
        ("47", None, "worker-in-proto47-from-10.9.0.0-16", "-"),
        ("udp", (7000, 7002), "worker-in-udp-7000-7002-from-10.9.0.0-16", "7000-7002"),
        ("tcp", (7000, 7000), "worker-in-tcp-7000-from-10.9.0.0-16", "7000"),
    ],
)
def test_rule_names_and_ports_read_from_their_content(
    plan_file, protocol: str, ports: tuple[int, int] | None, name: str, shown: str
) -> None:
    extra = Flow("x", protocol, ports, ("worker",), "x", "env", "environment", src_cidr="10.9.0.0/16")
    rs = build(plan_file, {"provider": "weave"}, replace(ENV, extra_flows=(extra,)))
    (rule,) = [r for r in rs.rules if r.flows == ("x",)]
    assert (rule.name, rule.ports) == (name, shown)
    assert (rule.from_port, rule.to_port) == (ports if ports is not None else (None, None))


def test_adjacent_and_overlapping_ports_merge_others_do_not(plan_file) -> None:
    def flow(name: str, lo: int, hi: int, protocol: str = "tcp") -> Flow:
        return Flow(name, protocol, (lo, hi), ("worker",), f"p-{name}", "env", "environment", src_cidr="10.9.0.0/16")

    extras = (
        flow("a", 7000, 7001),
        flow("b", 7002, 7002),
        flow("c", 7001, 7005),
        flow("d", 7007, 7007),
        flow("e", 7000, 7000, "udp"),
        flow("f", 7001, 7001, "udp"),
    )
    rs = build(plan_file, {"provider": "weave"}, replace(ENV, extra_flows=extras))
    mine = [(r.protocol, r.from_port, r.to_port, r.flows, r.purpose) for r in rs.rules if r.peer.cidr == "10.9.0.0/16"]
    assert mine == [
        ("tcp", 7000, 7005, ("a", "c", "b"), "p-a; p-c; p-b"),
        ("tcp", 7007, 7007, ("d",), "p-d"),
        ("udp", 7000, 7001, ("e", "f"), "p-e; p-f"),
    ]


LB_DNS = (
    "master.load_balancer api.example.com:6443 is a DNS name: ket-infra cannot tell its addresses, and kubelets, "
    "kube-proxy, kubectl and Contiv reach kube-apiserver through it (tcp 6443); set endpoint_cidrs.load_balancer "
    "in the environment file to the balancer's addresses"
)


@pytest.mark.parametrize(
    ("balancer", "lb_cidrs", "warning", "egress"),
    [
        ("10.0.5.5:6443", (), None, ["10.0.5.5/32"]),  # an address that is no master: its /32, no warning
        ("10.0.5.5:443", (), None, ["10.0.5.5/32"]),
        ("10.0.1.21:6443", (), None, []),  # master01's address: the apiserver flow covers it
        ("master01:6443", (), None, []),
        ("10.0.1.21", (), None, []),  # legacy load_balanced_fqdn: KET appends :6443
        ("api.example.com:6443", (), LB_DNS, []),
        ("api.example.com:6443", ("10.0.7.0/24",), None, ["10.0.7.0/24"]),
    ],
)
def test_the_load_balancer_gets_its_flows_or_a_warning(
    plan_file, balancer: str, lb_cidrs: tuple[str, ...], warning: str | None, egress: list[str]
) -> None:
    """Every kubelet node dials master.load_balancer on its own port; the masters take 6443 from it."""
    data = base_plan()
    key = "load_balanced_fqdn" if ":" not in balancer else "load_balancer"
    data["master"][key] = balancer
    env = replace(FULL, endpoint_cidrs=(("load_balancer", lb_cidrs),) if lb_cidrs else ())
    rs = layout(load_plan(plan_file(data)), env)
    assert [w for w in rs.warnings if "load_balancer" in w] == ([warning] if warning else [])
    port = int(balancer.rpartition(":")[2]) if ":" in balancer else 6443
    out = [(r.group, r.peer.cidr, r.from_port) for r in rs.rules if "apiserver-lb" in r.flows]
    assert out == [(g, c, port) for g in ("master", "worker") for c in egress]
    into = [(r.group, r.peer.cidr, r.from_port) for r in rs.rules if "apiserver-from-lb" in r.flows]
    assert into == [("master", c, 6443) for c in egress]  # the masters' port stays 6443


def test_a_masters_public_ip_as_load_balancer_is_named_with_what_to_do(plan_file) -> None:
    """KET's own tests point load_balancer at a master's public ip: group references never match that traffic."""
    data = base_plan()
    data["master"]["nodes"] = [node("master01", "203.0.113.21", "10.0.1.21")]
    data["master"]["load_balancer"] = "203.0.113.21:6443"
    rs = layout(load_plan(plan_file(data)), FULL)
    assert [w for w in rs.warnings if "load_balancer" in w] == [
        "master.load_balancer 203.0.113.21:6443 is the public ip of master master01: nodes reach it through the "
        "internet gateway with public source addresses, which no security-group reference matches, so ket-infra "
        "opens only the nodes' egress to 203.0.113.21/32 and cannot open the masters' side; use master01's "
        "internalip 10.0.1.21 or an internal load balancer"
    ]
    assert {(r.group, r.peer.cidr) for r in rs.rules if "apiserver-lb" in r.flows} == {
        ("master", "203.0.113.21/32"),
        ("worker", "203.0.113.21/32"),
    }
    assert not [r for r in rs.rules if "apiserver-from-lb" in r.flows]


def test_a_world_open_environment_is_named_with_what_it_exposes(plan_file) -> None:
    """Still possible, never silent: each key whose CIDR spans the internet, and what the world then reaches."""
    world = Flow("debug", "all", None, ("worker",), "debug", "env", "environment", src_cidr="0.0.0.0/0")
    env = replace(FULL, installer_cidr="0.0.0.0/1", api_cidrs=("10.0.0.0/8", "0.0.0.0/0"), extra_flows=(world,))
    rs = build(plan_file, None, env)
    assert [w for w in rs.warnings if "spans the internet" in w] == [
        "installer_cidr is 0.0.0.0/1, which spans the internet: the world can reach tcp 22 on etcd, master, worker; "
        "tcp 6443 on master",
        "api_cidrs[1] is 0.0.0.0/0, which spans the internet: the world can reach tcp 6443 on master; all traffic on worker",
        "extra_rules debug is 0.0.0.0/0, which spans the internet: the world can reach tcp 6443 on master; all traffic on worker",
    ]
    assert not [w for w in build(plan_file, None, FULL).warnings if "spans the internet" in w]


def test_a_public_pod_cidr_is_named(plan_file) -> None:
    data = base_plan()
    data["cluster"]["networking"]["pod_cidr_block"] = "8.8.0.0/16"
    rs = layout(load_plan(plan_file(data)), FULL)
    assert rs.warnings[0] == (
        "cluster.networking.pod_cidr_block 8.8.0.0/16 is public address space: pods would take addresses that "
        "belong to someone on the internet, and the rules trust it as the pod network; use a private range such "
        "as 172.16.0.0/16"
    )
    assert not [w for w in build(plan_file, None, FULL).warnings if "public address space" in w]
