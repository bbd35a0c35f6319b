"""The namespace lab: the plan's nodes behind ket-infra's nftables, proven with packets and real daemons.

One lab per CNI, brought up once per module; breakages reload only the rules.
Skips (and fails under KET_INFRA_NO_SKIP=1) where the lab cannot run: not root,
no namespaces, or nftables/bird2/etcd-server/etcd-client missing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ket_infra import lab
from ket_infra.lab import topology
from tests.conftest import EXAMPLES
from tests.lab_env import need_lab
from tests.test_cli import run as cli

ROOT = Path(__file__).resolve().parent.parent


def _up(plan: str, tmp: Path, env: str | None = None) -> Iterator[lab.Lab]:
    need_lab()
    state = tmp / "state.json"
    the_lab = lab.up(str(EXAMPLES / plan), env, state, progress=lambda _m: None)
    try:
        yield the_lab
    finally:
        lab.down(state)


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[lab.Lab]:
    """Calico routed: five nodes, three of them etcd+master, a BIRD mesh among all five."""
    yield from _up("calico-routed.yaml", tmp_path_factory.mktemp("routed"))


@pytest.fixture(scope="module")
def routed_report(routed: lab.Lab) -> lab.Report:
    return lab.run(routed, progress=lambda _m: None)


def _sessions(the_lab: lab.Lab) -> dict[str, dict[str, str]]:
    kubelet = [h for h in the_lab.nodes if set(h.roles) & {"master", "worker", "ingress", "storage"}]
    return {h.name: lab.bird_sessions(the_lab, h) for h in kubelet}


def test_calico_bird_mesh_is_established_and_etcd_formed(routed: lab.Lab, routed_report: lab.Report) -> None:
    assert routed_report.ok, lab.text_report(routed_report)
    sessions = _sessions(routed)
    assert len(sessions) == 5
    for host, lines in sessions.items():  # BIRD's own words
        assert len(lines) == 4 and all(" Established" in line for line in lines.values()), (host, lines)
    cp01 = routed.host("cp01")
    for endpoint in ("http://10.0.3.11:2379", "http://10.0.3.11:6666"):
        health = lab.etcdctl(routed, cp01, [endpoint], "endpoint", "health").communicate()[0]
        assert "is healthy" in health
        members = lab.etcdctl(routed, cp01, [endpoint], "member", "list").communicate()[0]
        assert {"cp01", "cp02", "cp03"} <= {line.split(", ")[2] for line in members.splitlines()}
    flows = {r.flow for r in routed_report.results if r.kind == "daemon"}
    assert flows == {"calico-bgp", "etcd-peer", "etcd-client", "etcd-networking-peer", "etcd-networking-client"}
    assert any(r.flow == "calico-pod-traffic" and r.ok for r in routed_report.results)  # from the pod CIDR


def test_no_node_resolves_an_address_by_arp(routed: lab.Lab, routed_report: lab.Report) -> None:
    """The kernel's ARP table is shared by every namespace (1024 entries): a 50-node lab resolving its
    own addresses overflowed it and lost thousands of packets. Every neighbour is permanent, known at up."""
    assert routed_report.results
    for h in routed.hosts:
        shown = subprocess.run(["ip", "-n", h.ns, "neigh", "show", "dev", "eth0"], capture_output=True, text=True)
        lines = shown.stdout.splitlines()
        assert len(lines) == len(routed.hosts) - 1, (h.name, lines)
        assert all(line.split()[-1] == "PERMANENT" for line in lines), (h.name, lines)


@pytest.fixture(scope="module")
def overlay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[lab.Lab]:
    """Calico overlay: three dedicated etcd nodes (the peer rule is a rule of its own), two subnets."""
    yield from _up("calico-overlay.yaml", tmp_path_factory.mktemp("overlay"), str(ROOT / "environments/example.yaml"))


def test_without_the_bgp_and_etcd_peer_rules_bird_stays_down_etcd_does_not_form_and_both_are_named(
    overlay: lab.Lab,
) -> None:
    """Both breakages in one run: each is judged by its own daemon, and each is named."""
    done = cli(
        "lab", "run", "--state", str(overlay.state), "--drop-flow", "calico-bgp", "--drop-flow", "etcd-peer",
        "--format", "json", "--wait", "3",
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    doc = json.loads(done.stdout)
    assert {"calico-bgp", "etcd-peer"} <= set(doc["failed_flows"])
    daemon = [r for r in doc["results"] if r["kind"] == "daemon"]
    bgp = [r for r in daemon if r["flow"] == "calico-bgp"]
    assert len(bgp) == 42 and all(r["status"] == "failed" for r in bgp)  # 7 kubelet nodes, every ordered pair
    assert all("birdc show protocols" in r["words"] and "Established" not in r["words"] for r in bgp)
    peer = [r for r in daemon if r["flow"] == "etcd-peer"]
    assert len(peer) == 3 and all(r["status"] == "failed" for r in peer)
    assert all("etcdctl endpoint health" in r["words"] and "is healthy" not in r["words"] for r in peer)
    # the networking etcd has its own peer rule: it still forms, and is written and read
    for flow in ("etcd-networking-peer", "etcd-networking-client"):
        assert [r["status"] for r in daemon if r["flow"] == flow] and all(
            r["status"] == "passed" for r in daemon if r["flow"] == flow
        ), flow
    assert any(r["flow"] == "calico-ipip" and r["status"] == "passed" for r in doc["results"])  # raw protocol 4
    assert all(r["status"] == "dropped" for r in doc["results"] if r["kind"] == "probe")


@pytest.fixture(scope="module")
def contiv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[lab.Lab]:
    yield from _up("contiv.yaml", tmp_path_factory.mktemp("contiv"))


def test_contiv_vxlan_carries_a_ping_across_the_overlay(contiv: lab.Lab) -> None:
    dropped = lab.run(contiv, drop=["contiv-vxlan"], progress=lambda _m: None)
    assert dropped.failed_flows() == ["contiv-vxlan"]
    vx = [r for r in dropped.results if r.kind == "daemon" and r.flow == "contiv-vxlan"]
    assert vx and not any(r.ok for r in vx)  # no ping crosses the overlay without its rule
    report = lab.run(contiv, progress=lambda _m: None)  # a run after a --drop-flow run has every rule again
    assert report.ok, lab.text_report(report)
    vx = [r for r in report.results if r.kind == "daemon" and r.flow == "contiv-vxlan"]
    assert len(vx) == 12 and all("reply" in r.words for r in vx)  # 4 kubelet nodes, every ordered pair
    links = subprocess.run(
        ["ip", "-n", contiv.host("worker01").ns, "-d", "link", "show", lab.VXLAN_DEV], capture_output=True, text=True
    )
    assert "vxlan id 4242" in links.stdout and "dstport 4789" in links.stdout


@pytest.fixture(scope="module")
def weave(tmp_path_factory: pytest.TempPathFactory) -> Iterator[lab.Lab]:
    yield from _up("weave-encrypted.yaml", tmp_path_factory.mktemp("weave"))


def test_weave_fast_datapath_vxlan_and_esp(weave: lab.Lab) -> None:
    done = cli("lab", "run", "--state", str(weave.state), "--format", "junit")
    assert done.returncode == 0, done.stdout
    assert (
        'failures="0"' in done.stdout and "weave-data worker01 -&gt; worker02 VXLAN overlay (udp 6784)" in done.stdout
    )
    assert "weave-esp worker01 -&gt; worker02 ESP (50)" in done.stdout
    assert "weave-control" in done.stdout


def test_a_killed_lab_is_removed_by_the_next_up_and_down_leaves_nothing(tmp_path: Path) -> None:
    need_lab()
    state = tmp_path / "state.json"
    plan = str(EXAMPLES / "v1-4-legacy.yaml")
    proc = subprocess.Popen([sys.executable, "-m", "ket_infra", "lab", "up", plan, "--state", str(state)], cwd=ROOT)
    assert proc.wait(30) == 0
    first = lab.Lab.load(state)
    # a process the lab recorded, then the lab is "killed": nothing ran down
    sleeper = subprocess.Popen(["ip", "netns", "exec", first.hosts[0].ns, "sleep", "60"], start_new_session=True)
    first.pids["sleeper"] = sleeper.pid
    first.save()
    done = cli("lab", "up", plan, "--state", str(state))
    assert done.returncode == 0 and f"removed lab {first.id}" in done.stderr
    assert sleeper.wait(5) is not None
    names = set(os.listdir("/run/netns"))
    assert not any(h.ns in names for h in first.hosts)
    second = lab.Lab.load(state)
    assert cli("lab", "down", "--state", str(state)).returncode == 0
    names = set(os.listdir("/run/netns"))
    assert not any(ns.startswith(second.id) for ns in names) and not state.exists()


def test_down_does_not_wait_on_a_killed_process_its_parent_has_not_reaped() -> None:
    """A daemon whose parent lives on (here one that never waits) is a zombie once killed: gone."""
    never_waits = "import subprocess, time; print(subprocess.Popen(['sleep', '60']).pid, flush=True); time.sleep(60)"
    parent = subprocess.Popen([sys.executable, "-c", never_waits], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        start = time.monotonic()
        topology.kill([child])
        assert time.monotonic() - start < 1
        assert Path(f"/proc/{child}/stat").read_text().split()[2] == "Z"  # killed, not reaped by its parent
    finally:
        parent.kill()
        parent.wait()


def test_ctrl_c_during_run_removes_the_lab(tmp_path: Path) -> None:
    need_lab()
    state = tmp_path / "state.json"
    assert cli("lab", "up", str(EXAMPLES / "calico-routed.yaml"), "--state", str(state)).returncode == 0
    the_lab = lab.Lab.load(state)
    # without the BGP rule BIRD never gets Established, so the run waits out --wait: it is surely still
    # running when interrupted, however slow the machine
    run = ["lab", "run", "--state", str(state), "--drop-flow", "calico-bgp", "--wait", "600"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "ket_infra", *run],
        # as from a terminal: a job started in the background of a script (`cmd &`) inherits SIGINT ignored,
        # and a Python started that way keeps ignoring it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    seen = ""
    while "starting BIRD" not in seen:  # the run waits for the daemons: interrupt it there
        line = proc.stderr.readline()
        assert line, f"lab run ended before starting the daemons: {seen}"
        seen += line
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    err = seen + err
    assert proc.returncode == 130, err
    assert not state.exists()
    assert not any(ns.startswith(the_lab.id) for ns in os.listdir("/run/netns"))
