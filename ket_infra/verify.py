"""Prove against the live cloud that every required flow is open.

Reads what AWS has now (security groups on each node's interface, network
ACLs of each subnet, each instance's source/destination check) and judges
each required flow the way AWS would: the union of the groups on the target
interface (ingress) and on the source interface (egress); the network ACLs
of both subnets in rule-number order, in both directions, with the return
path (ACLs are stateless). It judges the live state, not ket-infra's own
rules: a rule added by hand counts, a rule removed is found.

Scale: nodes that no rule or ACL entry can tell apart (same groups, same
subnet, same matches against every CIDR in play) form one class and are
judged once; a check stands for all node pairs of its two classes. AWS is
read with a handful of paginated describe calls, whatever the node count.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ket_infra import flows as catalog
from ket_infra.aws import (
    Counter,
    Discovery,
    NodeInterface,
    aws_errors,
    check_account,
    client,
    described,
    discover,
)
from ket_infra.environment import EPHEMERAL_PORTS, Environment
from ket_infra.flows import Flow, protocol_label, protocol_name
from ket_infra.layout import RuleSet
from ket_infra.plan import ROLES, Plan
from ket_infra.report import listed

EPHEMERAL = EPHEMERAL_PORTS  # Linux's net.ipv4.ip_local_port_range; the environment's ephemeral_ports overrides it
INTERNET = "0.0.0.0/0"  # judged, never opened: where downloads go when egress_cidrs names nothing
Net = ipaddress.IPv4Network


def _net(text: str) -> Net:
    return ipaddress.IPv4Network(text, strict=False)


def proto_label(protocol: str) -> str:
    return "all traffic" if protocol == "all" else protocol_label(protocol)


@dataclass(frozen=True)
class Endpoint:
    """One side of a check: a class of nodes, or an outside CIDR."""

    label: str  # role name, or installer_cidr / ingress_cidrs / api_cidrs / pod_cidr
    nodes: tuple[NodeInterface, ...] = ()
    cidr: str | None = None

    @property
    def rep(self) -> NodeInterface | None:
        return self.nodes[0] if self.nodes else None

    @property
    def net(self) -> Net:
        if self.cidr is not None:
            return _net(self.cidr)
        assert self.rep is not None
        return _net(f"{self.rep.address}/32")

    @property
    def name(self) -> str:
        return self.rep.host if self.rep is not None else str(self.cidr)

    @property
    def hosts(self) -> list[str]:
        """The nodes of the class, sorted; an outside CIDR names itself."""
        return sorted(n.host for n in self.nodes) or [self.name]


@dataclass
class Check:
    rule: str
    protocol: str
    from_port: int | None
    to_port: int | None
    source: Endpoint
    target: Endpoint
    status: str = "allowed"
    reason: str = ""
    pairs: int = 0

    @property
    def what(self) -> str:
        """The traffic checked, as people read it: "tcp 179", "IP-in-IP (4)"."""
        ports = (self.from_port, self.to_port) if self.from_port is not None and self.to_port is not None else None
        return describe_traffic(Traffic(self.protocol, ports))

    def _target_node(self) -> str:
        # Within one class, name a pair of two different nodes.
        same = self.source.nodes == self.target.nodes and len(self.target.nodes) > 1
        return self.target.nodes[1].host if same else self.target.name

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rule": self.rule,
            "protocol": self.protocol,
            "from_port": self.from_port,
            "to_port": self.to_port,
            "source_role": self.source.label,
            "target_role": self.target.label,
            "source_node": self.source.name,
            "target_node": self._target_node(),
            "status": self.status,
            "reason": self.reason,
            "pairs": self.pairs,
        }
        if self.status == "blocked":
            out["source_nodes"] = self.source.hosts
            out["target_nodes"] = self.target.hosts
            # each node is judged on the interface that holds its plan address (audit reads the others)
            for side, end in (("source", self.source), ("target", self.target)):
                if end.nodes:
                    out[f"{side}_interfaces"] = {n.host: n.network_interface_id for n in end.nodes}
        return out


@dataclass
class HostCheck:
    node: NodeInterface
    expected: bool

    @property
    def status(self) -> str:
        return "allowed" if self.node.source_dest_check == self.expected else "blocked"

    @property
    def problem(self) -> str:
        return (
            f"source/dest check is {'on' if self.node.source_dest_check else 'off'}, must be "
            f"{'on' if self.expected else 'off'} (Calico routed mode); run ket-infra apply to set it"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "node": self.node.host,
            "instance_id": self.node.instance_id,
            "source_dest_check": self.node.source_dest_check,
            "expected": self.expected,
            "status": self.status,
        }


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    host_settings: list[HostCheck] = field(default_factory=list)
    api_calls: int = 0
    seconds: float = 0.0  # how long reading and judging took (JUnit's time)
    nodes: int = 0

    @property
    def judged(self) -> bool:
        """A verdict needs something judged: no nodes or no checks prove nothing open."""
        return self.nodes > 0 and bool(self.checks)

    @property
    def ok(self) -> bool:
        return (
            self.judged
            and all(c.status == "allowed" for c in self.checks)
            and all(h.status == "allowed" for h in self.host_settings)
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checks": [c.as_json() for c in self.checks],
            "host_settings": [h.as_json() for h in self.host_settings],
        }


# ---------------------------------------------------------------- live state


@dataclass(frozen=True)
class Permission:
    group_id: str
    protocol: str
    from_port: int | None
    to_port: int | None
    groups: frozenset[str]
    cidrs: tuple[Net, ...]


@dataclass(frozen=True)
class AclEntry:
    number: int
    egress: bool
    protocol: str
    allow: bool
    cidr: Net
    ports: tuple[int, int] | None
    icmp: tuple[int, int] | None


@dataclass
class LiveState:
    group_names: dict[str, str]
    ingress: dict[str, list[Permission]]
    egress: dict[str, list[Permission]]
    acl_of_subnet: dict[str, str]
    acl_entries: dict[str, list[AclEntry]]
    # every prefix list a rule of those groups names, as its entries (IPv4 and IPv6 CIDRs)
    prefix_lists: dict[str, tuple[str, ...]] = field(default_factory=dict)
    ephemeral: tuple[int, int] = EPHEMERAL  # the clients' port range that TCP answers go back to
    group_owners: dict[str, str] = field(default_factory=dict)  # group id -> its account


def _permissions(
    group_id: str, perms: Iterable[dict[str, Any]], prefix_lists: dict[str, tuple[str, ...]] | None = None
) -> list[Permission]:
    """One Permission per AWS permission; a prefix list counts as its IPv4 entries (IPv6 reaches no node)."""
    lists = prefix_lists or {}
    out = []
    for p in perms:
        listed = [c for pl in p.get("PrefixListIds", []) for c in lists.get(pl.get("PrefixListId", ""), ())]
        proto = protocol_name(p.get("IpProtocol", "-1"))
        lo, hi = p.get("FromPort"), p.get("ToPort")
        if proto in ("-1",) or proto not in ("tcp", "udp", "icmp"):
            lo = hi = None
        out.append(
            Permission(
                group_id,
                proto,
                lo,
                hi,
                frozenset(g["GroupId"] for g in p.get("UserIdGroupPairs", []) if g.get("GroupId")),
                tuple(_net(r["CidrIp"]) for r in p.get("IpRanges", []) if r.get("CidrIp"))
                + tuple(_net(c) for c in listed if ":" not in c),
            )
        )
    return out


def read_prefix_lists(env: Environment, ids: Iterable[str], ec2: Any) -> dict[str, tuple[str, ...]]:
    """The entries of each managed prefix list: one paginated call per list, whatever the node count."""
    out: dict[str, tuple[str, ...]] = {}
    with aws_errors(env, "reading managed prefix lists"):
        for pl in sorted(set(ids)):
            pages = ec2.get_paginator("get_managed_prefix_list_entries").paginate(PrefixListId=pl)
            out[pl] = tuple(e["Cidr"] for page in pages for e in page.get("Entries", []) if e.get("Cidr"))
    return out


def read_state(env: Environment, discovery: Discovery, ec2: Any, extra_groups: Iterable[str] = ()) -> LiveState:
    """Security groups on the nodes' interfaces (and EXTRA_GROUPS), the prefix lists their rules name,
    and the VPC's network ACLs."""
    group_ids = sorted({g for n in discovery.nodes for g in n.security_groups} | set(extra_groups))
    names: dict[str, str] = {}
    ingress: dict[str, list[Permission]] = {}
    egress: dict[str, list[Permission]] = {}
    with aws_errors(env, "reading security groups"):
        found = list(described(ec2, "describe_security_groups", "SecurityGroups", "group-id", group_ids))
    named = (
        pl["PrefixListId"]
        for g in found
        for p in (*g.get("IpPermissions", []), *g.get("IpPermissionsEgress", []))
        for pl in p.get("PrefixListIds", [])
        if pl.get("PrefixListId")
    )
    lists = read_prefix_lists(env, named, ec2)
    owners = {g["GroupId"]: str(g["OwnerId"]) for g in found if g.get("OwnerId")}
    for g in found:
        names[g["GroupId"]] = g.get("GroupName", g["GroupId"])
        ingress[g["GroupId"]] = _permissions(g["GroupId"], g.get("IpPermissions", []), lists)
        egress[g["GroupId"]] = _permissions(g["GroupId"], g.get("IpPermissionsEgress", []), lists)
    acl_of_subnet: dict[str, str] = {}
    entries: dict[str, list[AclEntry]] = {}
    default_acl = None
    with aws_errors(env, "reading network ACLs"):
        pages = ec2.get_paginator("describe_network_acls").paginate(
            Filters=[{"Name": "vpc-id", "Values": [discovery.vpc_id]}]
        )
        for page in pages:
            for acl in page["NetworkAcls"]:
                acl_id = acl["NetworkAclId"]
                if acl.get("IsDefault"):
                    default_acl = acl_id
                for assoc in acl.get("Associations", []):
                    acl_of_subnet[assoc["SubnetId"]] = acl_id
                entries[acl_id] = sorted(
                    (
                        AclEntry(
                            int(e["RuleNumber"]),
                            bool(e["Egress"]),
                            protocol_name(e.get("Protocol", "-1")),
                            e.get("RuleAction") == "allow",
                            _net(e.get("CidrBlock", "0.0.0.0/0")),
                            (int(e["PortRange"]["From"]), int(e["PortRange"]["To"])) if e.get("PortRange") else None,
                            (int(e["IcmpTypeCode"].get("Type", -1)), int(e["IcmpTypeCode"].get("Code", -1)))
                            if e.get("IcmpTypeCode")
                            else None,
                        )
                        for e in acl.get("Entries", [])
                        if e.get("CidrBlock")
                    ),
                    key=lambda e: e.number,
                )
    for n in discovery.nodes:
        if n.subnet_id not in acl_of_subnet and default_acl is not None:
            acl_of_subnet[n.subnet_id] = default_acl
    return LiveState(names, ingress, egress, acl_of_subnet, entries, lists, env.ephemeral_ports, owners)


