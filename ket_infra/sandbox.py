"""The local AWS sandbox: a moto server on 127.0.0.1, seeded from a KET plan file.

`sandbox_up` starts (or reuses and resets) `python -m ket_infra.sandbox_server`
in the background, creates the VPC, subnets and one running instance per plan
node at the node's address, and writes an environment file pointing at it,
so that `ket-infra plan/apply/verify --env sandbox` run against it with the
real Terraform CLI. `sandbox_down` stops it. With `like`, the security groups
and instance settings kismatic-provision or kops leave are seeded too.

The server's pid is kept in `STATE_DIR/sandbox-PORT.pid` and its output in
`STATE_DIR/sandbox-PORT.log`. Only the boto3 clients made here get the
"testing" credentials; the process environment is never changed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ket_infra.errors import KetInfraError
from ket_infra.plan import Plan, load_plan
from ket_infra.sandbox_aws import CONFIG_PATH, RULES_PER_GROUP, Behaviours

REGION = "eu-west-1"
ACCOUNT_ID = "123456789012"  # moto's default account
HOST = "127.0.0.1"
INSTANCE_TYPE = "t3.medium"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
DEFAULT_ENV_FILE = Path("environments/sandbox.yaml")
PLUGIN_DIR_VAR = "KET_INFRA_TF_PLUGIN_DIR"
SERVER_MODULE = "ket_infra.sandbox_server"


class SandboxError(KetInfraError):
    """The sandbox could not be started, seeded or stopped."""


def default_state_dir() -> Path:
    """Where sandbox pid and log files live: one place per user, whatever the current directory,
    so that `sandbox down --port P` finds the server `sandbox up` started anywhere."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return Path(base) / f"ket-infra-{os.getuid()}"


def pid_file(port: int, state_dir: Path) -> Path:
    return state_dir / f"sandbox-{port}.pid"


def log_file(port: int, state_dir: Path) -> Path:
    return state_dir / f"sandbox-{port}.log"


def seeded_file(port: int, state_dir: Path) -> Path:
    """What the sandbox on PORT was seeded from (a line), for `sandbox up` to say what runs there."""
    return state_dir / f"sandbox-{port}.seeded"


def endpoint(port: int) -> str:
    return f"http://{HOST}:{port}"


# --- the network the plan's nodes need ---------------------------------------------------------------


def _reserved(addr: ipaddress.IPv4Address, subnet: ipaddress.IPv4Network) -> bool:
    """AWS keeps the first four and the last address of every subnet."""
    offset = int(addr) - int(subnet.network_address)
    return offset < 4 or addr == subnet.broadcast_address


def network_for(plan: Plan) -> tuple[ipaddress.IPv4Network, list[ipaddress.IPv4Network]]:
    """The VPC CIDR (smallest /16../28 holding every node address) and its subnets (one per /24 in use).

    When the VPC is smaller than a /24 it is its own single subnet. Sizes whose
    subnets would put a node on an address AWS reserves are skipped.
    """
    addrs = [ipaddress.IPv4Address(n.address) for n in plan.nodes]
    for prefix in range(28, 15, -1):
        vpc = ipaddress.IPv4Network(f"{addrs[0]}/{prefix}", strict=False)
        if not all(a in vpc for a in addrs):
            continue
        size = max(prefix, 24)
        subnets = sorted({ipaddress.IPv4Network(f"{a}/{size}", strict=False) for a in addrs})
        if all(not _reserved(a, s) for a in addrs for s in subnets if a in s):
            return vpc, subnets
    for node in plan.nodes:
        addr = ipaddress.IPv4Address(node.address)
        block = ipaddress.IPv4Network(f"{addr}/24", strict=False)
        if _reserved(addr, block):
            raise SandboxError(
                f"{plan.path}: node {node.host} has address {addr}, which AWS reserves in subnet {block} "
                "(first four and last addresses); give the node another address"
            )
    raise SandboxError(
        f"{plan.path}: the node addresses ({min(addrs)} to {max(addrs)}) do not fit in one /16, "
        "the largest VPC AWS allows; use a plan whose nodes share a /16"
    )


