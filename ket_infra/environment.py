"""The environment file (`environments/NAME.yaml`): where and how to apply.

Unknown keys are errors that name the key. Everything not given has a safe
default, and no default opens anything to the internet: CIDR sources exist
only where this file names them.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ket_infra import yamldoc
from ket_infra.errors import EnvironmentFileError
from ket_infra.flows import (
    BRICK_PORTS_DEFAULT,
    BRICK_PORTS_MAX,
    CATALOG_NAMES,
    ENDPOINT_PREFIXES,
    Flow,
    protocol_name,
)
from ket_infra.plan import KUBELET_ROLES, ROLES, spans_the_internet

TOP_KEYS = {
    "plan_file",
    "aws",
    "terraform",
    "installer_cidr",
    "ingress_cidrs",
    "api_cidrs",
    "egress_cidrs",
    "endpoint_cidrs",
    "nodeport_cidrs",
    "gluster_brick_ports",
    "extra_rules",
    "preflight",
    "detach_groups",
    "ephemeral_ports",
    "rules_per_group_quota",
    "acknowledge",
}
# Where endpoints the plan names by DNS name (or not at all) are: outbound destinations.
ENDPOINT_KEYS = {"load_balancer", "nfs", "proxy", "aws_api", "heapster_sink"}
AWS_KEYS = {"region", "account_id", "endpoint_url"}
TERRAFORM_KEYS = {"binary", "backend", "plugin_dir"}
BACKEND_KEYS = {"local": {"type", "path"}, "s3": {"type", "bucket", "key", "region", "use_lockfile", "endpoint_url"}}
EXTRA_RULE_KEYS = {"name", "protocol", "ports", "to", "from", "from_cidr", "purpose", "allow_world"}
PROTOCOL_NAMES = ("tcp", "udp", "icmp", "all")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
# The nodes' ephemeral ports (Linux's default net.ipv4.ip_local_port_range): where TCP answers go back to,
# so what a stateless network ACL must let through on the return path.
EPHEMERAL_PORTS = (32768, 60999)
# Inbound (and, apart, outbound) rules per security group: AWS's default quota, and the most it raises it to
# (the quota times the groups per interface may not exceed 1,000;
# https://docs.aws.amazon.com/vpc/latest/userguide/amazon-vpc-limits.html)
RULES_QUOTA = 60
RULES_QUOTA_MAX = 1000
# The environment's name (its file name without .yaml) names its work folder and tags every resource:
# one safe path component that AWS tags and Terraform strings take as it is.
ENV_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


@dataclass(frozen=True)
class AwsConfig:
    region: str
    account_id: str | None = None
    endpoint_url: str | None = None


@dataclass(frozen=True)
class Backend:
    type: str = "local"
    path: str | None = None
    bucket: str | None = None
    key: str | None = None
    region: str | None = None
    use_lockfile: bool = True
    endpoint_url: str | None = None


@dataclass(frozen=True)
class TerraformConfig:
    binary: str = "terraform"
    backend: Backend = field(default_factory=Backend)
    plugin_dir: str | None = None


@dataclass(frozen=True)
class Environment:
    name: str
    path: str
    plan_file: Path
    aws: AwsConfig
    terraform: TerraformConfig = field(default_factory=TerraformConfig)
    installer_cidr: str | None = None
    ingress_cidrs: tuple[str, ...] = ()
    api_cidrs: tuple[str, ...] = ()
    egress_cidrs: tuple[str, ...] = ()  # where nodes download packages and images while KET installs
    # endpoint_cidrs: the addresses of endpoints the plan names by DNS name (load_balancer, nfs, proxy,
    # heapster_sink) or not at all (aws_api: the AWS API endpoints the cloud provider calls)
    endpoint_cidrs: tuple[tuple[str, tuple[str, ...]], ...] = ()
    nodeport_cidrs: tuple[str, ...] = ()  # who may reach the NodePort Services the plan turns on
    gluster_brick_ports: int = BRICK_PORTS_DEFAULT
    extra_flows: tuple[Flow, ...] = ()
    preflight: bool = True
    # foreign security groups to take off the cluster's interfaces (ids or names); apply detaches
    # them once the flows are proven open without them, destroy puts them back
    detach_groups: tuple[str, ...] = ()
    ephemeral_ports: tuple[int, int] = EPHEMERAL_PORTS
    # the account's "Inbound or outbound rules per security group" quota (60 unless raised)
    rules_quota: int = RULES_QUOTA
    acknowledge: tuple[str, ...] = ()  # warning ids this environment has read and accepts (not repeated)
    given: str = ""  # --env as the user gave it, for hints that repeat the command
    source: bytes = field(default=b"", repr=False, compare=False)  # the file's bytes as read

    def endpoint(self, kind: str) -> tuple[str, ...]:
        """The CIDRs endpoint_cidrs names for KIND (one of ENDPOINT_KEYS)."""
        return dict(self.endpoint_cidrs).get(kind, ())

    @property
    def arg(self) -> str:
        """What to pass as --env in a hint: what the user gave (quoted for a shell when it needs it)."""
        import shlex

        return shlex.quote(self.given or self.name)


@functools.cache
def known_regions() -> frozenset[str]:
    """The regions of every AWS partition as botocore knows them offline (its data/partitions.json);
    empty when that file cannot be read (then no region is refused for being unknown)."""
    from importlib import resources

    try:
        doc = json.loads((resources.files("botocore") / "data" / "partitions.json").read_text())
        return frozenset(r for p in doc["partitions"] for r in p.get("regions", {}) if not r.endswith("-global"))
    except (ImportError, OSError, ValueError, KeyError, TypeError):
        return frozenset()


def env_path(env: str) -> Path:
    """`--env NAME` means environments/NAME.yaml; a path means that file."""
    if "/" in env or env.endswith((".yaml", ".yml")):
        return Path(env)
    return Path("environments") / f"{env}.yaml"


def _known_environments() -> str:
    """The fix for an environment name with no file: the names there are (as shell completion offers them)."""
    names = sorted(p.stem for p in Path("environments").glob("*.y*ml") if p.suffix in (".yaml", ".yml"))
    if names:
        return f"environments here: {', '.join(names)}; or pass the path of an environment file"
    return (
        f"there is no environments/ folder with an environment file in {Path.cwd()}; run from the folder that holds "
        "it (or -C DIR), pass its path, or write one (see environments/example.yaml)"
    )


def _cidr(doc: yamldoc.Doc, key: str, value: object) -> str:
    if not isinstance(value, str):
        doc.fail(key, f"must be a CIDR string, got {yamldoc.describe(value)}", "use a CIDR such as 10.0.0.5/32")
    try:
        net = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        doc.fail(key, f"{value!r} is not a valid CIDR", "use a CIDR such as 10.0.0.5/32")
    if net.version != 4:
        doc.fail(key, f"{value!r} is not an IPv4 CIDR", "use an IPv4 CIDR such as 10.0.0.5/32")
    return str(net)


def _cidr_list(doc: yamldoc.Doc, name: str) -> tuple[str, ...]:
    items = doc.seq(name)
    return tuple(dict.fromkeys(_cidr(doc, f"{name}[{i}]", v) for i, v in enumerate(items)))


def _endpoint_cidrs(root: yamldoc.Doc) -> tuple[tuple[str, tuple[str, ...]], ...]:
    doc = root.mapping("endpoint_cidrs")
    doc.reject_unknown(ENDPOINT_KEYS)
    return tuple((k, _cidr_list(doc, k)) for k in sorted(ENDPOINT_KEYS) if doc.seq(k))


_GROUP_ID = re.compile(r"sg-[0-9a-f]{8}([0-9a-f]{9})?")
# what AWS allows in a VPC security group's name (EC2 API reference, CreateSecurityGroup GroupName)
_GROUP_NAME = re.compile(r"[a-zA-Z0-9 ._\-:/()#,@\[\]+=&;{}!$*]+")


def _detach_groups(doc: yamldoc.Doc) -> tuple[str, ...]:
    out: list[str] = []
    for i, value in enumerate(doc.seq("detach_groups")):
        key = f"detach_groups[{i}]"
        if not isinstance(value, str) or not value.strip() or len(value) > 255:
            doc.fail(key, f"{yamldoc.describe(value)} is not a security group", "give a group id (sg-...) or name")
        value = value.strip()
        if not _GROUP_NAME.fullmatch(value):
            doc.fail(
                key,
                f"{yamldoc.describe(value)} holds characters AWS never allows in a group name or id",
                "a name is up to 255 of a-z A-Z 0-9, spaces and ._-:/()#,@[]+=&;{}!$*; an id is sg- and hex digits",
            )
        if value.startswith("sg-") and not _GROUP_ID.fullmatch(value):
            doc.fail(key, f"{value!r} is not a security group id", "an id is sg- and 8 or 17 hex digits")
        out.append(value)
    return tuple(dict.fromkeys(out))


def _bounded(doc: yamldoc.Doc, key: str, default: int, top: int, fix: str) -> int:
    """KEY as an integer from 1 to TOP (DEFAULT when not given); out of range is refused with FIX."""
    value = doc.integer(key, default=default)
    assert value is not None
    if not 1 <= value <= top:
        doc.fail(key, f"{value} is out of range", fix)
    return value


def _rules_quota(doc: yamldoc.Doc) -> int:
    return _bounded(
        doc,
        "rules_per_group_quota",
        RULES_QUOTA,
        RULES_QUOTA_MAX,
        f"give the account's quota of inbound (and outbound) rules per security group, 1 to {RULES_QUOTA_MAX} "
        f"(AWS's default is {RULES_QUOTA})",
    )


def _acknowledge(doc: yamldoc.Doc) -> tuple[str, ...]:
    """The warning ids the environment acknowledges; an id no warning has is refused with the nearest one."""
    import difflib

    from ket_infra.layout import WARNING_IDS

    out: list[str] = []
    for i, value in enumerate(doc.seq("acknowledge")):
        if not isinstance(value, str) or value.strip() not in WARNING_IDS:
            near = difflib.get_close_matches(value, WARNING_IDS, n=1) if isinstance(value, str) else []
            fix = f"did you mean {near[0]}?" if near else "give the id a warning ends with, such as [preflight-open]"
            doc.fail(f"acknowledge[{i}]", f"{yamldoc.describe(value)} is not a warning id", fix)
        out.append(value.strip())
    return tuple(dict.fromkeys(out))


def _brick_ports(doc: yamldoc.Doc) -> int:
    return _bounded(
        doc,
        "gluster_brick_ports",
        BRICK_PORTS_DEFAULT,
        BRICK_PORTS_MAX,
        f"give the most bricks (volumes) one storage node serves, 1 to {BRICK_PORTS_MAX}",
    )


def _ephemeral_ports(doc: yamldoc.Doc) -> tuple[int, int]:
    value = doc.raw("ephemeral_ports")
    if value is None:
        return EPHEMERAL_PORTS
    text = value.strip() if isinstance(value, str) else ""
    match = re.fullmatch(r"([0-9]{1,5})\s*-\s*([0-9]{1,5})", text)
    lo, hi = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    if not 1 <= lo <= hi <= 65535:
        doc.fail(
            "ephemeral_ports",
            f"{yamldoc.describe(value)} is not a port range",
            'give the nodes\' net.ipv4.ip_local_port_range as "LOW-HIGH", such as "32768-60999"',
        )
    return (lo, hi)


def _roles(doc: yamldoc.Doc, name: str) -> tuple[str, ...]:
    value = doc.raw(name)
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        doc.fail(name, "must be a role or a list of roles", f"use {', '.join(ROLES)}, kubelet or all")
    out: list[str] = []
    for item in items:
        if item == "kubelet":
            out.extend(KUBELET_ROLES)
        elif item == "all":
            out.extend(ROLES)
        elif item in ROLES:
            out.append(item)
        else:
            doc.fail(name, f"{yamldoc.describe(item)} is not a role", f"use {', '.join(ROLES)}, kubelet or all")
    return tuple(r for r in ROLES if r in out)


def _ports(doc: yamldoc.Doc, protocol: str) -> tuple[int, int] | None:
    value = doc.raw("ports")
    if protocol not in ("tcp", "udp", "icmp"):
        if value is not None:
            doc.fail("ports", f"protocol {protocol} has no ports", "remove ports")
        return None
    if value is None:
        if protocol == "icmp":
            return (-1, -1)
        doc.fail("ports", f"is required for protocol {protocol}", "give a port (6783) or a range (6783-6784)")
    text = str(value).strip() if isinstance(value, (str, int)) and not yamldoc.is_huge(value) else ""
    match = re.fullmatch(r"(-?[0-9]{1,6})(?:\s*-\s*(-?[0-9]{1,6}))?", text) if not isinstance(value, bool) else None
    if match is None:
        doc.fail(
            "ports", f"{yamldoc.describe(value)} is not a port or range", "give a port (6783) or a range (6783-6784)"
        )
    lo = int(match.group(1))
    hi = int(match.group(2)) if match.group(2) is not None else lo
    limit = (-1, 255) if protocol == "icmp" else (1, 65535)
    if not (limit[0] <= lo <= limit[1] and limit[0] <= hi <= limit[1]) or (protocol != "icmp" and lo > hi):
        what = "ICMP type-code" if protocol == "icmp" else "ports"
        doc.fail(
            "ports", f"{text} is not a valid {what} range", f"use values from {limit[0]} to {limit[1]}, low to high"
        )
    return (lo, hi)


# A rule's purpose becomes its description, "PURPOSE [environment]": EC2 takes up to 255 characters of
# a-z, A-Z, 0-9, spaces and ._-:/()#,@[]+=&;{}!$* (API_IpRange.html, API_UserIdGroupPair.html, Description)
_DESCRIPTION_CHARS = re.compile(r"[a-zA-Z0-9 ._\-:/()#,@\[\]+=&;{}!$*]*")
PURPOSE_MAX = 255 - len(" [environment]")


def _check_purpose(doc: yamldoc.Doc, purpose: str) -> None:
    """Refuse a purpose EC2 would refuse as a rule description (InvalidParameterValue half-way through an apply)."""
    fix = f"at most {PURPOSE_MAX} of a-z A-Z 0-9, spaces and ._-:/()#,@[]+=&;{{}}!$* (EC2's rule description)"
    if len(purpose) > PURPOSE_MAX:
        doc.fail("purpose", f"is {len(purpose)} characters, too long for an AWS rule description", fix)
    if not _DESCRIPTION_CHARS.fullmatch(purpose):
        bad = "".join(sorted({c for c in purpose if not _DESCRIPTION_CHARS.fullmatch(c)}))
        doc.fail("purpose", f"holds {bad!r}, which AWS does not allow in a rule description", fix)


def _extra_rule(doc: yamldoc.Doc, reserved: set[str]) -> Flow:
    doc.reject_unknown(EXTRA_RULE_KEYS)
    name = doc.text("name", required=True)
    assert name is not None
    if not _NAME.match(name):
        doc.fail("name", f"{name!r} is not a valid rule name", "use lowercase letters, digits and dashes")
    if name in reserved or name.startswith(ENDPOINT_PREFIXES):
        doc.fail("name", f"{name!r} is already the name of a built-in or earlier rule", "choose another name")
    protocol = doc.text("protocol", required=True)
    assert protocol is not None
    protocol = protocol.lower()
    if protocol not in PROTOCOL_NAMES:
        if not re.fullmatch(r"[0-9]{1,3}", protocol) or not 0 <= int(protocol) <= 255:
            doc.fail(
                "protocol", f"{protocol!r} is not a protocol", "use tcp, udp, icmp, all or an IP protocol number 0-255"
            )
        protocol = protocol_name(int(protocol))
    ports = _ports(doc, protocol)
    to = _roles(doc, "to")
    purpose = doc.text("purpose", required=True)
    assert purpose is not None
    _check_purpose(doc, purpose)
    has_from, has_cidr = doc.has("from"), doc.has("from_cidr")
    if has_from == has_cidr:
        doc.fail(None, "give exactly one of from (roles) and from_cidr (a CIDR)")
    if has_from:
        if protocol == "all":
            doc.fail(
                "protocol", "all protocols between roles is never allowed", "name the protocol and ports the CNI needs"
            )
        return Flow(
            name, protocol, ports, to, purpose, f"environment file {doc.path}", "environment", src=_roles(doc, "from")
        )
    cidr = _cidr(doc, "from_cidr", doc.raw("from_cidr"))
    if protocol == "all" and spans_the_internet(cidr) and not doc.flag("allow_world", False):
        doc.fail(
            "protocol",
            f"all protocols from {cidr} opens every port of these nodes to the internet",
            "name the protocol and ports the flow needs, or set allow_world: true on this rule if you mean it",
        )
    return Flow(name, protocol, ports, to, purpose, f"environment file {doc.path}", "environment", src_cidr=cidr)


def _backend(doc: yamldoc.Doc) -> Backend:
    kind = doc.text("type", default="local")
    assert kind is not None
    if kind not in BACKEND_KEYS:
        doc.fail("type", f"{kind!r} is not a supported backend", "use local or s3")
    doc.reject_unknown(BACKEND_KEYS[kind])
    if kind == "local":
        return Backend("local", path=doc.text("path"))
    return Backend(
        "s3",
        bucket=doc.text("bucket", required=True),
        key=doc.text("key", required=True),
        region=doc.text("region"),
        use_lockfile=doc.flag("use_lockfile", True),
        endpoint_url=doc.text("endpoint_url"),
    )


def load_environment(env: str | Path) -> Environment:
    """Load the environment file named by --env; raises EnvironmentFileError."""
    path = env_path(str(env))
    if not ENV_NAME.fullmatch(path.stem):
        shown = yamldoc.describe(path.stem)
        raise EnvironmentFileError(
            yamldoc.shown_path(path),
            None,
            f"the environment's name {shown} (its file name without .yaml) cannot name a work folder and AWS tags",
            "rename the file to letters, digits, '_', '-' and '.' (not first), at most 63, ending in .yaml",
        )
    if str(env) == path.stem and not path.exists():  # a name (environments/NAME.yaml) with no file: list them
        raise EnvironmentFileError(yamldoc.shown_path(path), None, "environment file not found", _known_environments())
    root = yamldoc.load(path, EnvironmentFileError, "environment file")
    if "plan_file" not in root.data and {"cluster", "master", "worker", "etcd"} & set(map(str, root.data)):
        raise EnvironmentFileError(
            root.path,
            None,
            "this is a KET plan file, not an environment file",
            f"pass it as PLAN_FILE (ket-infra rules {root.path}), or name it in an environment file's plan_file: "
            "(see environments/example.yaml)",
        )
    root.reject_unknown(TOP_KEYS)
    plan_file = root.text("plan_file", required=True)
    assert plan_file is not None

    aws = root.mapping("aws")
    aws.reject_unknown(AWS_KEYS)
    region = aws.text("region", required=True)
    assert region is not None
    if not _REGION.match(region):
        aws.fail("region", f"{region!r} is not an AWS region name", "use a region such as eu-west-1")
    regions = known_regions()
    if regions and region not in regions:
        import difflib

        near = difflib.get_close_matches(region, sorted(regions), n=1, cutoff=0.6)
        aws.fail(
            "region",
            f"{region!r} is not a region AWS has (botocore's offline list of regions)",
            f"did you mean {near[0]}?" if near else "use a region such as eu-west-1 (or upgrade botocore if it is new)",
        )
    account = aws.text("account_id")
    if account is not None and not re.fullmatch(r"\d{12}", account):
        aws.fail("account_id", f"{account!r} is not a 12-digit AWS account id", 'quote it: account_id: "123456789012"')
    endpoint = aws.text("endpoint_url")
    if endpoint is not None and not re.match(r"^https?://[^/\s]+", endpoint):
        aws.fail("endpoint_url", f"{endpoint!r} is not an http(s) URL", "use a URL such as http://127.0.0.1:5000")

    tf = root.mapping("terraform")
    tf.reject_unknown(TERRAFORM_KEYS)
    binary = tf.text("binary", default="terraform")
    assert binary is not None
    plugin_dir = tf.text("plugin_dir")
    if plugin_dir is not None:
        plugin_dir = str((path.parent / plugin_dir).resolve())

    installer = root.raw("installer_cidr")
    reserved: set[str] = set(CATALOG_NAMES)
    extra: list[Flow] = []
    for i, item in enumerate(root.seq("extra_rules")):
        flow = _extra_rule(root.item("extra_rules", i, item), reserved)
        reserved.add(flow.name)
        extra.append(flow)

    return Environment(
        name=path.stem,
        path=str(path),
        plan_file=(path.parent / plan_file).resolve(),
        aws=AwsConfig(region, account, endpoint),
        terraform=TerraformConfig(binary, _backend(tf.mapping("backend")), plugin_dir),
        installer_cidr=_cidr(root, "installer_cidr", installer) if installer is not None else None,
        ingress_cidrs=_cidr_list(root, "ingress_cidrs"),
        api_cidrs=_cidr_list(root, "api_cidrs"),
        egress_cidrs=_cidr_list(root, "egress_cidrs"),
        endpoint_cidrs=_endpoint_cidrs(root),
        nodeport_cidrs=_cidr_list(root, "nodeport_cidrs"),
        gluster_brick_ports=_brick_ports(root),
        extra_flows=tuple(extra),
        preflight=root.flag("preflight", True),
        detach_groups=_detach_groups(root),
        ephemeral_ports=_ephemeral_ports(root),
        rules_quota=_rules_quota(root),
        acknowledge=_acknowledge(root),
        given=str(env),
        source=root.source,
    )
