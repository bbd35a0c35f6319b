"""Turn role flows into security groups and rules.

One group per distinct role set found in the plan (a node that is etcd and
master gets the group `etcd-master`), so every node interface gets exactly
one ket-infra group. Sources are group references, never node IPs, so the
rule count does not grow with the node count. Ports that overlap or touch
merge into one range per (group, direction, peer, protocol). Rule names are
derived from their content, so Terraform addresses never shift.

Every ingress rule between groups has its egress twin on the source group:
ket-infra's groups carry explicit egress for exactly the cluster's flows.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ket_infra import cni_facts
from ket_infra import flows as catalog
from ket_infra.errors import QuotaError
from ket_infra.flows import Flow
from ket_infra.plan import KUBELET_ROLES, Cni, Plan, group_name, role_key, spans_the_internet, split_host_port

if TYPE_CHECKING:
    from ket_infra.environment import Environment

RULE_QUOTA = 60  # inbound (and, separately, outbound) rules per security group
RULE_WARN = 50  # leave headroom for the user's own rules
_PROTO_ORDER = {"tcp": 0, "udp": 1, "icmp": 2}


@dataclass(frozen=True)
class Group:
    name: str
    roles: tuple[str, ...]
    nodes: tuple[str, ...]


@dataclass(frozen=True)
class Peer:
    """The other end of a rule: exactly one of a group and a CIDR."""

    group: str | None = None
    cidr: str | None = None

    @property
    def label(self) -> str:
        return self.group if self.group is not None else str(self.cidr).replace("/", "-")

    def as_json(self) -> dict[str, str]:
        return {"group": self.group} if self.group is not None else {"cidr": str(self.cidr)}


@dataclass(frozen=True)
class Rule:
    name: str
    group: str
    direction: str  # ingress | egress
    protocol: str
    from_port: int | None
    to_port: int | None
    peer: Peer  # ingress: the source; egress: the destination
    purposes: tuple[str, ...]
    required_by: tuple[str, ...]
    citations: tuple[str, ...]
    flows: tuple[str, ...]

    @property
    def purpose(self) -> str:
        return "; ".join(self.purposes)

    @property
    def ports(self) -> str:
        if self.from_port is None:
            return "all" if self.protocol == "all" else "-"
        if self.protocol == "icmp":
            return f"type {self.from_port}" + (f" code {self.to_port}" if self.to_port not in (None, -1) else "")
        if self.from_port == self.to_port:
            return str(self.from_port)
        return f"{self.from_port}-{self.to_port}"


@dataclass(frozen=True)
class HostSetting:
    group: str
    source_dest_check: bool
    reason: str


@dataclass(frozen=True)
class RuleSet:
    cluster: str
    cni: Cni
    groups: tuple[Group, ...]
    rules: tuple[Rule, ...]
    host_settings: tuple[HostSetting, ...]
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class _Atom:
    group: str
    direction: str
    peer: Peer
    protocol: str
    lo: int | None
    hi: int | None
    flow: Flow


def groups_of(plan: Plan) -> tuple[Group, ...]:
    by_roles: dict[frozenset[str], list[str]] = defaultdict(list)
    for node in plan.nodes:
        by_roles[node.roles].append(node.host)
    ordered = sorted(by_roles, key=role_key)
    return tuple(
        Group(group_name(r), tuple(sorted(r, key=lambda x: role_key({x}))), tuple(by_roles[r])) for r in ordered
    )


def cidr_sources(flow: Flow, plan: Plan, env: Environment | None) -> list[tuple[str, str | None]]:
    """(CIDR, group that sends from it, if a ket-infra group) for a CIDR flow."""
    kind = flow.src_cidr
    if kind == catalog.POD_CIDR:
        return [(plan.pod_cidr, None)]
    if kind == catalog.PREFLIGHT:
        out: list[tuple[str, str | None]] = []
        for role in ("master", "worker"):
            node = plan.first(role)
            if node is not None and all(c != f"{node.address}/32" for c, _ in out):
                out.append((f"{node.address}/32", node.group))
        return out
    if kind == catalog.INSTALLER:
        return [(env.installer_cidr, None)] if env is not None and env.installer_cidr else []
    if kind == catalog.INGRESS_CLIENTS:
        return [(c, None) for c in (env.ingress_cidrs if env is not None else ())]
    if kind == catalog.API_CLIENTS:
        return [(c, None) for c in (env.api_cidrs if env is not None else ())]
    assert kind is not None
    return [(kind, None)]  # a literal CIDR from the environment's extra_rules


def cidr_destinations(flow: Flow, plan: Plan, env: Environment | None) -> list[str]:
    """The CIDRs an outbound flow goes to; empty when the environment names none."""
    egress = list(env.egress_cidrs) if env is not None else []
    if flow.dst_cidr == catalog.REGISTRY:
        registry = plan.install.registry
        address = registry.address if registry is not None else None
        return [f"{address}/32"] if address is not None else egress
    if flow.dst_cidr == catalog.EGRESS:
        return egress
    raise ValueError(f"flow {flow.name}: unknown destination {flow.dst_cidr!r}")


def _atoms(flow: Flow, groups: tuple[Group, ...], plan: Plan, env: Environment | None) -> list[_Atom]:
    lo, hi = flow.ports if flow.ports is not None else (None, None)
    targets = [g for g in groups if set(g.roles) & set(flow.to)]
    out: list[_Atom] = []

    def add(group: str, direction: str, peer: Peer) -> None:
        out.append(_Atom(group, direction, peer, flow.protocol, lo, hi, flow))

    if flow.dst_cidr is not None:
        for cidr in cidr_destinations(flow, plan, env):
            for s in groups:
                if set(s.roles) & set(flow.src):
                    add(s.name, "egress", Peer(cidr=cidr))
        return out
    if flow.src:
        sources = [g for g in groups if set(g.roles) & set(flow.src)]
        for t in targets:
            for s in sources:
                add(t.name, "ingress", Peer(group=s.name))
                add(s.name, "egress", Peer(group=t.name))
        return out
    for cidr, sender in cidr_sources(flow, plan, env):
        for t in targets:
            add(t.name, "ingress", Peer(cidr=cidr))
            if sender is not None:
                add(sender, "egress", Peer(group=t.name))
            elif flow.src_cidr == catalog.POD_CIDR:
                # Pods on these nodes send to pods elsewhere: the pod CIDR is the destination.
                add(t.name, "egress", Peer(cidr=cidr))
    return out


def _rule_name(group: str, direction: str, protocol: str, lo: int | None, hi: int | None, peer: Peer) -> str:
    proto = protocol if protocol in ("tcp", "udp", "icmp", "all") else f"proto{protocol}"
    ports = "" if lo is None else (f"-{lo}" if lo == hi else f"-{lo}-{hi}")
    if protocol == "icmp" and lo is not None:
        ports = f"-type{lo}" + (f"-code{hi}" if hi not in (None, -1) else "")
    way = "from" if direction == "ingress" else "to"
    short = "in" if direction == "ingress" else "out"
    return f"{group}-{short}-{proto}{ports}-{way}-{peer.label}"


def _merge(atoms: list[_Atom]) -> list[Rule]:
    buckets: dict[tuple[str, str, Peer, str], list[_Atom]] = defaultdict(list)
    for a in atoms:
        buckets[(a.group, a.direction, a.peer, a.protocol)].append(a)
    rules: list[Rule] = []
    for (group, direction, peer, protocol), items in buckets.items():
        runs: list[tuple[int | None, int | None, list[Flow]]] = []
        mergeable = protocol in ("tcp", "udp")
        for a in sorted(items, key=lambda x: (x.lo if x.lo is not None else -2, x.hi if x.hi is not None else -2)):
            if runs:
                lo, hi, fl = runs[-1]
                same = (a.lo, a.hi) == (lo, hi)
                touches = mergeable and lo is not None and hi is not None and a.lo is not None and a.lo <= hi + 1
                if same or touches:
                    new_hi = max(hi, a.hi) if hi is not None and a.hi is not None else hi
                    runs[-1] = (lo, new_hi, [*fl, a.flow])
                    continue
            runs.append((a.lo, a.hi, [a.flow]))
        for lo, hi, fl in runs:
            uniq = list({f.name: f for f in fl}.values())
            rules.append(
                Rule(
                    name=_rule_name(group, direction, protocol, lo, hi, peer),
                    group=group,
                    direction=direction,
                    protocol=protocol,
                    from_port=lo,
                    to_port=hi,
                    peer=peer,
                    purposes=tuple(dict.fromkeys(f.purpose for f in uniq)),
                    required_by=tuple(dict.fromkeys(f.required_by for f in uniq)),
                    citations=tuple(dict.fromkeys(f.source for f in uniq)),
                    flows=tuple(f.name for f in uniq),
                )
            )
    return rules


def _warnings(plan: Plan, env: Environment | None, groups: tuple[Group, ...]) -> list[str]:
    cni = plan.cni
    out: list[str] = list(plan.typos)
    if cni.disabled:
        out.append("add_ons.cni.disable is true: no CNI is installed, so no CNI flows are opened")
    elif cni.provider == "calico" and cni.mode == "routed":
        out.append(
            "Calico routed mode: on AWS all kubelet nodes must share one subnet (the VPC router knows no pod "
            "routes) and need the source/destination check off; across subnets use mode overlay (IP-in-IP)"
        )
    elif cni.provider == "weave":
        out.append(
            "Weave: an AWS VPC has no native multicast; Weave carries multicast inside its overlay, so "
            "nothing is opened for it"
        )
        if not cni.encrypted:
            out.append("Weave without options.weave.password: pod traffic between nodes is not encrypted")
    elif cni.provider == "contiv":
        out.append(cni_facts.CONTIV)
    elif cni.provider == "custom" and not (env is not None and env.extra_flows):
        out.append(
            "CNI provider custom: ket-infra knows no ports for it and the environment file has no "
            "extra_rules; add the CNI's flows to extra_rules or its traffic will be blocked"
        )
    if ipaddress.ip_network(plan.pod_cidr).is_global:
        out.append(
            f"cluster.networking.pod_cidr_block {plan.pod_cidr} is public address space: pods would take addresses "
            "that belong to someone on the internet, and the rules trust it as the pod network; use a private "
            "range such as 172.16.0.0/16"
        )
    if env is None or env.installer_cidr is None:
        out.append(
            f"installer_cidr is not set: nothing opens SSH (tcp {plan.install.ssh_port}) for the installer; "
            "set it in the environment file"
        )
    out.extend(_download_warnings(plan, env))
    lb = load_balancer_warning(plan, env)
    if lb:
        out.append(lb)
    if (env is None or env.preflight) and (plan.first("master") or plan.first("worker")):
        out.append(
            "preflight rules (kismatic-inspector from master[0] and worker[0]) are open; set preflight: false "
            "in the environment file once the cluster is installed"
        )
    if any("ingress" in g.roles for g in groups) and not (env is not None and env.ingress_cidrs):
        out.append("ingress nodes exist but ingress_cidrs is empty: nothing outside the cluster can reach 80/443")
    return out


def _download_warnings(plan: Plan, env: Environment | None) -> list[str]:
    install = plan.install
    out: list[str] = []
    if env is not None and env.egress_cidrs:
        return out
    registry = install.registry
    if not install.disconnected:
        out.append(
            "egress_cidrs is not set: nothing opens outbound tcp 80/443 for `kismatic install` to reach package "
            "repositories and image registries (cluster.disconnected_installation is false); set egress_cidrs to "
            "your NAT or proxy, your mirrors, or 0.0.0.0/0, unless another group already allows it (verify checks)"
        )
    elif install.packages:
        out.append(
            "egress_cidrs is not set: nothing opens outbound tcp 80/443 to the internal package repositories a "
            "disconnected install uses; set egress_cidrs to their addresses"
        )
    if registry is not None and registry.address is None:
        out.append(
            f"docker_registry.server {registry.host}:{registry.port} is a DNS name: ket-infra cannot tell its "
            "address; set egress_cidrs to the registry's addresses"
        )
    return out


def load_balancer_warning(plan: Plan, env: Environment | None) -> str | None:
    """KET's nodes reach the API through master.load_balancer; its addresses need api_cidrs."""
    value = plan.load_balancer
    if not value:
        return None
    host, _port = split_host_port(value)
    masters = [plan.node(h) for h in plan.hosts("master")]
    if any(host in (m.host, m.ip, m.internalip) for m in masters):
        return None
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return (
            f"master.load_balancer {value} is a DNS name that is not a master: kubelets and kube-proxy reach "
            "kube-apiserver through it, so api_cidrs must cover the balancer's addresses (and its health checks)"
        )
    cidrs = env.api_cidrs if env is not None else ()
    if any(addr in ipaddress.ip_network(c) for c in cidrs):
        return None
    return (
        f"master.load_balancer {value} is not a master and api_cidrs does not cover {addr}: the nodes reach "
        f"kube-apiserver through it; add {addr}/32 to api_cidrs in the environment file"
    )


