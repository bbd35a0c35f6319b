"""Prove on the live cloud that nothing more than the required flows is open.

`verify` proves that every required flow is open; `audit` proves the other half
of least privilege. For every class of cluster nodes (verify's classes: nodes no
rule or ACL entry can tell apart) it takes each inbound security-group rule on
the node's interface, whoever made it, and works out what that rule lets in
that the plan does not need. Every other interface attached to a node's instance
is judged the same way (as the node, its own groups and subnet); nothing the plan
needs is addressed to it, but what the node's roles need is not counted twice.

- from each class of cluster nodes the rule's source covers, what it opens minus
  what the catalog requires between those roles (and what the source's own
  egress rules and the network ACLs of both subnets would stop anyway);
- from the addresses it covers that are no cluster node (the rest of a CIDR, other
  members of a referenced group), what it opens minus what the environment's
  named CIDRs (installer_cidr, ingress_cidrs, api_cidrs, extra_rules) and the pod
  CIDR require from exactly those addresses, less what the target subnet's network
  ACL denies (never for addresses inside that subnet: an ACL does not filter
  traffic between the interfaces of one subnet);
- a prefix list counts as its entries; a referenced group with no members now, or
  whose members cannot be seen (another account's), is a standing door for
  whatever joins it: all it opens is excess, `vpc` ("no members now", "members
  unknown"), and so is a prefix list with no entries.

A network ACL never adds an excess (a group still blocks what it does not open);
it only removes one. IPv6 sources reach no node (the plan's nodes have IPv4
addresses) and ACLs' IPv6 entries are not read: an IPv6 source's whole opening
is excess. Severity: `world` when any public internet address gets in beyond
what the environment names, that is any address outside RFC 1918, RFC 6598
(100.64.0.0/10), loopback, link-local, IPv6 unique-local and the VPC's own
subnets, however the rule cuts it (0.0.0.0/1 plus 128.0.0.0/1 is the world too);
`vpc` when other private addresses than the cluster's nodes and named CIDRs get
in; `cluster` when only nodes do, but more than the catalog requires.

AWS is read with a fixed number of paginated describe calls, whatever the node count
(the nodes' interfaces 200 instances a call; one call per prefix list a rule names).
"""

from __future__ import annotations

import bisect
import ipaddress
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
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
from ket_infra.environment import Environment
from ket_infra.flows import Flow, protocol_label, protocol_name
from ket_infra.layout import RuleSet, cidr_sources
from ket_infra.plan import Plan, role_key
from ket_infra.report import listed
from ket_infra.verify import AclEntry, LiveState, Permission, node_classes, read_state, subtract

SEVERITIES = ("world", "vpc", "cluster")  # worst first
# Addresses no one on the internet has: a source holding any other address is rated `world`.
PRIVATE = tuple(
    ipaddress.ip_network(c)
    for c in (
        "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",  # RFC 1918
        "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",  # shared (RFC 6598), loopback, link-local
        "fc00::/7", "fe80::/10", "::1/128",  # unique-local, link-local, loopback
    )
)  # fmt: skip
_FULL = {"tcp": (0, 65535), "udp": (0, 65535), "icmp": (0, 255)}
Span = tuple[int, int]
IpNet = ipaddress.IPv4Network | ipaddress.IPv6Network


# ---------------------------------------------------------------- traffic sets


def _norm(spans: Iterable[Span]) -> list[Span]:
    out: list[Span] = []
    for lo, hi in sorted(spans):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _cut(spans: list[Span], away: list[Span]) -> list[Span]:
    for lo, hi in away:
        spans = subtract(spans, lo, hi)
    return spans


def _full(protocol: str) -> list[Span]:
    return [_FULL.get(protocol, (0, 0))]


