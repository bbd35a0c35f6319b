"""rules --format nftables: the rules `rules` computes, as a host firewall with security-group semantics."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from ket_infra.environment import load_environment
from ket_infra.lab import nftables
from ket_infra.layout import layout
from ket_infra.plan import load_plan
from tests.conftest import EXAMPLES
from tests.lab_env import need_lab
from tests.test_cli import run

ROOT = Path(__file__).resolve().parent.parent


def test_every_rule_of_the_node_group_is_one_accept_statement_and_nothing_else() -> None:
    plan = load_plan(EXAMPLES / "calico-overlay.yaml")
    rs = layout(plan, load_environment(ROOT / "environments" / "example.yaml"))
    text = nftables.render(rs, plan, "worker01")
    statements = [line.strip() for line in text.splitlines() if line.strip().endswith('"') and "accept" in line]
    mine = [r for r in rs.rules if r.group == "worker"]
    assert len(statements) == len(mine)
    for r in mine:
        assert any(f'comment "{r.name}:' in s for s in statements), r.name
    assert "policy drop;" in text and text.count("policy drop;") == 2
    assert "ct state established,related accept" in text
    # group references are sets of the member nodes' addresses
    assert "set g_etcd {\n    type ipv4_addr\n    elements = { 10.0.1.11, 10.0.1.12, 10.0.1.13 }" in text
    assert "ip saddr @g_worker tcp dport 179 accept" in text
    assert "ip saddr @g_worker ip protocol 4 accept" in text
    assert "ip saddr @g_worker meta l4proto icmp icmp type 8 icmp code 0 accept" in text
    assert "ip saddr 10.0.0.5/32 tcp dport 22 accept" in text  # installer_cidr, a CIDR source
    assert "ip daddr @g_etcd tcp dport 2379-2380 accept" in text  # a range, egress
    assert "ip daddr 10.0.0.10/32 tcp dport 443 accept" in text  # egress_cidrs, a CIDR destination


def test_numbered_all_and_whole_range_protocols() -> None:
    plan = load_plan(EXAMPLES / "weave-encrypted.yaml")
    text = nftables.render(layout(plan), plan, "worker01")
    assert "ip saddr @g_worker ip protocol 50 accept" in text
    assert "ip saddr @g_worker udp dport 6783-6784 accept" in text
    routed = load_plan(EXAMPLES / "calico-routed.yaml")
    text = nftables.render(layout(routed), routed, "node01")
    assert "ip saddr 172.16.0.0/16 accept" in text  # the pod CIDR's "all" rule: any protocol
    assert "ip saddr @g_worker meta l4proto tcp accept" in text  # tcp 0-65535


def test_cli_prints_one_file_per_group_or_the_node_s(tmp_path: Path) -> None:
    out = run("rules", str(EXAMPLES / "contiv.yaml"), "--format", "nftables")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("delete table inet ket_infra") == 4  # etcd, master, worker, storage
    one = run("rules", str(EXAMPLES / "contiv.yaml"), "--format", "nftables", "--node", "worker02")
    assert one.stdout.count("delete table inet ket_infra") == 1 and "group worker " in one.stdout
    bad = run("rules", str(EXAMPLES / "contiv.yaml"), "--format", "nftables", "--node", "nobody")
    assert bad.returncode == 1 and "--node nobody is no node of the plan" in bad.stderr
    assert bad.stderr.count("\n") == 1
    wrong = run("rules", str(EXAMPLES / "contiv.yaml"), "--node", "worker02")
    assert wrong.returncode == 1 and "add --format nftables" in wrong.stderr


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_every_node_file_of_every_example_loads_into_the_kernel(example: str) -> None:
    need_lab(daemons=False)
    plan = load_plan(EXAMPLES / example)
    rs = layout(plan, load_environment(ROOT / "environments" / "example.yaml"))
    ns = f"kinft-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for g in rs.groups:
            text = nftables.group_table(rs, plan, g)
            for _ in range(2):  # loading twice replaces the table: the file is idempotent
                done = subprocess.run(
                    ["ip", "netns", "exec", ns, "nft", "-f", "-"], input=text, text=True, capture_output=True
                )
                assert done.returncode == 0, f"{g.name}: {done.stderr}"
            listed = subprocess.run(
                ["ip", "netns", "exec", ns, "nft", "list", "table", "inet", "ket_infra"], capture_output=True, text=True
            )
            assert listed.stdout.count(" accept comment ") == sum(1 for r in rs.rules if r.group == g.name)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