def _world_warnings(env: Environment | None, rules: list[Rule]) -> list[str]:
    """The environment may open a port to the world; say so, naming the key and what is reachable."""
    if env is None:
        return []
    named: list[tuple[str, str]] = []
    if env.installer_cidr:
        named.append(("installer_cidr", env.installer_cidr))
    named += [(f"ingress_cidrs[{i}]", c) for i, c in enumerate(env.ingress_cidrs)]
    named += [(f"api_cidrs[{i}]", c) for i, c in enumerate(env.api_cidrs)]
    named += [(f"extra_rules {f.name}", f.src_cidr) for f in env.extra_flows if f.src_cidr]
    out: list[str] = []
    for key, cidr in named:
        if not spans_the_internet(cidr):
            continue
        open_to: dict[str, list[str]] = defaultdict(list)
        for r in rules:
            if r.direction == "ingress" and r.peer.cidr == cidr:
                what = "all traffic" if r.protocol == "all" else f"{catalog.protocol_label(r.protocol)} {r.ports}"
                open_to[what].append(r.group)
        if open_to:
            reach = "; ".join(f"{what} on {', '.join(groups)}" for what, groups in open_to.items())
            out.append(f"{key} is {cidr}, which spans the internet: the world can reach {reach}")
    return out


def _check_quota(rules: list[Rule], warnings: list[str]) -> None:
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for r in rules:
        counts[(r.group, r.direction)] += 1
    for (group, direction), n in sorted(counts.items()):
        if n > RULE_QUOTA:
            raise QuotaError(
                f"group {group} needs {n} {direction} rules, {n - RULE_QUOTA} above the AWS quota of "
                f"{RULE_QUOTA} per security group; reduce the number of distinct role combinations in the plan "
                "(each is a group) or the environment's extra rules"
            )
        if n > RULE_WARN:
            warnings.append(
                f"group {group} has {n} {direction} rules, near the AWS quota of {RULE_QUOTA}: little room is left for other rules"
            )