class Open:
    """A set of traffic: per protocol, the open ports (tcp, udp), ICMP types, or (0, 0) when
    ports do not apply; REST stands for every protocol not listed, whole."""

    __slots__ = ("by", "rest")

    def __init__(self, rest: bool = False, by: dict[str, list[Span]] | None = None) -> None:
        self.rest = rest
        self.by: dict[str, list[Span]] = {}
        for protocol, spans in (by or {}).items():
            spans = _norm(spans)
            if rest and spans == _full(protocol):
                continue  # whole, as REST says
            if spans or rest:
                self.by[protocol] = spans

    def get(self, protocol: str) -> list[Span]:
        if protocol in self.by:
            return self.by[protocol]
        return _full(protocol) if self.rest else []

    def _each(self, other: Open) -> set[str]:
        return set(self.by) | set(other.by)

    def __or__(self, other: Open) -> Open:
        return Open(self.rest or other.rest, {p: self.get(p) + other.get(p) for p in self._each(other)})

    def __and__(self, other: Open) -> Open:
        return Open(
            self.rest and other.rest,
            {p: _cut(self.get(p), _cut(self.get(p), other.get(p))) for p in self._each(other)},
        )

    def __sub__(self, other: Open) -> Open:
        return Open(self.rest and not other.rest, {p: _cut(self.get(p), other.get(p)) for p in self._each(other)})

    def __bool__(self) -> bool:
        return self.rest or any(self.by.values())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Open) and (self.rest, self.by) == (other.rest, other.by)

    def __repr__(self) -> str:
        return f"Open({self.describe()})"

    def describe(self) -> str:
        """As people read it: "tcp 1-21, 23-65535", "all traffic but tcp 179 and IP-in-IP (4)"."""
        if self.rest:
            missing = [
                _spans_label(p, _cut(_full(p), spans)) for p, spans in sorted(self.by.items()) if spans != _full(p)
            ]
            return "all traffic" + (f" but {' and '.join(missing)}" if missing else "")
        return ", ".join(_spans_label(p, spans) for p, spans in sorted(self.by.items()) if spans)


def _spans_label(protocol: str, spans: list[Span]) -> str:
    if protocol in ("tcp", "udp"):
        return f"{protocol} " + ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans)
    if protocol == "icmp":
        if spans == _full("icmp"):
            return "icmp (all types)"
        return "icmp type " + ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans)
    return protocol_label(protocol)


def opening(protocol: str, lo: int | None, hi: int | None) -> Open:
    """What one rule (AWS's fields) lets through: protocol -1 is all traffic; ICMP's from-port is the type."""
    protocol = protocol_name(protocol)
    if protocol in ("-1", "all"):
        return Open(rest=True)
    if protocol in ("tcp", "udp"):
        if lo is None or hi is None or lo < 0:
            return Open(by={protocol: _full(protocol)})
        return Open(by={protocol: [(lo, hi)]})
    if protocol == "icmp":
        return Open(by={"icmp": _full("icmp") if lo is None or lo < 0 else [(lo, lo)]})
    return Open(by={protocol: [(0, 0)]})


def flow_opening(flow: Flow) -> Open:
    lo, hi = flow.ports if flow.ports is not None else (None, None)
    return opening(flow.protocol, lo, hi)  # an ICMP flow's ports are (type, code): opening reads the type


# ---------------------------------------------------------------- live state audit needs beyond verify's


@dataclass(frozen=True)
class SgRule:
    """One security-group rule as DescribeSecurityGroupRules gives it: one source each."""

    rule_id: str
    group_id: str
    egress: bool
    protocol: str
    from_port: int | None
    to_port: int | None
    cidr: str | None = None  # CidrIpv4 or CidrIpv6
    group: str | None = None  # a referenced group
    prefix_list: str | None = None
    owner: str | None = None  # the account of the rule's group
    group_owner: str | None = None  # the account of the referenced group

    @property
    def source(self) -> str:
        return self.cidr or self.group or self.prefix_list or "?"


def _protocol(value: object) -> str:
    """AWS's protocol as the catalog writes it: tcp, udp, icmp, a number, or all (AWS's -1)."""
    name = protocol_name(value)
    return "all" if name == "-1" else name


