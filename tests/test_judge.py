"""How verify judges one flow, on live states written out by hand (no AWS).

Each case is a small picture of security groups and network ACLs, and the
verdict AWS would give: security groups are stateful and their rules add up
across the groups of an interface; ACLs are stateless, read in rule-number
order, first match wins, and the reply must get back.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from ket_infra.aws import NodeInterface
from ket_infra.flows import protocol_name
from ket_infra.verify import AclEntry, Endpoint, Judge, LiveState, Permission, Traffic

Net = ipaddress.IPv4Network
A = NodeInterface("a", "10.0.1.10", "i-a", "eni-a", "subnet-1", "vpc", ("sg-a", "sg-x"), True)
B = NodeInterface("b", "10.0.2.20", "i-b", "eni-b", "subnet-2", "vpc", ("sg-b",), True)
B_SAME_SUBNET = NodeInterface("b", "10.0.1.20", "i-b", "eni-b", "subnet-1", "vpc", ("sg-b",), True)
OPEN_OUT = [Permission("sg-a", "-1", None, None, frozenset(), (Net("0.0.0.0/0"),))]


def perm(
    protocol: str,
    lo: int | None = None,
    hi: int | None = None,
    groups: tuple[str, ...] = (),
    cidrs: tuple[str, ...] = (),
) -> Permission:
    return Permission("sg-b", protocol, lo, hi, frozenset(groups), tuple(Net(c) for c in cidrs))


def acl(
    number: int,
    egress: bool,
    protocol: str,
    allow: bool,
    cidr: str = "0.0.0.0/0",
    ports: tuple[int, int] | None = None,
    icmp: tuple[int, int] | None = None,
) -> AclEntry:
    """An entry as verify reads it from AWS: protocol numbers 6, 17 and 1 become tcp, udp and icmp."""
    return AclEntry(number, egress, protocol_name(protocol), allow, Net(cidr), ports, icmp)


ALLOW_ALL = [acl(100, False, "-1", True), acl(100, True, "-1", True)]


def state(
    ingress: list[Permission], acls: dict[str, list[AclEntry]] | None = None, egress: list[Permission] | None = None
) -> LiveState:
    acls = acls or {}
    return LiveState(
        group_names={"sg-a": "ket-a", "sg-x": "other", "sg-b": "ket-b"},
        ingress={"sg-b": ingress},
        egress={"sg-a": OPEN_OUT if egress is None else egress, "sg-x": []},
        acl_of_subnet={s: f"acl-{s}" for s in acls},
        acl_entries={f"acl-{s}": entries for s, entries in acls.items()},
    )


def judge(st: LiveState, t: Traffic, src: Any = A, dst: NodeInterface = B) -> str | None:
    source = src if isinstance(src, Endpoint) else Endpoint("a", (src,))
    return Judge(st).flow(t, source, Endpoint("b", (dst,)))


TCP_6443 = Traffic("tcp", (6443, 6443))
SG_CASES = [
    # (case, ingress permissions on b, traffic, allowed)
    ("group reference", [perm("tcp", 6443, 6443, groups=("sg-a",))], TCP_6443, True),
    ("reference to a group a does not carry", [perm("tcp", 6443, 6443, groups=("sg-z",))], TCP_6443, False),
    ("reference to a's second group", [perm("tcp", 6443, 6443, groups=("sg-x",))], TCP_6443, True),
    ("cidr holding a", [perm("tcp", 6000, 7000, cidrs=("10.0.1.0/24",))], TCP_6443, True),
    ("cidr beside a", [perm("tcp", 6443, 6443, cidrs=("10.0.3.0/24",))], TCP_6443, False),
    ("other port", [perm("tcp", 6444, 6444, groups=("sg-a",))], TCP_6443, False),
    ("udp is not tcp", [perm("udp", 6443, 6443, groups=("sg-a",))], TCP_6443, False),
    ("all protocols", [perm("-1", groups=("sg-a",))], TCP_6443, True),
    (
        "a range from two rules",
        [perm("udp", 6783, 6783, groups=("sg-a",)), perm("udp", 6784, 6784, cidrs=("10.0.0.0/8",))],
        Traffic("udp", (6783, 6784)),
        True,
    ),
    ("half a range", [perm("udp", 6783, 6783, groups=("sg-a",))], Traffic("udp", (6783, 6784)), False),
    ("the upper half", [perm("udp", 6784, 6790, groups=("sg-a",))], Traffic("udp", (6783, 6784)), False),
    ("ip-in-ip", [perm("4", groups=("sg-a",))], Traffic("4", None), True),
    ("ip-in-ip is not 94", [perm("94", groups=("sg-a",))], Traffic("4", None), False),
    ("esp from all protocols", [perm("-1", cidrs=("10.0.0.0/8",))], Traffic("50", None), True),
    ("echo request", [perm("icmp", 8, 0, groups=("sg-a",))], Traffic("icmp", (8, 0)), True),
    ("any icmp", [perm("icmp", -1, -1, groups=("sg-a",))], Traffic("icmp", (8, 0)), True),
    ("icmp type any, code 0", [perm("icmp", 8, -1, groups=("sg-a",))], Traffic("icmp", (8, 0)), True),
    ("other icmp type", [perm("icmp", 0, 0, groups=("sg-a",))], Traffic("icmp", (8, 0)), False),
    ("other icmp code", [perm("icmp", 8, 3, groups=("sg-a",))], Traffic("icmp", (8, 0)), False),
    ("all traffic needs an all rule", [perm("tcp", 0, 65535, groups=("sg-a",))], Traffic("all", None), False),
    ("all traffic", [perm("-1", groups=("sg-a",))], Traffic("all", None), True),
    ("tcp without ports on the rule", [perm("tcp", None, None, groups=("sg-a",))], TCP_6443, True),
]


@pytest.mark.parametrize(("case", "ingress", "t", "allowed"), SG_CASES, ids=[c[0] for c in SG_CASES])
def test_security_groups(case: str, ingress: list[Permission], t: Traffic, allowed: bool) -> None:
    verdict = judge(state(ingress), t)
    assert (verdict is None) == allowed, verdict
    if not allowed:
        assert verdict is not None and verdict.startswith("no ingress rule on sg-b (ket-b) allows ")
        assert verdict.endswith(" from the nodes in sg-a (ket-a), sg-x (other)")


def test_egress_of_the_source_counts_too() -> None:
    open_b = [perm("-1", groups=("sg-a",))]
    assert judge(state(open_b, egress=[]), TCP_6443) == (
        "no egress rule on sg-a (ket-a), sg-x (other) allows tcp 6443 to the nodes in sg-b (ket-b)"
    )
    to_b = [Permission("sg-a", "tcp", 6443, 6443, frozenset({"sg-b"}), ())]
    assert judge(state(open_b, egress=to_b), TCP_6443) is None


def test_an_outside_source_is_judged_by_its_cidr() -> None:
    installer = Endpoint("installer_cidr", cidr="192.0.2.5/32")
    st = state([perm("tcp", 22, 22, cidrs=("192.0.2.0/24",))])
    assert judge(st, Traffic("tcp", (22, 22)), installer) is None
    st = state([perm("tcp", 22, 22, cidrs=("192.0.3.0/24",))])
    assert (
        judge(st, Traffic("tcp", (22, 22)), installer)
        == "no ingress rule on sg-b (ket-b) allows tcp 22 from 192.0.2.5/32"
    )


OPEN_B = [perm("-1", cidrs=("0.0.0.0/0",))]
ACL_CASES = [
    # (case, ACL of b's subnet, traffic, expected reason or None)
    ("allow all", ALLOW_ALL, TCP_6443, None),
    (
        "no entries: default deny",
        [],
        TCP_6443,
        "no network ACL acl-subnet-2 entry allows tcp 6443 inbound (subnet-2): default deny; "
        "no network ACL acl-subnet-2 entry allows the return path tcp 32768-60999 outbound (subnet-2): default deny",
    ),
    (
        "deny first",
        [acl(10, False, "6", False, ports=(6443, 6443)), *ALLOW_ALL],
        TCP_6443,
        "network ACL acl-subnet-2 rule 10 denies tcp 6443 inbound (subnet-2)",
    ),
    (
        "allow before deny",
        [acl(5, False, "-1", True), acl(10, False, "6", False, ports=(6443, 6443)), acl(100, True, "-1", True)],
        TCP_6443,
        None,
    ),
    ("deny of another port", [acl(10, False, "6", False, ports=(22, 22)), *ALLOW_ALL], TCP_6443, None),
    ("deny of another source", [acl(10, False, "-1", False, cidr="10.9.0.0/16"), *ALLOW_ALL], TCP_6443, None),
    (
        "deny of a wider source",
        [acl(10, False, "-1", False, cidr="10.0.0.0/8"), *ALLOW_ALL],
        TCP_6443,
        "network ACL acl-subnet-2 rule 10 denies tcp 6443 inbound (subnet-2)",
    ),
    (
        "allow of a narrower source is no allow",
        [acl(10, False, "-1", True, cidr="10.0.1.10/32"), acl(20, True, "-1", True)],
        Traffic("tcp", (6443, 6443)),
        None,
    ),
    (
        "allow for another source only",
        [acl(10, False, "-1", True, cidr="10.0.3.0/24"), acl(20, True, "-1", True)],
        TCP_6443,
        "no network ACL acl-subnet-2 entry allows tcp 6443 inbound (subnet-2): default deny",
    ),
    (
        "a range opened by two entries",
        [
            acl(10, False, "17", True, ports=(6783, 6783)),
            acl(11, False, "17", True, ports=(6784, 6800)),
            acl(20, True, "-1", True),
        ],
        Traffic("udp", (6783, 6784)),
        None,
    ),
    (
        "a range half opened, half denied",
        [acl(10, False, "17", True, ports=(6783, 6783)), acl(11, False, "17", False, ports=(6784, 6784)), *ALLOW_ALL],
        Traffic("udp", (6783, 6784)),
        "network ACL acl-subnet-2 rule 11 denies udp 6783-6784 inbound (subnet-2)",
    ),
    (
        "all traffic, part of it denied",
        [acl(10, False, "6", False, ports=(22, 22), cidr="10.0.0.0/8"), *ALLOW_ALL],
        Traffic("all", None),
        "network ACL acl-subnet-2 rule 10 denies all traffic inbound (subnet-2)",
    ),
    (
        "all traffic, a deny for others",
        [acl(10, False, "6", False, cidr="10.9.0.0/16", ports=(22, 22)), *ALLOW_ALL],
        Traffic("all", None),
        None,
    ),
    (
        "all traffic needs an all entry",
        [acl(10, False, "6", True, ports=(0, 65535)), acl(20, True, "-1", True)],
        Traffic("all", None),
        "no network ACL acl-subnet-2 entry allows all traffic inbound (subnet-2): default deny",
    ),
    (
        "echo allowed, reply allowed",
        [acl(10, False, "1", True, icmp=(8, -1)), acl(10, True, "1", True, icmp=(0, -1))],
        Traffic("icmp", (8, 0)),
        None,
    ),
    (
        "echo allowed, reply not",
        [acl(10, False, "1", True, icmp=(8, -1)), acl(10, True, "1", True, icmp=(3, -1))],
        Traffic("icmp", (8, 0)),
        "no network ACL acl-subnet-2 entry allows the return path icmp type 0 outbound (subnet-2): default deny",
    ),
    (
        "icmp of another code",
        [acl(10, False, "1", True, icmp=(8, 5)), acl(20, True, "-1", True)],
        Traffic("icmp", (8, 0)),
        "no network ACL acl-subnet-2 entry allows icmp type 8 inbound (subnet-2): default deny",
    ),
    (
        "tcp in, no ephemeral ports out",
        [acl(10, False, "6", True, ports=(6443, 6443)), acl(10, True, "6", True, ports=(1024, 2000))],
        TCP_6443,
        "no network ACL acl-subnet-2 entry allows the return path tcp 32768-60999 outbound (subnet-2): default deny",
    ),
    (
        "tcp in, ephemeral ports out",
        [acl(10, False, "6", True, ports=(6443, 6443)), acl(10, True, "6", True, ports=(1024, 65535))],
        TCP_6443,
        None,
    ),
    (
        "udp has no return path to check",
        [acl(10, False, "17", True, ports=(4789, 4789))],
        Traffic("udp", (4789, 4789)),
        None,
    ),
    ("ip-in-ip by number", [acl(10, False, "4", True)], Traffic("4", None), None),
    (
        "ip-in-ip denied by number",
        [acl(10, False, "4", False), *ALLOW_ALL],
        Traffic("4", None),
        "network ACL acl-subnet-2 rule 10 denies IP-in-IP (4) inbound (subnet-2)",
    ),
]


@pytest.mark.parametrize(("case", "entries", "t", "reason"), ACL_CASES, ids=[c[0] for c in ACL_CASES])
def test_network_acls(case: str, entries: list[AclEntry], t: Traffic, reason: str | None) -> None:
    st = state(OPEN_B, {"subnet-1": ALLOW_ALL, "subnet-2": entries})
    assert judge(st, t) == reason


def test_the_source_subnet_acl_both_ways() -> None:
    out_denied = [acl(10, True, "-1", False, cidr="10.0.2.0/24"), *ALLOW_ALL]
    st = state(OPEN_B, {"subnet-1": out_denied, "subnet-2": ALLOW_ALL})
    assert judge(st, TCP_6443) == "network ACL acl-subnet-1 rule 10 denies tcp 6443 outbound (subnet-1)"
    reply_denied = [acl(10, False, "6", False, ports=(1024, 65535)), *ALLOW_ALL]
    st = state(OPEN_B, {"subnet-1": reply_denied, "subnet-2": ALLOW_ALL})
    assert (
        judge(st, TCP_6443)
        == "network ACL acl-subnet-1 rule 10 denies the return path tcp 32768-60999 inbound (subnet-1)"
    )


def test_one_subnet_never_meets_its_acl() -> None:
    st = state(OPEN_B, {"subnet-1": []})
    assert judge(st, TCP_6443, dst=B_SAME_SUBNET) is None


def test_a_subnet_without_a_known_acl_is_not_judged() -> None:
    st = state(OPEN_B, {"subnet-9": []})
    assert judge(st, TCP_6443) is None


def test_every_cause_is_named() -> None:
    st = state([], {"subnet-1": ALLOW_ALL, "subnet-2": [acl(10, False, "-1", False), *ALLOW_ALL]}, egress=[])
    reasons = judge(st, TCP_6443)
    assert reasons is not None
    assert reasons.split("; ") == [
        "no egress rule on sg-a (ket-a), sg-x (other) allows tcp 6443 to the nodes in sg-b (ket-b)",
        "no ingress rule on sg-b (ket-b) allows tcp 6443 from the nodes in sg-a (ket-a), sg-x (other)",
        "network ACL acl-subnet-2 rule 10 denies tcp 6443 inbound (subnet-2)",
    ]
