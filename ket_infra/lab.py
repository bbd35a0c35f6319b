"""The lab: the plan's nodes as network namespaces behind ket-infra's own rules, proven with packets.

`up` makes one namespace per node holding the node's plan address, joined by a
veth pair to a bridge in a namespace of its own per /24 subnet the plan's
addresses fall in (subnets joined at layer 2: the VPC router and network ACLs
are not modelled), plus one namespace per CIDR the catalog names (an address
inside it) and one "outside" namespace at an address no rule names. Nothing is
routed to or from the host's own namespace. Each node loads its group's rules
as nftables (ket_infra/nftables.py, security-group semantics).

`run` judges with packets, in two phases:

1. every flow of the catalog, from each source node (or CIDR) to each target
   node, against a listener of the right protocol; and probes of what the
   catalog does not require (other roles' and other CNIs' ports, an
   uncatalogued protocol), between every pair of groups and from outside:
   each must be dropped;
2. the real daemons where a real implementation is packaged: BIRD 2 in a full
   BGP mesh (Calico), etcd 3.4 clusters (TLS off in the lab), kernel VXLAN
   with a ping across the overlay (Contiv, Weave). IP-in-IP (4) and ESP (50)
   are sent as raw IP packets: a kernel without the ipip and esp4 modules has
   no tunnel for them.

Every namespace and process is written to the state file before it is made;
`down`, Ctrl-C and the next `up` remove whatever the state file names.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import quoteattr

from ket_infra.errors import KetInfraError

if TYPE_CHECKING:
    from ket_infra.environment import Environment
    from ket_infra.flows import Flow
    from ket_infra.labnet import Probe
    from ket_infra.layout import Rule, RuleSet
    from ket_infra.plan import Plan

STATE = Path(".work/lab/state.json")
PACKAGES = "nftables bird2 etcd-server etcd-client"
TIMEOUT = 1.0  # seconds a probe waits for an answer
DAEMON_WAIT = 6.0  # seconds the daemons get to reach their state (BIRD Established, etcd healthy)
OUTSIDE = "198.51.100.0/24"  # where the unnamed outside host lives (TEST-NET-2), unless a rule names it
OVERLAY = ipaddress.IPv4Network("100.64.0.0/16")  # the VXLAN overlay's addresses
VXLAN_DEV = "kivx0"
AS_NUMBER = 64512  # Calico's default AS
LAB_NOTES = (
    "etcd runs with TLS off in the lab (http:// URLs): the ports and the cluster's forming are what is proven",
    "IP-in-IP (4) and ESP (50) are sent as raw IP packets: this kernel has no ipip or esp4 module",
    "subnets are bridges joined at layer 2: network ACLs and the VPC router are not modelled",
)
# A protocol nothing in any catalog names, and ports no table opens: the "all protocols" probes.
ALL_PROBES: tuple[tuple[str, int | None], ...] = (("47", None), ("tcp", 7), ("udp", 7))


def unavailable(daemons: bool = True) -> str | None:
    """Why the lab cannot run here, or None."""
    if not os.path.exists("/proc/self/ns/net"):
        return "this system has no network namespaces (Linux only)"
    if os.geteuid() != 0:
        return "it needs root (network namespaces, nftables)"
    tools = ["ip", "nft"] + (["bird", "birdc", "etcd", "etcdctl"] if daemons else [])
    missing = [t for t in tools if shutil.which(t) is None and not os.path.exists(f"/usr/sbin/{t}")]
    if missing:
        return f"{', '.join(missing)} not found; install them with apt-get install -y {PACKAGES} (and iproute2)"
    return None


def _tool(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


@dataclass(frozen=True)
class Host:
    """A namespace the lab made: a plan node, or an address standing for a CIDR outside the cluster."""

    name: str  # the node's host name, or "cidr-<address>" / "outside"
    ns: str
    address: str
    subnet: str  # the subnet namespace its veth joins
    group: str | None = None  # the node's ket-infra group (None outside the cluster)
    roles: tuple[str, ...] = ()
    cidr: str | None = None  # outside hosts: the CIDR it stands for (None: no rule names it)


@dataclass
class Lab:
    id: str
    plan_file: str
    env_file: str | None
    state: Path
    subnets: list[str] = field(default_factory=list)
    hosts: list[Host] = field(default_factory=list)
    pids: dict[str, int] = field(default_factory=dict)  # what -> pid

    @property
    def dir(self) -> Path:
        return self.state.parent / self.id

    @property
    def nodes(self) -> list[Host]:
        return [h for h in self.hosts if h.group is not None]

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def save(self) -> None:
        self.state.parent.mkdir(parents=True, exist_ok=True)
        doc = {**asdict(self), "state": str(self.state)}
        tmp = self.state.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        tmp.replace(self.state)

    @classmethod
    def load(cls, state: Path) -> Lab:
        try:
            doc = json.loads(state.read_text())
        except FileNotFoundError:
            raise KetInfraError(
                f"{state}: no lab is up (no state file); start one with ket-infra lab up PLAN_FILE"
            ) from None
        except ValueError as exc:
            raise KetInfraError(f"{state}: not a lab state file ({exc}); remove it and run ket-infra lab up") from None
        doc["state"] = Path(doc["state"])
        doc["hosts"] = [Host(**h) for h in doc["hosts"]]
        return cls(**doc)


def _ip(*args: str, batch: Iterable[str] | None = None, ns: str | None = None) -> None:
    cmd = [_tool("ip")] + (["-n", ns] if ns else []) + list(args)
    lines = "\n".join(batch) + "\n" if batch is not None else None
    if batch is not None:
        cmd += ["-batch", "-"]
    done = subprocess.run(cmd, input=lines, capture_output=True, text=True)
    if done.returncode != 0:
        raise KetInfraError(f"ip {' '.join(args)}{' in ' + ns if ns else ''}: {done.stderr.strip()}")


def _free_address(net: ipaddress.IPv4Network, taken: set[str]) -> str | None:
    if net.prefixlen == 32:
        return None if str(net.network_address) in taken else str(net.network_address)
    for i, a in enumerate(net.hosts()):
        if str(a) not in taken:
            return str(a)
        if i > 4096:
            break
    return None


def topology(plan: Plan, env: Environment | None, lab_id: str) -> tuple[list[str], list[Host]]:
    """The subnet namespaces and the hosts (nodes, CIDR stand-ins, the outside) of PLAN's lab."""
    from ket_infra import flows as catalog
    from ket_infra.layout import cidr_destinations, cidr_sources
    from ket_infra.plan import ROLES

    subnets: dict[str, str] = {}
    hosts: list[Host] = []
    taken = {n.address for n in plan.nodes}
    for i, n in enumerate(plan.nodes):
        net = str(ipaddress.IPv4Network(f"{n.address}/24", strict=False))
        sn = subnets.setdefault(net, f"{lab_id}-sn{len(subnets)}")
        roles = tuple(sorted(n.roles, key=ROLES.index))
        hosts.append(Host(n.host, f"{lab_id}-n{i}", n.address, sn, n.group, roles))
    if not subnets:
        raise KetInfraError("the plan has no nodes: nothing to put in the lab")
    first = next(iter(subnets.values()))
    cidrs: list[str] = []
    for f in catalog.required_flows(plan, env):
        if f.src_cidr is not None:
            cidrs += [c for c, sender in cidr_sources(f, plan, env) if sender is None]
        if f.dst_cidr is not None:
            cidrs += cidr_destinations(f, plan, env)
    for cidr in dict.fromkeys(cidrs):
        space = ipaddress.IPv4Network(cidr, strict=False)
        if any(h.cidr is not None and ipaddress.ip_address(h.address) in space for h in hosts):
            continue  # an address already standing for a CIDR inside this one
        address = _free_address(space, taken) if space.prefixlen else "198.18.0.1"
        if address is None:
            continue  # a node's own /32: that node is the source
        taken.add(address)
        hosts.append(Host(f"cidr-{address}", f"{lab_id}-c{len(hosts)}", address, first, cidr=cidr))
    named = [ipaddress.IPv4Network(c, strict=False) for c in cidrs]
    outside = next(
        (str(a) for a in ipaddress.IPv4Network(OUTSIDE).hosts() if not any(a in n for n in named)),
        None,
    )
    if outside is not None:
        hosts.append(Host("outside", f"{lab_id}-out", outside, first))
    return list(subnets.values()), hosts


