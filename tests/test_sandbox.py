"""The local sandbox: a real moto server process on a free port, seeded from the example plans."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ket_infra.environment import load_environment
from ket_infra.errors import KetInfraError
from ket_infra.plan import load_plan
from ket_infra.sandbox import network_for, pid_file, sandbox_down, sandbox_up
from ket_infra.sandbox_aws import Behaviours
from tests.conftest import EXAMPLES, base_plan, free_port, node, sandbox_client

pytest.importorskip("moto.server", reason="moto[server] is not installed")

pytestmark = pytest.mark.e2e  # moto server processes; not part of the mutation runs

OVERLAY = EXAMPLES / "calico-overlay.yaml"
ROUTED = EXAMPLES / "calico-routed.yaml"


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Sandbox:
    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.state_dir = root / "state"
        self.env_file = root / "envs" / "sandbox.yaml"
        self.lines: list[str] = []

    def up(self, plan: Path, like: str | None = None, behaviours: Behaviours | None = None) -> Path:
        self.lines.clear()
        return sandbox_up(
            plan, self.port, self.env_file, self.state_dir, progress=self.lines.append, like=like, behaviours=behaviours
        )

    def ec2(self) -> Any:
        return sandbox_client(self.port)

    def instances(self) -> dict[str, tuple[str, str]]:
        """Name tag -> (private IP, subnet CIDR) of every running instance."""
        ec2 = self.ec2()
        cidrs = {s["SubnetId"]: s["CidrBlock"] for s in ec2.describe_subnets()["Subnets"]}
        out = {}
        for reservation in ec2.describe_instances()["Reservations"]:
            for inst in reservation["Instances"]:
                assert inst["State"]["Name"] == "running"
                name = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}["Name"]
                out[name] = (inst["PrivateIpAddress"], cidrs[inst["SubnetId"]])
        return out


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    box = Sandbox(tmp_path_factory.mktemp("sandbox"))
    yield box
    sandbox_down(box.port, box.state_dir)


def test_network_for_the_examples() -> None:
    vpc, subnets = network_for(load_plan(OVERLAY))
    assert (str(vpc), [str(s) for s in subnets]) == ("10.0.0.0/22", ["10.0.1.0/24", "10.0.2.0/24"])
    vpc, subnets = network_for(load_plan(ROUTED))
    assert (str(vpc), [str(s) for s in subnets]) == ("10.0.3.0/27", ["10.0.3.0/27"])


def test_network_for_refuses_what_aws_cannot_hold(plan_file: Any) -> None:
    wide = base_plan()
    wide["worker"]["nodes"] = [node("worker01", "10.1.0.31")]
    with pytest.raises(KetInfraError, match="do not fit in one /16"):
        network_for(load_plan(plan_file(wide)))
    reserved = base_plan()
    reserved["worker"]["nodes"] = [node("worker01", "10.0.1.2")]
    with pytest.raises(KetInfraError, match=r"worker01 has address 10\.0\.1\.2, which AWS reserves"):
        network_for(load_plan(plan_file(reserved)))


def test_up_seeds_the_overlay_plan(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KET_INFRA_TF_PLUGIN_DIR", str(tmp_path))
    path = sandbox.up(OVERLAY)
    assert path == sandbox.env_file
    plan = load_plan(OVERLAY)
    expected = {n.host: (n.address, str(ipaddress.ip_network(f"{n.address}/24", strict=False))) for n in plan.nodes}
    assert sandbox.instances() == expected
    vpcs = [v["CidrBlock"] for v in sandbox.ec2().describe_vpcs()["Vpcs"] if not v["IsDefault"]]
    assert vpcs == ["10.0.0.0/22"]
    assert any("seeded VPC" in line and "2 subnets and 10 instances" in line for line in sandbox.lines)
    assert sandbox.lines[-1] == f"wrote {path}"

    env = load_environment(path)
    assert env.plan_file == OVERLAY.resolve()
    assert (env.aws.region, env.aws.account_id, env.aws.endpoint_url) == (
        "eu-west-1",
        "123456789012",
        f"http://127.0.0.1:{sandbox.port}",
    )
    assert env.terraform.backend.type == "local"
    assert env.terraform.plugin_dir == str(tmp_path.resolve())
    assert env.installer_cidr == "10.0.0.5/32"
    assert pid_file(sandbox.port, sandbox.state_dir).exists()


def test_up_again_resets_and_reseeds(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KET_INFRA_TF_PLUGIN_DIR", raising=False)
    sandbox.up(OVERLAY)
    path = sandbox.up(ROUTED)
    assert any(line.startswith("reusing sandbox") for line in sandbox.lines)
    plan = load_plan(ROUTED)
    assert sandbox.instances() == {n.host: (n.address, "10.0.3.0/27") for n in plan.nodes}
    env = load_environment(path)
    assert env.plan_file == ROUTED.resolve()
    assert env.terraform.plugin_dir is None
    assert env.installer_cidr == "10.0.3.5/32"


def test_rule_description_from_a_group_source_is_kept(sandbox: Sandbox) -> None:
    """The sandbox_server patch: moto drops the description of a rule whose source is a group."""
    # it describes what it has just made: no consistency delay (tests/test_sandbox_aws.py tests that delay)
    sandbox.up(ROUTED, behaviours=Behaviours(consistency_delay=0))
    ec2 = sandbox.ec2()
    vpc = next(v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"] if not v["IsDefault"])
    target = ec2.create_security_group(GroupName="master", Description="master", VpcId=vpc)["GroupId"]
    source = ec2.create_security_group(GroupName="worker", Description="worker", VpcId=vpc)["GroupId"]
    added = ec2.authorize_security_group_ingress(
        GroupId=target,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 179,
                "ToPort": 179,
                "UserIdGroupPairs": [{"GroupId": source, "Description": "Calico BGP peering"}],
            }
        ],
    )["SecurityGroupRules"]
    assert [r.get("Description") for r in added] == ["Calico BGP peering"]

    rules = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [target]}])["SecurityGroupRules"]
    ingress = [r for r in rules if not r["IsEgress"]]
    assert [(r["ReferencedGroupInfo"]["GroupId"], r.get("Description")) for r in ingress] == [
        (source, "Calico BGP peering")
    ]
    by_id = ec2.describe_security_group_rules(SecurityGroupRuleIds=[added[0]["SecurityGroupRuleId"]])
    assert by_id["SecurityGroupRules"][0]["Description"] == "Calico BGP peering"

    group = ec2.describe_security_groups(GroupIds=[target])["SecurityGroups"][0]
    pairs = [p for perm in group["IpPermissions"] for p in perm["UserIdGroupPairs"]]
    assert [(p["GroupId"], p.get("Description")) for p in pairs] == [(source, "Calico BGP peering")]


# --- sandbox up --like --------------------------------------------------------------------------------


def like_plan(plan_file: Any) -> Path:
    """One node per role, one of them (cp01) both etcd and master, all in 10.0.1.0/24, cluster "test"."""
    data = base_plan()
    data["etcd"]["nodes"] = [node("etcd01", "10.0.1.11"), node("cp01", "10.0.1.12")]
    data["master"]["nodes"] = [node("master01", "10.0.1.21"), node("cp01", "10.0.1.12")]
    data["etcd"]["expected_count"] = data["master"]["expected_count"] = 2
    data["ingress"] = {"expected_count": 1, "nodes": [node("ingress01", "10.0.1.41")]}
    data["storage"] = {"expected_count": 1, "nodes": [node("storage01", "10.0.1.51")]}
    return Path(plan_file(data))


LIKE_HOSTS = {"etcd01", "cp01", "master01", "worker01", "ingress01", "storage01"}


def rules(perms: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """IpPermissions as sorted (protocol, from port, to port, source CIDR or group id), one per source."""
    out = []
    for p in perms:
        sources = [r["CidrIp"] for r in p.get("IpRanges", [])] + [g["GroupId"] for g in p.get("UserIdGroupPairs", [])]
        assert not p.get("Ipv6Ranges") and not p.get("PrefixListIds")
        out += [(p["IpProtocol"], p.get("FromPort"), p.get("ToPort"), source) for source in sources]
    return sorted(out)


def seeded_view(box: Sandbox) -> tuple[dict[str, dict[str, Any]], dict[str, tuple[list[str], bool]]]:
    """The sandbox VPC's groups by name ({id, tags, description, ingress, egress}) and, per instance Name tag,
    (the names of the groups on its interface, its source/dest check), as ket-infra reads them."""
    ec2 = box.ec2()
    vpc = next(v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"] if not v["IsDefault"])
    groups = {}
    for g in ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["SecurityGroups"]:
        groups[g["GroupName"]] = {
            "id": g["GroupId"],
            "tags": {t["Key"]: t["Value"] for t in g.get("Tags", [])},
            "description": g["Description"],
            "ingress": rules(g["IpPermissions"]),
            "egress": rules(g["IpPermissionsEgress"]),
        }
    instances = {}
    for reservation in ec2.describe_instances()["Reservations"]:
        for inst in reservation["Instances"]:
            name = {t["Key"]: t["Value"] for t in inst["Tags"]}["Name"]
            (eni,) = inst["NetworkInterfaces"]
            check = ec2.describe_instance_attribute(InstanceId=inst["InstanceId"], Attribute="sourceDestCheck")
            assert check["SourceDestCheck"]["Value"] == inst["SourceDestCheck"]
            instances[name] = (sorted(g["GroupName"] for g in eni["Groups"]), inst["SourceDestCheck"])
    return groups, instances


ALL_OUT = [("-1", None, None, "0.0.0.0/0")]


def test_up_without_like_leaves_the_default_group_closed(sandbox: Sandbox, plan_file: Any) -> None:
    sandbox.up(like_plan(plan_file))
    groups, instances = seeded_view(sandbox)
    assert list(groups) == ["default"]
    assert (groups["default"]["ingress"], groups["default"]["egress"], groups["default"]["tags"]) == ([], ALL_OUT, {})
    assert instances == {h: (["default"], True) for h in LIKE_HOSTS}
    assert not any(line.startswith("seeded like") for line in sandbox.lines)
    assert "detach_groups" not in sandbox.env_file.read_text()


def test_up_like_kismatic_provision(sandbox: Sandbox, plan_file: Any) -> None:
    """provision/aws/client.go: the VPC's default group opened to all from 0.0.0.0/0, source/dest check off."""
    path = sandbox.up(like_plan(plan_file), like="kismatic-provision")
    groups, instances = seeded_view(sandbox)
    assert list(groups) == ["default"]
    sg = groups["default"]
    assert sg["tags"] == {"Name": "Kismatic Wide Open SG", "ProvisionedBy": "Kismatic"}
    assert sg["ingress"] == [("-1", None, None, "0.0.0.0/0")]
    assert sg["egress"] == ALL_OUT
    assert instances == {h: (["default"], False) for h in LIKE_HOSTS}
    assert (
        f'seeded like kismatic-provision: group default ({sg["id"]}, Name "Kismatic Wide Open SG") open to all '
        "traffic from 0.0.0.0/0 on 6 instances, source/dest check off"
    ) in sandbox.lines
    text = path.read_text()
    assert "# Seeded like kismatic-provision: the cluster's instances carry this group of that tool,\n" in text
    assert f'# not ket-infra\'s: default ({sg["id"]}, Name "Kismatic Wide Open SG").\n' in text
    assert "# `detach_groups: [default]` moves the cluster off it.\n" in text
    env = load_environment(path)  # the comments leave the file as valid as before
    assert env.installer_cidr == "10.0.1.5/32"


