"""Completeness against KET's own source: every listener is covered, or says why not.

tests/ket_listeners.yaml lists every network listener that KET v1.12.0 and its
default add-ons run on the nodes (systemd services, host-network pods, host
ports, pods reached by other hosts), each with who connects to it and the file
in KET's repository that shows it. For every CNI and for two role layouts (one
node per role, and roles stacked on shared hosts), with preflight on and off,
every listener reachable from another host must be let through by the rules
`layout` makes; a listener that needs no rule carries its reason. Adding a
component to KET is adding a line there and seeing this fail.

Listeners that are pods are reached over the CNI's data path, so for them the
test asks for that path instead of the port: IP-in-IP (Calico overlay), the
Weave ports and ESP, Contiv's VXLAN, or in Calico routed mode the pod CIDR and,
from node addresses, the pod's port itself.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from ket_infra.environment import AwsConfig, Environment
from ket_infra.flows import required_flows
from ket_infra.layout import Rule, RuleSet, layout
from ket_infra.plan import load_plan
from tests.conftest import ROOT, node, write_yaml

EVERYTHING: list[dict[str, Any]] = yaml.safe_load((ROOT / "tests" / "ket_listeners.yaml").read_text())
INVENTORY = [e for e in EVERYTHING if "plan_key" not in e]
ENDPOINTS = [e for e in EVERYTHING if "plan_key" in e]
ROLES = ("etcd", "master", "worker", "ingress", "storage")
KUBELET = ("master", "worker", "ingress", "storage")
POD_CIDR = "172.16.0.0/16"
OUTSIDE = {
    "installer": "10.9.9.9/32",
    "api_clients": "192.0.2.0/24",
    "ingress_clients": "198.51.100.0/24",
}
SOURCES = set(ROLES) | set(OUTSIDE) | {"preflight", "pods"}
CITATION = re.compile(r"[\w./-]+\.[a-z0-9]+:\d+")

CNIS: dict[str, dict[str, Any]] = {
    "calico-overlay": {"provider": "calico", "options": {"calico": {"mode": "overlay"}}},
    "calico-routed": {"provider": "calico", "options": {"calico": {"mode": "routed"}}},
    "weave": {"provider": "weave"},
    "weave-encrypted": {"provider": "weave", "options": {"weave": {"password": "pw"}}},
    "contiv": {"provider": "contiv"},
}
# host -> (address, roles): each role alone, or stacked the way small clusters do it.
LAYOUTS: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {
    "one node per role": {f"{r}01": (f"10.0.1.{11 + 10 * i}", (r,)) for i, r in enumerate(ROLES)},
    "stacked": {
        "control01": ("10.0.1.11", ("etcd", "master")),
        "control02": ("10.0.1.12", ("etcd", "master")),
        "edge01": ("10.0.1.31", ("worker", "ingress", "storage")),
        "worker02": ("10.0.1.32", ("worker",)),
        "storage02": ("10.0.1.51", ("storage",)),
    },
}


def plan_for(tmp_path: Path, cni: str, hosts: dict[str, tuple[str, tuple[str, ...]]]) -> Path:
    data: dict[str, Any] = {
        "cluster": {
            "name": "inventory",
            "networking": {"pod_cidr_block": POD_CIDR, "service_cidr_block": "172.20.0.0/16"},
        },
        "add_ons": {"cni": CNIS[cni]},
    }
    for role in ROLES:
        members = [node(h, addr) for h, (addr, roles) in hosts.items() if role in roles]
        data[role] = {"expected_count": len(members), "nodes": members}
    return write_yaml(tmp_path / "plan.yaml", data)


def environment(plan: Path, preflight: bool) -> Environment:
    return Environment(
        name="inventory",
        path="inventory.yaml",
        plan_file=plan,
        aws=AwsConfig("eu-west-1"),
        installer_cidr=OUTSIDE["installer"],
        api_cidrs=(OUTSIDE["api_clients"],),
        ingress_cidrs=(OUTSIDE["ingress_clients"],),
        egress_cidrs=("203.0.113.0/24",),
        preflight=preflight,
    )


def ports_of(entry: dict[str, Any]) -> tuple[int, int] | None:
    value = entry["ports"]
    if value is None:
        return None
    lo, _, hi = str(value).partition("-")
    return int(lo), int(hi or lo)


def applies(entry: dict[str, Any], cni: str, preflight: bool) -> bool:
    return (entry["cni"] == "any" or cni in entry["cni"]) and (entry["phase"] == "runtime" or preflight)


def covers(rule: Rule, protocol: str, ports: tuple[int, int] | None) -> bool:
    if rule.protocol == "all":
        return True
    if rule.protocol != str(protocol):
        return False
    if ports is None or rule.from_port is None or rule.to_port is None:
        return ports is None
    if rule.protocol == "icmp":
        return rule.from_port == ports[0]
    return rule.from_port <= ports[0] and ports[1] <= rule.to_port


class Rules:
    """The RuleSet as questions: does group G let PROTOCOL/PORTS in from PEER (and the peer's group out)?"""

    def __init__(self, rs: RuleSet, plan_hosts: dict[str, tuple[str, tuple[str, ...]]]) -> None:
        self.rs = rs
        self.groups = {g.name: set(g.roles) for g in rs.groups}
        self.group_of_host = {h: g.name for g in rs.groups for h in g.nodes}
        self.hosts = plan_hosts

    def with_role(self, roles: tuple[str, ...] | list[str]) -> list[str]:
        return [g for g, r in self.groups.items() if r & set(roles)]

    def allows(
        self,
        group: str,
        protocol: str,
        ports: tuple[int, int] | None,
        peer_group: str | None = None,
        cidr: str | None = None,
    ) -> bool:
        inbound = any(
            r.group == group
            and r.direction == "ingress"
            and (r.peer.group == peer_group if peer_group else r.peer.cidr == cidr)
            and covers(r, protocol, ports)
            for r in self.rs.rules
        )
        if not inbound or peer_group is None:
            return inbound
        return any(
            r.group == peer_group and r.direction == "egress" and r.peer.group == group and covers(r, protocol, ports)
            for r in self.rs.rules
        )


def data_path(cni: str) -> list[tuple[str, tuple[int, int] | None]]:
    """What carries pod traffic between two nodes, per CNI (PORTS.md section 2)."""
    return {
        "calico-overlay": [("4", None)],
        "weave": [("udp", (6784, 6784)), ("udp", (6783, 6783)), ("tcp", (6783, 6783))],
        "weave-encrypted": [("udp", (6784, 6784)), ("tcp", (6783, 6783)), ("50", None)],
        "contiv": [("udp", (4789, 4789))],
    }[cni]


def missing(entry: dict[str, Any], cni: str, rules: Rules, first: dict[str, str]) -> list[str]:
    protocol, ports = str(entry["protocol"]), ports_of(entry)
    is_pod = "pods" in entry["from"]
    out: list[str] = []
    for target in rules.with_role(entry["on"]):
        for src in entry["from"]:
            if src in OUTSIDE:
                if not rules.allows(target, protocol, ports, cidr=OUTSIDE[src]):
                    out.append(f"{src} -> {target}")
                continue
            if src == "preflight":
                for role in ("master", "worker"):
                    host = first[role]
                    addr = rules.hosts[host][0]
                    if not rules.allows(target, protocol, ports, cidr=f"{addr}/32"):
                        out.append(f"{role}[0] -> {target}")
                continue
            senders = rules.with_role(KUBELET if src == "pods" else (src,))
            for sender in senders:
                if not is_pod:
                    if not rules.allows(target, protocol, ports, peer_group=sender):
                        out.append(f"{sender} -> {target}")
                elif cni == "calico-routed":
                    ok = (
                        rules.allows(target, protocol, ports, cidr=POD_CIDR)
                        if src == "pods"
                        else rules.allows(target, protocol, ports, peer_group=sender)
                    )
                    if not ok:
                        out.append(f"{src} on {sender} -> pod on {target} (routed)")
                else:
                    for proto, p in data_path(cni):
                        if not rules.allows(target, proto, p, peer_group=sender):
                            out.append(f"{src} on {sender} -> pod on {target}: no {proto} {p}")
    return out


def test_every_entry_is_well_formed_and_cites_kets_source() -> None:
    names = [e["name"] for e in EVERYTHING]
    assert len(names) == len(set(names)), "duplicate names"
    assert len(INVENTORY) >= 80
    for e in INVENTORY:
        assert set(e) >= {"name", "listener", "protocol", "ports", "on", "from", "cni", "phase", "source"}, e["name"]
        assert CITATION.search(e["source"]), f"{e['name']}: no path:line in KET's repository"
        assert set(e["on"]) <= set(ROLES) and e["on"], e["name"]
        assert set(e["from"]) <= SOURCES, e["name"]
        assert e["phase"] in ("runtime", "preflight"), e["name"]
        assert e["cni"] == "any" or set(e["cni"]) <= set(CNIS), e["name"]
        if "no_rule" in e:
            assert len(e["no_rule"]) > 20, f"{e['name']}: a no_rule entry says why"
        else:
            assert e["from"], f"{e['name']}: who connects?"
        ports_of(e)


@pytest.mark.parametrize("preflight", [True, False], ids=["preflight", "installed"])
@pytest.mark.parametrize("shape", list(LAYOUTS))
@pytest.mark.parametrize("cni", list(CNIS))
def test_every_listener_is_reachable_by_who_connects(tmp_path: Path, cni: str, shape: str, preflight: bool) -> None:
    hosts = LAYOUTS[shape]
    path = plan_for(tmp_path, cni, hosts)
    plan = load_plan(path)
    rules = Rules(layout(plan, environment(path, preflight)), hosts)
    first = {role: plan.hosts(role)[0] for role in ("master", "worker")}
    gaps = {
        e["name"]: gap
        for e in INVENTORY
        if "no_rule" not in e and applies(e, cni, preflight) and (gap := missing(e, cni, rules, first))
    }
    assert gaps == {}


@pytest.mark.parametrize("cni", list(CNIS))
def test_every_flow_answers_a_listener(tmp_path: Path, cni: str) -> None:
    """The other half: each flow the catalog opens serves some listener of the inventory (outbound downloads aside)."""
    path = plan_for(tmp_path, cni, LAYOUTS["one node per role"])
    plan = load_plan(path)
    listening = [e for e in INVENTORY if "no_rule" not in e and applies(e, cni, True)]

    def overlaps(flow_ports: tuple[int, int] | None, entry: dict[str, Any]) -> bool:
        p = ports_of(entry)
        if flow_ports is None or p is None or "pods" in entry["from"]:
            return True
        if entry["protocol"] == "icmp":
            return p[0] == flow_ports[0]  # the type
        return p[0] <= flow_ports[1] and flow_ports[0] <= p[1]

    for flow in required_flows(plan, environment(path, preflight=True)):
        if flow.dst_cidr is not None:
            continue
        served = [
            e
            for e in listening
            if (flow.protocol == "all" or str(e["protocol"]) == flow.protocol or "pods" in e["from"])
            and set(e["on"]) & set(flow.to)
            and overlaps(flow.ports, e)
        ]
        assert served, f"{flow.name}: opens {flow.protocol} {flow.ports} for no listener in tests/ket_listeners.yaml"


# How the endpoint test sets each plan key (one node per role: master01 is 10.0.1.21), the
# environment it adds, and where the flow must go (egress) or come from (ingress).
ENDPOINT_SETTINGS: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    "master.load_balancer": ({"master": {"load_balancer": "10.0.9.100:443"}}, {}, "10.0.9.100/32"),
    "nfs.nfs_volume[].nfs_host": (
        {"nfs": {"nfs_volume": [{"nfs_host": "10.0.9.50", "mount_path": "/exports"}]}},
        {},
        "10.0.9.50/32",
    ),
    "cluster.networking.http_proxy": (
        {"cluster": {"networking": {"http_proxy": "http://10.0.9.3:3128"}}},
        {},
        "10.0.9.3/32",
    ),
    "cluster.cloud_provider.provider": (
        {"cluster": {"cloud_provider": {"provider": "aws"}}},
        {"endpoint_cidrs": (("aws_api", ("10.0.9.128/28",)),)},
        "10.0.9.128/28",
    ),
    "add_ons.dashboard.options.service_type": (
        {"add_ons": {"dashboard": {"options": {"service_type": "NodePort", "node_port": "30443"}}}},
        {"nodeport_cidrs": ("198.18.0.0/24",)},
        "198.18.0.0/24",
    ),
    "add_ons.heapster.options.heapster.service_type": (
        {"add_ons": {"heapster": {"options": {"heapster": {"service_type": "NodePort"}}}}},
        {"nodeport_cidrs": ("198.18.0.0/24",)},
        "198.18.0.0/24",
    ),
    "add_ons.heapster.options.heapster.sink": (
        {"add_ons": {"heapster": {"options": {"heapster": {"sink": "influxdb:http://10.0.9.86:8086"}}}}},
        {},
        "10.0.9.86/32",
    ),
    "docker_registry.server": ({"docker_registry": {"server": "10.0.1.21:8443"}}, {}, "master"),
}


def merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = merged(out.get(k) or {}, v) if isinstance(v, dict) else v
    return out


def endpoint_rules(tmp_path: Path, entry: dict[str, Any], set_key: bool) -> tuple[Rules, str]:
    extra, env_extra, peer = ENDPOINT_SETTINGS[entry["plan_key"]]
    hosts = LAYOUTS["one node per role"]
    path = plan_for(tmp_path, "calico-overlay", hosts)
    if set_key:
        write_yaml(path, merged(yaml.safe_load(path.read_text()), extra))
    env = replace(environment(path, preflight=False), **env_extra)
    return Rules(layout(load_plan(path), env), hosts), peer


def endpoint_gaps(rules: Rules, entry: dict[str, Any], peer: str) -> list[str]:
    protocol, ports = str(entry["protocol"]), ports_of(entry)
    out: list[str] = []
    if entry.get("to") == "endpoint":
        for sender in rules.with_role(entry["from"]):
            if not any(
                r.group == sender and r.direction == "egress" and r.peer.cidr == peer and covers(r, protocol, ports)
                for r in rules.rs.rules
            ):
                out.append(f"{sender} -> {peer}")
        return out
    for target in rules.with_role(entry["on"]):
        for src in entry["from"]:
            if src in ROLES:
                for sender in rules.with_role((src,)):
                    if not rules.allows(target, protocol, ports, peer_group=sender):
                        out.append(f"{sender} -> {target}")
            elif not rules.allows(target, protocol, ports, cidr=peer):
                out.append(f"{src} {peer} -> {target}")
    return out


def test_every_endpoint_entry_names_its_plan_key_and_cites_kets_source() -> None:
    assert {e["plan_key"] for e in ENDPOINTS} == set(ENDPOINT_SETTINGS)
    for e in ENDPOINTS:
        assert CITATION.search(e["source"]), f"{e['name']}: no path:line in KET's repository"
        assert (e.get("to") == "endpoint") != ("on" in e), e["name"]
        assert set(e["from"]) <= set(ROLES) | {"load_balancer", "nodeport_clients"}, e["name"]


@pytest.mark.parametrize("entry", ENDPOINTS, ids=[e["name"] for e in ENDPOINTS])
def test_every_endpoint_the_plan_names_gets_its_flow_and_only_then(tmp_path: Path, entry: dict[str, Any]) -> None:
    rules, peer = endpoint_rules(tmp_path, entry, set_key=True)
    assert endpoint_gaps(rules, entry, peer) == []
    unset, _ = endpoint_rules(tmp_path, entry, set_key=False)
    assert endpoint_gaps(unset, entry, peer), f"{entry['name']}: opened although {entry['plan_key']} is unset"
