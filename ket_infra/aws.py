"""The AWS edge (boto3's botocore only): find the plan's nodes, guard the account,
set the EC2 source/destination check.

Nodes are matched to running instances by private IP (`internalip`, else
`ip`), with a handful of paginated describe calls whatever the node count.
botocore is imported lazily so that offline commands start fast.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ket_infra.environment import Environment
from ket_infra.errors import S3_OPERATIONS, KetInfraError, denied_action, lacks
from ket_infra.plan import Plan
from ket_infra.progress import background

T = TypeVar("T")
R = TypeVar("R")

MAX_GROUPS_PER_INTERFACE = 5
# Values across all the filters of one describe call (or IDs of one call): EC2 answers more with
# FilterLimitExceeded, "The maximum number of filter values specified on a single call is 200"
# (as reported in convox/rack#2205 and gjbae1212/gossm#31).
_FILTER_VALUES = 200


class AwsError(KetInfraError):
    """AWS refused, could not be reached, or the cloud does not match the plan."""


@dataclass(frozen=True)
class NodeInterface:
    host: str
    address: str
    instance_id: str
    network_interface_id: str
    subnet_id: str
    vpc_id: str
    security_groups: tuple[str, ...]
    source_dest_check: bool
    security_group_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Discovery:
    vpc_id: str
    nodes: tuple[NodeInterface, ...]

    def node(self, host: str) -> NodeInterface:
        return next(n for n in self.nodes if n.host == host)


def _is_local(url: str | None) -> bool:
    return bool(url) and any(h in str(url) for h in ("://127.", "://localhost", "://[::1]"))


def credentials_env(env: Environment) -> dict[str, str]:
    """Dummy credentials for a local emulator when none are configured."""
    if _is_local(env.aws.endpoint_url) and not (os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("AWS_PROFILE")):
        return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    return {}


class Counter:
    """Counts the AWS API calls made through the clients it is attached to."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def __call__(self, event_name: str, **_: Any) -> None:
        op = event_name.split(".")[-1]
        self.calls[op] = self.calls.get(op, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.calls.values())


@functools.cache
def _models() -> Any:
    """One botocore data loader per process: each client's service model is read and parsed once."""
    from botocore.loaders import create_loader

    return create_loader()


def client(
    env: Environment,
    service: str,
    counter: Counter | None = None,
    region: str | None = None,
    endpoint_url: str | None = None,
) -> Any:
    """A botocore client (what boto3 hands out) for ENV: its region, endpoint, and standard retries
    (throttling backs off). Made by botocore directly: boto3's resource layer is not needed.
    REGION and ENDPOINT_URL stand in for ENV's (the state backend's may differ)."""
    import botocore.session
    from botocore.config import Config

    creds = credentials_env(env)
    core = botocore.session.Session()  # credentials are resolved anew for every client
    core.register_component("data_loader", _models())
    config = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=30)
    c = core.create_client(
        service,
        region_name=region or env.aws.region,
        endpoint_url=endpoint_url or env.aws.endpoint_url,
        aws_access_key_id=creds.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=creds.get("AWS_SECRET_ACCESS_KEY"),
        config=config,
    )
    if counter is not None:
        c.meta.events.register("before-call.*.*", counter)
    return c


@contextmanager
def aws_errors(env: Environment, doing: str) -> Iterator[None]:
    """Turn botocore failures into one line that says what to fix."""
    from botocore import exceptions as bx

    where = env.aws.endpoint_url or f"AWS region {env.aws.region}"
    try:
        yield
    except bx.NoCredentialsError:
        raise AwsError(
            f"{doing}: no AWS credentials found; set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
        ) from None
    except (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError) as exc:
        raise AwsError(
            f"{doing}: cannot reach {where} ({type(exc).__name__}); check {env.path}: aws.endpoint_url and the network"
        ) from None
    except bx.ClientError as exc:
        err = exc.response.get("Error", {})
        op = exc.operation_name
        service = (
            "s3" if op in S3_OPERATIONS else "ec2"
        )  # ket-infra's boto3 calls only EC2, S3 (and STS, never refused)
        action = denied_action(str(err.get("Code", "")), str(err.get("Message", "")), service, op)
        if action is not None:
            raise AwsError(f"{doing}: {lacks([action])}") from None
        said = _one_line(f"{err.get('Code', '?')}: {err.get('Message', '')}")
        raise AwsError(f"{doing}: AWS said {said}".rstrip()) from None
    except bx.BotoCoreError as exc:
        raise AwsError(f"{doing}: {_one_line(str(exc))}") from None
    except Exception as exc:
        if not from_botocore(exc):
            raise
        # not every botocore exception is a BotoCoreError: botocore.parsers.ResponseParserError (an answer that
        # is not AWS's, from a wrong region's or endpoint's host) is a plain Exception
        raise AwsError(f"{doing}: {botocore_line(exc)}; check {env.path}: aws.region and aws.endpoint_url") from None