def test_up_like_kops(sandbox: Sandbox, plan_file: Any) -> None:
    """pkg/model/firewall.go and external_access.go: masters./nodes. groups with kops' rules."""
    path = sandbox.up(like_plan(plan_file), like="kops")
    groups, instances = seeded_view(sandbox)
    assert sorted(groups) == ["default", "masters.test", "nodes.test"]
    masters, nodes = groups["masters.test"]["id"], groups["nodes.test"]["id"]
    assert groups["default"]["ingress"] == []
    assert groups["masters.test"]["ingress"] == sorted(
        [
            ("-1", None, None, masters),
            ("tcp", 1, 2379, nodes),
            ("tcp", 2382, 4000, nodes),
            ("tcp", 4003, 65535, nodes),
            ("udp", 1, 65535, nodes),
            ("tcp", 22, 22, "0.0.0.0/0"),
            ("tcp", 443, 443, "0.0.0.0/0"),
        ]
    )
    assert groups["nodes.test"]["ingress"] == sorted(
        [
            ("-1", None, None, masters),
            ("-1", None, None, nodes),
            ("tcp", 22, 22, "0.0.0.0/0"),
        ]
    )
    for kind in ("masters", "nodes"):
        g = groups[f"{kind}.test"]
        assert g["egress"] == ALL_OUT
        assert g["description"] == f"Security group for {kind}"
        assert g["tags"] == {
            "Name": f"{kind}.test",
            "KubernetesCluster": "test",
            "kubernetes.io/cluster/test": "owned",
        }
    assert instances == {
        "etcd01": (["masters.test"], True),
        "cp01": (["masters.test"], True),
        "master01": (["masters.test"], True),
        "worker01": (["nodes.test"], True),
        "ingress01": (["nodes.test"], True),
        "storage01": (["nodes.test"], True),
    }
    assert (
        f"seeded like kops: group masters.test ({masters}) on 3 etcd/master instances, group nodes.test ({nodes}) "
        "on 3 other instances; all traffic masters<-masters, nodes<-masters, nodes<-nodes; tcp 1-2379, "
        "tcp 2382-4000, tcp 4003-65535, udp 1-65535 masters<-nodes; tcp 22 from 0.0.0.0/0 to both, "
        "tcp 443 from 0.0.0.0/0 to masters"
    ) in sandbox.lines
    text = path.read_text()
    assert "# Seeded like kops: the cluster's instances carry these groups of that tool,\n" in text
    assert "# `detach_groups: [masters.test, nodes.test]` moves the cluster off them.\n" in text
    assert f'masters.test ({masters}, Name "masters.test"), nodes.test ({nodes}, Name "nodes.test")' in text

    sandbox.up(like_plan(plan_file))  # a later plain `up` resets: no kops group is left
    groups, instances = seeded_view(sandbox)
    assert list(groups) == ["default"]
    assert instances == {h: (["default"], True) for h in LIKE_HOSTS}


