"""The namespace lab: the plan's nodes as network namespaces behind ket-infra's own rules, proven with packets.

`up` makes one namespace per node holding the node's plan address, joined by a
veth pair to a bridge in a namespace of its own per /24 subnet the plan's
addresses fall in (subnets joined at layer 2: the VPC router and network ACLs
are not modelled), plus one namespace per CIDR the catalog names (an address
inside it) and one "outside" namespace at an address no rule names. Nothing is
routed to or from the host's own namespace. Each node loads its group's rules
as nftables (nftables.py, security-group semantics).

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

The package: topology.py (the namespaces), nftables.py (each node's rules),
net.py (sockets inside namespaces), probes.py (what is driven), daemons.py
(BIRD, etcd, VXLAN), report.py (text, JSON, JUnit); this module brings them up,
runs them and takes them down.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from ket_infra.errors import KetInfraError
from ket_infra.lab.daemons import (
    DAEMON_WAIT,
    VXLAN_DEV,
    Started,
    bird_sessions,
    daemon_results,
    etcdctl,
    start_daemons,
    stop_daemons,
    uses_vxlan,
)
from ket_infra.lab.probes import drives, packet_results
from ket_infra.lab.report import Report, Result, junit_report, text_report
from ket_infra.lab.topology import STATE, Host, Lab, build, namespaces, plan_hosts, teardown, tool

if TYPE_CHECKING:
    from ket_infra.environment import Environment
    from ket_infra.layout import Rule, RuleSet
    from ket_infra.plan import Plan

__all__ = [
    "STATE",
    "VXLAN_DEV",
    "Host",
    "Lab",
    "Report",
    "Result",
    "bird_sessions",
    "context",
    "down",
    "etcdctl",
    "flow_verdicts",
    "junit_report",
    "run",
    "text_report",
    "unavailable",
    "up",
]

PACKAGES = "nftables bird2 etcd-server etcd-client"
LAB_NOTES = (
    "etcd runs with TLS off in the lab (http:// URLs): the ports and the cluster's forming are what is proven",
    "IP-in-IP (4) and ESP (50) are sent as raw IP packets: this kernel has no ipip or esp4 module",
    "subnets are bridges joined at layer 2: network ACLs and the VPC router are not modelled",
)


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
    lab.subnets, lab.hosts = plan_hosts(plan, env, lab.id)
    lab.save()  # before anything is made: a kill from here on leaves a record
    lab.dir.mkdir(parents=True, exist_ok=True)
    build(lab)
    load_rules(lab, plan, rs)
    progress(
        f"lab {lab.id} up: {len(lab.nodes)} node(s), {len(lab.hosts) - len(lab.nodes)} outside host(s), {len(lab.subnets)} subnet(s)"
    )
    return lab


def load_rules(
    lab: Lab,
    plan: Plan,
    rs: RuleSet,
    rules: tuple[Rule, ...] | None = None,
    overlay: bool = False,
    loaded: dict[str, str] | None = None,
) -> None:
    """Load RULES (RS's own when None) into each node's namespace, and forget every tracked connection.

    LOADED: the file each namespace holds, as far as the caller knows (nothing else loads rules there
    meanwhile); a namespace already holding its file is left alone, and LOADED is kept up to date.
    """
    from ket_infra.lab import net, nftables

    groups = {g.name: g for g in rs.groups}
    started: list[tuple[Host, str, subprocess.Popen[str]]] = []
    for h in lab.nodes:
        assert h.group is not None
        text = nftables.group_table(rs, plan, groups[h.group], rules)
        if overlay:  # the overlay's inner packets: a security group only ever sees the outer UDP
            text = text.replace('iif "lo" accept', f'iif "lo" accept\n    iifname "{VXLAN_DEV}" accept').replace(
                'oif "lo" accept', f'oif "lo" accept\n    oifname "{VXLAN_DEV}" accept'
            )
        if loaded is not None and loaded.get(h.ns) == text:
            continue
        with net.netns(h.ns):  # nft started in the namespace, all at once
            proc = subprocess.Popen(
                [tool("nft"), "-f", "-"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        started.append((h, text, proc))
    for h, text, proc in started:
        err = proc.communicate(text)[1]
        if proc.returncode != 0:
            raise KetInfraError(f"nft -f in {h.name}'s namespace: {err.strip()}")
        if loaded is not None:
            loaded[h.ns] = text
    for ns in namespaces(lab):
        net.flush_conntrack(ns)


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
    started: list[Started] = []

    def start() -> None:  # while the packets without ports wait out their timeout
        if daemons:
            progress(f"lab {lab.id}: starting BIRD, etcd and VXLAN where the plan's CNI uses them")
            started.append(start_daemons(lab, plan, env))

    report.results += packet_results(lab, todo, between=start)
    if started:
        report.results += daemon_results(lab, plan, env, wait, started[0])
    return report


def flow_verdicts(
    lab: Lab, rules: tuple[Rule, ...], timeout: float = 0.2, loaded: dict[str, str] | None = None
) -> dict[str, bool]:
    """Each required flow's verdict with RULES loaded, by packets alone: True when every exchange passes.

    What the referee compares with verify's verdict on the same rules in AWS's model. LOADED: as
    load_rules's, kept by a caller that calls again and again (a breakage changes one group's file).
    """
    plan, env, rs = context(lab.plan_file, lab.env_file)
    load_rules(lab, plan, rs, rules, loaded=loaded)
    out: dict[str, bool] = {}
    for r in packet_results(lab, drives(lab, plan, env, probes=False), timeout):
        out[r.flow] = out.get(r.flow, True) and r.ok
    return out
