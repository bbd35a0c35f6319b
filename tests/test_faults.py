"""Faults a pipeline run meets: Terraform killed during apply (the rerun adopts
what it left out of the state and converges), resources removed by hand before
destroy, the endpoint going away between runs, and AWS throttling.

End to end against the sandbox (real Terraform CLI and AWS provider), except the
throttling test, which runs in-process under moto's mock_aws.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ket_infra.sandbox import sandbox_down
from tests.conftest import EXAMPLES, base_plan, write_yaml
from tests.test_e2e import TAG, Sandbox, one_line_error
from tests.tf import needs_terraform, terraform

CONTIV = EXAMPLES / "contiv.yaml"
CONTIV_GROUPS = {"analytics-etcd", "analytics-master", "analytics-storage", "analytics-worker"}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    box = Sandbox(tmp_path_factory.mktemp("faults"))
    yield box
    sandbox_down(box.port, box.root / ".work")


def work_folder(box: Sandbox) -> Path:
    return box.root / ".work" / "sandbox"


def fresh(box: Sandbox) -> Path:
    """An empty sandbox seeded from CONTIV and a work folder without state, whatever ran before in this module:
    cheaper than a destroy, and the same start (the reset sandbox holds nothing the state could name)."""
    box.up(CONTIV, preflight=False)
    work = work_folder(box)
    for name in ("terraform.tfstate", "terraform.tfstate.backup", "terraform.tfstate.detached-groups.json"):
        (work / name).unlink(missing_ok=True)
    return work


def terraform_pids(work: Path) -> list[int]:
    """Terraform (and its provider plugins) running in WORK: processes this test started, found via /proc."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            argv0 = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if Path(cwd) == work and Path(argv0).name.startswith("terraform"):
            pids.append(int(entry.name))
    return pids


def tagged_rules(box: Sandbox) -> list[dict[str, Any]]:
    pages = box.client().get_paginator("describe_security_group_rules").paginate()
    return [r for page in pages for r in page["SecurityGroupRules"] if any(t["Key"] == TAG for t in r.get("Tags", []))]


def state_list(work: Path) -> list[str]:
    result = terraform("state", "list", cwd=work)
    return result.stdout.split() if result.returncode == 0 else []


def ket_groups_by_node(box: Sandbox) -> dict[str, list[str]]:
    ours = {g["GroupId"] for g in box.ket_groups()}
    enis = box.client().describe_network_interfaces()["NetworkInterfaces"]
    return {e["PrivateIpAddress"]: [g["GroupId"] for g in e["Groups"] if g["GroupId"] in ours] for e in enis}


def assert_converged(box: Sandbox) -> None:
    names = [g["GroupName"] for g in box.ket_groups()]
    assert sorted(names) == sorted(CONTIV_GROUPS), names  # exactly these, no duplicates
    by_node = ket_groups_by_node(box)
    assert len(by_node) == 5
    assert all(len(groups) == 1 for groups in by_node.values()), by_node
    rule_names = [next(t["Value"] for t in r["Tags"] if t["Key"] == "Name") for r in tagged_rules(box)]
    assert len(rule_names) == len(set(rule_names)), "a rule exists twice"