# ---------------------------------------------------------------- judging


@dataclass(frozen=True)
class Traffic:
    protocol: str  # tcp | udp | icmp | number | all
    ports: tuple[int, int] | None  # tcp/udp port range; icmp (type, code)


def subtract(intervals: list[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    """INTERVALS (inclusive, sorted) without LO..HI."""
    out = []
    for a, b in intervals:
        if hi < a or lo > b:
            out.append((a, b))
            continue
        if a < lo:
            out.append((a, lo - 1))
        if b > hi:
            out.append((hi + 1, b))
    return out


def perm_covers(p: Permission, t: Traffic) -> tuple[int, int] | None:
    """The port interval P opens for T, (0, 0) when ports do not apply, None when P does not apply."""
    if p.protocol == "-1":
        return (0, 65535) if t.protocol in ("tcp", "udp") else (0, 0)
    if t.protocol == "all" or p.protocol != t.protocol:
        return None
    if t.protocol in ("tcp", "udp"):
        return (p.from_port if p.from_port is not None else 0, p.to_port if p.to_port is not None else 65535)
    if t.protocol == "icmp":
        assert t.ports is not None
        ptype = p.from_port if p.from_port is not None else -1
        pcode = p.to_port if p.to_port is not None else -1
        ok = ptype in (-1, t.ports[0]) and pcode in (-1, t.ports[1])
        return (0, 0) if ok else None
    return (0, 0)


def sg_allows(perms: list[Permission], t: Traffic, peer_groups: frozenset[str], peer: Net) -> bool:
    """Do these permissions (all groups on one interface, one direction) let T through to/from PEER?"""
    need = [t.ports] if t.protocol in ("tcp", "udp") and t.ports is not None else [(0, 0)]
    for p in perms:
        span = perm_covers(p, t)
        if span is None:
            continue
        if not (p.groups & peer_groups or any(peer.subnet_of(c) for c in p.cidrs)):
            continue
        need = subtract(need, span[0], span[1])
        if not need:
            return True
    return False


def _acl_verdict(entries: list[AclEntry], egress: bool, t: Traffic, peer: Net) -> AclEntry | bool | None:
    """True if allowed; the denying entry, or None for the default deny."""
    pending = [t.ports] if t.protocol in ("tcp", "udp") and t.ports is not None else [(0, 0)]
    for e in entries:
        if e.egress != egress:
            continue
        if t.protocol == "all" and e.protocol != "-1":
            if not e.allow and peer.overlaps(e.cidr):
                return e  # denies part of "all traffic"
            continue
        if e.protocol != "-1" and e.protocol != t.protocol:
            continue
        if t.protocol == "icmp" and e.protocol == "icmp" and e.icmp is not None and t.ports is not None:
            etype, ecode = e.icmp
            if etype not in (-1, t.ports[0]) or ecode not in (-1, t.ports[1]):
                continue
        span = (0, 0)
        if t.protocol in ("tcp", "udp"):
            span = e.ports if (e.protocol != "-1" and e.ports is not None) else (0, 65535)
        hit = [iv for iv in pending if not (span[1] < iv[0] or span[0] > iv[1])]
        if not hit:
            continue
        if e.allow:
            if not peer.subnet_of(e.cidr):
                continue
            for iv in hit:
                pending = subtract(pending, max(iv[0], span[0]), min(iv[1], span[1]))
            if not pending:
                return True
        elif peer.overlaps(e.cidr):
            return e
    return None


def describe_traffic(t: Traffic) -> str:
    if t.protocol in ("tcp", "udp") and t.ports is not None:
        lo, hi = t.ports
        return f"{t.protocol} {lo}" if lo == hi else f"{t.protocol} {lo}-{hi}"
    if t.protocol == "icmp" and t.ports is not None:
        return f"icmp type {t.ports[0]}"
    return proto_label(t.protocol)


class Judge:
    def __init__(self, state: LiveState) -> None:
        self.state = state

    def _groups(self, ids: Iterable[str]) -> str:
        return ", ".join(f"{g} ({self.state.group_names.get(g, '?')})" for g in ids)

    def sg(self, node: NodeInterface, direction: str, t: Traffic, peer: Endpoint) -> str | None:
        table = self.state.ingress if direction == "ingress" else self.state.egress
        perms = [p for g in node.security_groups for p in table.get(g, [])]
        peer_groups = frozenset(peer.rep.security_groups) if peer.rep is not None else frozenset()
        if sg_allows(perms, t, peer_groups, peer.net):
            return None
        way = "from" if direction == "ingress" else "to"
        other = f"the nodes in {self._groups(peer.rep.security_groups)}" if peer.rep is not None else str(peer.cidr)
        return f"no {direction} rule on {self._groups(node.security_groups)} allows {describe_traffic(t)} {way} {other}"

    def acl(self, subnet: str, egress: bool, t: Traffic, peer: Net, what: str) -> str | None:
        acl_id = self.state.acl_of_subnet.get(subnet)
        if acl_id is None:
            return None
        verdict = _acl_verdict(self.state.acl_entries.get(acl_id, []), egress, t, peer)
        if verdict is True:
            return None
        way = "outbound" if egress else "inbound"
        if isinstance(verdict, AclEntry):
            return f"network ACL {acl_id} rule {verdict.number} denies {what} {describe_traffic(t)} {way} ({subnet})"
        return f"no network ACL {acl_id} entry allows {what} {describe_traffic(t)} {way} ({subnet}): default deny"

    def flow(self, t: Traffic, src: Endpoint, dst: Endpoint) -> str | None:
        """None when AWS lets T from SRC to DST (and its replies) through; else why not.

        At least one end is a class of nodes; the other may be a CIDR outside the cluster.
        """
        assert src.rep is not None or dst.rep is not None
        reasons: list[str] = []
        if src.rep is not None:
            reasons.append(self.sg(src.rep, "egress", t, dst) or "")
        if dst.rep is not None:
            reasons.append(self.sg(dst.rep, "ingress", t, src) or "")
        src_subnet = src.rep.subnet_id if src.rep is not None else None
        dst_subnet = dst.rep.subnet_id if dst.rep is not None else None
        if src_subnet != dst_subnet:
            back = _return_traffic(t, self.state.ephemeral)
            if src_subnet is not None:
                reasons.append(self.acl(src_subnet, True, t, dst.net, "") or "")
                if back is not None:
                    reasons.append(self.acl(src_subnet, False, back, dst.net, "the return path") or "")
            if dst_subnet is not None:
                reasons.append(self.acl(dst_subnet, False, t, src.net, "") or "")
                if back is not None:
                    reasons.append(self.acl(dst_subnet, True, back, src.net, "the return path") or "")
        found = [" ".join(r.split()) for r in reasons if r]
        return "; ".join(found) if found else None


def _return_traffic(t: Traffic, ephemeral: tuple[int, int] = EPHEMERAL) -> Traffic | None:
    # TCP answers to the client's ephemeral port (EPHEMERAL). The UDP flows here (Weave,
    # VXLAN) send from and to their fixed ports, and their reverse direction
    # is a required flow of its own, like IP-in-IP's and ESP's.
    if t.protocol == "tcp":
        return Traffic(t.protocol, ephemeral)
    if t.protocol == "icmp" and t.ports is not None and t.ports[0] == 8:
        return Traffic("icmp", (0, 0))  # echo reply
    return None


# ---------------------------------------------------------------- classes


def node_classes(
    plan: Plan, discovery: Discovery, state: LiveState, extra: Iterable[Net]
) -> list[tuple[NodeInterface, ...]]:
    """Nodes no rule or ACL entry can tell apart, grouped."""
    cidrs: set[Net] = set(extra)
    for table in (state.ingress, state.egress):
        for perms in table.values():
            for p in perms:
                cidrs.update(p.cidrs)
    for entries in state.acl_entries.values():
        cidrs.update(e.cidr for e in entries)
    ordered = sorted(cidrs, key=str)
    by_key: dict[tuple[Any, ...], list[NodeInterface]] = defaultdict(list)
    for n in discovery.nodes:
        addr = ipaddress.IPv4Address(n.address)
        signature = tuple(i for i, c in enumerate(ordered) if addr in c)
        key = (plan.node(n.host).group, tuple(sorted(n.security_groups)), n.subnet_id, signature)
        by_key[key].append(n)
    return [tuple(v) for v in by_key.values()]


def _role(plan: Plan, node: NodeInterface, roles: tuple[str, ...]) -> str:
    mine = plan.node(node.host).roles
    return next((r for r in ROLES if r in mine and r in roles), next(r for r in ROLES if r in mine))


def _traffic(flow: Flow) -> Traffic:
    return Traffic(flow.protocol, flow.ports)


def _destinations(flow: Flow, plan: Plan, env: Environment) -> list[Endpoint]:
    """Where an outbound flow goes; the internet when the environment names nothing."""
    from ket_infra.layout import cidr_destinations

    named = cidr_destinations(flow, plan, env)
    if named:
        return [Endpoint(str(flow.dst_cidr), cidr=c) for c in named]
    return [Endpoint(f"{flow.dst_cidr} (not set: the internet)", cidr=INTERNET)]


def _env_key(flow: Flow) -> str:
    """The environment key that names where an outbound flow goes."""
    from ket_infra.layout import ENDPOINT_ENV

    return ENDPOINT_ENV.get(str(flow.dst_cidr), catalog.EGRESS)


def _asked_by(flow: Flow) -> str:
    return f" (needed for plan key {flow.plan_key})" if flow.plan_key else ""


def _outbound(
    judge: Judge, flow: Flow, plan: Plan, env: Environment, classes: list[tuple[NodeInterface, ...]]
) -> list[Check]:
    t = _traffic(flow)
    lo, hi = flow.ports if flow.ports is not None else (None, None)
    out: list[Check] = []
    for cls in classes:
        if not plan.node(cls[0].host).roles & set(flow.src):
            continue
        src = Endpoint(_role(plan, cls[0], flow.src), cls)
        for dst in _destinations(flow, plan, env):
            check = Check(flow.name, flow.protocol, lo, hi, src, dst, pairs=len(cls))
            reason = judge.flow(t, src, dst)
            if reason:
                hint = "" if dst.label == flow.dst_cidr else f"; set {_env_key(flow)} so ket-infra opens it"
                check.status, check.reason = "blocked", reason + hint + _asked_by(flow)
            out.append(check)
    return out


def evaluate(plan: Plan, env: Environment, rules: RuleSet, discovery: Discovery, state: LiveState) -> Report:
    from ket_infra.layout import cidr_sources

    required = catalog.required_flows(plan, env)
    extra = [_net(plan.pod_cidr)]
    for f in required:
        if f.src_cidr is not None:
            extra.extend(_net(c) for c, _ in cidr_sources(f, plan, env))
        if f.dst_cidr is not None:
            extra.extend(e.net for e in _destinations(f, plan, env))
    classes = node_classes(plan, discovery, state, extra)
    judge = Judge(state)
    report = Report(nodes=len(discovery.nodes))
    for flow in required:
        if flow.dst_cidr is not None:
            report.checks.extend(_outbound(judge, flow, plan, env, classes))
            continue
        t = _traffic(flow)
        targets = [c for c in classes if plan.node(c[0].host).roles & set(flow.to)]
        for cls in targets:
            dst = Endpoint(_role(plan, cls[0], flow.to), cls)
            for src, pairs in _sources(flow, plan, env, classes, cls, discovery):
                lo, hi = flow.ports if flow.ports is not None else (None, None)
                check = Check(flow.name, flow.protocol, lo, hi, src, dst, pairs=pairs)
                if flow.src_cidr == catalog.POD_CIDR:
                    reason = _pod_traffic(judge, t, src, dst, classes, plan)
                else:
                    reason = judge.flow(t, src, dst)
                if reason:
                    check.status, check.reason = "blocked", reason + _asked_by(flow)
                report.checks.append(check)
    expected = {h.group: h.source_dest_check for h in rules.host_settings}
    for n in discovery.nodes:
        group = plan.node(n.host).group
        if group in expected:
            report.host_settings.append(HostCheck(n, expected[group]))
    return report


def _sources(
    flow: Flow,
    plan: Plan,
    env: Environment,
    classes: list[tuple[NodeInterface, ...]],
    target: tuple[NodeInterface, ...],
    discovery: Discovery,
) -> list[tuple[Endpoint, int]]:
    """The sources of FLOW towards the class TARGET, with the node pairs each stands for."""
    from ket_infra.layout import cidr_sources

    out: list[tuple[Endpoint, int]] = []
    if flow.src:
        for cls in classes:
            if not plan.node(cls[0].host).roles & set(flow.src):
                continue
            pairs = len(cls) * len(target) - (len(cls) if cls == target else 0)
            if pairs:
                out.append((Endpoint(_role(plan, cls[0], flow.src), cls), pairs))
        return out
    if flow.src_cidr == catalog.PREFLIGHT:
        for role in ("master", "worker"):
            first = plan.first(role)
            if first is None or any(e.rep is not None and e.rep.host == first.host for e, _ in out):
                continue
            node = discovery.node(first.host)
            pairs = len(target) - (1 if node in target else 0)
            if pairs:
                out.append((Endpoint(f"{role}[0]", (node,)), pairs))
        return out
    label = (
        flow.src_cidr
        if flow.src_cidr
        in (
            catalog.INSTALLER,
            catalog.INGRESS_CLIENTS,
            catalog.API_CLIENTS,
            catalog.POD_CIDR,
            catalog.NODEPORT_CLIENTS,
            catalog.LOAD_BALANCER,
        )
        else "cidr"
    )
    for cidr, _sender in cidr_sources(flow, plan, env):
        out.append((Endpoint(str(label), cidr=cidr), len(target)))
    return out


def _pod_traffic(
    judge: Judge, t: Traffic, src: Endpoint, dst: Endpoint, classes: list[tuple[NodeInterface, ...]], plan: Plan
) -> str | None:
    """Routed pod traffic: pod IPs on both ends, sent by any kubelet node.

    It leaves a node unencapsulated, addressed to a pod, for the next node on the same link: the
    VPC routes no pod address between subnets, so a sender in another subnet never gets through
    (plan refuses that layout; aws.check_routed_subnets), whatever the groups and ACLs say.
    """
    target = dst.rep
    assert target is not None and src.cidr is not None
    pods = Endpoint("pod_cidr", cidr=src.cidr)
    reasons = [judge.sg(target, "ingress", t, pods) or ""]
    for cls in classes:
        sender = cls[0]
        if not plan.node(sender.host).roles & set(catalog.KUBELET):
            continue
        if cls == dst.nodes and len(cls) == 1:
            continue  # a node's pods reach its own pods without the network
        reasons.append(judge.sg(sender, "egress", t, pods) or "")
        if sender.subnet_id != target.subnet_id:
            reasons.append(
                f"pod traffic from the kubelet nodes in {sender.subnet_id} to those in {target.subnet_id}: "
                "Calico routed mode needs every kubelet node in one subnet (the VPC routes no pod address between "
                "subnets); use mode overlay (IP-in-IP) or move the nodes into one subnet"
            )
    found = list(dict.fromkeys(r for r in reasons if r))
    return "; ".join(found) if found else None


def verify(plan: Plan, env: Environment, rules: RuleSet, counter: Counter | None = None) -> Report:
    """Check the account, read the live state (read-only calls only) and judge every required flow.

    Instances at the plan's addresses in another account are not the cluster: refused, as plan does.
    """
    import time

    started = time.monotonic()
    counter = counter or Counter()
    check_account(env, client(env, "sts", counter))
    ec2 = client(env, "ec2", counter)
    discovery = discover(plan, env, ec2)
    state = read_state(env, discovery, ec2)
    report = evaluate(plan, env, rules, discovery, state)
    report.api_calls = counter.total
    report.seconds = time.monotonic() - started
    return report


def node_checks(report: Report, plan: Plan) -> list[str]:
    """When a flow of the CNI itself is blocked: the node-side commands KET documents for that CNI, to see
    what the CNI makes of it once the cloud is fixed (or when pods still cannot talk)."""
    from ket_infra.cni_facts import NODE_CHECKS

    names = {f.name for f in catalog.cni_flows(plan)}
    if plan.cni.disabled or not any(c.status == "blocked" and c.rule in names for c in report.checks):
        return []
    return list(NODE_CHECKS.get(plan.cni.provider, ()))


def text_report(report: Report, env_name: str, cluster: str, checks_on_nodes: Iterable[str] = ()) -> str:
    blocked = [c for c in report.checks if c.status == "blocked"]
    pairs = sum(c.pairs for c in report.checks)
    lines = [
        f"verify {env_name} (cluster {cluster}): {len(report.checks)} checks covering {pairs} node pairs "
        f"over {report.nodes} nodes; {len(blocked)} blocked; {report.api_calls} AWS API calls"
    ]
    by_reason: dict[str, list[Check]] = defaultdict(list)
    for c in blocked:
        by_reason[c.reason].append(c)
    for reason, checks in by_reason.items():
        lines.append("")
        lines.append(f"BLOCKED: {reason}")
        merged: dict[tuple[str, str, str], tuple[Check, list[str], list[str]]] = {}
        for c in checks:
            key = (c.rule, c.source.label, c.target.label)
            _first, srcs, dsts = merged.setdefault(key, (c, [], []))
            srcs.extend(n for n in c.source.hosts if n not in srcs)
            dsts.extend(n for n in c.target.hosts if n not in dsts)
        for (rule, src_label, dst_label), (c, srcs, dsts) in merged.items():
            lines.append(
                f"  {rule}: {c.what} from {src_label} ({listed(sorted(srcs), 5)}) to {dst_label} ({listed(sorted(dsts), 5)})"
            )
    bad_hosts = [h for h in report.host_settings if h.status == "blocked"]
    if report.host_settings:
        lines.append("")
        if bad_hosts:
            for h in bad_hosts:
                lines.append(f"BLOCKED: {h.node.host} ({h.node.instance_id}): {h.problem}")
        else:
            lines.append(f"host settings: source/dest check as required on {len(report.host_settings)} node(s)")
    on_nodes = list(checks_on_nodes)
    if on_nodes:
        lines.append("")
        lines.append("the CNI's own view, once the cloud lets its flows through (KET's documented checks):")
        lines += [f"  {c}" for c in on_nodes]
    lines.append("")
    if not report.judged:
        lines.append(
            f"NOT JUDGED: nothing was checked ({len(report.checks)} checks over {report.nodes} nodes): "
            "no verdict; check the plan file's nodes and the environment's account and region"
        )
    else:
        lines.append(
            "OK: every required flow is open" if report.ok else "FAILED: fix the causes above, then run verify again"
        )
    return "\n".join(lines) + "\n"


def junit_time(seconds: float, cases: int) -> str:
    """A JUnit test case's time: the cases are judged together from one reading, so each carries an even share."""
    return f"{seconds / max(cases, 1):.3f}"


def junit_report(report: Report, env_name: str, cluster: str, warnings: Iterable[str] = ()) -> str:
    """JUnit XML for CI systems (GitLab, Jenkins, GitHub): one test case per checked class of node
    pairs and per host setting, a failure with its cause for each blocked one."""
    from xml.etree import ElementTree as ET

    cases: list[tuple[str, str, str | None, str]] = []  # classname, name, failure message (None: passed), detail
    for c in report.checks:
        title = f"{c.rule}: {c.what} from {c.source.label} to {c.target.label}"
        cases.append(
            (
                f"ket-infra.{env_name}.{c.rule}",
                f"{title} ({c.source.name} -> {c._target_node()}, {c.pairs} node pair{'s' * (c.pairs != 1)})",
                c.reason if c.status == "blocked" else None,
                f"{c.reason}\nsource nodes: {', '.join(c.source.hosts)}\ntarget nodes: {', '.join(c.target.hosts)}",
            )
        )
    for h in report.host_settings:
        name = f"source/dest check {'on' if h.expected else 'off'} on {h.node.host} ({h.node.instance_id})"
        problem = h.problem if h.status == "blocked" else None
        cases.append((f"ket-infra.{env_name}.host-settings", name, problem, problem or ""))
    if not report.judged:
        said = f"nothing was checked ({len(report.checks)} checks over {report.nodes} nodes): no verdict"
        cases.append((f"ket-infra.{env_name}.verify", "every required flow open", said, said))
    failures = sum(1 for case in cases if case[2] is not None)
    counts = {"tests": str(len(cases)), "failures": str(failures), "errors": "0", "skipped": "0"}
    root = ET.Element("testsuites", {"name": "ket-infra verify", **counts})
    suite = ET.SubElement(root, "testsuite", {"name": f"verify {env_name} (cluster {cluster})", **counts})
    props = ET.SubElement(suite, "properties")
    for key, value in (("nodes", report.nodes), ("aws_api_calls", report.api_calls)):
        ET.SubElement(props, "property", name=key, value=str(value))
    share = junit_time(report.seconds, len(cases))
    suite.set("time", f"{report.seconds:.3f}")
    for classname, name, message, detail in cases:
        case = ET.SubElement(suite, "testcase", classname=classname, name=name, time=share)
        if message is not None:
            ET.SubElement(case, "failure", type="blocked", message=message).text = detail
    warned = list(warnings)
    if warned:
        ET.SubElement(suite, "system-out").text = "\n".join(f"warning: {w}" for w in warned)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