def layout(plan: Plan, env: Environment | None = None) -> RuleSet:
    """The groups, rules and host settings PLAN needs (with ENV's options)."""
    groups = groups_of(plan)
    atoms = [a for f in catalog.required_flows(plan, env) for a in _atoms(f, groups, plan, env)]
    order = {g.name: i for i, g in enumerate(groups)}
    rules = sorted(
        _merge(atoms),
        key=lambda r: (
            order[r.group],
            r.direction != "ingress",
            _PROTO_ORDER.get(r.protocol, 3),
            r.protocol,
            r.from_port if r.from_port is not None else -2,
            r.peer.group is None,
            r.peer.label,
        ),
    )
    warnings = _warnings(plan, env, groups) + _world_warnings(env, rules)
    _check_quota(rules, warnings)
    host_settings: list[HostSetting] = []
    if not plan.cni.disabled and plan.cni.provider == "calico" and plan.cni.mode == "routed":
        for g in groups:
            if set(g.roles) & set(KUBELET_ROLES):
                host_settings.append(
                    HostSetting(
                        g.name,
                        False,
                        "Calico routed mode: pod traffic leaves the node with pod source IPs, which EC2 drops "
                        f"unless the source/destination check is off ({catalog.CALICO_AWS})",
                    )
                )
    return RuleSet(plan.cluster, plan.cni, groups, tuple(rules), tuple(host_settings), tuple(warnings))