def read_rules(env: Environment, group_ids: list[str], ec2: Any) -> list[SgRule]:
    out: list[SgRule] = []
    with aws_errors(env, "reading security group rules"):
        for r in described(ec2, "describe_security_group_rules", "SecurityGroupRules", "group-id", group_ids):
            protocol = _protocol(r.get("IpProtocol", "-1"))
            # ports apply to tcp and udp (and ICMP's type and code); AWS says -1 for the others
            ports = protocol in ("tcp", "udp", "icmp")
            lo, hi = (r.get("FromPort"), r.get("ToPort")) if ports else (None, None)
            out.append(
                SgRule(
                    rule_id=r["SecurityGroupRuleId"],
                    group_id=r["GroupId"],
                    egress=bool(r.get("IsEgress")),
                    protocol=protocol,
                    from_port=None if lo is None else int(lo),
                    to_port=None if hi is None else int(hi),
                    cidr=r.get("CidrIpv4") or r.get("CidrIpv6"),
                    group=(r.get("ReferencedGroupInfo") or {}).get("GroupId"),
                    prefix_list=r.get("PrefixListId"),
                    owner=r.get("GroupOwnerId"),
                    group_owner=(r.get("ReferencedGroupInfo") or {}).get("UserId"),
                )
            )
    return sorted(out, key=lambda r: (r.group_id, r.rule_id))


def read_members(env: Environment, group_ids: list[str], ec2: Any) -> dict[str, set[str]]:
    """The private addresses of every interface carrying each of GROUP_IDS (cluster node or not)."""
    out: dict[str, set[str]] = {g: set() for g in group_ids}
    with aws_errors(env, "reading the interfaces of referenced security groups"):
        for eni in described(ec2, "describe_network_interfaces", "NetworkInterfaces", "group-id", group_ids):
            # every address of the interface, its primary one included
            addresses = {a["PrivateIpAddress"] for a in eni.get("PrivateIpAddresses", [])}
            for g in eni.get("Groups", []):
                if g.get("GroupId") in out:
                    out[g["GroupId"]].update(addresses)
    return out


def read_other_interfaces(env: Environment, discovery: Discovery, ec2: Any) -> list[NodeInterface]:
    """Every interface attached to a node's instance besides the one holding the node's address, as the node."""
    host_of = {n.instance_id: n for n in discovery.nodes}
    known = {n.network_interface_id for n in discovery.nodes}
    out: list[NodeInterface] = []
    with aws_errors(env, "reading the nodes' network interfaces"):
        enis = described(
            ec2, "describe_network_interfaces", "NetworkInterfaces", "attachment.instance-id", sorted(host_of)
        )
        for eni in enis:
            node = host_of.get((eni.get("Attachment") or {}).get("InstanceId", ""))
            if node is None or eni["NetworkInterfaceId"] in known or not eni.get("PrivateIpAddress"):
                continue
            out.append(
                replace(
                    node,
                    address=eni["PrivateIpAddress"],
                    network_interface_id=eni["NetworkInterfaceId"],
                    subnet_id=eni.get("SubnetId", ""),
                    vpc_id=eni.get("VpcId", node.vpc_id),
                    security_groups=tuple(g["GroupId"] for g in eni.get("Groups", [])),
                    security_group_names=tuple(g.get("GroupName", "") for g in eni.get("Groups", [])),
                )
            )
    return sorted(out, key=lambda n: n.network_interface_id)


def read_subnets(env: Environment, vpc_id: str, ec2: Any) -> dict[str, tuple[IpNet, ...]]:
    """Each subnet of the VPC and its CIDRs (IPv4, then IPv6): one paginated call."""
    out: dict[str, tuple[IpNet, ...]] = {}
    with aws_errors(env, "reading the VPC's subnets"):
        for s in described(ec2, "describe_subnets", "Subnets", "vpc-id", [vpc_id]):
            v6 = [a["Ipv6CidrBlock"] for a in s.get("Ipv6CidrBlockAssociationSet", []) if a.get("Ipv6CidrBlock")]
            out[s["SubnetId"]] = tuple(ipaddress.ip_network(c, strict=False) for c in [s["CidrBlock"], *v6])
    return out


# ---------------------------------------------------------------- the report


@dataclass
class Excess:
    severity: str
    rule: SgRule
    group_name: str
    source_label: str
    targets: list[str]
    reason: str

    def as_json(self) -> dict[str, Any]:
        r = self.rule
        return {
            "severity": self.severity,
            "protocol": r.protocol,
            "from_port": r.from_port,
            "to_port": r.to_port,
            "source": self.source_label,
            "targets": self.targets,
            "via": {"group_id": r.group_id, "group_name": self.group_name, "rule_id": r.rule_id},
            "reason": self.reason,
        }

    @property
    def what(self) -> str:
        return opening(self.rule.protocol, self.rule.from_port, self.rule.to_port).describe()

    @property
    def via(self) -> str:
        return f"{self.rule.group_id} ({self.group_name}) rule {self.rule.rule_id}"


