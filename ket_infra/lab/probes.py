"""What the lab drives with packets: every required flow between the hosts it names, and the probes
of what no flow requires, all sent at once from one process (net.Exchange)."""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ket_infra.lab.report import Result
from ket_infra.lab.topology import Host, Lab, namespaces

if TYPE_CHECKING:
    from ket_infra.environment import Environment
    from ket_infra.flows import Flow
    from ket_infra.lab.net import Probe
    from ket_infra.plan import Plan

TIMEOUT = 1.0  # seconds a probe waits for an answer
# A protocol nothing in any catalog names, and ports no table opens: the "all protocols" probes.
ALL_PROBES: tuple[tuple[str, int | None], ...] = (("47", None), ("tcp", 7), ("udp", 7))


@dataclass(frozen=True)
class Drive:
    """A packet exchange and what it stands for: a required flow (must pass) or a probe (must be dropped)."""

    flow: str  # the flow's name; probes: "probe"
    source: str
    target: str
    protocol: str
    port: int | None
    required: bool


def samples(protocol: str, ports: tuple[int, int] | None) -> list[tuple[str, int | None]]:
    """The packets that stand for a flow's traffic: both ends of a port range, icmp's type."""
    if protocol == "all":
        return [("tcp", 7), ("udp", 7), ("icmp", 8)]
    if protocol in ("tcp", "udp"):
        lo, hi = ports if ports is not None else (1, 65535)
        return [(protocol, p) for p in dict.fromkeys((max(lo, 1), hi))]
    if protocol == "icmp":
        return [("icmp", ports[0] if ports is not None and ports[0] != -1 else 8)]
    return [(protocol, None)]


def _covers(f: Flow, protocol: str, port: int | None) -> bool:
    if f.protocol == "all":
        return True
    if f.protocol != protocol:
        return False
    if protocol in ("tcp", "udp"):
        lo, hi = f.ports if f.ports is not None else (0, 65535)
        return port is not None and lo <= port <= hi
    if protocol == "icmp":
        return f.ports is None or f.ports[0] in (-1, port)
    return True


def drives(lab: Lab, plan: Plan, env: Environment | None, probes: bool = True) -> list[Drive]:
    """Every required flow between the hosts it names, then (PROBES) the probes that must be dropped."""
    from ket_infra import flows as catalog
    from ket_infra.layout import cidr_destinations, cidr_sources

    required = catalog.required_flows(plan, env)
    by_address = {h.address: h for h in lab.hosts}
    outside = [h for h in lab.hosts if h.group is None]

    def in_cidr(h: Host, cidr: str) -> bool:
        return ipaddress.ip_address(h.address) in ipaddress.IPv4Network(cidr, strict=False)

    def sources(f: Flow) -> list[Host]:
        if f.src:
            return [h for h in lab.nodes if set(h.roles) & set(f.src)]
        out: list[Host] = []
        for cidr, sender in cidr_sources(f, plan, env):
            net = ipaddress.IPv4Network(cidr, strict=False)
            if sender is not None or (net.prefixlen == 32 and str(net.network_address) in by_address):
                out.append(by_address[str(net.network_address)])
            else:
                out += [h for h in outside if h.cidr is not None and in_cidr(h, cidr)][:1]
        return out

    def targets(f: Flow) -> list[Host]:
        if f.dst_cidr is not None:
            found: list[Host] = []
            for cidr in cidr_destinations(f, plan, env):
                found += [h for h in outside if h.cidr is not None and in_cidr(h, cidr)][:1]
            return found
        return [h for h in lab.nodes if set(h.roles) & set(f.to)]

    out: list[Drive] = []
    for f in required:
        for s in sources(f):
            for t in targets(f):
                if s.name != t.name:
                    out += [Drive(f.name, s.name, t.name, p, port, True) for p, port in samples(f.protocol, f.ports)]
    if not probes:
        return out
    candidates: list[tuple[str, int | None]] = list(ALL_PROBES)
    for f in [*(f for table in catalog.TABLES for f in table), *required]:
        if f.protocol != "all":
            candidates += samples(f.protocol, f.ports)
    candidates = list(dict.fromkeys(candidates))

    def allowed(s: Host, t: Host, protocol: str, port: int | None) -> bool:
        for f in required:
            if f.dst_cidr is not None or not set(t.roles) & set(f.to) or not _covers(f, protocol, port):
                continue
            if f.src and set(s.roles) & set(f.src):
                return True
            if f.src_cidr and any(in_cidr(s, c) for c, _ in cidr_sources(f, plan, env)):
                return True
        return False

    reps: dict[str, list[Host]] = defaultdict(list)
    for h in lab.nodes:
        assert h.group is not None
        reps[h.group].append(h)
    senders = [hs[0] for hs in reps.values()] + outside
    for s in senders:
        for hs in reps.values():
            to = next((h for h in hs if h.name != s.name), None)
            if to is None:
                continue
            for protocol, port in candidates:
                if not allowed(s, to, protocol, port):
                    out.append(Drive("probe", s.name, to.name, protocol, port, False))
    return out


