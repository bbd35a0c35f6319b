"""Shared test helpers: small valid plans to mutate, written to tmp files."""

from __future__ import annotations

import copy
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

# Most of the suite's time is Terraform's AWS provider starting up (three times per plan, about 2.5 s of
# CPU each), much of it in Go's garbage collector while the provider builds its schema. A collection every
# 400% of heap growth instead of every 100% costs about a quarter less CPU for ~150 MB more memory per
# provider (measured with `terraform plan -refresh=false` on the calico-overlay example: 8.7 s of CPU,
# user and system, at GOGC=100; 6.4 s at 400). Terraform and the provider inherit it; a value already set
# is kept. It changes when Go collects garbage, nothing the programs do.
os.environ.setdefault("GOGC", "400")

# moto loads some 1,300 AMIs into every EC2 region it sets up, on every reset: a third of a moto test's time
# (tests/test_verify.py and tests/test_aws.py: 48 s without this, 33.5 s with it, two runs each). The tests
# start instances from one AMI (ket_infra.sandbox.image_id's Amazon Linux 2 x86_64), so moto (in process,
# and the sandbox servers the tests start, which inherit it) loads that one alone (MOTO_AMIS_PATH). Which
# AMIs exist changes nothing ket-infra reads; the file holds moto's own entry for that AMI.
os.environ.setdefault("MOTO_AMIS_PATH", str(ROOT / "tests" / "moto_amis.json"))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sandbox_client(port: int, service: str = "ec2") -> Any:
    """A boto3 client of the sandbox's moto server on PORT (moto takes any credentials)."""
    import boto3

    return boto3.client(
        service,
        region_name="eu-west-1",
        endpoint_url=f"http://127.0.0.1:{port}",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def wait_until_shown(ec2: Any, group_id: str, rule_id: str, timeout: float = 30.0) -> None:
    """Wait until RULE_ID is among GROUP_ID's rules: the sandbox, as EC2, shows a rule just made to Describe
    calls only after a delay (as a script run against AWS would wait)."""
    import time

    deadline = time.monotonic() + timeout
    while rule_id not in {
        r["SecurityGroupRuleId"]
        for r in ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [group_id]}])[
            "SecurityGroupRules"
        ]
    }:
        assert time.monotonic() < deadline, f"rule {rule_id} of {group_id} never became visible"
        time.sleep(0.1)


def child_env(cwd: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a ket-infra process a test starts in CWD.

    Under mutation testing (`make mutants`) mutmut marks the mutant in MUTANT_UNDER_TEST, and the
    mutated code is the tree the tests sit in (ROOT): a child started elsewhere is pointed at it by
    PYTHONPATH, so that it runs the mutant too. While mutmut maps which tests reach which code
    (MUTANT_UNDER_TEST=stats), a child notes what it reaches only with bench/mutmut_children.py
    loaded (it names KET_INFRA_MUTMUT_HITS); without it, mutmut's own note-taking would look for
    its configuration in the child's working directory, so such a child runs unmarked.
    """
    env = dict(os.environ if base is None else base)
    mutant = env.get("MUTANT_UNDER_TEST")
    if not mutant:
        return env
    first = [] if Path(cwd).resolve() == ROOT else [str(ROOT)]
    if mutant == "stats":
        if "KET_INFRA_MUTMUT_HITS" not in env:
            if first:
                env.pop("MUTANT_UNDER_TEST")
            return env
        first.append(str(ROOT / "bench" / "mutmut_site"))  # even where a test sets its own PYTHONPATH
    rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p not in first]
    if first:
        env["PYTHONPATH"] = os.pathsep.join(first + rest)
    return env


def node(host: str, ip: str, internalip: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"host": host, "ip": ip}
    if internalip:
        out["internalip"] = internalip
    return out


def base_plan(cni: dict[str, Any] | None = None) -> dict[str, Any]:
    plan: dict[str, Any] = {
        "cluster": {
            "name": "test",
            "networking": {"pod_cidr_block": "172.16.0.0/16", "service_cidr_block": "172.20.0.0/16"},
        },
        "etcd": {"expected_count": 1, "nodes": [node("etcd01", "10.0.1.11")]},
        "master": {"expected_count": 1, "nodes": [node("master01", "10.0.1.21")]},
        "worker": {"expected_count": 1, "nodes": [node("worker01", "10.0.1.31")]},
    }
    if cni is not None:
        plan["add_ons"] = {"cni": cni}
    return plan


def write_yaml(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def plan_file(tmp_path: Path):
    """Write a plan dict (a deep copy) to tmp_path/plan.yaml and return the path."""

    def write(data: dict[str, Any]) -> Path:
        return write_yaml(tmp_path / "plan.yaml", copy.deepcopy(data))

    return write


@pytest.fixture
def aws():
    """boto3 calls go to moto's in-process AWS for the test, with the sandbox's fixes to what moto answers
    (ket_infra.sandbox_server.patch_moto): the tests see what the sandbox and EC2 answer."""
    from moto import mock_aws

    from ket_infra.sandbox_server import patch_moto

    patch_moto()
    with mock_aws():
        yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """With KET_INFRA_NO_SKIP=1 (CI, where Terraform and its mirror exist) a skipped test fails."""
    report = yield
    if os.environ.get("KET_INFRA_NO_SKIP") == "1" and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped, but KET_INFRA_NO_SKIP=1 forbids skips here: {reason}"
    return report


# The modules whose tests drive real Terraform, daemons or a wheel install, longest first (measured with
# `pytest --durations=0`). `make test` hands tests to its two workers one at a time (--maxschedchunk 1) in
# collection order, so running these first keeps a long test from starting last and running alone. A module's
# tests stay together, in file order, so each worker sets its module fixtures up once.
HEAVY_FIRST = (
    "test_workflow.py",
    "test_e2e.py",
    "test_faults.py",
    "test_packaging.py",
    "test_iam_policy.py",
    "test_lab.py",
    "test_lab_referee.py",
    "test_properties.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The heavy modules first (HEAVY_FIRST); and KET_INFRA_SKIP_SLOW=1 (the mutation passes over modules `slow`
    tests add nothing to) leaves the `slow` tests out."""

    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return HEAVY_FIRST.index(name) if name in HEAVY_FIRST else len(HEAVY_FIRST)

    items.sort(key=rank)  # stable: each module keeps its order, the rest keep collection order
    if os.environ.get("KET_INFRA_SKIP_SLOW") != "1":
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]