@dataclass
class AuditReport:
    excess: list[Excess] = field(default_factory=list)
    nodes: int = 0
    rules_checked: int = 0
    api_calls: int = 0
    seconds: float = 0.0  # how long reading and judging took (JUnit's time)
    groups: int = 0  # the security groups on the nodes' interfaces

    @property
    def judged(self) -> bool:
        """A verdict needs something read: no nodes, or no inbound rule on them, prove nothing clean."""
        return self.nodes > 0 and self.rules_checked > 0

    @property
    def ok(self) -> bool:
        return self.judged and not self.excess

    def counts(self) -> dict[str, int]:
        out = {s: sum(1 for e in self.excess if e.severity == s) for s in SEVERITIES}
        return {
            **out,
            "excess": len(self.excess),
            "nodes": self.nodes,
            "rules_checked": self.rules_checked,
            "api_calls": self.api_calls,
        }

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "excess": [e.as_json() for e in self.excess], "counts": self.counts()}


# ---------------------------------------------------------------- judging


def _acl_open(entries: list[AclEntry], egress: bool, lo: int, hi: int) -> Open:
    """What a network ACL lets through (one direction) from or to some address in LO..HI (as integers):
    an entry decides for the range only when its CIDR holds all of it; an allow for part of it lets that part in."""
    undecided, allowed = Open(rest=True), Open()
    for e in entries:
        if e.egress != egress:
            continue
        first, last = int(e.cidr.network_address), int(e.cidr.broadcast_address)
        if last < lo or first > hi:
            continue
        if e.protocol == "icmp":
            span = opening("icmp", e.icmp[0] if e.icmp else None, None)
        else:
            span = opening(e.protocol, *(e.ports or (None, None)))
        if e.allow:
            allowed = allowed | (undecided & span)
        if first <= lo and hi <= last:
            undecided = undecided - span
    return allowed


@dataclass(frozen=True)
class _Piece:
    """Addresses LO..HI (integers of one family) that are no cluster node, covered by one rule's source.

    INSIDE: within the target's own subnet, where no network ACL filters."""

    lo: int
    hi: int
    v6: bool = False
    inside: bool = False


def _span(net: IpNet) -> Span:
    return int(net.network_address), int(net.broadcast_address)