def _namespaces(lab: Lab) -> list[str]:
    return [h.ns for h in lab.hosts] + lab.subnets


def build(lab: Lab) -> None:
    """Make the namespaces, bridges and veth pairs the state file names."""
    _ip(batch=[f"netns add {ns}" for ns in _namespaces(lab)])
    links: list[str] = []
    ports: dict[str, list[str]] = defaultdict(list)
    for i, h in enumerate(lab.hosts):
        links.append(f"link add eth0 netns {h.ns} type veth peer name p{i} netns {h.subnet}")
        ports[h.subnet].append(f"p{i}")
    for i, sn in enumerate(lab.subnets[1:], 1):  # subnets joined at layer 2
        links.append(f"link add up{i} netns {lab.subnets[0]} type veth peer name up0 netns {sn}")
        ports[lab.subnets[0]].append(f"up{i}")
        ports[sn].append("up0")
    _ip(batch=links)
    for sn in lab.subnets:
        lines = ["link add br0 type bridge", "link set br0 up"]
        for p in ports[sn]:
            lines += [f"link set {p} master br0", f"link set {p} up"]
        _ip(batch=lines, ns=sn)
    macs = {h.address: mac(i) for i, h in enumerate(lab.hosts)}
    for h in lab.hosts:
        lines = [
            "link set lo up",
            f"link set eth0 address {macs[h.address]}",
            f"addr add {h.address}/32 dev eth0",
            "link set eth0 up",
            "route add default dev eth0",
        ]
        lines += [f"neigh add {a} lladdr {m} dev eth0 nud permanent" for a, m in macs.items() if a != h.address]
        _ip(batch=lines, ns=h.ns)