def what(protocol: str, port: int | None) -> str:
    from ket_infra.flows import protocol_label

    if protocol in ("tcp", "udp"):
        return f"{protocol} {port}"
    if protocol == "icmp":
        return f"icmp type {port}"
    return protocol_label(protocol)


def packet_results(
    lab: Lab,
    todo: list[Drive],
    timeout: float = TIMEOUT,
    split: bool = True,
    between: Callable[[], None] | None = None,
) -> list[Result]:
    """Drive TODO with packets: listeners in every target, probes from every source, all at once.

    BETWEEN is called once every port has been driven: before the last round, which has no ports (no
    listener a daemon could take, nothing a daemon's traffic is tracked as), or after the only one.
    What it starts runs while that last round waits out its timeout.
    """
    from ket_infra.lab import net

    # Without ports, a protocol's packets from A to B make B to A a reply (conntrack tracks the address
    # pair): each direction gets a round of its own, with nothing tracked between them.
    def portless(d: Drive) -> bool:
        return d.protocol not in ("tcp", "udp", "icmp")

    later = [d for d in todo if portless(d) and d.source > d.target]
    if later and split:
        first = [d for d in todo if not (portless(d) and d.source > d.target)]
        out = packet_results(lab, first, timeout, split=False)
        for ns in namespaces(lab):
            net.flush_conntrack(ns)
        if between is not None:
            between()
        return out + packet_results(lab, later, timeout, split=False)
    if between is not None:
        out = packet_results(lab, todo, timeout, split=False)
        between()
        return out
    ex = net.Exchange()
    try:
        probes: dict[Drive, Probe] = {}
        for d in todo:
            s, t = lab.host(d.source), lab.host(d.target)
            p = net.Probe(s.ns, t.ns, t.address, d.protocol, d.port)
            probes[d] = p
            if d.required or t.group is None:
                ex.listen(t.ns, t.address, d.protocol, d.port)
        # probes get a listener too: a port that lets them in must answer, not stay silent
        for d, p in probes.items():
            if not d.required:
                ex.listen(p.dst, p.address, d.protocol, d.port)
        outcomes = ex.run(list(dict.fromkeys(probes.values())), timeout)
    finally:
        ex.close()
    out = []
    for d, p in probes.items():
        o = outcomes[p]
        if d.required:
            words = {
                net.OPEN: "answered",
                net.REFUSED: "refused (nothing listening)",
                net.DROPPED: f"dropped: no answer in {timeout:g}s",
            }[o]
            out.append(Result("flow", d.flow, d.source, d.target, what(d.protocol, d.port), o == net.OPEN, words))
        else:
            words = "dropped" if o == net.DROPPED else f"got through ({o}): no required flow asks for it"
            out.append(Result("probe", "probe", d.source, d.target, what(d.protocol, d.port), o == net.DROPPED, words))
    return out
