"""A RuleSet as nftables: each node's firewall with security-group semantics.

For hosts without cloud security groups (bare metal, on-premises) and for the
lab (ket_infra/lab/), which loads exactly this text in each node's namespace.
What a security group does, nftables does here:

- default drop in both directions (policy drop on input and output);
- stateful: replies of allowed traffic (ct state established,related) pass;
- a group reference is a named set of its member nodes' addresses;
- CIDR peers, tcp/udp port ranges, icmp type and code (-1: any), numbered
  protocols (4 IP-in-IP, 50 ESP) and "all".

Loopback is accepted: a security group never sees a host's traffic to itself.
Formatting only: every decision was made by the layout.
"""

from __future__ import annotations

from ket_infra.layout import Group, Rule, RuleSet
from ket_infra.plan import Plan

TABLE = "ket_infra"


def set_name(group: str) -> str:
    """A group's address set: nft names take letters, digits and underscores."""
    return "g_" + group.replace("-", "_")


def match(rule: Rule) -> str:
    """The nft expression of RULE's peer and traffic (without the verdict)."""
    side = "saddr" if rule.direction == "ingress" else "daddr"
    peer = f"@{set_name(rule.peer.group)}" if rule.peer.group is not None else str(rule.peer.cidr)
    parts = [f"ip {side} {peer}"]
    lo, hi = rule.from_port, rule.to_port
    if rule.protocol in ("tcp", "udp"):
        if lo is None or hi is None or (lo <= 0 and hi >= 65535):
            parts.append(f"meta l4proto {rule.protocol}")
        else:
            parts.append(f"{rule.protocol} dport {lo}" if lo == hi else f"{rule.protocol} dport {lo}-{hi}")
    elif rule.protocol == "icmp":
        parts.append("meta l4proto icmp")
        if lo is not None and lo != -1:
            parts.append(f"icmp type {lo}")
            if hi is not None and hi != -1:
                parts.append(f"icmp code {hi}")
    elif rule.protocol != "all":
        parts.append(f"ip protocol {int(rule.protocol)}")
    return " ".join(parts)


def _statement(rule: Rule) -> str:
    comment = f"{rule.name}: {', '.join(rule.flows)}"[:120].replace('"', "'")
    return f'{match(rule)} accept comment "{comment}"'


def group_table(rs: RuleSet, plan: Plan, group: Group, rules: tuple[Rule, ...] | None = None) -> str:
    """The nft file for GROUP's nodes: load it with `nft -f` (replaces the table atomically).

    RULES: the rules to enforce instead of RS's own (the lab loads broken ones on purpose).
    """
    rules = rs.rules if rules is None else rules
    mine = [r for r in rules if r.group == group.name]
    lines = [
        f"# ket-infra: cluster {rs.cluster}, group {group.name} (roles {', '.join(group.roles)}), "
        f"nodes {', '.join(group.nodes)}",
        "# Security-group semantics: default drop both ways, replies of allowed traffic pass.",
        f"table inet {TABLE}",
        f"delete table inet {TABLE}",
        f"table inet {TABLE} {{",
    ]
    for g in rs.groups:
        addresses = sorted({plan.node(h).address for h in g.nodes})
        lines += [
            f"  set {set_name(g.name)} {{",
            "    type ipv4_addr",
            f"    elements = {{ {', '.join(addresses)} }}",
            "  }",
        ]
    for chain, hook, direction, lo in (
        ("input", "input", "ingress", 'iif "lo"'),
        ("output", "output", "egress", 'oif "lo"'),
    ):
        lines += [
            f"  chain {chain} {{",
            f"    type filter hook {hook} priority filter; policy drop;",
            "    ct state established,related accept",
            f"    {lo} accept",
        ]
        lines += [f"    {_statement(r)}" for r in mine if r.direction == direction]
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(rs: RuleSet, plan: Plan, node: str | None = None) -> str:
    """Every group's nft file (each one host's whole firewall), or NODE's only."""
    if node is not None:
        group = plan.node(node).group
        return group_table(rs, plan, next(g for g in rs.groups if g.name == group))
    out = []
    for g in rs.groups:
        out.append(f"# ==== file for the nodes of group {g.name}: {', '.join(g.nodes)} (--node NODE prints one)\n")
        out.append(group_table(rs, plan, g))
    return "\n".join(out)
