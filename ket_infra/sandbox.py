"""The local AWS sandbox: a moto server on 127.0.0.1, seeded from a KET plan file.

`sandbox_up` starts (or reuses and resets) `python -m ket_infra.sandbox_server`
in the background, creates the VPC, subnets and one running instance per plan
node at the node's address, and writes an environment file pointing at it,
so that `ket-infra plan/apply/verify --env sandbox` run against it with the
real Terraform CLI. `sandbox_down` stops it.

The server's pid is kept in `STATE_DIR/sandbox-PORT.pid` and its output in
`STATE_DIR/sandbox-PORT.log`. Only the boto3 clients made here get the
"testing" credentials; the process environment is never changed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ket_infra.errors import KetInfraError
from ket_infra.plan import Plan, load_plan

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


def _ensure_server(port: int, state_dir: Path, progress: Callable[[str], None]) -> None:
    """A running, empty sandbox on PORT: reuse ours (reset), refuse a stranger's port, else start one."""
    pids = pid_file(port, state_dir)
    pid = _read_pid(pids)
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


def _tags(kind: str, name: str) -> list[dict[str, Any]]:
    return [{"ResourceType": kind, "Tags": [{"Key": "Name", "Value": name}]}]


def seed(port: int, plan: Plan) -> tuple[str, ipaddress.IPv4Network, int, int]:
    """Create the plan's VPC, subnets and instances; returns (vpc id, CIDR, #subnets, #instances)."""
    from botocore.exceptions import BotoCoreError, ClientError

    vpc_net, subnet_nets = network_for(plan)
    ec2 = _ec2(port)
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
        image = image_id(ec2)
        for node in plan.nodes:
            addr = ipaddress.IPv4Address(node.address)
            net = next(n for n in subnet_nets if addr in n)
            ec2.run_instances(
                ImageId=image,
                InstanceType=INSTANCE_TYPE,
                MinCount=1,
                MaxCount=1,
                SubnetId=subnet_ids[net],
                PrivateIpAddress=str(addr),
                TagSpecifications=_tags("instance", node.host),
            )
    except (BotoCoreError, ClientError) as exc:
        raise SandboxError(
            f"seeding the sandbox on port {port} failed: {exc}; see {endpoint(port)} and the sandbox log"
        ) from None
    return vpc_id, vpc_net, len(subnet_nets), len(plan.nodes)


# --- the environment file ----------------------------------------------------------------------------


def environment_text(plan_file: str, port: int, installer: ipaddress.IPv4Address) -> str:
    """The sandbox environment file (DESIGN.md "Environment file")."""
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
    return "\n".join(lines) + "\n"


def write_environment(env_file: Path, plan_path: Path, port: int, installer: ipaddress.IPv4Address) -> Path:
    env_file.parent.mkdir(parents=True, exist_ok=True)
    rel = os.path.relpath(plan_path.resolve(), env_file.parent.resolve())
    env_file.write_text(environment_text(Path(rel).as_posix(), port, installer))
    return env_file


# --- the commands ------------------------------------------------------------------------------------


def sandbox_up(
    plan_path: Path,
    port: int = 5000,
    env_file: Path | None = None,
    state_dir: Path | None = None,
    progress: Callable[[str], None] = print,
) -> Path:
    """Start (or reset) the sandbox on PORT, seed it from PLAN_PATH, write its environment file; return that path."""
    plan_path = Path(plan_path)
    plan = load_plan(plan_path)
    vpc_net, _ = network_for(plan)  # refuse a plan that cannot be seeded before starting anything
    installer = installer_address(vpc_net, plan)
    _ensure_server(port, Path(state_dir) if state_dir is not None else default_state_dir(), progress)
    vpc_id, vpc_net, subnets, instances = seed(port, plan)
    progress(
        f"seeded VPC {vpc_id} ({vpc_net}) with {subnets} subnet{'s' * (subnets != 1)}"
        f" and {instances} instance{'s' * (instances != 1)}"
    )
    path = write_environment(env_file if env_file is not None else DEFAULT_ENV_FILE, plan_path, port, installer)
    progress(f"wrote {path}")
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
    """Stop the sandbox on PORT; False when none was running."""
    pids = pid_file(port, Path(state_dir) if state_dir is not None else default_state_dir())
    pid = _read_pid(pids)
    running = pid is not None and _is_our_server(pid, port)
    if running:
        assert pid is not None
        _stop_pid(pid)
    pids.unlink(missing_ok=True)
    return running