@needs_terraform
@pytest.mark.e2e
def test_ctrl_c_during_apply_leaves_the_state_whole(sandbox: Sandbox) -> None:
    """Ctrl-C mid-apply: the apply is let finish, the state holds all it made, the next run adopts nothing."""
    work = fresh(sandbox)
    cmd, env = sandbox.command("apply", "--auto-approve")
    proc = subprocess.Popen(cmd, cwd=sandbox.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seen: list[str] = []
    for line in proc.stderr:  # progress is on stderr
        seen.append(line)
        if line.startswith("terraform apply tfplan"):
            break
    deadline = time.monotonic() + 60
    while not sandbox.ket_groups() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = proc.poll() is None
    proc.send_signal(signal.SIGINT)  # as a terminal's Ctrl-C reaches ket-infra
    out, err = proc.communicate(timeout=300)
    assert alive, f"the apply ended before the interrupt: {''.join(seen)}{out}{err}"
    assert proc.returncode == 130, "".join(seen) + out + err
    assert err.splitlines()[-1] == (
        f"error: interrupted by SIGINT: terraform apply in {work} was let finish (exit 0), so its state is whole, "
        "and nothing after it ran; run the same ket-infra command for environment sandbox again, it converges"
    ), err
    assert "Traceback" not in err
    assert not terraform_pids(work), "Terraform outlived ket-infra"
    in_state = {a for a in state_list(work) if "security_group" in a}
    made = len(sandbox.ket_groups()) + len(tagged_rules(sandbox))
    assert made == len(in_state), f"AWS has {made} resources, the state {len(in_state)}: {err}"

    rerun = sandbox.run("apply", "--auto-approve")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert not [ln for ln in rerun.stderr.splitlines() if ln.startswith("adopting ")], rerun.stderr
    assert_converged(sandbox)


@needs_terraform
@pytest.mark.e2e
def test_terraform_killed_during_apply_then_rerun_converges(sandbox: Sandbox) -> None:
    work = fresh(sandbox)
    cmd, env = sandbox.command("apply", "--auto-approve")
    proc = subprocess.Popen(cmd, cwd=sandbox.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("terraform apply tfplan"):
                break
        assert seen and seen[-1].startswith("terraform apply tfplan"), "".join(seen)
        deadline = time.monotonic() + 60
        while not sandbox.ket_groups() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        alive = proc.poll() is None
        killed = terraform_pids(work)
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        rest = proc.communicate(timeout=60)[0]
    time.sleep(0.5)  # let requests already sent by the killed provider land
    assert alive and killed, f"the apply ended before the kill: {''.join(seen)}{rest}"
    # What the cloud has that the state lacks: the rerun must adopt it. Terraform writes the
    # local state when the apply ends, so a kill while groups are being made leaves orphans.
    managed = state_list(work)
    in_state = sum(1 for a in managed if ".aws_security_group." in a or "_security_group_" in a)
    in_aws = len(sandbox.ket_groups()) + len(tagged_rules(sandbox))
    orphans = in_aws - in_state
    assert orphans > 0, f"nothing was left out of the state: {in_aws} made, {managed}"

    rerun = sandbox.run("apply", "--auto-approve")
    out = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, f"killed {killed}; first run: {''.join(seen)}{rest}\nrerun: {out}"
    adopted = [ln for ln in rerun.stderr.splitlines() if ln.startswith("adopting ")]
    assert len(adopted) == 1, out
    assert adopted[0].startswith("adopting "), adopted
    assert int(adopted[0].split()[1]) > 0, adopted
    assert "missing from the Terraform state" in adopted[0] and "instead of creating duplicates" in adopted[0]
    assert "Duplicate" not in out
    assert_converged(sandbox)

    again = sandbox.run("plan", "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr
    assert not (work / "imports.tf").exists()  # nothing left to adopt: normal runs render no import blocks
    verified = sandbox.run("verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


@needs_terraform
@pytest.mark.e2e
def test_destroy_after_resources_were_removed_by_hand(sandbox: Sandbox) -> None:
    with socket.socket() as probe:
        running = probe.connect_ex(("127.0.0.1", sandbox.port)) == 0
    if not running or sorted(g["GroupName"] for g in sandbox.ket_groups()) != sorted(CONTIV_GROUPS):  # on its own
        sandbox.up(CONTIV, preflight=False)
        applied = sandbox.run("apply", "--auto-approve")
        assert applied.returncode == 0, applied.stdout + applied.stderr
    ec2 = sandbox.client()
    rules = sorted(tagged_rules(sandbox), key=lambda r: r["SecurityGroupRuleId"])
    for r in [x for x in rules if not x["IsEgress"]][:2]:
        ec2.revoke_security_group_ingress(GroupId=r["GroupId"], SecurityGroupRuleIds=[r["SecurityGroupRuleId"]])
    for r in [x for x in rules if x["IsEgress"]][:2]:
        ec2.revoke_security_group_egress(GroupId=r["GroupId"], SecurityGroupRuleIds=[r["SecurityGroupRuleId"]])
    ours = {g["GroupId"] for g in sandbox.ket_groups()}
    eni = next(
        e for e in ec2.describe_network_interfaces()["NetworkInterfaces"] if e["PrivateIpAddress"] == "10.2.1.31"
    )
    keep = [g["GroupId"] for g in eni["Groups"] if g["GroupId"] not in ours]
    assert keep, eni  # the VPC's default group stays: an interface needs one
    ec2.modify_network_interface_attribute(NetworkInterfaceId=eni["NetworkInterfaceId"], Groups=keep)

    destroyed = sandbox.run("destroy", "--auto-approve")
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    assert sandbox.ket_groups() == []
    assert tagged_rules(sandbox) == []
    assert all(groups == [] for groups in ket_groups_by_node(sandbox).values())


@needs_terraform
@pytest.mark.e2e
def test_endpoint_gone_between_runs(tmp_path: Path) -> None:
    box = Sandbox(tmp_path)  # its own server: stopping it must not disturb the module's sandbox
    small = write_yaml(tmp_path / "small.yaml", base_plan({"provider": "contiv"}))  # 3 nodes: a short plan
    try:
        box.up(small, preflight=False)
        first = box.run("plan")
        assert first.returncode == 0, first.stdout + first.stderr
    finally:
        sandbox_down(box.port, box.root / ".work")
    line = one_line_error(box.run("plan"))
    assert f"cannot reach http://127.0.0.1:{box.port}" in line, line
    assert f"check {box.env_file}: aws.endpoint_url and the network" in line, line


class HeldLookup:
    """A pass-through HTTP proxy before the sandbox that holds ket-infra's next node lookup (boto3's
    DescribeInstances; Terraform's calls pass) until released: how a test acts while a run looks nodes up.

    It changes no answer, it only delays one, as a slow endpoint would.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.arrived = threading.Event()
        self.released = threading.Event()
        self.to_hold = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: Any) -> None:
                pass

            def do_POST(self) -> None:
                proxy.forward(self)

            do_GET = do_POST

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def hold_next_lookup(self) -> None:
        with self._lock:
            self.to_hold = 1
            self.arrived.clear()
            self.released.clear()

    def forward(self, request: BaseHTTPRequestHandler) -> None:
        body = request.rfile.read(int(request.headers.get("Content-Length") or 0))
        if b"Action=DescribeInstances" in body and "Boto" in request.headers.get("User-Agent", ""):
            with self._lock:
                hold = self.to_hold > 0
                self.to_hold = 0
            if hold:
                self.arrived.set()
                self.released.wait(timeout=120)
        upstream = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            skip = {"connection", "keep-alive", "proxy-connection"}
            upstream.request(
                request.command,
                request.path,
                body=body,
                headers={k: v for k, v in request.headers.items() if k.lower() not in skip},
            )
            answer = upstream.getresponse()
            data = answer.read()
        finally:
            upstream.close()
        try:
            request.send_response(answer.status, answer.reason)
            for key, value in answer.getheaders():
                if key.lower() not in {"transfer-encoding", "connection", "content-length", "server", "date"}:
                    request.send_header(key, value)
            request.send_header("Content-Length", str(len(data)))
            request.end_headers()
            request.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the asker is gone (a run that was stopped)
            request.close_connection = True

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def held(sandbox: Sandbox) -> Iterator[HeldLookup]:
    sandbox.up(CONTIV, preflight=False)
    proxy = HeldLookup(sandbox.port)
    yield proxy
    proxy.close()


def start_held(sandbox: Sandbox, held: HeldLookup, env_file: Path, *args: str) -> subprocess.Popen[str]:
    """Start `ket-infra ARGS --env ENV_FILE` and wait until its node lookup is held."""
    held.hold_next_lookup()
    cmd, env = sandbox.command(*args, env_file=env_file)
    proc = subprocess.Popen(cmd, cwd=sandbox.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not held.arrived.wait(timeout=120):
        proc.kill()
        pytest.fail("no node lookup came: " + "".join(proc.communicate(timeout=30)))
    return proc


@needs_terraform
@pytest.mark.e2e
def test_a_signal_during_the_node_lookup_stops_the_plan_started_ahead(sandbox: Sandbox, held: HeldLookup) -> None:
    """A pipeline cancelling the job (SIGTERM) or a closed terminal (SIGHUP) while plan looks the nodes up:
    the plan Terraform started ahead stops with ket-infra, its provider too, and the state lock is free."""
    env_file = sandbox.env_with("held", **{"aws.endpoint_url": held.url})
    work = sandbox.root / ".work" / "held"
    first = sandbox.run("plan", env_file=env_file)  # the folder rendered and initialised: the next plan starts ahead
    assert first.returncode == 0, first.stdout + first.stderr
    for sig in (signal.SIGTERM, signal.SIGHUP):
        proc = start_held(sandbox, held, env_file, "plan")
        try:
            deadline = time.monotonic() + 30
            while not terraform_pids(work) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert terraform_pids(work), f"{sig.name}: no plan was started ahead"
            proc.send_signal(sig)
            try:  # at once, not when the held lookup's read gives up (30 s): no other thread took the signal
                out, err = proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                pytest.fail(f"{sig.name}: the run was still going 20 s after the signal")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=30)
            held.released.set()
        assert proc.returncode == 128 + sig, out + err
        assert err.splitlines()[-1] == (
            f"error: stopped by {sig.name}; nothing ket-infra started is left running; run the same command again, "
            "it converges"
        ), err
        assert [ln for ln in err.splitlines() if ln.startswith("error: ")] == [err.splitlines()[-1]]
        assert "Traceback" not in err
        assert not terraform_pids(work), f"{sig.name}: Terraform outlived ket-infra"
    again = sandbox.run("plan", env_file=env_file)  # the state lock went with it
    assert again.returncode == 0, again.stdout + again.stderr


@needs_terraform
@pytest.mark.e2e
def test_a_second_run_of_one_environment_is_refused_while_the_first_runs(sandbox: Sandbox, held: HeldLookup) -> None:
    """Two ket-infra runs of one environment would render and plan the same folder under each other: the second
    stops at once, naming the first's pid and the folder, and changes nothing."""
    env_file = sandbox.env_with("twice", **{"aws.endpoint_url": held.url})
    work = sandbox.root / ".work" / "twice"
    first = start_held(sandbox, held, env_file, "plan")
    try:
        second = sandbox.run("render", env_file=env_file)
        assert one_line_error(second) == (
            f"error: another ket-infra run (pid {first.pid}) is working on {work}; runs of one environment "
            "cannot overlap: wait until it ends, then run this again"
        )
        assert first.poll() is None
        held.released.set()
        out, err = first.communicate(timeout=300)
    finally:
        held.released.set()
        if first.poll() is None:
            first.kill()
            first.communicate(timeout=30)
    assert first.returncode == 0, out + err
    again = sandbox.run("render", env_file=env_file)
    assert again.returncode == 0, again.stdout + again.stderr


RATE_LIMITED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>RequestLimitExceeded</Code>'
    b"<Message>Request limit exceeded.</Message></Error></Errors><RequestID>ket-infra-test</RequestID></Response>"
)


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


@pytest.mark.parametrize("status", [503, 400])
def test_throttled_describe_is_retried(status: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3
    from botocore.awsrequest import AWSResponse
    from moto import mock_aws

    from ket_infra import aws
    from ket_infra.environment import AwsConfig, Environment
    from ket_infra.plan import load_plan
    from ket_infra.sandbox import image_id
    from ket_infra.sandbox_server import patch_moto

    patch_moto()  # moto answers as the sandbox and the other moto tests see it
    monkeypatch.setattr("time.sleep", lambda _s: None)  # the backoff is botocore's: keep the test fast
    plan = load_plan(CONTIV)
    env = Environment(name="t", path="t.yaml", plan_file=CONTIV, aws=AwsConfig("eu-west-1"))
    with mock_aws():
        ec2 = boto3.client("ec2", region_name="eu-west-1")
        vpc = ec2.create_vpc(CidrBlock="10.2.1.0/24")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.2.1.0/24")["Subnet"]["SubnetId"]
        ami = image_id(ec2)
        for node in plan.nodes:
            ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, SubnetId=subnet, PrivateIpAddress=node.address)
        client = aws.client(env, "ec2")
        attempts = []

        def throttle(request: Any, **_: Any) -> AWSResponse | None:
            attempts.append(request.url)
            if len(attempts) <= 2:
                return AWSResponse(request.url, status, {"Content-Type": "text/xml"}, _Raw(RATE_LIMITED))
            return None  # on to moto

        client.meta.events.register("before-send.ec2.DescribeInstances", throttle)
        found = aws.discover(plan, env, client)
    assert len(attempts) == 3
    assert {n.host for n in found.nodes} == {n.host for n in plan.nodes}
    assert found.vpc_id == vpc


def test_orphans_adopts_only_what_the_config_wants_and_the_state_lacks() -> None:
    from ket_infra.aws import Discovery, NodeInterface, Owned, OwnedRule
    from ket_infra.workflow import orphans

    def nic(host: str, eni: str, groups: tuple[str, ...]) -> NodeInterface:
        return NodeInterface(host, "10.0.0.1", "i-1", eni, "subnet-1", "vpc-1", groups, True)

    found = Discovery(
        "vpc-1",
        (
            nic("w1", "eni-1", ("sg-def", "sg-w")),
            nic("w2", "eni-2", ("sg-def", "sg-w")),
            nic("m1", "eni-3", ("sg-old",)),
        ),
    )
    owned = Owned(
        groups={"sg-w": "worker", "sg-m": "master", "sg-old": "gone"},
        rules=(
            OwnedRule("sgr-1", "worker-in-tcp-1-from-master", "sg-w", "ingress"),
            OwnedRule("sgr-2", "master-out-tcp-1-to-worker", "sg-m", "egress"),
            OwnedRule("sgr-3", "gone-in-tcp-2-from-gone", "sg-old", "ingress"),
            OwnedRule("sgr-4", "master-in-tcp-9-from-worker", "sg-m", "ingress"),
        ),
        carried={"w1": ("sg-w",), "w2": ("sg-w",), "m1": ("sg-old",)},
    )
    wanted: dict[str, Any] = {
        "groups": {"worker": {}, "master": {}},
        "ingress_rules": {
            "worker-in-tcp-1-from-master": {"group": "worker"},
            "master-in-tcp-9-from-worker": {"group": "master"},
        },
        "egress_rules": {"master-out-tcp-1-to-worker": {"group": "master"}},
        "attachments": {
            "w1": {"group": "worker", "network_interface_id": "eni-1"},
            "w2": {"group": "worker", "network_interface_id": "eni-2"},
            "m1": {"group": "master", "network_interface_id": "eni-3"},
        },
    }
    m = "module.ket_cni_network"
    managed = {
        f'{m}.aws_security_group.this["master"]',
        f'{m}.aws_vpc_security_group_ingress_rule.this["master-in-tcp-9-from-worker"]',
        f'{m}.aws_network_interface_sg_attachment.this["w2"]',
    }
    imports, unwanted = orphans(owned, wanted, managed, found)
    assert [(i.address, i.id) for i in imports] == [
        (f'{m}.aws_security_group.this["worker"]', "sg-w"),
        (f'{m}.aws_vpc_security_group_ingress_rule.this["worker-in-tcp-1-from-master"]', "sgr-1"),
        (f'{m}.aws_vpc_security_group_egress_rule.this["master-out-tcp-1-to-worker"]', "sgr-2"),
        (f'{m}.aws_network_interface_sg_attachment.this["w1"]', "eni-1_sg-w"),
    ]
    assert unwanted == 3  # the group "gone", its rule, and m1's interface carrying it


def test_imports_tf_is_written_and_removed(tmp_path: Path) -> None:
    from ket_infra.render import IMPORTS, Import, write_imports

    path = write_imports(
        tmp_path, [Import('module.ket_cni_network.aws_security_group.this["worker"]', "sg-1", "group")]
    )
    assert path == tmp_path / IMPORTS
    assert (
        'import {\n  to = module.ket_cni_network.aws_security_group.this["worker"]\n  id = "sg-1"\n}\n'
        in path.read_text()
    )
    assert write_imports(tmp_path, []) is None and not path.exists()


def test_orphans_skip_what_the_state_has_anywhere_and_count_every_leftover() -> None:
    """What the state manages comes first in each list; duplicates (a group key or rule name made twice) and a
    node no longer in the plan are leftovers, each counted."""
    from ket_infra.aws import Discovery, NodeInterface, Owned, OwnedRule
    from ket_infra.render import attachment_address, group_address, rule_address
    from ket_infra.workflow import orphans

    def nic(host: str, eni: str, groups: tuple[str, ...]) -> NodeInterface:
        return NodeInterface(host, "10.0.0.1", "i-1", eni, "subnet-1", "vpc-1", groups, True)

    found = Discovery(
        "vpc-1", (nic("a1", "eni-a1", ("sg-a",)), nic("b1", "eni-b1", ("sg-b",)), nic("z9", "eni-z9", ("sg-c",)))
    )
    owned = Owned(
        groups={"sg-a": "master", "sg-b": "worker", "sg-c": "gone", "sg-d": "older", "sg-e": "worker"},
        rules=(
            OwnedRule("sgr-1", "master-in-tcp-1-from-worker", "sg-a", "ingress"),
            OwnedRule("sgr-2", "worker-in-tcp-2-from-master", "sg-b", "ingress"),
            OwnedRule("sgr-3", "worker-in-tcp-2-from-master", "sg-b", "ingress"),
        ),
        carried={"a1": ("sg-a",), "b1": ("sg-b",), "z9": ("sg-c",)},
    )
    wanted: dict[str, Any] = {
        "groups": {"master": {}, "worker": {}},
        "ingress_rules": {
            "master-in-tcp-1-from-worker": {"group": "master"},
            "worker-in-tcp-2-from-master": {"group": "worker"},
        },
        "egress_rules": {},
        "attachments": {
            "a1": {"group": "master", "network_interface_id": "eni-a1"},
            "b1": {"group": "worker", "network_interface_id": "eni-b1"},
        },
    }
    managed = {
        group_address("master"),
        rule_address("ingress", "master-in-tcp-1-from-worker"),
        attachment_address("a1"),
    }
    imports, unwanted = orphans(owned, wanted, managed, found)
    assert [(i.address, i.id, i.kind) for i in imports] == [
        (group_address("worker"), "sg-b", "group"),
        (rule_address("ingress", "worker-in-tcp-2-from-master"), "sgr-2", "ingress"),
        (attachment_address("b1"), "eni-b1_sg-b", "attachment"),
    ]
    # groups gone, older and the second worker; the second rule of one name; z9's interface carrying gone
    assert unwanted == 5
