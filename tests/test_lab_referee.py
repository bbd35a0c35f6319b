"""The referee: Linux netfilter and verify's model of AWS judge the same broken rules alike, flow for flow.

Random breakages of the rule set (drop a rule, narrow a range, change a source,
remove an egress rule) are loaded as nftables into the lab (namespaces brought
up once, only the rules reloaded) and applied to moto's security groups, which
verify's evaluator then reads (read_state, evaluate: the instances are discovered once). Every flow's verdict must agree.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from ket_infra import lab
from ket_infra.aws import client, discover
from ket_infra.environment import load_environment
from ket_infra.layout import Peer, Rule
from ket_infra.verify import evaluate, read_state
from tests.conftest import EXAMPLES, write_yaml
from tests.lab_env import need_lab
from tests.test_verify import Cloud, permission

BREAKAGES = 50
PLAN = EXAMPLES / "weave-encrypted.yaml"


def breakage(rng: random.Random, rules: tuple[Rule, ...], groups: list[str]) -> tuple[str, Rule, Rule | None]:
    """One random breakage: (what, the rule it breaks, its broken form or None when removed)."""
    while True:
        kind = rng.choice(["drop", "narrow", "source", "egress"])
        r = rng.choice(rules)
        if kind == "drop":
            return f"drop {r.name}", r, None
        if kind == "egress":
            out = [x for x in rules if x.direction == "egress"]
            e = rng.choice(out)
            return f"remove egress {e.name}", e, None
        if (
            kind == "narrow"
            and r.protocol in ("tcp", "udp")
            and r.from_port is not None
            and r.to_port is not None
            and r.from_port < r.to_port
        ):
            lo, hi = (r.from_port + 1, r.to_port) if rng.random() < 0.5 else (r.from_port, r.to_port - 1)
            return f"narrow {r.name} to {lo}-{hi}", r, replace(r, from_port=lo, to_port=hi)
        if kind == "source":
            if r.peer.group is not None:
                other = [g for g in groups if g != r.peer.group]
                peer = Peer(group=rng.choice(other))
            else:
                peer = Peer(cidr="10.0.77.0/24")
            return f"change the peer of {r.name} to {peer.label}", r, replace(r, peer=peer)


def same(a: Rule, b: Rule) -> bool:
    return (a.group, a.direction, a.protocol, a.from_port, a.to_port, a.peer) == (
        b.group, b.direction, b.protocol, b.from_port, b.to_port, b.peer
    )  # fmt: skip


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[lab.Lab, Any]]:
    need_lab(daemons=False)
    tmp = tmp_path_factory.mktemp("referee")
    env_file = write_yaml(
        tmp / "referee.yaml",
        {
            "plan_file": str(PLAN),
            "aws": {"region": "eu-west-1"},
            "installer_cidr": "10.0.9.5/32",
            "ingress_cidrs": ["10.0.8.0/24"],
            "egress_cidrs": ["10.0.9.10/32"],
        },
    )
    the_lab = lab.up(str(PLAN), str(env_file), tmp / "state.json", progress=lambda _m: None)
    try:
        yield the_lab, load_environment(env_file)
    finally:
        lab.down(the_lab.state)


def test_lab_and_verify_agree_flow_for_flow_on_random_breakages(setup: tuple[lab.Lab, Any], aws: None) -> None:
    the_lab, env = setup
    plan, _, rs = lab.context(the_lab.plan_file, the_lab.env_file)
    cloud = Cloud(plan, rs)
    cloud.lock_down_default_group()  # only ket-infra's egress counts, as on the lab's nodes
    ec2 = client(env, "ec2")
    discovery = discover(plan, env, ec2)  # the instances never change: only the rules are read again
    rng = random.Random(24)
    groups = [g.name for g in rs.groups]

    def call(r: Rule, add: bool) -> None:
        verb = ("authorize" if add else "revoke") + (
            "_security_group_ingress" if r.direction == "ingress" else "_security_group_egress"
        )
        getattr(cloud.ec2, verb)(GroupId=cloud.groups[r.group], IpPermissions=[permission(r, cloud.groups)])

    loaded: dict[str, str] = {}  # what each namespace holds: only the broken group's nodes are loaded again
    whole = lab.flow_verdicts(the_lab, rs.rules, loaded=loaded)
    assert whole and all(whole.values())
    broken_any = 0
    for _ in range(BREAKAGES):
        what, old, new = breakage(rng, rs.rules, groups)
        while new is not None and any(same(new, x) for x in rs.rules):  # AWS refuses a rule twice
            what, old, new = breakage(rng, rs.rules, groups)
        rules = tuple(x for x in rs.rules if x is not old) + ((new,) if new is not None else ())
        call(old, False)
        if new is not None:
            call(new, True)
        try:
            packets = lab.flow_verdicts(the_lab, rules, loaded=loaded)
            report = evaluate(plan, env, rs, discovery, read_state(env, discovery, ec2))
        finally:
            if new is not None:
                call(new, False)
            call(old, True)
        model: dict[str, bool] = {}
        for c in report.checks:
            model[c.rule] = model.get(c.rule, True) and c.status == "allowed"
        assert packets == model, (
            f"{what}: lab {sorted(f for f, ok in packets.items() if not ok)}, verify {sorted(f for f, ok in model.items() if not ok)}"
        )
        broken_any += not all(packets.values())
    assert broken_any >= BREAKAGES // 3  # the breakages break things: agreement is not vacuous