def test_up_refuses_an_unknown_like_before_starting(tmp_path: Path) -> None:
    port = free_port()
    with pytest.raises(
        KetInfraError, match=r"^--like: unknown value 'eksctl'; choose one of kismatic-provision, kops$"
    ):
        sandbox_up(ROUTED, port, tmp_path / "env.yaml", tmp_path / "state", progress=lambda _: None, like="eksctl")
    assert not pid_file(port, tmp_path / "state").exists()
    assert not (tmp_path / "env.yaml").exists()
    assert not port_open(port)


def test_cli_like_offers_the_two_tools() -> None:
    from click.testing import CliRunner

    from ket_infra.cli import cli

    result = CliRunner().invoke(cli, ["sandbox", "up", str(ROUTED), "--like", "eksctl"])
    assert result.exit_code == 2
    assert "'eksctl' is not one of 'kismatic-provision', 'kops'" in result.output
    help_text = CliRunner().invoke(cli, ["sandbox", "up", "--help"]).output
    assert "--like [kismatic-provision|kops]" in help_text


def test_up_refuses_a_port_taken_by_another_program(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(KetInfraError, match=f"port {port} is in use by another program; pass --port"):
            sandbox_up(ROUTED, port, tmp_path / "env.yaml", tmp_path / "state", progress=lambda _: None)
    assert not pid_file(port, tmp_path / "state").exists()
    assert not (tmp_path / "env.yaml").exists()


def test_down_stops_the_server(sandbox: Sandbox) -> None:
    sandbox.up(ROUTED)
    assert port_open(sandbox.port)
    assert sandbox_down(sandbox.port, sandbox.state_dir) is True
    assert not port_open(sandbox.port)
    assert not pid_file(sandbox.port, sandbox.state_dir).exists()
    assert sandbox_down(sandbox.port, sandbox.state_dir) is False


def test_down_without_a_sandbox_is_false(tmp_path: Path) -> None:
    assert sandbox_down(free_port(), tmp_path) is False


def test_down_finds_the_server_from_another_directory(tmp_path: Path) -> None:
    """`sandbox up` in one folder, `sandbox down --port P` in another: the pid file is not in either."""
    import os
    import subprocess
    import sys

    from tests.conftest import child_env

    port = free_port()
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    env = {**child_env(one), "XDG_RUNTIME_DIR": str(tmp_path / "run")}

    def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ket_infra", "sandbox", *args],
            cwd=cwd,
            env={**env, **child_env(cwd, env)},
            capture_output=True,
            text=True,
            timeout=120,
        )

    up = cli(one, "up", str(ROUTED), "--port", str(port), "--env-file", str(one / "sandbox.yaml"))
    assert up.returncode == 0, up.stderr
    try:
        down = cli(two, "down", "--port", str(port))
        assert (down.returncode, down.stdout) == (0, "sandbox stopped\n"), down.stderr
        assert not port_open(port)
        assert not list(one.glob("**/*.pid")) and not list(two.glob("**/*.pid"))
    finally:
        sandbox_down(port, tmp_path / "run" / f"ket-infra-{os.getuid()}")


