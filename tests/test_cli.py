"""The command line as a user runs it: real processes, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import EXAMPLES, ROOT, base_plan, write_yaml


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ket_infra", *args], capture_output=True, text=True, cwd=cwd, timeout=60
    )


@pytest.mark.parametrize("fmt", ["table", "json", "markdown", "mermaid"])
@pytest.mark.parametrize("plan", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.stem)
def test_rules_every_format_on_every_example(plan: Path, fmt: str) -> None:
    result = run("rules", str(plan), "--format", fmt)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert "s3cr3t-weave-passphrase" not in result.stdout + result.stderr


def test_json_contract() -> None:
    result = run("rules", str(EXAMPLES / "calico-overlay.yaml"), "--format", "json")
    doc = json.loads(result.stdout)
    assert set(doc) == {"cluster", "cni", "groups", "rules", "host_settings", "warnings"}
    assert doc["cluster"] == "prod-east"
    assert doc["cni"] == {"provider": "calico", "mode": "overlay", "encrypted": False, "disabled": False}
    assert doc["groups"][0] == {"name": "etcd", "roles": ["etcd"], "nodes": ["etcd01", "etcd02", "etcd03"]}
    ipip = [r for r in doc["rules"] if r["protocol"] == "4"]
    assert ipip and all(r["from_port"] is None and r["to_port"] is None for r in ipip)
    bgp = next(r for r in doc["rules"] if r["name"] == "master-in-tcp-179-from-worker")
    assert bgp["group"] == "master"
    assert bgp["direction"] == "ingress"
    assert (bgp["protocol"], bgp["from_port"], bgp["to_port"]) == ("tcp", 179, 179)
    assert bgp["source"] == {"group": "worker"}
    assert bgp["required_by"] == "calico"
    assert bgp["purpose"] == "Calico BGP peering (BIRD mesh)"
    for r in doc["rules"]:
        peer = r["source"] if r["direction"] == "ingress" else r["destination"]
        assert len(peer) == 1 and set(peer) <= {"group", "cidr"}
        assert peer.get("cidr") not in ("0.0.0.0/0", "::/0")


def test_routed_json_host_settings() -> None:
    doc = json.loads(run("rules", str(EXAMPLES / "calico-routed.yaml"), "--format", "json").stdout)
    assert [(h["group"], h["source_dest_check"]) for h in doc["host_settings"]] == [
        ("etcd-master", False),
        ("worker", False),
    ]


def test_with_environment(tmp_path: Path) -> None:
    env = {
        "plan_file": str(EXAMPLES / "contiv.yaml"),
        "aws": {"region": "eu-west-1"},
        "installer_cidr": "10.9.9.9/32",
        "preflight": False,
    }
    env_file = write_yaml(tmp_path / "lab.yaml", env)
    doc = json.loads(run("rules", str(EXAMPLES / "contiv.yaml"), "--env", str(env_file), "--format", "json").stdout)
    ssh = [r for r in doc["rules"] if r["from_port"] == 22]
    assert {r["group"] for r in ssh} == {"etcd", "master", "worker", "storage"}
    assert not [r for r in doc["rules"] if "ket-preflight" in r["required_by"]]


def test_env_by_name_reads_environments_folder(tmp_path: Path) -> None:
    (tmp_path / "environments").mkdir()
    write_yaml(tmp_path / "environments" / "dev.yaml", {"plan_file": "x", "aws": {"region": "eu-west-1"}, "bogus": 1})
    result = run("rules", str(EXAMPLES / "contiv.yaml"), "--env", "dev", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == "error: environments/dev.yaml: bogus: unknown key; remove it (allowed here: " + (
        "api_cidrs, aws, extra_rules, ingress_cidrs, installer_cidr, plan_file, preflight, terraform)\n"
    )


def test_bad_plan_is_one_line_exit_1_no_traceback(tmp_path: Path) -> None:
    data = base_plan({"provider": "calico", "options": {"calico": {"mode": "bgp"}}})
    path = write_yaml(tmp_path / "plan.yaml", data)
    result = run("rules", str(path))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"error: {path}: add_ons.cni.options.calico.mode: 'bgp' is not a valid Calico mode; use overlay or routed\n"
    )


def test_debug_shows_traceback(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump({"cluster": {}}))
    result = run("--debug", "rules", str(path))
    assert result.returncode == 1
    assert "Traceback" in result.stderr


def test_missing_plan_file() -> None:
    result = run("rules", "no/such/plan.yaml")
    assert result.returncode == 1
    assert result.stderr == "error: no/such/plan.yaml: KET plan file not found; check the path\n"


def test_help_lists_rules() -> None:
    result = run("--help")
    assert result.returncode == 0
    assert "rules" in result.stdout


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["plan"], "Missing option '--env'"),
        (["rules", str(EXAMPLES / "contiv.yaml"), "--format", "yaml"], "Invalid value for '--format'"),
        (["nonsense"], "No such command 'nonsense'"),
    ],
)
def test_usage_errors_are_one_line_exit_1(args: list[str], words: str) -> None:
    result = run(*args)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert words in result.stderr


def test_pod_cidr_overlapping_nodes_is_refused(tmp_path: Path) -> None:
    data = base_plan()
    data["cluster"]["networking"]["pod_cidr_block"] = "10.0.0.0/16"
    result = run("rules", str(write_yaml(tmp_path / "plan.yaml", data)))
    assert result.returncode == 1
    assert (
        "cluster.networking.pod_cidr_block: 10.0.0.0/16 contains the address 10.0.1.11 of node 'etcd01'"
        in result.stderr
    )