def installer_address(vpc: ipaddress.IPv4Network, plan: Plan) -> ipaddress.IPv4Address:
    """The address that stands for the installer: the VPC's network address + 5, or the next free one."""
    used = {ipaddress.IPv4Address(n.address) for n in plan.nodes}
    for offset in range(5, vpc.num_addresses - 1):
        addr = vpc.network_address + offset
        if addr not in used:
            return addr
    raise SandboxError(f"{plan.path}: no free address left in {vpc} for the installer; use a plan with fewer nodes")


# --- the server process ------------------------------------------------------------------------------


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


def _answers(port: int) -> bool:
    """True when a moto server answers on PORT (its small, read-only config endpoint)."""
    try:
        with urllib.request.urlopen(f"{endpoint(port)}/moto-api/config", timeout=2) as resp:
            return resp.status in (200, 201) and isinstance(json.loads(resp.read()), dict)
    except (OSError, ValueError):
        return False


# Servers started by this process, kept so that they are reaped (not left as zombies) once stopped.
_children: dict[int, subprocess.Popen[bytes]] = {}


def _alive(pid: int) -> bool:
    child = _children.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _children[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False  # a zombie: exited, waiting for its parent
    return True


def _is_our_server(pid: int, port: int) -> bool:
    """PID is alive and (where /proc exists) runs our sandbox server on PORT."""
    if not _alive(pid):
        return False
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc: trust the pid file
    return SERVER_MODULE.encode() in args and str(port).encode() in args


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _reset(port: int) -> None:
    req = urllib.request.Request(f"{endpoint(port)}/moto-api/reset", data=b"", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()
    except OSError as exc:
        raise SandboxError(
            f"cannot reset the sandbox on port {port} ({exc}); run `ket-infra sandbox down --port {port}` and retry"
        ) from None


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


def _start(port: int, state_dir: Path, progress: Callable[[str], None]) -> None:
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    log = log_file(port, state_dir)
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    progress(f"starting sandbox on {endpoint(port)} (log {log})")
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", SERVER_MODULE, "--port", str(port), "--host", HOST],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    _children[proc.pid] = proc
    pid_file(port, state_dir).write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pid_file(port, state_dir).unlink(missing_ok=True)
            tail = _log_tail(log)
            raise SandboxError(
                f"the sandbox server exited with status {proc.returncode}"
                + (f": {tail}" if tail else "")
                + f"; see {log} (is moto[server] installed? `pip install 'ket-infra[sandbox]'`)"
            )
        if _answers(port):
            return
        time.sleep(0.1)
    _stop_pid(proc.pid)
    pid_file(port, state_dir).unlink(missing_ok=True)
    raise SandboxError(f"the sandbox server did not answer on port {port} within {START_TIMEOUT:.0f} s; see {log}")


def _ensure_server(port: int, state_dir: Path, progress: Callable[[str], None], reset: bool = True) -> None:
    """A running, empty sandbox on PORT: reuse ours (reset, unless RESET is false: then refused, saying what
    runs there), refuse a stranger's port, else start one."""
    pids = pid_file(port, state_dir)
    pid = _read_pid(pids)
    if pid is not None and _is_our_server(pid, port) and not reset:
        try:
            what = f", seeded from {seeded_file(port, state_dir).read_text().strip()}"
        except OSError:
            what = ""
        raise SandboxError(
            f"a sandbox is already running on port {port} (pid {pid}{what}); pass --reset to empty and reseed it, "
            f"--port with another port, or stop it with ket-infra sandbox down --port {port}"
        )
    if pid is not None and _is_our_server(pid, port):
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers(port) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _answers(port):
            _reset(port)
            progress(f"reusing sandbox on {endpoint(port)} (pid {pid}); state reset")
            return
        raise SandboxError(
            f"the sandbox (pid {pid}) does not answer on port {port}; "
            f"run `ket-infra sandbox down --port {port}` and retry"
        )
    if pid is not None:
        pids.unlink(missing_ok=True)  # stale: that process is gone
    if _port_open(port):
        raise SandboxError(f"port {port} is in use by another program; pass --port with a free port")
    _start(port, state_dir, progress)


# --- what the sandbox refuses as AWS does (ket_infra.sandbox_aws) ------------------------------------


def configure(port: int, behaviours: Behaviours) -> Behaviours:
    """Set the AWS behaviours the sandbox on PORT enforces; what it enforces now."""
    body = json.dumps(dataclasses.asdict(behaviours)).encode()
    req = urllib.request.Request(f"{endpoint(port)}{CONFIG_PATH}", data=body, method="POST")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            doc = json.loads(resp.read())
    except (OSError, ValueError) as exc:
        raise SandboxError(
            f"cannot set the sandbox's AWS behaviours on port {port} ({exc}); "
            f"run `ket-infra sandbox down --port {port}` and retry"
        ) from None
    now = Behaviours()
    now.update(doc["behaviours"])
    return now


def refusals(port: int) -> dict[str, int]:
    """How often the sandbox on PORT refused, by error code, since it was last reset."""
    with urllib.request.urlopen(f"{endpoint(port)}{CONFIG_PATH}", timeout=10) as resp:
        return {str(k): int(v) for k, v in json.loads(resp.read())["refused"].items()}


# --- seeding -----------------------------------------------------------------------------------------


def _ec2(port: int) -> Any:
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
    config = Config(retries={"mode": "standard", "max_attempts": 2}, connect_timeout=5, read_timeout=60)
    return session.client("ec2", endpoint_url=endpoint(port), config=config)


def image_id(ec2: Any) -> str:
    """An AMI moto knows: an Amazon Linux 2 x86_64 one (a filtered query; listing all AMIs takes seconds)."""
    images = (
        ec2.describe_images(
            Filters=[{"Name": "name", "Values": ["amzn2-ami-hvm-*"]}, {"Name": "architecture", "Values": ["x86_64"]}]
        )["Images"]
        or ec2.describe_images(Owners=["amazon"])["Images"]
    )
    if not images:
        raise SandboxError("the sandbox offers no AMI to start instances from; upgrade moto (moto[server]>=5.2.5)")
    return str(min(i["ImageId"] for i in images))


def _tags(kind: str, name: str, **extra: str) -> list[dict[str, Any]]:
    tags = [{"Key": "Name", "Value": name}, *({"Key": k, "Value": v} for k, v in extra.items())]
    return [{"ResourceType": kind, "Tags": tags}]


# --- seeding like the tools that build KET clusters on AWS ------------------------------------------
#
# `sandbox up --like TOOL` leaves the security groups, rules and instance settings TOOL leaves, so that
# moving a cluster off those groups can be rehearsed. What each tool does is read from its source.

LIKE_KISMATIC_PROVISION = "kismatic-provision"
LIKE_KOPS = "kops"
LIKE_CHOICES: tuple[str, ...] = (LIKE_KISMATIC_PROVISION, LIKE_KOPS)

# kismatic-provision, KET's own AWS provisioner: github.com/apprenda/kismatic-provision, tag v1.13.0
# (commit 1e9fac76a88492806a841b40a054ce8a8159a79b), provision/aws/client.go:
# - MaybeProvisionSGs(vpc) takes the first group of the VPC it has just created, `a.SecurityGroups[0]`
#   (the VPC's default group: its CreateSecurityGroupInput "Kismatic Wide Open SG" is commented out),
#   opens it with `AuthorizeSecurityGroupIngressInput{IpProtocol: aws.String("-1"), ...,
#   CidrIp: aws.String("0.0.0.0/0")}` ("Opening new SG to all incoming traffic"), keeps the default
#   group's all-outbound rule, tags it ProvisionedBy=Kismatic and
#   `c.TagResourceName(a.SecurityGroups[0].GroupId, "Kismatic Wide Open SG")`;
# - CreateNode launches every node with `Groups: []*string{aws.String(c.Config.SecurityGroupID)}`,
#   that group, then `ModifyInstanceAttributeInput{..., SourceDestCheck: &ec2.AttributeBooleanValue{
#   Value: aws.Bool(false)}}`.
# The same provisioner is vendored in github.com/apprenda/kismatic as pkg/provision/aws/client.go
# (commit 139a94d9, "Integrated kismatic provisioner").
KISMATIC_GROUP_NAME = "default"  # the VPC's default group, which AWS does not let anyone rename
KISMATIC_GROUP_TAG = "Kismatic Wide Open SG"

# kops: github.com/kubernetes/kops, tag v1.10.0 (commit 8b52ea6d1cac6913cb2fa8edda6e054a6fdc5f27).
# - pkg/model/names.go SecurityGroupName: `"nodes." + b.ClusterName()`, `"masters." + b.ClusterName()`;
#   the masters group is on the master instance groups (where kops runs etcd), the nodes group on the
#   node instance groups.
# - pkg/model/firewall.go: groups "Security group for masters" / "Security group for nodes" tagged
#   `b.CloudTags(*t.Name, false)` (Name, KubernetesCluster, kubernetes.io/cluster/NAME=owned);
#   "master-egress" / "node-egress" all to 0.0.0.0/0 (the egress rule AWS gives a new group);
#   "all-master-to-master", "all-master-to-node" and "all-node-to-node" (all traffic, group sources);
#   applyNodeToMasterBlockSpecificPorts: `udpRanges := []portRange{{From: 1, To: 65535}}` and tcp
#   1-65535 without `tcpBlocked[4001]`, `[4002]` ("Don't allow nodes to access etcd client port"),
#   `[2380]`, `[2381]` ("... etcd peer port"), as ranges "node-to-master-tcp-FROM-TO"; protocol 4
#   and tcp 4001 are added only for kops' own Calico, Romana, Cilium or kube-router networking, which
#   a cluster whose CNI KET installs does not use (kops `networking: cni`).
#   kops v1.36.2 (pkg/model/awsmodel/firewall.go, commit f336152672adaa587e543387d01f8c5da04ebbe9)
#   blocks the same four ports by default (wellknownports 4001, 4002, 2380, 2381).
# - pkg/model/external_access.go: "ssh-external-to-master-CIDR" and "ssh-external-to-node-CIDR"
#   (tcp 22) for each `Cluster.Spec.SSHAccess`, "https-external-to-master-CIDR" (tcp 443) for each
#   `Cluster.Spec.KubernetesAPIAccess` when the API has no load balancer; cmd/kops/create_cluster.go
#   defaults both from `o.AdminAccess = []string{"0.0.0.0/0"}`.
# kops leaves the source/destination check as AWS sets it (on).
KOPS_NODE_TO_MASTER: tuple[tuple[str, int, int], ...] = (
    ("tcp", 1, 2379),
    ("tcp", 2382, 4000),
    ("tcp", 4003, 65535),
    ("udp", 1, 65535),
)
KOPS_MASTER_ROLES = frozenset({"etcd", "master"})
ANYWHERE = "0.0.0.0/0"


@dataclass(frozen=True)
class ForeignGroup:
    """A security group `--like` seeded: not ket-infra's, carried by the cluster's instances."""

    name: str  # GroupName
    group_id: str
    tag: str  # its Name tag
    hosts: tuple[str, ...]  # the plan nodes whose instances carry it


@dataclass(frozen=True)
class Seeded:
    """What `seed` created."""

    vpc_id: str
    vpc_net: ipaddress.IPv4Network
    subnets: int
    instances: int
    like: str | None = None
    groups: tuple[ForeignGroup, ...] = ()

    def summary(self) -> str | None:
        """The progress line saying what `like` seeded (None without `like`)."""
        if self.like == LIKE_KISMATIC_PROVISION:
            (group,) = self.groups
            n = len(group.hosts)
            return (
                f"seeded like {self.like}: group {group.name} ({group.group_id}, Name {json.dumps(group.tag)}) open to all "
                f"traffic from {ANYWHERE} on {n} instance{'s' * (n != 1)}, source/dest check off"
            )
        if self.like == LIKE_KOPS:
            masters, nodes = self.groups
            ranges = ", ".join(f"{p} {a}-{b}" for p, a, b in KOPS_NODE_TO_MASTER)
            return (
                f"seeded like {self.like}: group {masters.name} ({masters.group_id}) on {len(masters.hosts)} "
                f"etcd/master instance{'s' * (len(masters.hosts) != 1)}, group {nodes.name} ({nodes.group_id}) "
                f"on {len(nodes.hosts)} other instance{'s' * (len(nodes.hosts) != 1)}; all traffic "
                f"masters<-masters, nodes<-masters, nodes<-nodes; {ranges} masters<-nodes; "
                f"tcp 22 from {ANYWHERE} to both, tcp 443 from {ANYWHERE} to masters"
            )
        return None


def check_like(like: str | None) -> None:
    if like is not None and like not in LIKE_CHOICES:
        raise SandboxError(f"--like: unknown value {like!r}; choose one of {', '.join(LIKE_CHOICES)}")


def _cidr_rule(protocol: str, from_port: int | None, to_port: int | None, cidr: str) -> dict[str, Any]:
    rule: dict[str, Any] = {"IpProtocol": protocol, "IpRanges": [{"CidrIp": cidr}]}
    if from_port is not None:
        rule.update(FromPort=from_port, ToPort=to_port)
    return rule


def _group_rule(protocol: str, from_port: int | None, to_port: int | None, group_id: str) -> dict[str, Any]:
    rule: dict[str, Any] = {"IpProtocol": protocol, "UserIdGroupPairs": [{"GroupId": group_id}]}
    if from_port is not None:
        rule.update(FromPort=from_port, ToPort=to_port)
    return rule


def _kismatic_provision_groups(ec2: Any, vpc_id: str, plan: Plan) -> tuple[dict[str, str], tuple[ForeignGroup, ...]]:
    """The VPC's default group opened to all traffic from 0.0.0.0/0, for every node (see KISMATIC_GROUP_TAG)."""
    groups = ec2.describe_security_groups(
        Filters=[
            {"Name": "vpc-id", "Values": [vpc_id]},
            {"Name": "group-name", "Values": [KISMATIC_GROUP_NAME]},
        ]
    )["SecurityGroups"]
    if len(groups) != 1:
        raise SandboxError(f"the sandbox VPC {vpc_id} has {len(groups)} default security groups, expected 1")
    group_id = str(groups[0]["GroupId"])
    ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[_cidr_rule("-1", None, None, ANYWHERE)])
    ec2.create_tags(
        Resources=[group_id],
        Tags=[{"Key": "Name", "Value": KISMATIC_GROUP_TAG}, {"Key": "ProvisionedBy", "Value": "Kismatic"}],
    )
    hosts = tuple(n.host for n in plan.nodes)
    return dict.fromkeys(hosts, group_id), (ForeignGroup(KISMATIC_GROUP_NAME, group_id, KISMATIC_GROUP_TAG, hosts),)


def _kops_groups(ec2: Any, vpc_id: str, plan: Plan) -> tuple[dict[str, str], tuple[ForeignGroup, ...]]:
    """kops' masters.CLUSTER and nodes.CLUSTER groups and rules (see KOPS_NODE_TO_MASTER)."""
    cluster_tags = {"KubernetesCluster": plan.cluster, f"kubernetes.io/cluster/{plan.cluster}": "owned"}
    ids: dict[str, str] = {}
    for kind in ("masters", "nodes"):
        name = f"{kind}.{plan.cluster}"
        ids[kind] = ec2.create_security_group(
            GroupName=name,
            Description=f"Security group for {kind}",
            VpcId=vpc_id,
            TagSpecifications=_tags("security-group", name, **cluster_tags),
        )["GroupId"]
    masters, nodes = ids["masters"], ids["nodes"]
    ec2.authorize_security_group_ingress(
        GroupId=masters,
        IpPermissions=[
            _group_rule("-1", None, None, masters),  # all-master-to-master
            *(_group_rule(p, a, b, nodes) for p, a, b in KOPS_NODE_TO_MASTER),  # node-to-master-*
            _cidr_rule("tcp", 22, 22, ANYWHERE),  # ssh-external-to-master-0.0.0.0/0
            _cidr_rule("tcp", 443, 443, ANYWHERE),  # https-external-to-master-0.0.0.0/0
        ],
    )
    ec2.authorize_security_group_ingress(
        GroupId=nodes,
        IpPermissions=[
            _group_rule("-1", None, None, masters),  # all-master-to-node
            _group_rule("-1", None, None, nodes),  # all-node-to-node
            _cidr_rule("tcp", 22, 22, ANYWHERE),  # ssh-external-to-node-0.0.0.0/0
        ],
    )
    on = {n.host: masters if n.roles & KOPS_MASTER_ROLES else nodes for n in plan.nodes}
    found = tuple(
        ForeignGroup(
            f"{kind}.{plan.cluster}", ids[kind], f"{kind}.{plan.cluster}", tuple(h for h in on if on[h] == gid)
        )
        for kind, gid in ids.items()
    )
    return on, found


def seed(port: int, plan: Plan, like: str | None = None) -> Seeded:
    """Create the plan's VPC, subnets and instances, and with LIKE the groups and settings that tool leaves.

    Without LIKE the instances are in the VPC's default group (no ingress rule in the sandbox).
    """
    from botocore.exceptions import BotoCoreError, ClientError

    check_like(like)
    vpc_net, subnet_nets = network_for(plan)
    ec2 = _ec2(port)
    groups: tuple[ForeignGroup, ...] = ()
    try:
        vpc_id = ec2.create_vpc(CidrBlock=str(vpc_net), TagSpecifications=_tags("vpc", f"ket-{plan.cluster}"))["Vpc"][
            "VpcId"
        ]
        subnet_ids: dict[ipaddress.IPv4Network, str] = {}
        for net in subnet_nets:
            subnet = ec2.create_subnet(
                VpcId=vpc_id,
                CidrBlock=str(net),
                AvailabilityZone=f"{REGION}a",
                TagSpecifications=_tags("subnet", f"ket-{plan.cluster}-{net.network_address}"),
            )["Subnet"]
            subnet_ids[net] = subnet["SubnetId"]
        group_of: dict[str, str] = {}
        if like == LIKE_KISMATIC_PROVISION:
            group_of, groups = _kismatic_provision_groups(ec2, vpc_id, plan)
        elif like == LIKE_KOPS:
            group_of, groups = _kops_groups(ec2, vpc_id, plan)
        image = image_id(ec2)
        for node in plan.nodes:
            addr = ipaddress.IPv4Address(node.address)
            net = next(n for n in subnet_nets if addr in n)
            instance = ec2.run_instances(
                ImageId=image,
                InstanceType=INSTANCE_TYPE,
                MinCount=1,
                MaxCount=1,
                SubnetId=subnet_ids[net],
                PrivateIpAddress=str(addr),
                TagSpecifications=_tags("instance", node.host),
            )["Instances"][0]
            if node.host in group_of:
                # Launching in a group and putting it on the interface right after are one thing to AWS.
                # moto, though, keeps launch groups on the instance's primary interface for good (its
                # groups are the interface's and the instance's together): then no one could take them
                # off, as AWS lets ket-infra's detach_groups do.
                ec2.modify_network_interface_attribute(
                    NetworkInterfaceId=instance["NetworkInterfaces"][0]["NetworkInterfaceId"],
                    Groups=[group_of[node.host]],
                )
            if like == LIKE_KISMATIC_PROVISION:
                ec2.modify_instance_attribute(InstanceId=instance["InstanceId"], SourceDestCheck={"Value": False})
    except (BotoCoreError, ClientError) as exc:
        raise SandboxError(
            f"seeding the sandbox on port {port} failed: {exc}; see {endpoint(port)} and the sandbox log"
        ) from None
    return Seeded(vpc_id, vpc_net, len(subnet_nets), len(plan.nodes), like, groups)


# --- the environment file ----------------------------------------------------------------------------


def _yaml_name(name: str) -> str:
    """NAME as a YAML flow-sequence item: bare when plain letters, digits, dots, dashes; else quoted."""
    return name if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) else json.dumps(name)


