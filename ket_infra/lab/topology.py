"""The lab's namespaces: one per node, per subnet, per CIDR the catalog names, and the outside.

`plan_hosts` decides them from the plan; `build` makes them, joined by veth pairs to
a bridge per /24 subnet (subnets joined at layer 2: the VPC router and network
ACLs are not modelled); `teardown` removes whatever the state file names. Every
namespace is written to the state file before it is made.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ket_infra.errors import KetInfraError

if TYPE_CHECKING:
    from ket_infra.environment import Environment
    from ket_infra.plan import Plan

STATE = Path(".work/lab/state.json")
OUTSIDE = "198.51.100.0/24"  # where the unnamed outside host lives (TEST-NET-2), unless a rule names it


def tool(name: str) -> str:
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


def ip(*args: str, batch: Iterable[str] | None = None, ns: str | None = None) -> None:
    cmd = [tool("ip")] + (["-n", ns] if ns else []) + list(args)
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


def plan_hosts(plan: Plan, env: Environment | None, lab_id: str) -> tuple[list[str], list[Host]]:
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


def namespaces(lab: Lab) -> list[str]:
    return [h.ns for h in lab.hosts] + lab.subnets


def build(lab: Lab) -> None:
    """Make the namespaces, bridges and veth pairs the state file names."""
    ip(batch=[f"netns add {ns}" for ns in namespaces(lab)])
    links: list[str] = []
    ports: dict[str, list[str]] = defaultdict(list)
    for i, h in enumerate(lab.hosts):
        links.append(f"link add eth0 netns {h.ns} type veth peer name p{i} netns {h.subnet}")
        ports[h.subnet].append(f"p{i}")
    for i, sn in enumerate(lab.subnets[1:], 1):  # subnets joined at layer 2
        links.append(f"link add up{i} netns {lab.subnets[0]} type veth peer name up0 netns {sn}")
        ports[lab.subnets[0]].append(f"up{i}")
        ports[sn].append("up0")
    ip(batch=links)
    for sn in lab.subnets:
        lines = ["link add br0 type bridge", "link set br0 up"]
        for p in ports[sn]:
            lines += [f"link set {p} master br0", f"link set {p} up"]
        ip(batch=lines, ns=sn)
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
        ip(batch=lines, ns=h.ns)


def mac(i: int, kind: int = 0) -> str:
    """The lab's Ith host's link address (KIND 1: its overlay device's), locally administered.

    Every host knows every other's address from the start (permanent neighbour entries), as a
    VPC's hypervisor answers ARP itself: the kernel's ARP table is one table for all namespaces,
    1024 resolved entries at most (gc_thresh3), and a 50-node lab resolving its own would overflow
    it ("neighbor table overflow") and lose thousands of packets. Permanent entries do not count.
    """
    return f"02:6b:{kind:02x}:{i >> 16 & 0xFF:02x}:{i >> 8 & 0xFF:02x}:{i & 0xFF:02x}"


def kill(pids: Iterable[int]) -> None:
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
                if not _running(pid):
                    break
            time.sleep(0.05)


def _running(pid: int) -> bool:
    """PID is a live process: not gone, and not a zombie its parent (another process) has yet to reap."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].split()[0] != "Z"  # the state follows the command name in parentheses


def teardown(lab: Lab) -> None:
    """Stop every process and remove every namespace LAB's state names, then the state itself."""
    kill(lab.pids.values())
    existing = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    gone = [ns for ns in namespaces(lab) if ns in existing]
    if gone:
        subprocess.run(
            [tool("ip"), "-force", "-batch", "-"],
            input="".join(f"netns del {ns}\n" for ns in gone),
            capture_output=True,
            text=True,
        )
    shutil.rmtree(lab.dir, ignore_errors=True)
    lab.state.unlink(missing_ok=True)
