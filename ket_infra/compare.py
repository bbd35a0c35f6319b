"""Choose the CNI for this cluster and this cloud: every option KET supports, side by side.

For the plan's nodes, whatever CNI it names, each option (Calico overlay, Calico
routed, Weave, Weave encrypted, Contiv) is laid out the way `rules` would lay it
out, with KET's own comparison facts beside it (ket_infra/cni_facts.py), what it
would need on this cluster (groups, rules, protocols beyond tcp and udp, host
settings), KET's warnings, and whether it can work here: Calico routed needs every
kubelet node in one subnet, which only the discovered nodes tell (--env); offline
that is unknown.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ket_infra import cni_facts
from ket_infra.environment import Environment
from ket_infra.flows import cni_flows, protocol_label
from ket_infra.layout import RuleSet, layout
from ket_infra.plan import KUBELET_ROLES, Cni, Plan

OPTIONS: tuple[Cni, ...] = (
    Cni("calico", "overlay", False, False),
    Cni("calico", "routed", False, False),
    Cni("weave", None, False, False),
    Cni("weave", None, True, False),
    Cni("contiv", None, False, False),
)


def label(cni: Cni) -> str:
    if cni.disabled:
        return "no CNI"
    if cni.provider == "calico":
        return f"Calico {cni.mode}"
    if cni.provider == "weave":
        return "Weave encrypted" if cni.encrypted else "Weave"
    return cni.provider.capitalize()


@dataclass(frozen=True)
class Option:
    cni: Cni
    rules: RuleSet
    protocols: tuple[str, ...]  # the CNI's protocols beyond tcp and udp, as labels
    workable: bool | None
    reasons: tuple[str, ...]
    warnings: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        facts = cni_facts.FACTS[self.cni.provider]
        return {
            "provider": self.cni.provider,
            "mode": self.cni.mode,
            "encrypted": self.cni.encrypted,
            "data_path": facts.data_path,
            "requires_etcd": facts.requires_etcd,
            "multicast": facts.multicast,
            "ingress_policy": facts.ingress_policy,
            "egress_policy": facts.egress_policy,
            "can_encrypt": facts.can_encrypt,
            "groups": len(self.rules.groups),
            "rules": len(self.rules.rules),
            "protocols": list(self.protocols),
            "host_settings": [
                {"group": h.group, "source_dest_check": h.source_dest_check} for h in self.rules.host_settings
            ],
            "workable": self.workable,
            "reasons": list(self.reasons),
            "warnings": list(self.warnings),
        }


def _same(a: Cni, b: Cni) -> bool:
    return (a.provider, a.mode, a.encrypted) == (b.provider, b.mode, b.encrypted) and not a.disabled


def _protocols(plan: Plan) -> tuple[str, ...]:
    seen = dict.fromkeys(f.protocol for f in cni_flows(plan) if f.protocol not in ("tcp", "udp"))
    return tuple("all, from the pod CIDR (routed pod traffic)" if p == "all" else protocol_label(p) for p in seen)


def _routed_here(plan: Plan, subnets: dict[str, list[str]] | None) -> tuple[bool | None, str]:
    """Whether Calico routed mode can work: every kubelet node in one subnet (None: not known offline)."""
    if subnets is None:
        return None, (
            "unknown offline: routed mode needs every kubelet node in one subnet; run compare with --env "
            "to judge from the subnets AWS puts the nodes in"
        )
    kubelet = {n.host for n in plan.nodes if n.roles & set(KUBELET_ROLES)}
    used = {s: sorted(h for h in hosts if h in kubelet) for s, hosts in subnets.items()}
    used = {s: h for s, h in used.items() if h}
    if len(used) > 1:
        where = "; ".join(f"{s}: {', '.join(h[:3])}{' ...' if len(h) > 3 else ''}" for s, h in sorted(used.items()))
        return False, (
            f"cannot work here: the kubelet nodes are in {len(used)} subnets ({where}) and the VPC router "
            "knows no pod routes between them; use overlay (IP-in-IP) or move the nodes into one subnet"
        )
    only = next(iter(used), "one subnet")
    return True, f"every kubelet node is in {only}: the pods' routes stay on one L2 segment"


def options(plan: Plan, env: Environment | None, subnets: dict[str, list[str]] | None) -> list[Option]:
    """Every supported option for PLAN's nodes; SUBNETS (subnet -> hosts, from discovery) or None offline."""
    out = []
    for cni in OPTIONS:
        variant = replace(plan, cni=cni)
        rs = layout(variant, env)
        workable: bool | None = True
        reasons = list(cni_facts.FACTS[cni.provider].reasons)
        if cni.provider == "calico" and cni.mode == "routed":
            workable, why = _routed_here(variant, subnets)
            reasons.insert(0, why)
        warnings = [w for w in rs.warnings if w.startswith(("Calico", "Weave", "Contiv"))]
        warnings += [w for w in cni_facts.notes(cni) if w not in warnings]
        out.append(Option(cni, rs, _protocols(variant), workable, tuple(reasons), tuple(warnings)))
    return out