def mac(i: int, kind: int = 0) -> str:
    """The lab's Ith host's link address (KIND 1: its overlay device's), locally administered.

    Every host knows every other's address from the start (permanent neighbour entries), as a
    VPC's hypervisor answers ARP itself: the kernel's ARP table is one table for all namespaces,
    1024 resolved entries at most (gc_thresh3), and a 50-node lab resolving its own would overflow
    it ("neighbor table overflow") and lose thousands of packets. Permanent entries do not count.
    """
    return f"02:6b:{kind:02x}:{i >> 16 & 0xFF:02x}:{i >> 8 & 0xFF:02x}:{i & 0xFF:02x}"


def _kill(pids: Iterable[int]) -> None:
    """SIGKILL: the lab's daemons keep nothing worth a clean shutdown."""
    alive = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
            alive.append(pid)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 3
    for pid in alive:
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    break
            except ChildProcessError:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
            time.sleep(0.05)


def teardown(lab: Lab) -> None:
    """Stop every process and remove every namespace LAB's state names, then the state itself."""
    _kill(lab.pids.values())
    existing = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    gone = [ns for ns in _namespaces(lab) if ns in existing]
    if gone:
        subprocess.run(
            [_tool("ip"), "-force", "-batch", "-"],
            input="".join(f"netns del {ns}\n" for ns in gone),
            capture_output=True,
            text=True,
        )
    shutil.rmtree(lab.dir, ignore_errors=True)
    lab.state.unlink(missing_ok=True)


def down(state: Path = STATE) -> Lab | None:
    """Remove the lab STATE names (None when no lab is up)."""
    if not state.exists():
        return None
    lab = Lab.load(state)
    teardown(lab)
    return lab


def context(plan_file: str, env_file: str | None) -> tuple[Plan, Environment | None, RuleSet]:
    from ket_infra.environment import load_environment
    from ket_infra.layout import layout
    from ket_infra.plan import load_plan

    env = load_environment(env_file) if env_file else None
    plan = load_plan(plan_file)
    return plan, env, layout(plan, env)