def environment_text(
    plan_file: str,
    port: int,
    installer: ipaddress.IPv4Address,
    like: str | None = None,
    groups: Sequence[ForeignGroup] = (),
    rules_quota: int = RULES_PER_GROUP,
) -> str:
    """The sandbox environment file (DESIGN.md "Environment file"); with LIKE, comments naming GROUPS;
    a RULES_QUOTA other than AWS's default as the environment's rules_per_group_quota."""
    q = json.dumps  # a JSON string is a valid YAML string
    lines = [
        "# The ket-infra sandbox: a moto server on 127.0.0.1 seeded from the plan file.",
        "# Written by `ket-infra sandbox up`; rewritten on every run.",
        f"plan_file: {q(plan_file)}   # relative to this file",
        "aws:",
        f"  region: {REGION}",
        f'  account_id: "{ACCOUNT_ID}"     # moto\'s default account',
        f"  endpoint_url: {endpoint(port)}",
        "terraform:",
        "  binary: terraform",
        "  backend: {type: local}",
    ]
    plugin_dir = os.environ.get(PLUGIN_DIR_VAR)
    if plugin_dir:
        lines.append(f"  plugin_dir: {q(str(Path(plugin_dir).resolve()))}   # from ${PLUGIN_DIR_VAR}")
    lines += [
        "# The installer (where `kismatic install apply` runs) stands here as an address",
        "# inside the sandbox VPC that no node uses: the VPC's network address + 5.",
        f"installer_cidr: {installer}/32",
    ]
    if rules_quota != RULES_PER_GROUP:
        lines.append(f"rules_per_group_quota: {rules_quota}   # the sandbox emulates this raised quota")
    if like is not None and groups:
        names = ", ".join(f"{_yaml_name(g.name)} ({g.group_id}, Name {q(g.tag)})" for g in groups)
        lines += [
            f"# Seeded like {like}: the cluster's instances carry {'this group' if len(groups) == 1 else 'these groups'}"
            " of that tool,",
            f"# not ket-infra's: {names}.",
            f"# `detach_groups: [{', '.join(_yaml_name(g.name) for g in groups)}]` moves the cluster off "
            f"{'it' if len(groups) == 1 else 'them'}.",
        ]
    return "\n".join(lines) + "\n"