def from_botocore(exc: BaseException) -> bool:
    """EXC is raised by botocore or boto3 (whatever its class derives from)."""
    return type(exc).__module__.split(".")[0] in ("botocore", "boto3")


def botocore_line(exc: BaseException, limit: int = 300) -> str:
    """A botocore exception as one short line: its class and its message, folded and cut."""
    text = _one_line(f"{type(exc).__name__}: {exc}")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _one_line(text: str) -> str:
    """botocore's messages can span lines (parameter validation does): fold them into one."""
    return " ".join(text.split())


def check_account(env: Environment, sts: Any | None = None) -> str:
    """The caller's account id; refuses when the environment names another one."""
    with aws_errors(env, "checking the AWS account"):
        account = str((sts or client(env, "sts")).get_caller_identity()["Account"])
    if env.aws.account_id and account != env.aws.account_id:
        raise AwsError(
            f"{env.path}: aws.account_id: the credentials are for account {account}, not {env.aws.account_id}; "
            "use credentials of the right account or fix account_id"
        )
    return account


def filter_chunks(items: list[str], size: int = _FILTER_VALUES) -> Iterator[list[str]]:
    """ITEMS in runs of SIZE: the filter values (or IDs) of one describe call each."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


def described(ec2: Any, operation: str, key: str, filter_name: str, values: list[str]) -> Iterator[dict[str, Any]]:
    """Every item (under KEY) a paginated describe OPERATION answers for VALUES of one filter, asked for
    as many values at a time as one call takes."""
    for chunk in filter_chunks(values):
        for page in ec2.get_paginator(operation).paginate(Filters=[{"Name": filter_name, "Values": chunk}]):
            yield from page[key]


def _at_once(ask: Callable[[T], R], items: list[T], most: int = 4) -> list[R]:
    """ASK about each of ITEMS, up to MOST at a time, each in a daemon thread; the answers in ITEMS' order
    (the first item's error, if any, raised). Not an executor: the interpreter joins an executor's threads
    when it exits, so a run stopped by a signal would wait for AWS's answers (up to the read timeout)."""
    if len(items) == 1:
        return [ask(items[0])]
    answers: dict[int, R] = {}
    errors: dict[int, BaseException] = {}

    def one(i: int) -> None:
        try:
            answers[i] = ask(items[i])
        except BaseException as exc:
            errors[i] = exc

    for start in range(0, len(items), most):
        threads = [
            background(functools.partial(one, i), "aws lookup") for i in range(start, min(start + most, len(items)))
        ]
        for thread in threads:
            thread.join()
        if errors:
            raise errors[min(errors)]
    return [answers[i] for i in range(len(items))]


def discover(plan: Plan, env: Environment, ec2: Any | None = None) -> Discovery:
    """Map every plan node to its running instance and primary interface."""
    ec2 = ec2 or client(env, "ec2")
    wanted = {n.address: n for n in plan.nodes}
    found: dict[str, NodeInterface] = {}

    states = ["running", "pending", "stopped"]

    def instances(chunk: list[str]) -> list[dict[str, Any]]:
        filters = [
            {"Name": "private-ip-address", "Values": chunk},
            {"Name": "instance-state-name", "Values": states},
        ]
        pages = ec2.get_paginator("describe_instances").paginate(Filters=filters)
        return [inst for page in pages for reservation in page["Reservations"] for inst in reservation["Instances"]]

    with aws_errors(env, "finding the plan's nodes in EC2"):
        # A large plan's filter chunks are asked for at once (a botocore client may be shared by
        # threads); their answers are matched in order, so the result does not depend on timing.
        chunks = list(filter_chunks(sorted(wanted), _FILTER_VALUES - len(states)))
        for answer in _at_once(instances, chunks):
            for inst in answer:
                _match(inst, wanted, found)
    missing = [n for n in plan.nodes if n.address not in found]
    if missing:
        names = ", ".join(f"{n.host} ({n.address})" for n in missing)
        raise AwsError(
            f"{plan.path}: {len(missing)} node(s) not found as EC2 instances in {env.aws.region}: {names}; "
            "check internalip/ip in the plan file, the region and the account"
        )
    vpcs = sorted({i.vpc_id for i in found.values()})
    if len(vpcs) > 1:
        by_vpc = "; ".join(f"{v}: {', '.join(sorted(i.host for i in found.values() if i.vpc_id == v))}" for v in vpcs)
        raise AwsError(
            f"{plan.path}: the nodes are in {len(vpcs)} VPCs ({by_vpc}); a cluster's nodes must share one VPC"
        )
    nodes = tuple(found[n.address] for n in plan.nodes)
    return Discovery(vpcs[0], nodes)


def _match(inst: dict[str, Any], wanted: dict[str, Any], found: dict[str, NodeInterface]) -> None:
    # Only an interface's primary private IP: that is what a security-group
    # reference matches (PORTS.md section 3), so it must be the node's address.
    for eni in inst["NetworkInterfaces"]:  # each with its own VpcId and SubnetId
        address = eni.get("PrivateIpAddress")
        node = wanted.get(address)
        if node is None:
            continue
        if address in found and found[address].instance_id != inst["InstanceId"]:
            raise AwsError(
                f"{node.host}: the address {address} belongs to two instances ({found[address].instance_id} in "
                f"{found[address].vpc_id} and {inst['InstanceId']} in {eni['VpcId']}); "
                "ket-infra cannot tell which is the node: stop the other one or use another region/account"
            )
        found[address] = NodeInterface(
            host=node.host,
            address=address,
            instance_id=inst["InstanceId"],
            network_interface_id=eni["NetworkInterfaceId"],
            subnet_id=eni["SubnetId"],
            vpc_id=eni["VpcId"],
            security_groups=tuple(g["GroupId"] for g in eni.get("Groups", [])),
            source_dest_check=bool(inst.get("SourceDestCheck", True)),
            security_group_names=tuple(g.get("GroupName", "") for g in eni.get("Groups", [])),
        )


def check_interfaces(discovery: Discovery, own_group_names: set[str], plan: Plan) -> None:
    """Refuse before any change when an interface has no room for one more group (ket-infra's own don't count)."""
    full = [
        n
        for n in discovery.nodes
        if len(n.security_groups) >= MAX_GROUPS_PER_INTERFACE and not set(n.security_group_names) & own_group_names
    ]
    if full:
        names = ", ".join(f"{n.host} ({n.network_interface_id})" for n in full)
        raise AwsError(
            f"{plan.path}: {names} already carry {MAX_GROUPS_PER_INTERFACE} security groups, the AWS limit per "
            "interface; detach one before applying"
        )


def check_routed_subnets(plan: Plan, discovery: Discovery, kubelet_hosts: set[str]) -> None:
    """Calico routed mode works only between L2-adjacent nodes: one subnet."""
    subnets: dict[str, list[str]] = {}
    for n in discovery.nodes:
        if n.host in kubelet_hosts:
            subnets.setdefault(n.subnet_id, []).append(n.host)
    if len(subnets) > 1:
        where = "; ".join(f"{s}: {', '.join(h[:3])}{' ...' if len(h) > 3 else ''}" for s, h in sorted(subnets.items()))
        raise AwsError(
            f"{plan.path}: add_ons.cni.options.calico.mode: routed needs every kubelet node in one subnet, "
            f"but they are in {len(subnets)} ({where}); use mode overlay (IP-in-IP) or move the nodes"
        )


def source_dest_checks(
    env: Environment,
    instance_ids: list[str],
    ec2: Any | None = None,
    doing: str = "reading the EC2 source/destination check",
) -> dict[str, bool]:
    """The source/destination check of each of INSTANCE_IDS that still exists (DOING: for a failure's message)."""
    ec2 = ec2 or client(env, "ec2")
    current: dict[str, bool] = {}
    with aws_errors(env, doing):
        for page in _instances(ec2, instance_ids):
            for r in page["Reservations"]:
                for inst in r["Instances"]:
                    current[inst["InstanceId"]] = bool(inst.get("SourceDestCheck", True))
    return current


def _instances(ec2: Any, instance_ids: list[str]) -> Iterator[dict[str, Any]]:
    """describe_instances pages for INSTANCE_IDS (by filter: an id since gone is no error)."""
    for chunk in filter_chunks(instance_ids):
        yield from ec2.get_paginator("describe_instances").paginate(Filters=[{"Name": "instance-id", "Values": chunk}])


def put_back_source_dest_checks(
    env: Environment, was: dict[str, tuple[str, bool]], progress: Callable[[str], None], ec2: Any | None = None
) -> int:
    """Set each instance of WAS (instance id -> (host, value)) back to its value where it differs; an
    instance since gone is said and skipped. Returns how many changed."""
    ec2 = ec2 or client(env, "ec2")
    current = source_dest_checks(env, sorted(was), ec2)
    changed = 0
    with aws_errors(env, "putting the EC2 source/destination check back"):
        for instance_id, (host, value) in sorted(was.items(), key=lambda item: item[1][0]):
            if instance_id not in current:
                progress(f"  {host} ({instance_id}): no longer exists, nothing to put back")
            elif current[instance_id] != value:
                ec2.modify_instance_attribute(InstanceId=instance_id, SourceDestCheck={"Value": value})
                changed += 1
                progress(f"  {host} ({instance_id}): source/dest check {'on' if value else 'off'}, as it was")
    return changed


def set_source_dest_check(
    env: Environment,
    targets: list[NodeInterface],
    value: bool,
    progress: Callable[[str], None],
    ec2: Any | None = None,
) -> int:
    """Set the check on TARGETS where it differs; returns how many changed."""
    ec2 = ec2 or client(env, "ec2")
    changed = 0
    doing = "setting the EC2 source/destination check"
    current = source_dest_checks(env, [t.instance_id for t in targets], ec2, doing)
    with aws_errors(env, doing):
        for t in targets:
            if current.get(t.instance_id) == value:
                continue
            ec2.modify_instance_attribute(InstanceId=t.instance_id, SourceDestCheck={"Value": value})
            changed += 1
            progress(f"  {t.host} ({t.instance_id}): source/dest check {'on' if value else 'off'}")
    return changed


# --- what ket-infra made: to adopt what a killed Terraform left out of its state ---------------------

CLUSTER_TAG = "ket-infra/cluster"
ENVIRONMENT_TAG = "ket-infra/environment"
GROUP_TAG = "ket-infra/group"
STATE_TAG = "ket-infra/state"  # the Terraform state that owns a resource (render.state_identity)


@dataclass(frozen=True)
class OwnedRule:
    rule_id: str
    name: str  # the Name tag: the rule's key in the module
    group_id: str
    direction: str  # ingress | egress


@dataclass(frozen=True)
class Owned:
    """The security groups ket-infra made for one cluster and environment, their rules, and the nodes carrying them."""

    groups: dict[str, str]  # group id -> group key (the module's key, e.g. "worker")
    rules: tuple[OwnedRule, ...]
    carried: dict[str, tuple[str, ...]]  # host -> ids of those groups on its interface
    states: dict[str, str] = field(default_factory=dict)  # group or rule id -> its ket-infra/state tag


def _tag(item: dict[str, Any], key: str) -> str | None:
    return next((t.get("Value") for t in item.get("Tags", []) if t.get("Key") == key), None)


def owned_resources(env: Environment, cluster: str, discovery: Discovery, ec2: Any | None = None) -> Owned:
    """Read from AWS what ket-infra made for CLUSTER in ENV's environment, inside the discovered VPC.

    Groups by their ket-infra tags (their key from the ket-infra/group tag, else from the name
    CLUSTER-KEY), their rules by group id (their key is the rule's Name tag), and the nodes'
    interfaces that already carry one of the groups.
    """
    ec2 = ec2 or client(env, "ec2")
    groups: dict[str, str] = {}
    rules: list[OwnedRule] = []
    states: dict[str, str] = {}
    with aws_errors(env, "looking for the security groups ket-infra made"):
        filters = [
            {"Name": f"tag:{CLUSTER_TAG}", "Values": [cluster]},
            {"Name": f"tag:{ENVIRONMENT_TAG}", "Values": [env.name]},
            {"Name": "vpc-id", "Values": [discovery.vpc_id]},
        ]
        for page in ec2.get_paginator("describe_security_groups").paginate(Filters=filters):
            for g in page["SecurityGroups"]:
                key = _tag(g, GROUP_TAG)
                if key is None and str(g.get("GroupName", "")).startswith(f"{cluster}-"):
                    key = str(g["GroupName"])[len(cluster) + 1 :]
                if key:
                    groups[g["GroupId"]] = key
                    if (state := _tag(g, STATE_TAG)) is not None:
                        states[g["GroupId"]] = state
        for r in described(ec2, "describe_security_group_rules", "SecurityGroupRules", "group-id", sorted(groups)):
            name = _tag(r, "Name")
            if name:
                direction = "egress" if r.get("IsEgress") else "ingress"
                rules.append(OwnedRule(r["SecurityGroupRuleId"], name, r["GroupId"], direction))
                if (state := _tag(r, STATE_TAG)) is not None:
                    states[r["SecurityGroupRuleId"]] = state
    carried = {
        n.host: tuple(g for g in n.security_groups if g in groups)
        for n in discovery.nodes
        if set(n.security_groups) & set(groups)
    }
    return Owned(groups, tuple(sorted(rules, key=lambda r: r.rule_id)), carried, states)


# --- foreign groups ket-infra took off the nodes' interfaces (environment detach_groups) ------------

DETACHED_TAG = "ket-infra/detached-groups"  # on an interface: the ids ket-infra took off it, for people to read


@dataclass(frozen=True)
class InterfaceGroups:
    network_interface_id: str
    host: str  # the plan's host ("" for an interface the plan no longer names)
    groups: tuple[str, ...]  # on the interface now
    detached: tuple[str, ...]  # taken off by ket-infra (its record, not the tag), to put back on destroy
    tagged: tuple[str, ...] = ()  # what the interface's DETACHED_TAG says (anyone may have written it)


def interface_groups(
    env: Environment, discovery: Discovery, recorded: dict[str, tuple[str, ...]], ec2: Any | None = None
) -> list[InterfaceGroups]:
    """The groups on each node's interface, and on each interface RECORDED names (a node since removed
    from the plan), with what the record says ket-infra took off it and what its tag says."""
    ec2 = ec2 or client(env, "ec2")
    host_of = {n.network_interface_id: n.host for n in discovery.nodes}
    others = [eni for eni in sorted(recorded) if eni not in host_of]
    found: dict[str, InterfaceGroups] = {}
    with aws_errors(env, "reading the nodes' network interfaces"):
        wanted = sorted(host_of) + others
        enis = described(ec2, "describe_network_interfaces", "NetworkInterfaces", "network-interface-id", wanted)
        for eni in enis:
            eni_id = eni["NetworkInterfaceId"]
            found[eni_id] = InterfaceGroups(
                eni_id,
                host_of.get(eni_id, ""),
                tuple(g["GroupId"] for g in eni.get("Groups", [])),
                tuple(recorded.get(eni_id, ())),
                # an interface's tags are its TagSet (EC2 API reference, NetworkInterface)
                tuple((_tag({"Tags": eni.get("TagSet", [])}, DETACHED_TAG) or "").split()),
            )
    order = [n.network_interface_id for n in discovery.nodes] + others
    return [found[eni] for eni in order if eni in found]


def set_interface_groups(
    env: Environment, interface: InterfaceGroups, groups: list[str], detached: list[str], ec2: Any | None = None
) -> None:
    """Put exactly GROUPS on the interface and mirror DETACHED in its tag (the tag goes when it is empty).

    The tag is for people; ket-infra's record (detach.Record) is written before this is called.
    The tag holds the old and the new groups while the interface changes.
    """
    ec2 = ec2 or client(env, "ec2")
    eni = interface.network_interface_id

    def tag(ids: list[str]) -> None:
        if ids:
            ec2.create_tags(Resources=[eni], Tags=[{"Key": DETACHED_TAG, "Value": " ".join(ids)}])
        else:
            ec2.delete_tags(Resources=[eni], Tags=[{"Key": DETACHED_TAG}])

    both = sorted(set(interface.detached) | set(detached))
    with aws_errors(env, f"changing the security groups of {interface.host} ({eni})"):
        if both != sorted(interface.tagged):
            tag(both)
        if list(groups) != list(interface.groups):
            ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=groups)
        if sorted(detached) != both:
            tag(sorted(detached))


def group_names(env: Environment, group_ids: list[str], ec2: Any | None = None) -> dict[str, str]:
    """The names of GROUP_IDS that still exist."""
    ec2 = ec2 or client(env, "ec2")
    out: dict[str, str] = {}
    with aws_errors(env, "reading security group names"):
        for g in described(ec2, "describe_security_groups", "SecurityGroups", "group-id", group_ids):
            out[g["GroupId"]] = g.get("GroupName", g["GroupId"])
    return out