class _Auditor:
    def __init__(
        self,
        plan: Plan,
        env: Environment,
        discovery: Discovery,
        state: LiveState,
        rules: list[SgRule],
        members: dict[str, set[str]],
        subnets: dict[str, tuple[IpNet, ...]],
        node_groups: Iterable[str] = (),
    ) -> None:
        self.plan, self.state, self.subnets = plan, state, subnets
        self.flows = [f for f in catalog.required_flows(plan, env) if f.to]
        # (net as integers, flow) for every required source CIDR
        self.cidr_flows: list[tuple[int, int, Flow]] = []
        for f in self.flows:
            if f.src_cidr is not None:
                for c, _sender in cidr_sources(f, plan, env):
                    self.cidr_flows.append((*_span(_net(c)), f))
        # nodes one rule source or one required source CIDR tells apart are judged apart
        extra = [_net(plan.pod_cidr)] + [_net(c) for r in rules for c in self.cidrs(r) if _v4(c)]
        extra += [_net(c) for f in self.flows if f.src_cidr is not None for c, _sender in cidr_sources(f, plan, env)]
        self.classes = node_classes(plan, discovery, state, extra)
        self.node_ints = sorted(int(ipaddress.IPv4Address(n.address)) for n in discovery.nodes)
        self.addresses = {n.address for n in discovery.nodes}
        self.members = members
        self.node_groups = {g for n in discovery.nodes for g in n.security_groups} | set(node_groups)
        # addresses no one on the internet has, per family (True: IPv6)
        private = [*PRIVATE, *(c for nets in subnets.values() for c in nets)]
        self.private = {v6: [_span(n) for n in private if (n.version == 6) == v6] for v6 in (False, True)}
        self._required: dict[tuple[int, str], Open] = {}

    def roles(self, node: NodeInterface) -> frozenset[str]:
        return self.plan.node(node.host).roles

    def cidrs(self, rule: SgRule) -> tuple[str, ...]:
        """The CIDRs of RULE's source: its own, or its prefix list's entries."""
        if rule.prefix_list is not None:
            return self.state.prefix_lists.get(rule.prefix_list, ())
        return (rule.cidr,) if rule.cidr is not None else ()

    def required_between(self, s: int, dst: NodeInterface) -> Open:
        """What the catalog requires from class S (an index into self.classes) to node DST."""
        key = (s, self.plan.node(dst.host).group)
        if key not in self._required:
            src = self.classes[s][0]
            addr = int(ipaddress.IPv4Address(src.address))
            need = Open()
            for f in self.flows:
                if not self.roles(dst) & set(f.to):
                    continue
                if f.src and self.roles(src) & set(f.src):
                    need = need | flow_opening(f)
            for lo, hi, f in self.cidr_flows:
                if lo <= addr <= hi and self.roles(dst) & set(f.to):
                    need = need | flow_opening(f)
            self._required[key] = need
        return self._required[key]

    def required_from(self, piece: _Piece, target: NodeInterface) -> Open:
        need = Open()
        if piece.v6:
            return need  # the environment names IPv4 CIDRs only
        for lo, hi, f in self.cidr_flows:
            if lo <= piece.lo and piece.hi <= hi and self.roles(target) & set(f.to):
                need = need | flow_opening(f)
        return need

    def egress_open(self, src: NodeInterface, dst: NodeInterface) -> Open:
        peer = _net(f"{dst.address}/32")
        out = Open()
        for g in src.security_groups:
            for p in self.state.egress.get(g, []):
                if p.groups & set(dst.security_groups) or any(peer.subnet_of(c) for c in p.cidrs):
                    out = out | _perm_opening(p)
        return out

    def acl(self, subnet: str, egress: bool, lo: int, hi: int) -> Open:
        acl_id = self.state.acl_of_subnet.get(subnet)
        if acl_id is None:
            return Open(rest=True)
        return _acl_open(self.state.acl_entries.get(acl_id, []), egress, lo, hi)

    def public(self, piece: _Piece) -> bool:
        """Does PIECE hold an address someone on the internet may have?"""
        return bool(_cut([(piece.lo, piece.hi)], self.private[piece.v6]))

    def door(self, rule: SgRule) -> str | None:
        """Why RULE's source is a standing door (its members or entries cannot be known now), or None."""
        if rule.group is not None:
            owner = rule.owner or self.state.group_owners.get(rule.group_id)
            if rule.group_owner and owner and rule.group_owner != owner:
                return f"members unknown: a group of account {rule.group_owner}, whatever joins it gets in"
            if rule.group not in self.node_groups and not self.members.get(rule.group):
                return "no members now: whatever joins the group gets in"
        if rule.prefix_list is not None and not self.cidrs(rule):
            return "no entries now: whatever is added to the prefix list gets in"
        return None

    def pieces(self, rule: SgRule, target: NodeInterface) -> list[_Piece]:
        """The addresses RULE's source covers that are no cluster node, cut where a required CIDR or the
        target's subnet begins or ends."""
        own = [_span(n) for n in self.subnets.get(target.subnet_id, ()) if n.version == 4]

        def inside(lo: int, hi: int) -> bool:
            return any(a <= lo and hi <= b for a, b in own)

        if rule.group is not None:
            others = {a for a in self.members.get(rule.group, set()) if _v4(a) and a not in self.addresses}
            ints = sorted(int(ipaddress.IPv4Address(x)) for x in others)
            return [_Piece(a, a, inside=inside(a, a)) for a in ints]
        out = []
        for cidr in self.cidrs(rule):
            net = ipaddress.ip_network(cidr, strict=False)
            lo, hi = _span(net)
            if net.version == 6:
                out.append(_Piece(lo, hi, v6=True))
                continue
            cuts = {lo, hi + 1}
            for a, b in [(a, b) for a, b, _f in self.cidr_flows] + own:
                for x in (a, b + 1):
                    if lo < x <= hi:
                        cuts.add(x)
            for a, b in itertools.pairwise(sorted(cuts)):
                nodes = bisect.bisect_right(self.node_ints, b - 1) - bisect.bisect_left(self.node_ints, a)
                if b - a > nodes:
                    out.append(_Piece(a, b - 1, inside=inside(a, b - 1)))
        return out

    def source_classes(self, rule: SgRule) -> Iterator[int]:
        nets = [_net(c) for c in self.cidrs(rule) if _v4(c)]
        for i, cls in enumerate(self.classes):
            rep = cls[0]
            if rule.group is not None:
                if rule.group in rep.security_groups:
                    yield i
            elif any(ipaddress.IPv4Address(rep.address) in n for n in nets):
                yield i

    def judge(self, rule: SgRule, target: NodeInterface, t: int | None) -> list[tuple[str, Open, str]]:
        """What RULE (inbound, on TARGET: class T's first node, or another interface of a node when T is None)
        lets in beyond the required: (severity, excess, from whom)."""
        opened = opening(rule.protocol, rule.from_port, rule.to_port)
        door = self.door(rule)
        if door is not None:
            return [("vpc", opened, door)]
        out: list[tuple[str, Open, str]] = []
        for piece in self.pieces(rule, target):
            extra = opened - self.required_from(piece, target)
            if extra and not piece.inside and not piece.v6:
                extra = extra & self.acl(target.subnet_id, False, piece.lo, piece.hi)
            if extra:
                out.append(("world" if self.public(piece) else "vpc", extra, rule.source))
        for s in self.source_classes(rule):
            cls = self.classes[s]
            if len(cls) == 1 and (s == t or (t is None and cls[0].host == target.host)):
                continue  # a node does not reach itself through the network
            src = cls[0]
            extra = opened - self.required_between(s, target)
            if extra:
                extra = extra & self.egress_open(src, target)
            if extra and src.subnet_id != target.subnet_id:
                a, b = int(ipaddress.IPv4Address(src.address)), int(ipaddress.IPv4Address(target.address))
                extra = extra & self.acl(src.subnet_id, True, b, b) & self.acl(target.subnet_id, False, a, a)
            if extra:
                out.append(("cluster", extra, self._role_label(cls)))
        return out

    def _role_label(self, cls: tuple[NodeInterface, ...]) -> str:
        return self.plan.node(cls[0].host).group