def up(plan_file: str, env_file: str | None, state: Path = STATE, progress: Callable[[str], None] = print) -> Lab:
    """Bring PLAN_FILE's lab up (removing a lab the state file still names), with its rules loaded."""
    problem = unavailable(daemons=False)
    if problem:
        raise KetInfraError(f"the lab cannot run here: {problem}")
    plan, env, rs = context(plan_file, env_file)
    old = down(state)
    if old is not None:
        progress(f"removed lab {old.id} that {state} still named (its namespaces and processes)")
    lab = Lab(
        f"ki{os.urandom(2).hex()}",
        str(Path(plan_file).resolve()),
        str(Path(env_file).resolve()) if env_file and Path(env_file).exists() else env_file,
        state.resolve(),
    )
    lab.subnets, lab.hosts = topology(plan, env, lab.id)
    lab.save()  # before anything is made: a kill from here on leaves a record
    lab.dir.mkdir(parents=True, exist_ok=True)
    build(lab)
    load_rules(lab, plan, rs)
    progress(
        f"lab {lab.id} up: {len(lab.nodes)} node(s), {len(lab.hosts) - len(lab.nodes)} outside host(s), {len(lab.subnets)} subnet(s)"
    )
    return lab


def load_rules(lab: Lab, plan: Plan, rs: RuleSet, rules: tuple[Rule, ...] | None = None, overlay: bool = False) -> None:
    """Load RULES (RS's own when None) into each node's namespace, and forget every tracked connection."""
    from ket_infra import labnet, nftables

    groups = {g.name: g for g in rs.groups}
    for h in lab.nodes:
        assert h.group is not None
        text = nftables.group_table(rs, plan, groups[h.group], rules)
        if overlay:  # the overlay's inner packets: a security group only ever sees the outer UDP
            text = text.replace('iif "lo" accept', f'iif "lo" accept\n    iifname "{VXLAN_DEV}" accept').replace(
                'oif "lo" accept', f'oif "lo" accept\n    oifname "{VXLAN_DEV}" accept'
            )
        done = subprocess.run(
            [_tool("ip"), "netns", "exec", h.ns, _tool("nft"), "-f", "-"], input=text, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise KetInfraError(f"nft -f in {h.name}'s namespace: {done.stderr.strip()}")
    for ns in _namespaces(lab):
        labnet.flush_conntrack(ns)


# --- what is driven -------------------------------------------------------------------------------


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


def drives(lab: Lab, plan: Plan, env: Environment | None) -> list[Drive]:
    """Every required flow between the hosts it names, then the probes that must be dropped."""
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


# --- results --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    kind: str  # flow | probe | daemon
    flow: str
    source: str
    target: str
    what: str
    ok: bool
    words: str  # what happened, in the packets' or the daemon's own words

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "flow": self.flow,
            "source_node": self.source,
            "target_node": self.target,
            "what": self.what,
            "status": ("passed" if self.ok else "failed")
            if self.kind != "probe"
            else ("dropped" if self.ok else "open"),
            "words": self.words,
        }


@dataclass
class Report:
    lab: str
    plan_file: str
    results: list[Result] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    def failed_flows(self) -> list[str]:
        return list(dict.fromkeys(r.flow for r in self.results if not r.ok and r.kind != "probe"))

    def as_json(self) -> dict[str, Any]:
        counts = {k: sum(1 for r in self.results if r.kind == k) for k in ("flow", "daemon", "probe")}
        return {
            "ok": self.ok,
            "lab": self.lab,
            "plan_file": self.plan_file,
            "counts": counts,
            "failed_flows": self.failed_flows(),
            "results": [r.as_json() for r in self.results],
            "notes": self.notes,
        }


def packet_results(lab: Lab, todo: list[Drive], timeout: float = TIMEOUT, split: bool = True) -> list[Result]:
    """Drive TODO with packets: listeners in every target, probes from every source, all at once."""
    from ket_infra import labnet

    # Without ports, a protocol's packets from A to B make B to A a reply (conntrack tracks the address
    # pair): each direction gets a round of its own, with nothing tracked between them.
    def portless(d: Drive) -> bool:
        return d.protocol not in ("tcp", "udp", "icmp")

    later = [d for d in todo if portless(d) and d.source > d.target]
    if later and split:
        first = [d for d in todo if not (portless(d) and d.source > d.target)]
        out = packet_results(lab, first, timeout, split=False)
        for ns in _namespaces(lab):
            labnet.flush_conntrack(ns)
        return out + packet_results(lab, later, timeout, split=False)
    ex = labnet.Exchange()
    try:
        probes: dict[Drive, Probe] = {}
        for d in todo:
            s, t = lab.host(d.source), lab.host(d.target)
            p = labnet.Probe(s.ns, t.ns, t.address, d.protocol, d.port)
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
                labnet.OPEN: "answered",
                labnet.REFUSED: "refused (nothing listening)",
                labnet.DROPPED: f"dropped: no answer in {timeout:g}s",
            }[o]
            out.append(Result("flow", d.flow, d.source, d.target, what(d.protocol, d.port), o == labnet.OPEN, words))
        else:
            words = "dropped" if o == labnet.DROPPED else f"got through ({o}): no required flow asks for it"
            out.append(
                Result("probe", "probe", d.source, d.target, what(d.protocol, d.port), o == labnet.DROPPED, words)
            )
    return out