def compare(plan: Plan, env: Environment | None, subnets: dict[str, list[str]] | None) -> dict[str, Any]:
    found = options(plan, env, subnets)
    current = plan.cni
    return {
        "plan": plan.path,
        "current": {
            "provider": "none" if current.disabled else current.provider,
            "mode": current.mode,
            "encrypted": current.encrypted,
        },
        "default": {
            "provider": cni_facts.DEFAULT.provider,
            "mode": cni_facts.DEFAULT.mode,
            "encrypted": False,
            "reasons": list(cni_facts.DEFAULT_REASONS),
        },
        "options": [{**o.as_json(), "current": _same(current, o.cni)} for o in found],
    }


# ---------------------------------------------------------------- output


def _yes(value: object) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _rows(doc: dict[str, Any]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    opts = doc["options"]
    default = doc["default"]
    heads = []
    for o in opts:
        cni = Cni(o["provider"], o["mode"], o["encrypted"], False)
        marks = (" (current)" if o["current"] else "") + (
            " (KET default)" if (o["provider"], o["mode"]) == (default["provider"], default["mode"]) else ""
        )
        heads.append(label(cni) + marks)
    rows: list[tuple[str, list[str]]] = [
        ("data path", [o["data_path"] for o in opts]),
        ("needs an etcd cluster", [_yes(o["requires_etcd"]) for o in opts]),
        ("multicast", [_yes(o["multicast"]) for o in opts]),
        ("ingress policy", [_yes(o["ingress_policy"]) + _policy_via(o) for o in opts]),
        ("egress policy", [_yes(o["egress_policy"]) for o in opts]),
        ("can encrypt", [_yes(o["can_encrypt"]) for o in opts]),
        ("groups / rules here", [f"{o['groups']} / {o['rules']}" for o in opts]),
        ("protocols beyond tcp/udp", [", ".join(o["protocols"]) or "none" for o in opts]),
        ("host settings", [_host_settings(o["host_settings"]) for o in opts]),
        ("works here", [_yes(o["workable"]) for o in opts]),
    ]
    return heads, rows


def _policy_via(option: dict[str, Any]) -> str:
    # KET's table marks Contiv's "Yes" with a footnote: not through the Kubernetes NetworkPolicy API
    return " (Contiv's own policy, not NetworkPolicy)" if option["provider"] == "contiv" else ""


def _host_settings(settings: list[dict[str, Any]]) -> str:
    parts = []
    for value in (False, True):
        groups = [h["group"] for h in settings if h["source_dest_check"] is value]
        if groups:
            parts.append(f"source/dest check {'on' if value else 'off'} on {', '.join(groups)}")
    return "; ".join(parts) or "none"


def _notes(doc: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(heading, its notes): KET's default and why, then each option's reasons and warnings."""
    default = doc["default"]
    out = [(f"KET's default, {label(Cni(default['provider'], default['mode'], False, False))}", default["reasons"])]
    for o in doc["options"]:
        name = label(Cni(o["provider"], o["mode"], o["encrypted"], False))
        said = ([o["reasons"][0]] if o["workable"] is not True else []) + list(o["warnings"])
        if said:
            out.append((name, said))
    return out


def table(doc: dict[str, Any], width: int = 80) -> str:
    """The options side by side when that fits in WIDTH columns (the terminal's), else one block per option;
    every line fits in WIDTH (long values and notes wrap)."""
    import textwrap

    heads, rows = _rows(doc)
    label = max(len(r) for r, _ in rows)
    cols = [max(len(h), *(len(v[i]) for _, v in rows)) for i, h in enumerate(heads)]
    out = [*textwrap.wrap(f"compare {doc['plan']} (current: {_current(doc)})", max(20, width)), ""]
    if label + sum(3 + c for c in cols) <= width:
        out.append(" " * label + " | " + " | ".join(h.ljust(c) for h, c in zip(heads, cols, strict=True)))
        out.append("-" * label + "-+-" + "-+-".join("-" * c for c in cols))
        for name, values in rows:
            out.append(name.ljust(label) + " | " + " | ".join(v.ljust(c) for v, c in zip(values, cols, strict=True)))
    else:
        room = max(20, width - label - 4)
        for i, head in enumerate(heads):
            out.append(head)
            for name, values in rows:
                first, *more = textwrap.wrap(values[i], room) or [""]
                out.append(f"  {name.ljust(label)}  {first}")
                out += [" " * (label + 4) + line for line in more]
            out.append("")
        out.pop()
    for heading, said in _notes(doc):
        out += ["", f"{heading}:"]
        for line in said:
            out += textwrap.wrap(line, max(20, width), initial_indent="  - ", subsequent_indent="    ")
    return "\n".join(out) + "\n"


def markdown(doc: dict[str, Any]) -> str:
    heads, rows = _rows(doc)
    out = [f"Current choice: {_current(doc)}.", ""]
    out.append("| | " + " | ".join(heads) + " |")
    out.append("|---|" + "---|" * len(heads))
    for name, values in rows:
        out.append(f"| {name} | " + " | ".join(v.replace("|", "\\|") for v in values) + " |")
    for heading, said in _notes(doc):
        out += ["", f"{heading}:", ""] + [f"- {line}" for line in said]
    return "\n".join(out) + "\n"


def _current(doc: dict[str, Any]) -> str:
    c = doc["current"]
    if c["provider"] == "none":
        return "no CNI (add_ons.cni.disable)"
    if c["provider"] == "custom":
        return "custom (its flows come from extra_rules)"
    return label(Cni(c["provider"], c["mode"], c["encrypted"], False))