def write_environment(
    env_file: Path,
    plan_path: Path,
    port: int,
    installer: ipaddress.IPv4Address,
    like: str | None = None,
    groups: Sequence[ForeignGroup] = (),
    rules_quota: int = RULES_PER_GROUP,
) -> Path:
    env_file.parent.mkdir(parents=True, exist_ok=True)
    rel = os.path.relpath(plan_path.resolve(), env_file.parent.resolve())
    env_file.write_text(environment_text(Path(rel).as_posix(), port, installer, like, groups, rules_quota))
    return env_file


# --- the commands ------------------------------------------------------------------------------------


def sandbox_up(
    plan_path: Path,
    port: int = 5000,
    env_file: Path | None = None,
    state_dir: Path | None = None,
    progress: Callable[[str], None] = print,
    like: str | None = None,
    behaviours: Behaviours | None = None,
    reset: bool = True,
) -> Path:
    """Start (or reset) the sandbox on PORT, seed it from PLAN_PATH, write its environment file; return that path.

    LIKE ("kismatic-provision" or "kops") also seeds the security groups and settings that tool leaves.
    BEHAVIOURS: what the sandbox refuses as AWS does (sandbox_aws.Behaviours, its defaults when None).
    Seeding stands for what was made long before ket-infra runs: it waits out the consistency delay.
    RESET false: a sandbox already running on PORT is refused rather than emptied (the CLI's default).
    """
    check_like(like)
    plan_path = Path(plan_path)
    plan = load_plan(plan_path)
    vpc_net, _ = network_for(plan)  # refuse a plan that cannot be seeded before starting anything
    installer = installer_address(vpc_net, plan)
    state = Path(state_dir) if state_dir is not None else default_state_dir()
    _ensure_server(port, state, progress, reset)
    enforced = configure(port, behaviours or Behaviours())
    progress(f"refusing what AWS refuses: {enforced.summary()}")
    seeded = seed(port, plan, like)
    time.sleep(enforced.consistency_delay)
    subnets, instances = seeded.subnets, seeded.instances
    progress(
        f"seeded VPC {seeded.vpc_id} ({seeded.vpc_net}) with {subnets} subnet{'s' * (subnets != 1)}"
        f" and {instances} instance{'s' * (instances != 1)}"
    )
    summary = seeded.summary()
    if summary is not None:
        progress(summary)
    path = write_environment(
        env_file if env_file is not None else DEFAULT_ENV_FILE,
        plan_path,
        port,
        installer,
        like,
        seeded.groups,
        enforced.rules_quota,
    )
    progress(f"wrote {path}")
    seeded_file(port, state).write_text(f"{plan_path} (environment file {path})\n")
    return path


def _stop_pid(pid: int) -> None:
    """SIGTERM, wait up to STOP_TIMEOUT, then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + STOP_TIMEOUT
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)


def sandbox_down(port: int = 5000, state_dir: Path | None = None) -> bool:
    """Stop the sandbox on PORT and remove its files (pid, log: the log only ever explains a failed start,
    which sandbox up reports with its tail); False when none was running."""
    state = Path(state_dir) if state_dir is not None else default_state_dir()
    pids = pid_file(port, state)
    pid = _read_pid(pids)
    running = pid is not None and _is_our_server(pid, port)
    if running:
        assert pid is not None
        _stop_pid(pid)
    for path in (pids, log_file(port, state), seeded_file(port, state)):
        path.unlink(missing_ok=True)
    return running