# --- daemons --------------------------------------------------------------------------------------


def _spawn(lab: Lab, key: str, ns: str, argv: list[str], log: Path) -> None:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [_tool("ip"), "netns", "exec", ns, *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    lab.pids[key] = proc.pid
    lab.save()


def stop_daemons(lab: Lab) -> None:
    _kill(lab.pids.values())
    lab.pids.clear()
    lab.save()
    for h in lab.nodes:
        subprocess.run([_tool("ip"), "-n", h.ns, "link", "del", VXLAN_DEV], capture_output=True)


def _bird_name(host: str) -> str:
    return "n_" + re.sub(r"[^A-Za-z0-9_]", "_", host)


def start_bird(lab: Lab, peers: list[Host]) -> None:
    for h in peers:
        lines = [
            f"router id {h.address};",
            "protocol device { scan time 10; }",
            "template bgp mesh {",
            f"  local {h.address} as {AS_NUMBER};",
            "  connect delay time 1; connect retry time 2; error wait time 1, 3; hold time 6; keepalive time 2;",
            "  ipv4 { import none; export none; };",
            "}",
        ]
        lines += [
            f"protocol bgp {_bird_name(p.name)} from mesh {{ neighbor {p.address} as {AS_NUMBER}; }}"
            for p in peers
            if p is not h
        ]
        conf = lab.dir / f"bird-{h.name}.conf"
        conf.write_text("\n".join(lines) + "\n")
        sock = lab.dir / f"bird-{h.name}.ctl"
        _spawn(
            lab,
            f"bird:{h.name}",
            h.ns,
            [_tool("bird"), "-f", "-c", str(conf), "-s", str(sock)],
            lab.dir / f"bird-{h.name}.log",
        )


def bird_sessions(lab: Lab, h: Host) -> dict[str, str]:
    """`birdc show protocols` on H: each BGP session's line, by protocol name."""
    done = subprocess.run(
        [_tool("birdc"), "-s", str(lab.dir / f"bird-{h.name}.ctl"), "show", "protocols"], capture_output=True, text=True
    )
    out = {}
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) > 1 and parts[1] == "BGP":
            out[parts[0]] = " ".join(parts)
    return out


@dataclass(frozen=True)
class EtcdCluster:
    name: str  # k8s | networking
    client: int
    peer: int
    client_flow: str
    peer_flow: str


ETCD_CLUSTERS = (
    EtcdCluster("k8s", 2379, 2380, "etcd-client", "etcd-peer"),
    EtcdCluster("networking", 6666, 6660, "etcd-networking-client", "etcd-networking-peer"),
)


def start_etcd(lab: Lab, cluster: EtcdCluster, members: list[Host]) -> None:
    initial = ",".join(f"{m.name}=http://{m.address}:{cluster.peer}" for m in members)
    for m in members:
        data = lab.dir / f"etcd-{cluster.name}-{m.name}"
        shutil.rmtree(data, ignore_errors=True)
        argv = [
            _tool("etcd"), "--name", m.name, "--data-dir", str(data),
            "--listen-peer-urls", f"http://{m.address}:{cluster.peer}",
            "--initial-advertise-peer-urls", f"http://{m.address}:{cluster.peer}",
            "--listen-client-urls", f"http://{m.address}:{cluster.client}",
            "--advertise-client-urls", f"http://{m.address}:{cluster.client}",
            "--initial-cluster", initial, "--initial-cluster-state", "new",
            "--initial-cluster-token", f"{lab.id}-{cluster.name}",
            "--heartbeat-interval", "50", "--election-timeout", "500",
            "--logger", "zap", "--log-outputs", "stderr",
        ]  # fmt: skip
        _spawn(lab, f"etcd-{cluster.name}:{m.name}", m.ns, argv, lab.dir / f"etcd-{cluster.name}-{m.name}.log")


