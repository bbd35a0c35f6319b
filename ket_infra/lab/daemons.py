"""The real daemons in the node namespaces: BIRD 2 in a full BGP mesh (Calico), etcd 3.4 clusters
(TLS off in the lab), kernel VXLAN with a ping across the overlay (Contiv, Weave); their own state
read back as the lab's results."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ket_infra.errors import KetInfraError
from ket_infra.lab.probes import TIMEOUT
from ket_infra.lab.report import Result
from ket_infra.lab.topology import Host, Lab, ip, kill, mac, tool

if TYPE_CHECKING:
    from ket_infra.environment import Environment
    from ket_infra.plan import Plan

DAEMON_WAIT = 6.0  # seconds the daemons get to reach their state (BIRD Established, etcd healthy)
OVERLAY = ipaddress.IPv4Network("100.64.0.0/16")  # the VXLAN overlay's addresses
VXLAN_DEV = "kivx0"
AS_NUMBER = 64512  # Calico's default AS


def _spawn(lab: Lab, key: str, ns: str, argv: list[str], log: Path) -> None:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [tool("ip"), "netns", "exec", ns, *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    lab.pids[key] = proc.pid
    lab.save()


def stop_daemons(lab: Lab) -> None:
    kill(lab.pids.values())
    lab.pids.clear()
    lab.save()
    for h in lab.nodes:
        subprocess.run([tool("ip"), "-n", h.ns, "link", "del", VXLAN_DEV], capture_output=True)


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
            [tool("bird"), "-f", "-c", str(conf), "-s", str(sock)],
            lab.dir / f"bird-{h.name}.log",
        )


def bird_sessions(lab: Lab, h: Host) -> dict[str, str]:
    """`birdc show protocols` on H: each BGP session's line, by protocol name."""
    done = subprocess.run(
        [tool("birdc"), "-s", str(lab.dir / f"bird-{h.name}.ctl"), "show", "protocols"], capture_output=True, text=True
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
            tool("etcd"), "--name", m.name, "--data-dir", str(data),
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


def etcdctl(lab: Lab, h: Host, endpoints: list[str], *args: str, timeout: str = "2s") -> subprocess.Popen[str]:
    """etcdctl ARGS started in H's namespace (TIMEOUT: its command timeout)."""
    from ket_infra.lab import net

    argv = [tool("etcdctl"), "--endpoints", ",".join(endpoints), "--dial-timeout", "1s", "--command-timeout", timeout]
    with net.netns(h.ns):
        return subprocess.Popen(
            [*argv, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "ETCDCTL_API": "3"},
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
        ip(batch=lines, ns=h.ns)
        fdb = [f"fdb append 00:00:00:00:00:00 dev {VXLAN_DEV} dst {p.address}" for p in nodes if p is not h]
        fdb += [f"fdb append {macs[p.name]} dev {VXLAN_DEV} dst {p.address}" for p in nodes if p is not h]
        if fdb:
            done = subprocess.run(
                [tool("bridge"), "-n", h.ns, "-batch", "-"],
                input="\n".join(fdb) + "\n",
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise KetInfraError(f"bridge fdb in {h.name}'s namespace: {done.stderr.strip()}")
    return overlay


def uses_vxlan(plan: Plan) -> bool:
    return not plan.cni.disabled and plan.cni.provider in ("contiv", "weave")


@dataclass(frozen=True)
class Started:
    """The daemons start_daemons started, and when."""

    bird: bool
    kubelet: list[Host]
    etcd_nodes: list[Host]
    clusters: list[EtcdCluster]
    overlay: dict[str, str]  # kubelet node -> its VXLAN overlay address (empty: no VXLAN)
    vx_flow: str
    vx_port: int
    at: float  # time.monotonic() when they were started


def start_daemons(lab: Lab, plan: Plan, env: Environment | None) -> Started:
    """Start the CNI's and KET's real daemons in the node namespaces (BIRD, etcd, kernel VXLAN)."""
    from ket_infra import flows as catalog

    cni = plan.cni
    names = {f.name for f in catalog.required_flows(plan, env)}
    kubelet = [h for h in lab.nodes if set(h.roles) & set(catalog.KUBELET)]
    etcd_nodes = [h for h in lab.nodes if "etcd" in h.roles]
    bird = not cni.disabled and cni.provider == "calico" and "calico-bgp" in names and len(kubelet) > 1
    clusters = [c for c in ETCD_CLUSTERS if c.peer_flow in names] if etcd_nodes else []
    if bird:
        start_bird(lab, kubelet)
    for c in clusters:
        start_etcd(lab, c, etcd_nodes)
    vx_flow, vx_port = ("contiv-vxlan", 4789) if cni.provider == "contiv" else ("weave-data", 6784)
    overlay = vxlan_up(lab, kubelet, vx_port) if vx_flow in names and len(kubelet) > 1 else {}
    return Started(bird, kubelet, etcd_nodes, clusters, overlay, vx_flow, vx_port, time.monotonic())


def daemon_results(
    lab: Lab, plan: Plan, env: Environment | None, wait: float = DAEMON_WAIT, started: Started | None = None
) -> list[Result]:
    """The daemons' own state (starting them unless STARTED), once reached or WAIT seconds after their start."""
    from ket_infra import flows as catalog
    from ket_infra.lab import net

    st = started or start_daemons(lab, plan, env)
    bird, kubelet, etcd_nodes, clusters, overlay = st.bird, st.kubelet, st.etcd_nodes, st.clusters, st.overlay
    vx_flow, vx_port = st.vx_flow, st.vx_port
    out: list[Result] = []
    deadline = st.at + wait
    sessions: dict[str, dict[str, str]] = {}
    health: dict[tuple[str, str], tuple[bool, str]] = {}
    # Each member is asked again as soon as its last answer came back unhealthy: a member that cannot
    # answer (no quorum: the command times out) holds up no other member, BIRD or the other cluster.
    asking: dict[tuple[str, str], subprocess.Popen[str]] = {}

    def answered(key: tuple[str, str], proc: subprocess.Popen[str]) -> None:
        text = proc.communicate()[0]
        health[key] = (proc.returncode == 0 and "is healthy" in text, _words(text))
        del asking[key]

    while True:
        for c in clusters:
            for m in etcd_nodes:
                if (c.name, m.name) not in asking and not health.get((c.name, m.name), (False, ""))[0]:
                    endpoint = [f"http://{m.address}:{c.client}"]
                    # asked again until the deadline: a short timeout only makes the questions more frequent
                    asking[(c.name, m.name)] = etcdctl(lab, m, endpoint, "endpoint", "health", timeout="1s")
        if bird:
            sessions = {h.name: bird_sessions(lab, h) for h in kubelet}
        for key, proc in list(asking.items()):
            if proc.poll() is not None:
                answered(key, proc)
        bgp_done = all(
            len(s) == len(kubelet) - 1 and all("Established" in line for line in s.values()) for s in sessions.values()
        )
        etcd_done = not asking and all(ok for ok, _ in health.values())
        if bgp_done and etcd_done:
            break
        if time.monotonic() > deadline:
            for key, proc in list(asking.items()):  # the last answers: why a member is not healthy
                answered(key, proc)
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
    # Every cluster's member list and writes at once, then the reads of what was written: a cluster
    # that did not form makes each of them wait out etcdctl's command timeout.
    endpoints = {c.name: [f"http://{m.address}:{c.client}" for m in etcd_nodes] for c in clusters}
    listing = {c.name: etcdctl(lab, etcd_nodes[0], endpoints[c.name][:1], "member", "list") for c in clusters}
    clients: dict[str, list[Host]] = {}
    for c in clusters:
        flow = next(f for f in catalog.required_flows(plan, env) if f.name == c.client_flow)
        clients[c.name] = [h for h in lab.nodes if set(h.roles) & set(flow.src)]
    puts = {
        (c.name, h.name): etcdctl(lab, h, endpoints[c.name], "put", f"/ket-infra-lab/{h.name}", h.name)
        for c in clusters
        for h in clients[c.name]
    }
    wrote = {key: p.communicate()[0] for key, p in puts.items()}
    gets = {
        (c.name, h.name): etcdctl(lab, h, endpoints[c.name], "get", "--print-value-only", f"/ket-infra-lab/{h.name}")
        for c in clusters
        for h in clients[c.name]
        if "OK" in wrote[(c.name, h.name)]  # nothing written: nothing to read
    }
    for c in clusters:
        members = listing[c.name].communicate()[0]
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
        for h in clients[c.name]:
            text = wrote[(c.name, h.name)]
            get = gets.get((c.name, h.name))
            read = get.communicate()[0] if get is not None else ""
            ok = "OK" in text and read.strip() == h.name
            words = (
                f"etcdctl put: {_words(text)}; get: {_words(read) if get is not None else 'not tried, the put failed'}"
            )
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
            (h, q, net.Probe(h.ns, q.ns, overlay[q.name], "icmp", 8)) for h in kubelet for q in kubelet if q is not h
        ]
        ex = net.Exchange()
        try:
            got = ex.run([x[2] for x in pings], TIMEOUT)  # as every probe: no ARP on the way (vxlan_up)
        finally:
            ex.close()
        for h, q, probe in pings:
            ok = got[probe] == net.OPEN
            words = f"ping {overlay[q.name]} over {VXLAN_DEV} (udp {vx_port}): {'reply' if ok else f'no reply in {TIMEOUT:g}s'}"
            out.append(Result("daemon", vx_flow, h.name, q.name, f"VXLAN overlay (udp {vx_port})", ok, words))
    return out