def _net(text: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(text, strict=False)


def _v4(cidr: str | None) -> bool:
    return cidr is not None and ":" not in cidr


def _perm_opening(p: Permission) -> Open:
    return opening(p.protocol, p.from_port, p.to_port)


@dataclass
class _Found:
    """What one rule lets in beyond the required, over every class of nodes it is on."""

    worst: int = len(SEVERITIES)
    outside: Open = field(default_factory=Open)  # from addresses that are no node
    between: Open = field(default_factory=Open)  # from cluster nodes
    senders: set[str] = field(default_factory=set)  # the node groups of those nodes
    targets: set[str] = field(default_factory=set)
    door: str = ""  # why the source's members cannot be known
    interfaces: set[str] = field(default_factory=set)  # the nodes' other interfaces it is on: "host's interface eni-"


def evaluate(
    plan: Plan,
    env: Environment,
    discovery: Discovery,
    state: LiveState,
    rules: list[SgRule],
    members: dict[str, set[str]],
    subnets: dict[str, tuple[IpNet, ...]] | None = None,
    others: Iterable[NodeInterface] = (),
) -> AuditReport:
    """Judge every inbound rule on every node's interface (one class at a time) and on OTHERS, the
    nodes' other interfaces."""
    others = list(others)
    auditor = _Auditor(
        plan, env, discovery, state, rules, members, subnets or {}, (g for n in others for g in n.security_groups)
    )
    report = AuditReport(nodes=len(discovery.nodes))
    inbound = [r for r in rules if not r.egress]
    on_nodes = {g for n in [*discovery.nodes, *others] for g in n.security_groups}
    report.rules_checked = sum(1 for r in inbound if r.group_id in on_nodes)
    found: dict[str, _Found] = {}
    targets: list[tuple[NodeInterface, int | None, tuple[NodeInterface, ...]]] = [
        (cls[0], t, cls) for t, cls in enumerate(auditor.classes)
    ]
    targets += [(n, None, (n,)) for n in others]
    for target, t, cls in targets:
        groups = set(target.security_groups)
        for rule in inbound:
            if rule.group_id not in groups:
                continue
            parts = auditor.judge(rule, target, t)
            if not parts:
                continue
            f = found.setdefault(rule.rule_id, _Found())
            for severity, extra, sender in parts:
                f.worst = min(f.worst, SEVERITIES.index(severity))
                if severity == "cluster":
                    f.between = f.between | extra
                    f.senders.add(sender)
                elif auditor.door(rule) is not None:
                    f.outside, f.door = f.outside | extra, sender
                else:
                    f.outside = f.outside | extra
            f.targets.update(n.host for n in cls)
            if t is None:
                f.interfaces.add(f"{target.host}'s interface {target.network_interface_id}")
    order = {n.host: i for i, n in enumerate(plan.nodes)}
    by_id = {r.rule_id: r for r in inbound}
    for rule_id, f in found.items():
        rule = by_id[rule_id]
        severity = SEVERITIES[f.worst]
        said = []
        if f.door:
            said.append(f"{f.outside.describe()} from {_source_label(rule, state)} ({f.door})")
        elif f.outside:
            whence = "the internet" if severity == "world" else f"{rule.source} beyond the nodes and named CIDRs"
            said.append(f"{f.outside.describe()} from {whence}")
        if f.between:
            said.append(f"{f.between.describe()} from {', '.join(sorted(f.senders, key=_group_order))} nodes")
        where = ""
        if f.interfaces:
            where = f" (on {', '.join(sorted(f.interfaces))}, besides the one holding the node's address)"
        report.excess.append(
            Excess(
                severity=severity,
                rule=rule,
                group_name=state.group_names.get(rule.group_id, rule.group_id),
                source_label=_source_label(rule, state),
                targets=sorted(f.targets, key=order.__getitem__),
                reason=f"{_WHY[severity]}: {'; '.join(said)} is more than the plan needs{where}",
            )
        )
    report.excess.sort(key=lambda e: (SEVERITIES.index(e.severity), e.rule.group_id, e.rule.rule_id))
    return report


_WHY = {
    "world": "open to the internet",
    "vpc": "open to addresses outside the cluster",
    "cluster": "open between nodes wider than the catalog requires",
}


def _group_order(group: str) -> tuple[int, ...]:
    return role_key(set(group.split("-")))


def _source_label(rule: SgRule, state: LiveState) -> str:
    if rule.group is not None:
        name = state.group_names.get(rule.group)
        return f"{rule.group} ({name})" if name else rule.group
    return rule.source


def audit(plan: Plan, env: Environment, rules: RuleSet, counter: Counter | None = None) -> AuditReport:
    """Check the account, read the live state (read-only calls, a fixed number whatever the node count) and
    find the excess. Instances at the plan's addresses in another account are not the cluster: refused, as
    plan does."""
    del rules  # the required flows come from the catalog, as verify's do
    import time

    started = time.monotonic()
    counter = counter or Counter()
    check_account(env, client(env, "sts", counter))
    ec2 = client(env, "ec2", counter)
    discovery = discover(plan, env, ec2)
    others = read_other_interfaces(env, discovery, ec2)
    state = read_state(env, discovery, ec2, extra_groups=[g for n in others for g in n.security_groups])
    group_ids = sorted({g for n in [*discovery.nodes, *others] for g in n.security_groups})
    sg_rules = read_rules(env, group_ids, ec2)
    subnets = read_subnets(env, discovery.vpc_id, ec2)
    referenced = sorted({r.group for r in sg_rules if r.group is not None and not r.egress})
    members = read_members(env, referenced, ec2) if referenced else {}
    report = evaluate(plan, env, discovery, state, sg_rules, members, subnets, others)
    report.groups = len(group_ids)
    report.api_calls = counter.total
    report.seconds = time.monotonic() - started
    return report


# ---------------------------------------------------------------- reports


def verdict(report: AuditReport, env_name: str, cluster: str) -> str:
    """The report's first line: clean, or how many excess rules and the worst exposure."""
    head = f"audit {env_name} (cluster {cluster})"
    if not report.judged:
        unread = (
            "no node was read"
            if report.nodes == 0
            else f"no inbound rule was read on the {report.groups} security group(s) of the {report.nodes} nodes"
        )
        return (
            f"{head}: not judged: {unread} ({report.api_calls} AWS API calls); nothing is clean until something "
            "is read: are these the cluster's nodes? run ket-infra verify"
        )
    if report.ok:
        return (
            f"{head}: clean: nothing is open beyond the required flows on {report.nodes} nodes "
            f"({report.rules_checked} inbound rules checked, {report.api_calls} AWS API calls)"
        )
    worst = report.excess[0]
    return (
        f"{head}: {len(report.excess)} rule(s) open more than the plan needs; worst ({worst.severity}): "
        f"{worst.what} from {worst.source_label} to {len(worst.targets)} node(s) via {worst.via}"
    )


def text_report(report: AuditReport, env_name: str, cluster: str) -> str:
    lines = [verdict(report, env_name, cluster)]
    for severity in SEVERITIES:
        found = [e for e in report.excess if e.severity == severity]
        if not found:
            continue
        lines.append("")
        lines.append(f"{severity.upper()} ({len(found)}): {_WHY[severity]}")
        for e in found:
            lines.append(f"  {e.what} from {e.source_label} to {listed(e.targets, 5)} via {e.via}")
            lines.append(f"    {e.reason}")
    lines.append("")
    if not report.judged:
        lines.append("NOT JUDGED: no verdict without inbound rules read on the cluster's nodes (exit 3)")
    elif report.ok:
        lines.append(f"OK: {report.rules_checked} inbound rules on {report.nodes} nodes open only what the plan needs")
    else:
        lines.append(
            "EXCESS: remove those rules, or move the cluster off a foreign group with detach_groups in the "
            "environment file (ket-infra apply detaches it once the flows are proven open without it)"
        )
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_report(report: AuditReport, env_name: str, cluster: str) -> str:
    """A table fit for a security review."""
    lines = [f"# Network exposure audit: {env_name} (cluster {cluster})", "", verdict(report, env_name, cluster), ""]
    if report.excess:
        lines += [
            "| severity | open | source | targets | via | why |",
            "|---|---|---|---|---|---|",
        ]
        for e in report.excess:
            row = [
                e.severity,
                e.what,
                f"`{e.source_label}`",
                listed(e.targets, 8),
                f"`{e.rule.group_id}` ({e.group_name}), rule `{e.rule.rule_id}`",
                e.reason,
            ]
            lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
        lines.append("")
    counts = report.counts()
    lines.append(
        f"{counts['world']} world, {counts['vpc']} vpc, {counts['cluster']} cluster; "
        f"{report.rules_checked} inbound rules checked on {report.nodes} nodes."
    )
    return "\n".join(lines) + "\n"


def junit_report(report: AuditReport, env_name: str, cluster: str) -> str:
    """JUnit XML: one test case per severity (passing when nothing is in excess), a failure per excess rule."""
    from xml.etree import ElementTree as ET

    cases: list[tuple[str, str, str | None, str]] = []
    if not report.judged:
        said = verdict(report, env_name, cluster)
        cases.append((f"ket-infra.{env_name}.audit", "something read to judge", said, said))
    for severity in SEVERITIES:
        found = [e for e in report.excess if e.severity == severity]
        if not found:
            cases.append((f"ket-infra.{env_name}.audit", f"nothing open ({severity}): {_WHY[severity]}", None, ""))
        for e in found:
            name = f"{severity}: {e.what} from {e.source_label} via {e.via}"
            detail = f"{e.reason}\ntargets: {', '.join(e.targets)}"
            cases.append((f"ket-infra.{env_name}.audit", name, e.reason, detail))
    failures = sum(1 for c in cases if c[2] is not None)
    counts = {"tests": str(len(cases)), "failures": str(failures), "errors": "0", "skipped": "0"}
    root = ET.Element("testsuites", {"name": "ket-infra audit", **counts})
    suite = ET.SubElement(root, "testsuite", {"name": f"audit {env_name} (cluster {cluster})", **counts})
    props = ET.SubElement(suite, "properties")
    for key, value in (
        ("nodes", report.nodes),
        ("rules_checked", report.rules_checked),
        ("aws_api_calls", report.api_calls),
    ):
        ET.SubElement(props, "property", name=key, value=str(value))
    from ket_infra.verify import junit_time

    share = junit_time(report.seconds, len(cases))
    suite.set("time", f"{report.seconds:.3f}")
    for classname, name, message, detail in cases:
        case = ET.SubElement(suite, "testcase", classname=classname, name=name, time=share)
        if message is not None:
            ET.SubElement(case, "failure", type="excess", message=message).text = detail
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