@pytest.mark.parametrize(("command", "port"), [("up", "70000"), ("up", "0"), ("up", "-1"), ("down", "65536")])
def test_a_port_outside_1_to_65535_is_one_line(tmp_path: Path, command: str, port: str) -> None:
    """`sandbox up --port 70000` once ended in a traceback: refused before anything starts, naming --port."""
    from tests.test_cli import run

    args = [str(ROUTED), "--env-file", str(tmp_path / "env.yaml")] if command == "up" else []
    result = run("sandbox", command, *args, "--port", port, cwd=tmp_path)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"error: Invalid value for '--port': {port} is not in the range 1<=x<=65535. (see ket-infra sandbox {command} "
        "--help)\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_up_on_a_running_sandbox_is_refused_without_reset_and_down_removes_its_log(sandbox: Sandbox) -> None:
    """Last in this module (it stops the module's sandbox). The CLI's `sandbox up` (reset=False) does not empty a running sandbox without --reset; it says what runs."""
    from ket_infra.sandbox import log_file

    path = sandbox.up(OVERLAY)
    before = sandbox.instances()
    with pytest.raises(KetInfraError) as info:
        sandbox_up(ROUTED, sandbox.port, sandbox.env_file, sandbox.state_dir, progress=lambda _m: None, reset=False)
    assert str(info.value).startswith(f"a sandbox is already running on port {sandbox.port} (pid ") and str(
        info.value
    ).endswith(
        f", seeded from {OVERLAY} (environment file {path})); pass --reset to empty and reseed it, --port with "
        f"another port, or stop it with ket-infra sandbox down --port {sandbox.port}"
    )
    assert sandbox.instances() == before  # nothing was reset
    assert log_file(sandbox.port, sandbox.state_dir).exists()
    assert sandbox_down(sandbox.port, sandbox.state_dir)
    assert list(sandbox.state_dir.iterdir()) == []  # pid, log and what it was seeded from: gone
