"""The catalog against an independent oracle: PORTS.md, written out by hand.

Nothing here is read from `ket_infra.flows`. For a plan with one node per
role (so each group is one role), every CNI's expected traffic is listed
below as (protocol, port, from, to), straight from PORTS.md sections 1, 2 and 7,
and the rules `layout` makes must allow exactly that: no flow missing, no
port more. A wrong port, a wrong role, or IP-in-IP written as protocol 94
fails here even when the rest of the suite agrees with the catalog.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ket_infra.environment import AwsConfig, Environment
from ket_infra.layout import RuleSet, layout
from ket_infra.plan import load_plan
from tests.conftest import node, write_yaml

ETCD, MASTER, WORKER, INGRESS, STORAGE = "etcd", "master", "worker", "ingress", "storage"
ROLES = (ETCD, MASTER, WORKER, INGRESS, STORAGE)
KUBELET = (MASTER, WORKER, INGRESS, STORAGE)
ADDRESS = {ETCD: "10.0.1.11", MASTER: "10.0.1.21", WORKER: "10.0.1.31", INGRESS: "10.0.1.41", STORAGE: "10.0.1.51"}
POD_CIDR = "172.16.0.0/16"
# Outside sources, named as the environment names them; master[0] and worker[0] are the preflight clients.
CIDR_NAMES = {
    "10.9.9.9/32": "installer",
    "192.0.2.0/24": "api-clients",
    "198.51.100.0/24": "ingress-clients",
    f"{ADDRESS[MASTER]}/32": "master[0]",
    f"{ADDRESS[WORKER]}/32": "worker[0]",
    POD_CIDR: "pods",
    "203.0.113.0/24": "downloads",  # egress_cidrs: package repositories and registries
    "10.8.0.5/32": "registry",  # a private registry the plan names by address
}
OUTSIDE = ("downloads",)  # destinations outside the cluster: egress rules only

Flow = tuple[str, int | None, str, str]  # protocol, port (None: no ports), from, to


def tcp(ports: tuple[int, ...] | range, src: str | tuple[str, ...], dst: str | tuple[str, ...]) -> set[Flow]:
    return flows("tcp", ports, src, dst)


def flows(
    protocol: str, ports: tuple[int | None, ...] | range, src: str | tuple[str, ...], dst: str | tuple[str, ...]
) -> set[Flow]:
    srcs = (src,) if isinstance(src, str) else src
    dsts = (dst,) if isinstance(dst, str) else dst
    return {(protocol, p, s, d) for p in ports for s in srcs for d in dsts}


BRICKS = range(49152, 49252)  # 100 bricks per storage node, the gluster_brick_ports default
# PORTS.md sections 1 and 7: KET itself, any CNI.
KET = (
    tcp((2379,), MASTER, ETCD)
    | tcp((2380,), ETCD, ETCD)
    | tcp((6443,), KUBELET, MASTER)
    | tcp((6443,), ("api-clients", "installer"), MASTER)
    # the API server from masters; metrics-server and heapster from workers (they run there)
    | tcp((10250,), (MASTER, WORKER), KUBELET)
    | tcp((80, 443), "ingress-clients", INGRESS)
    # the kismatic-storage Service's ports, TCP (no 38467, no udp 111)
    | tcp((111, 2049, 38465, 38466, 38468, 38469), KUBELET, STORAGE)
    | tcp((24007, 24008), STORAGE, STORAGE)
    | tcp(BRICKS, STORAGE, STORAGE)
    | tcp((22,), "installer", ROLES)  # cluster.ssh.ssh_port
    | tcp((80, 443), ROLES, "downloads")  # a connected install: package repositories and registries
)
# The networking etcd: Calico and Contiv only.
NETWORKING_ETCD = tcp((6666,), KUBELET, ETCD) | tcp((6660,), ETCD, ETCD)
# Preflight: the inspector on every node, checked from master[0] and worker[0]; pings between roles.
INSPECTORS = ("master[0]", "worker[0]")
PREFLIGHT = (
    tcp((8888,), INSPECTORS, ROLES)
    | tcp((2379, 2380, 6666, 6660), INSPECTORS, ETCD)
    | tcp((6443, 10251, 10252), INSPECTORS, MASTER)
    | tcp((10250, 10256), INSPECTORS, KUBELET)
    | tcp((80, 443, 10254), INSPECTORS, INGRESS)
    | tcp((8081, 2049, 38465, 38466, 38467), INSPECTORS, STORAGE)
    | {
        ("icmp-echo", None, src, dst)
        for src, dst in [
            (ETCD, ETCD),
            (MASTER, ETCD),
            (WORKER, MASTER),
            (INGRESS, MASTER),
            (WORKER, WORKER),
            (INGRESS, WORKER),
        ]
    }
)
# PORTS.md section 2, per CNI.
CALICO = tcp((179,), KUBELET, KUBELET) | NETWORKING_ETCD
CALICO_OVERLAY = CALICO | flows("4", (None,), KUBELET, KUBELET)  # IP-in-IP is protocol 4, never 94
ANY_PORT = range(0, 65536)
# node addresses to pods on other nodes: NodePort masquerade, the API server's proxy; pod-network
# pods run on schedulable nodes (workers) and ingress nodes (DaemonSets), PORTS.md section 8
CALICO_ROUTED = (
    CALICO
    | flows("all", (None,), "pods", KUBELET)
    | flows("tcp", ANY_PORT, KUBELET, (WORKER, INGRESS))
    | flows("udp", ANY_PORT, KUBELET, (WORKER, INGRESS))
)
WEAVE = tcp((6783,), KUBELET, KUBELET) | flows("udp", (6783, 6784), KUBELET, KUBELET)  # never tcp 6784
WEAVE_ENCRYPTED = WEAVE | flows("50", (None,), KUBELET, KUBELET)  # ESP
CONTIV = (
    flows("udp", (4789,), KUBELET, KUBELET)
    | tcp((9001, 9999), KUBELET, MASTER)
    | tcp((9002, 9003), MASTER, KUBELET)  # netmaster calls the agents
    | NETWORKING_ETCD
)

CNIS: dict[str, tuple[dict[str, Any] | None, set[Flow]]] = {
    "calico-overlay": ({"provider": "calico", "options": {"calico": {"mode": "overlay"}}}, CALICO_OVERLAY),
    "calico-routed": ({"provider": "calico", "options": {"calico": {"mode": "routed"}}}, CALICO_ROUTED),
    "legacy (no cni block)": (None, CALICO_OVERLAY),
    "weave": ({"provider": "weave"}, WEAVE),
    "weave-encrypted": ({"provider": "weave", "options": {"weave": {"password": "pw"}}}, WEAVE_ENCRYPTED),
    "contiv": ({"provider": "contiv"}, CONTIV),
    "custom": ({"provider": "custom"}, set()),
    "disabled": ({"disable": True, "provider": "calico"}, set()),
}


def one_node_per_role(tmp_path: Path, cni: dict[str, Any] | None, **cluster: Any) -> Path:
    data: dict[str, Any] = {
        "cluster": {
            "name": "oracle",
            "networking": {"pod_cidr_block": POD_CIDR, "service_cidr_block": "172.20.0.0/16"},
            **cluster,
        }
    }
    registry = cluster.pop("registry", None)
    data["cluster"].pop("registry", None)
    if registry is not None:
        data["docker_registry"] = {"server": registry}
    if cni is not None:
        data["add_ons"] = {"cni": cni}
    for role in ROLES:
        data[role] = {"expected_count": 1, "nodes": [node(f"{role}01", ADDRESS[role])]}
    return write_yaml(tmp_path / "plan.yaml", data)


def environment(plan: Path, preflight: bool) -> Environment:
    return Environment(
        name="oracle",
        path="oracle.yaml",
        plan_file=plan,
        aws=AwsConfig("eu-west-1"),
        installer_cidr="10.9.9.9/32",
        egress_cidrs=("203.0.113.0/24",),
        api_cidrs=("192.0.2.0/24",),
        ingress_cidrs=("198.51.100.0/24",),
        preflight=preflight,
    )


def expand(rs: RuleSet, direction: str) -> set[Flow]:
    """What the rules of one direction allow, one (protocol, port, from, to) at a time."""
    out: set[Flow] = set()
    for r in rs.rules:
        if r.direction != direction:
            continue
        peer = r.peer.group if r.peer.group is not None else CIDR_NAMES[str(r.peer.cidr)]
        src, dst = (peer, r.group) if direction == "ingress" else (r.group, peer)
        if r.protocol == "icmp":
            assert (r.from_port, r.to_port) == (8, 0), r  # echo request only
            out.add(("icmp-echo", None, src, dst))
        elif r.protocol in ("tcp", "udp"):
            assert r.from_port is not None and r.to_port is not None, r
            out |= {(r.protocol, p, src, dst) for p in range(r.from_port, r.to_port + 1)}
        else:
            assert r.from_port is None and r.to_port is None, r
            out.add((r.protocol, None, src, dst))
    return out


def egress_twins(expected: set[Flow]) -> set[Flow]:
    """The egress each expected flow needs on ket-infra's groups: the sending group lets it out.

    Outside sources have no group; master[0] and worker[0] send from their groups; routed pods
    send from every kubelet node to the pod CIDR.
    """
    out: set[Flow] = set()
    for protocol, port, src, dst in expected:
        if dst in OUTSIDE:
            continue
        if src in ROLES:
            out.add((protocol, port, src, dst))
        elif src in INSPECTORS:
            out.add((protocol, port, src.removesuffix("[0]"), dst))
        elif src == "pods":
            out.add((protocol, port, dst, "pods"))
    return out


@pytest.mark.parametrize("preflight", [True, False], ids=["preflight", "installed"])
@pytest.mark.parametrize("cni", list(CNIS))
def test_rules_allow_exactly_what_ports_md_says(tmp_path: Path, cni: str, preflight: bool) -> None:
    block, cni_flows = CNIS[cni]
    path = one_node_per_role(tmp_path, block)
    rs = layout(load_plan(path), environment(path, preflight))
    expected = KET | cni_flows | (PREFLIGHT if preflight else set())
    inbound = {f for f in expected if f[3] not in OUTSIDE}
    allowed = expand(rs, "ingress")
    assert sorted(inbound - allowed, key=str)[:5] == [], "required but not allowed"
    assert sorted(allowed - inbound, key=str)[:5] == [], "allowed but not required"
    egress = expand(rs, "egress")
    wanted = egress_twins(expected) | (expected - inbound)
    assert sorted(wanted - egress, key=str)[:5] == [], "no egress for"
    assert sorted(egress - wanted, key=str)[:5] == [], "egress beyond the flows"


def test_tcp_6784_stays_closed_for_weave(tmp_path: Path) -> None:
    path = one_node_per_role(tmp_path, {"provider": "weave"})
    rs = layout(load_plan(path), environment(path, preflight=True))
    assert not [f for f in expand(rs, "ingress") if f[0] == "tcp" and f[1] == 6784]


def test_only_routed_calico_turns_the_source_dest_check_off(tmp_path: Path) -> None:
    for cni, (block, _flows) in CNIS.items():
        path = one_node_per_role(tmp_path, block)
        rs = layout(load_plan(path), environment(path, preflight=False))
        off = sorted(h.group for h in rs.host_settings if h.source_dest_check is False)
        assert off == (sorted(KUBELET) if cni == "calico-routed" else []), cni
        assert len(rs.host_settings) == len(off), cni


@pytest.mark.parametrize(
    ("aws_value", "name", "label"),
    [
        ("6", "tcp", "tcp"),
        ("17", "udp", "udp"),
        ("1", "icmp", "icmp"),
        ("-1", "-1", "protocol -1"),
        ("4", "4", "IP-in-IP (4)"),
        (50, "50", "ESP (50)"),
        ("47", "47", "protocol 47"),
        ("TCP", "tcp", "tcp"),
        ("all", "all", "all"),
    ],
)
def test_protocol_names_and_labels(aws_value: object, name: str, label: str) -> None:
    from ket_infra.flows import protocol_label, protocol_name

    assert protocol_name(aws_value) == name
    assert protocol_label(name) == label


def test_a_flow_has_exactly_one_kind_of_source_and_never_all_protocols_between_roles() -> None:
    from ket_infra.flows import Flow as CatalogFlow

    with pytest.raises(ValueError, match="flow x: give exactly one of src and src_cidr"):
        CatalogFlow("x", "tcp", (1, 1), ("worker",), "p", "s", "r")
    with pytest.raises(ValueError, match="flow x: give exactly one of src and src_cidr"):
        CatalogFlow("x", "tcp", (1, 1), ("worker",), "p", "s", "r", src=("master",), src_cidr="10.0.0.0/8")
    with pytest.raises(ValueError, match="flow x: all protocols between roles is never allowed"):
        CatalogFlow("x", "all", None, ("worker",), "p", "s", "r", src=("master",))
    assert CatalogFlow("x", "all", None, ("worker",), "p", "s", "r", src_cidr="172.16.0.0/16").protocol == "all"


def test_an_unknown_provider_has_no_table(tmp_path: Path) -> None:
    from dataclasses import replace

    from ket_infra.flows import cni_flows

    plan = load_plan(one_node_per_role(tmp_path, {"provider": "weave"}))
    with pytest.raises(ValueError, match="no flow table for CNI provider 'flannel'"):
        cni_flows(replace(plan, cni=replace(plan.cni, provider="flannel")))


def test_extra_rules_come_last_and_a_name_counts_once(tmp_path: Path) -> None:
    from dataclasses import replace

    from ket_infra.flows import Flow as CatalogFlow
    from ket_infra.flows import required_flows

    path = one_node_per_role(tmp_path, {"provider": "weave"})
    plan = load_plan(path)
    extra = CatalogFlow("bgp-extra", "tcp", (179, 179), ("worker",), "p", "s", "environment", src=("master",))
    env = replace(environment(path, preflight=False), extra_flows=(extra,))
    names = [f.name for f in required_flows(plan, env)]
    assert names[-1] == "bgp-extra" and len(names) == len(set(names))
    assert names[:3] == ["etcd-client", "etcd-peer", "apiserver"]
    assert "inspector" not in names and "inspector" in [f.name for f in required_flows(plan, None)]


def test_ssh_follows_the_plans_port(tmp_path: Path) -> None:
    path = one_node_per_role(tmp_path, None, ssh={"user": "kismaticuser", "ssh_port": 2222})
    rs = layout(load_plan(path), environment(path, preflight=False))
    from_installer = {f for f in expand(rs, "ingress") if f[2] == "installer" and f[1] != 6443}
    assert from_installer == tcp((2222,), "installer", ROLES)


@pytest.mark.parametrize(
    ("cluster", "expected"),
    [
        ({}, tcp((80, 443), ROLES, "downloads")),
        # internal package repositories are still reached while KET installs packages
        ({"disconnected_installation": True}, tcp((80, 443), ROLES, "downloads")),
        ({"disconnected_installation": True, "disable_package_installation": True}, set()),
        # a registry named by address: its own /32 and port; by name: egress_cidrs
        (
            {"disconnected_installation": True, "disable_package_installation": True, "registry": "10.8.0.5:5000"},
            tcp((5000,), ROLES, "registry"),
        ),
        (
            {"disconnected_installation": True, "disable_package_installation": True, "registry": "registry.lan"},
            tcp((443,), ROLES, "downloads"),
        ),
        ({"registry": "registry.lan:5000"}, tcp((80, 443, 5000), ROLES, "downloads")),
        ({"allow_package_installation": False, "disconnected_installation": True}, set()),
    ],
    ids=[
        "connected",
        "disconnected",
        "disconnected, no packages",
        "registry ip",
        "registry name",
        "connected+registry",
        "legacy",
    ],
)
def test_downloads_go_where_the_plan_says(tmp_path: Path, cluster: dict[str, Any], expected: set[Flow]) -> None:
    path = one_node_per_role(tmp_path, None, **cluster)
    rs = layout(load_plan(path), environment(path, preflight=False))
    outbound = {f for f in expand(rs, "egress") if f[3] in ("downloads", "registry")}
    assert outbound == expected


def test_the_brick_range_follows_the_environment(tmp_path: Path) -> None:
    from dataclasses import replace

    path = one_node_per_role(tmp_path, None)
    rs = layout(load_plan(path), replace(environment(path, preflight=False), gluster_brick_ports=10))
    storage = {f[1] for f in expand(rs, "ingress") if f[0] == "tcp" and f[2] == STORAGE and f[3] == STORAGE}
    gluster = {p for p in storage if p is not None and p >= 24000 and not 38465 <= p <= 38469}
    assert gluster == {24007, 24008, *range(49152, 49162)}