def etcdctl(lab: Lab, h: Host, endpoints: list[str], *args: str) -> subprocess.Popen[str]:
    argv = [
        _tool("ip"),
        "netns",
        "exec",
        h.ns,
        _tool("etcdctl"),
        "--endpoints",
        ",".join(endpoints),
        "--dial-timeout",
        "1s",
        "--command-timeout",
        "2s",
        *args,
    ]
    return subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "ETCDCTL_API": "3"}
    )


def _words(text: str) -> str:
    return " ".join(text.split())[:400]


def etcd_peer_complaint(lab: Lab, cluster: EtcdCluster, m: Host) -> str:
    """The member's own last word on its peers, from its log."""
    log = lab.dir / f"etcd-{cluster.name}-{m.name}.log"
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    for line in reversed(lines):
        if "peer" in line and ("unhealthy" in line or "unreachable" in line or "failed" in line or "lost" in line):
            try:
                doc = json.loads(line)
                return _words(f"{doc.get('msg', '')} {doc.get('remote-peer-id', '')} {doc.get('error', '')}")
            except ValueError:
                return _words(line)
    return ""


def vxlan_up(lab: Lab, nodes: list[Host], port: int) -> dict[str, str]:
    """Kernel VXLAN between NODES on udp PORT; each node's overlay address."""
    overlay = {h.name: str(OVERLAY.network_address + i + 1) for i, h in enumerate(nodes)}
    macs = {h.name: mac(i, kind=1) for i, h in enumerate(nodes)}  # known in advance, as on eth0 (mac())
    for h in nodes:
        lines = [
            f"link add {VXLAN_DEV} address {macs[h.name]} type vxlan id 4242 local {h.address} dstport {port} nolearning",
            f"addr add {overlay[h.name]}/{OVERLAY.prefixlen} dev {VXLAN_DEV}",
            f"link set {VXLAN_DEV} up",
        ]
        lines += [
            f"neigh add {overlay[p.name]} lladdr {macs[p.name]} dev {VXLAN_DEV} nud permanent"
            for p in nodes
            if p is not h
        ]
        _ip(batch=lines, ns=h.ns)
        fdb = [f"fdb append 00:00:00:00:00:00 dev {VXLAN_DEV} dst {p.address}" for p in nodes if p is not h]
        fdb += [f"fdb append {macs[p.name]} dev {VXLAN_DEV} dst {p.address}" for p in nodes if p is not h]
        if fdb:
            done = subprocess.run(
                [_tool("bridge"), "-n", h.ns, "-batch", "-"],
                input="\n".join(fdb) + "\n",
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise KetInfraError(f"bridge fdb in {h.name}'s namespace: {done.stderr.strip()}")
    return overlay


def uses_vxlan(plan: Plan) -> bool:
    return not plan.cni.disabled and plan.cni.provider in ("contiv", "weave")


def daemon_results(lab: Lab, plan: Plan, env: Environment | None, wait: float = DAEMON_WAIT) -> list[Result]:
    """Start the CNI's and KET's real daemons in the node namespaces and read their own state."""
    from ket_infra import flows as catalog
    from ket_infra import labnet

    cni = plan.cni
    names = {f.name for f in catalog.required_flows(plan, env)}
    kubelet = [h for h in lab.nodes if set(h.roles) & set(catalog.KUBELET)]
    etcd_nodes = [h for h in lab.nodes if "etcd" in h.roles]
    out: list[Result] = []
    bird = not cni.disabled and cni.provider == "calico" and "calico-bgp" in names and len(kubelet) > 1
    clusters = [c for c in ETCD_CLUSTERS if c.peer_flow in names] if etcd_nodes else []
    if bird:
        start_bird(lab, kubelet)
    for c in clusters:
        start_etcd(lab, c, etcd_nodes)
    vx_flow, vx_port = ("contiv-vxlan", 4789) if cni.provider == "contiv" else ("weave-data", 6784)
    overlay = vxlan_up(lab, kubelet, vx_port) if vx_flow in names and len(kubelet) > 1 else {}
    deadline = time.monotonic() + wait
    sessions: dict[str, dict[str, str]] = {}
    health: dict[tuple[str, str], tuple[bool, str]] = {}
    while True:
        if bird:
            sessions = {h.name: bird_sessions(lab, h) for h in kubelet}
        for c in clusters:
            procs = {
                m.name: etcdctl(lab, m, [f"http://{m.address}:{c.client}"], "endpoint", "health") for m in etcd_nodes
            }
            for name, proc in procs.items():
                text = proc.communicate()[0]
                health[(c.name, name)] = (proc.returncode == 0 and "is healthy" in text, _words(text))
        bgp_done = all(
            len(s) == len(kubelet) - 1 and all("Established" in line for line in s.values()) for s in sessions.values()
        )
        etcd_done = all(ok for ok, _ in health.values())
        if (bgp_done and etcd_done) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    if bird:
        for h in kubelet:
            for p in kubelet:
                if p is h:
                    continue
                line = sessions.get(h.name, {}).get(
                    _bird_name(p.name), "no such BGP protocol in `birdc show protocols`"
                )
                out.append(
                    Result(
                        "daemon",
                        "calico-bgp",
                        p.name,
                        h.name,
                        "BGP session (BIRD, tcp 179)",
                        "Established" in line,
                        f"birdc show protocols: {line}",
                    )
                )
    for c in clusters:
        endpoints = [f"http://{m.address}:{c.client}" for m in etcd_nodes]
        members = etcdctl(lab, etcd_nodes[0], endpoints[:1], "member", "list").communicate()[0]
        for m in etcd_nodes:
            ok, words = health[(c.name, m.name)]
            if not ok:
                complaint = etcd_peer_complaint(lab, c, m)
                words += f"; etcd log: {complaint}" if complaint else ""
            out.append(
                Result(
                    "daemon",
                    c.peer_flow,
                    m.name,
                    m.name,
                    f"etcd cluster {c.name} (tcp {c.peer})",
                    ok,
                    f"etcdctl endpoint health: {words}; member list: {_words(members)}",
                )
            )
        flow = next(f for f in catalog.required_flows(plan, env) if f.name == c.client_flow)
        clients = [h for h in lab.nodes if set(h.roles) & set(flow.src)]
        puts = {h.name: etcdctl(lab, h, endpoints, "put", f"/ket-infra-lab/{h.name}", h.name) for h in clients}
        wrote = {name: p.communicate()[0] for name, p in puts.items()}
        gets = {
            h.name: etcdctl(lab, h, endpoints, "get", "--print-value-only", f"/ket-infra-lab/{h.name}") for h in clients
        }
        for h in clients:
            text, read = wrote[h.name], gets[h.name].communicate()[0]
            ok = "OK" in text and read.strip() == h.name
            words = f"etcdctl put: {_words(text)}; get: {_words(read)}"
            out.append(
                Result(
                    "daemon",
                    c.client_flow,
                    h.name,
                    etcd_nodes[0].name,
                    f"etcd {c.name} write and read (tcp {c.client})",
                    ok,
                    words,
                )
            )
    if overlay:
        pings = [
            (h, q, labnet.Probe(h.ns, q.ns, overlay[q.name], "icmp", 8)) for h in kubelet for q in kubelet if q is not h
        ]
        ex = labnet.Exchange()
        try:
            got = ex.run([x[2] for x in pings], 2.0)
        finally:
            ex.close()
        for h, q, probe in pings:
            ok = got[probe] == labnet.OPEN
            words = f"ping {overlay[q.name]} over {VXLAN_DEV} (udp {vx_port}): {'reply' if ok else 'no reply in 2s'}"
            out.append(Result("daemon", vx_flow, h.name, q.name, f"VXLAN overlay (udp {vx_port})", ok, words))
    return out


def without(rs: RuleSet, flows: Iterable[str]) -> tuple[Rule, ...]:
    """RS's rules, less every rule that carries one of FLOWS (a rule merges the flows sharing its ports)."""
    drop = set(flows)
    unknown = drop - {f for r in rs.rules for f in r.flows}
    if unknown:
        raise KetInfraError(f"--drop-flow {', '.join(sorted(unknown))}: no rule of this plan carries it")
    return tuple(r for r in rs.rules if not drop & set(r.flows))


def run(
    lab: Lab,
    drop: Iterable[str] = (),
    daemons: bool = True,
    progress: Callable[[str], None] = print,
    wait: float = DAEMON_WAIT,
) -> Report:
    """Load the rules (less DROP's), drive every flow and probe with packets, then the real daemons."""
    plan, env, rs = context(lab.plan_file, lab.env_file)
    rules = without(rs, drop)
    stop_daemons(lab)
    load_rules(lab, plan, rs, rules, overlay=daemons and uses_vxlan(plan))
    report = Report(lab.id, lab.plan_file, notes=list(LAB_NOTES))
    if drop:
        report.notes.append(f"run without the rules carrying {', '.join(drop)}")
    todo = drives(lab, plan, env)
    progress(
        f"lab {lab.id}: {sum(d.required for d in todo)} flow packet(s), {sum(not d.required for d in todo)} probe(s)"
    )
    report.results += packet_results(lab, todo)
    if daemons:
        progress(f"lab {lab.id}: starting BIRD, etcd and VXLAN where the plan's CNI uses them")
        report.results += daemon_results(lab, plan, env, wait)
    return report


def flow_verdicts(lab: Lab, rules: tuple[Rule, ...], timeout: float = 0.2) -> dict[str, bool]:
    """Each required flow's verdict with RULES loaded, by packets alone: True when every exchange passes.

    What the referee compares with verify's verdict on the same rules in AWS's model.
    """
    plan, env, rs = context(lab.plan_file, lab.env_file)
    load_rules(lab, plan, rs, rules)
    out: dict[str, bool] = {}
    for r in packet_results(lab, [d for d in drives(lab, plan, env) if d.required], timeout):
        out[r.flow] = out.get(r.flow, True) and r.ok
    return out


# --- reports --------------------------------------------------------------------------------------


def text_report(report: Report) -> str:
    lines = [f"lab {report.lab}: {report.plan_file}"]
    by_flow: dict[str, list[Result]] = defaultdict(list)
    for r in report.results:
        by_flow[r.flow if r.kind != "probe" else "probe"].append(r)
    for flow, rs in by_flow.items():
        if flow == "probe":
            continue
        bad = [r for r in rs if not r.ok]
        if not bad:
            lines.append(f"  pass  {flow}: {len(rs)} exchange(s) ({', '.join(dict.fromkeys(r.what for r in rs))})")
            continue
        lines.append(f"  FAIL  {flow}: {len(bad)} of {len(rs)} failed")
        for r in bad[:8]:
            lines.append(f"        {r.source} -> {r.target} {r.what}: {r.words}")
        if len(bad) > 8:
            lines.append(f"        ... and {len(bad) - 8} more")
    probes = by_flow.get("probe", [])
    open_ = [r for r in probes if not r.ok]
    lines.append(
        f"  {'pass' if not open_ else 'FAIL'}  probes of what no flow requires: {len(probes) - len(open_)} of {len(probes)} dropped"
    )
    for r in open_[:20]:
        lines.append(f"        {r.source} -> {r.target} {r.what}: {r.words}")
    for n in report.notes:
        lines.append(f"note: {n}")
    failed = report.failed_flows()
    verdict = (
        "every flow passes and every probe is dropped"
        if report.ok
        else (f"failed: {', '.join(failed)}" if failed else "")
        + (f"{'; ' if failed else 'failed: '}{len(open_)} probe(s) got through" if open_ else "")
    )
    lines.append(f"lab: {verdict}")
    return "\n".join(lines) + "\n"


def junit_report(report: Report) -> str:
    cases = []
    for r in report.results:
        name = f"{r.flow} {r.source} -> {r.target} {r.what}"
        if r.ok:
            cases.append(f"    <testcase classname={quoteattr('lab.' + r.kind)} name={quoteattr(name)}/>")
        else:
            cases.append(
                f"    <testcase classname={quoteattr('lab.' + r.kind)} name={quoteattr(name)}>"
                f"<failure message={quoteattr(r.words)}/></testcase>"
            )
    failures = sum(1 for r in report.results if not r.ok)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<testsuites>\n'
        f'  <testsuite name={quoteattr("ket-infra lab " + report.lab)} tests="{len(report.results)}" failures="{failures}">\n'
        + "\n".join(cases)
        + "\n  </testsuite>\n</testsuites>\n"
    )
