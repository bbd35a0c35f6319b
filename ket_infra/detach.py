"""Move a cluster off foreign, wide-open security groups without an outage (`detach_groups`).

A cluster built by another tool (KET's AWS provisioner, kops) carries groups that
open far more than its flows need; ket-infra's own groups alone open exactly the
flows. After `apply` has attached ket-infra's groups, the groups the environment
file names under `detach_groups` are taken off the nodes' interfaces, but only
once `verify`'s judgement of the live state, with those groups left out, finds
every required flow open. What was taken off is recorded on each interface (a
tag), so `destroy` puts it back, and a group no longer listed is put back by the
next `apply`. ket-infra never deletes a group it does not own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ket_infra import aws
from ket_infra.aws import Discovery, InterfaceGroups
from ket_infra.environment import Environment
from ket_infra.errors import EnvironmentFileError, KetInfraError
from ket_infra.layout import RuleSet
from ket_infra.plan import Plan

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Change:
    interface: InterfaceGroups
    groups: list[str]  # what the interface will carry
    detached: list[str]  # what the record will hold

    @property
    def taken(self) -> list[str]:
        return [g for g in self.interface.groups if g not in self.groups]

    @property
    def given(self) -> list[str]:
        return [g for g in self.groups if g not in self.interface.groups]


def without(discovery: Discovery, groups: set[str]) -> Discovery:
    """The nodes as they would be with GROUPS taken off their interfaces."""
    nodes = []
    for n in discovery.nodes:
        kept = [(g, name) for g, name in zip(n.security_groups, _padded(n), strict=True) if g not in groups]
        nodes.append(
            replace(n, security_groups=tuple(g for g, _ in kept), security_group_names=tuple(name for _, name in kept))
        )
    return Discovery(discovery.vpc_id, tuple(nodes))


def _padded(n: aws.NodeInterface) -> tuple[str, ...]:
    names = n.security_group_names
    return names + ("",) * (len(n.security_groups) - len(names))


def resolve(
    env: Environment, interfaces: list[InterfaceGroups], names: dict[str, str], own: set[str]
) -> tuple[set[str], list[str]]:
    """The ids detach_groups names (ids or names), and the entries that name nothing.

    NAMES maps the ids on the interfaces and in their records to group names; OWN holds
    ket-infra's own group ids, which are refused.
    """
    known = {g for i in interfaces for g in (*i.groups, *i.detached)}
    wanted: set[str] = set()
    unknown: list[str] = []
    for index, entry in enumerate(env.detach_groups):
        ids = {g for g in known if g == entry or names.get(g) == entry}
        mine = ids & own
        if mine:
            raise EnvironmentFileError(
                env.path,
                f"detach_groups[{index}]",
                f"{entry} is ket-infra's own group for this cluster ({', '.join(sorted(mine))})",
                "list only the foreign groups to take off the nodes",
            )
        if not ids:
            unknown.append(entry)
        wanted |= ids
    return wanted, unknown


def changes(interfaces: list[InterfaceGroups], wanted: set[str]) -> list[Change]:
    """Per interface: WANTED off (and recorded), whatever was recorded and is no longer wanted back on."""
    out = []
    for i in interfaces:
        back = [g for g in i.detached if g not in wanted and g not in i.groups]
        groups = [g for g in i.groups if g not in wanted] + back
        detached = sorted({g for g in i.detached if g in wanted} | {g for g in i.groups if g in wanted})
        if groups != list(i.groups) or detached != sorted(i.detached):
            out.append(Change(i, groups, detached))
    return out


def _names(ids: list[str] | set[str], names: dict[str, str]) -> str:
    return ", ".join(f"{g} ({names[g]})" if g in names else g for g in sorted(ids))


def apply_detach(
    plan: Plan,
    env: Environment,
    rules: RuleSet,
    discovery: Discovery,
    progress: Progress,
    ec2: Any | None = None,
) -> None:
    """After apply: take the groups detach_groups names off the nodes once the flows are proven open without them."""
    from ket_infra import verify

    ec2 = ec2 or aws.client(env, "ec2")
    interfaces = aws.interface_groups(env, discovery, ec2)
    recorded = sorted({g for i in interfaces for g in i.detached})
    if not env.detach_groups and not recorded:
        return
    # the groups as the interfaces carry them now (ket-infra's own since the apply), not at discovery
    now = {i.network_interface_id: i.groups for i in interfaces}
    discovery = Discovery(
        discovery.vpc_id,
        tuple(
            replace(n, security_groups=now.get(n.network_interface_id, n.security_groups), security_group_names=())
            for n in discovery.nodes
        ),
    )
    state = verify.read_state(env, discovery, ec2)
    names = {**aws.group_names(env, recorded, ec2), **state.group_names} if recorded else dict(state.group_names)
    own = {g for g, name in names.items() if name in {f"{rules.cluster}-{grp.name}" for grp in rules.groups}}
    wanted, unknown = resolve(env, interfaces, names, own)
    if unknown:
        on = _names({g for i in interfaces for g in i.groups}, names)
        raise EnvironmentFileError(
            env.path,
            "detach_groups",
            f"{', '.join(unknown)} is on none of the cluster's interfaces (they carry {on})",
            "give the id (sg-...) or name of a group the nodes carry, or remove the entry; "
            "ket-infra's groups and rules are applied, nothing was detached",
        )
    todo = changes(interfaces, wanted)
    if not todo:
        progress(f"detach_groups: {_names(wanted, names)} already off every node's interface")
        return
    taking = {g for c in todo for g in c.taken}
    if taking:
        report = verify.evaluate(plan, env, rules, without(discovery, wanted), state)
        if not report.ok:
            blocked = [c for c in report.checks if c.status == "blocked"]
            shown = "; ".join(f"{c.rule} from {c.source.label} to {c.target.label}: {c.reason}" for c in blocked[:3])
            more = f" and {len(blocked) - 3} more" if len(blocked) > 3 else ""
            bad_hosts = [h for h in report.host_settings if h.status == "blocked"]
            hosts = f"; {len(bad_hosts)} host setting(s) wrong" if bad_hosts else ""
            raise KetInfraError(
                f"{env.path}: detach_groups: nothing was detached: without {_names(taking, names)} "
                f"{len(blocked)} required flow check(s) would be blocked ({shown}{more}){hosts}; "
                "ket-infra's groups and rules are applied; open what is missing (extra_rules) or keep the group"
            )
        progress(
            f"detach_groups: every required flow is open without {_names(taking, names)} "
            f"({len(report.checks)} checks); taking it off {sum(1 for c in todo if c.taken)} interface(s)"
        )
    for c in todo:
        aws.set_interface_groups(env, c.interface, c.groups, c.detached, ec2)
        said = []
        if c.taken:
            said.append(f"detached {_names(c.taken, names)}")
        if c.given:
            said.append(f"re-attached {_names(c.given, names)}")
        if said:
            progress(f"  {c.interface.host} ({c.interface.network_interface_id}): {'; '.join(said)}")
    progress(f"detach_groups: done on {len(todo)} interface(s); destroy puts the groups back")


def reattach(env: Environment, discovery: Discovery, progress: Progress, ec2: Any | None = None) -> int:
    """Put back every group ket-infra recorded taking off the nodes (before destroy removes its own)."""
    ec2 = ec2 or aws.client(env, "ec2")
    todo = changes(aws.interface_groups(env, discovery, ec2), set())
    for c in todo:
        aws.set_interface_groups(env, c.interface, c.groups, c.detached, ec2)
        progress(f"  {c.interface.host} ({c.interface.network_interface_id}): re-attached {', '.join(c.given)}")
    return len(todo)


def recorded(env: Environment, discovery: Discovery, ec2: Any | None = None) -> dict[str, list[str]]:
    """Host -> the groups ket-infra took off its interface."""
    return {i.host: list(i.detached) for i in aws.interface_groups(env, discovery, ec2) if i.detached}
