"""Known breakages: each is a past bug class or a guard that once had no test. This applies each
edit to a scratch copy of the tree and runs the tests that must catch it; every one must fail.

`make mutants` runs it before the mutation run. Exit 1 when a breakage survives.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# (behaviour, file, exact text, its broken replacement, tests that must fail)
ROWS = [
    (
        "pod CIDR prefix guard",
        "ket_infra/plan.py",
        "    if spans_the_internet(str(net)):",
        "    if False:",
        ["tests/test_properties.py::test_pod_cidr_never_opens_the_internet", "tests/test_plan.py"],
    ),
    (
        "source/dest value",
        "ket_infra/aws.py",
        'InstanceId=t.instance_id, SourceDestCheck={"Value": value}',  # set_source_dest_check's
        'InstanceId=t.instance_id, SourceDestCheck={"Value": True}',
        ["tests/test_aws.py::test_source_dest_check_is_turned_off_and_back_on"],
    ),
    (
        "OSError one line",
        "ket_infra/cli.py",
        "    except OSError as exc:\n        if debug:",  # main()'s: the one for every command
        "    except ZeroDivisionError as exc:\n        if debug:",
        ["tests/test_cli.py::test_a_file_system_error_is_one_line"],
    ),
    (
        "AWS error one line",
        "ket_infra/aws.py",
        'check {env.path}: aws.endpoint_url and the network"',
        'check {env.path}: aws.endpoint_url and the network\\n{exc}"',
        [
            "tests/test_aws.py::test_aws_errors_are_one_line_that_says_what_to_fix",
            "tests/test_cli.py::test_verify_exits_1_when_aws_cannot_be_reached",
        ],
    ),
    (
        "NACL for outside sources",
        "ket_infra/verify.py",
        "        if src_subnet != dst_subnet:",
        "        if src_subnet is not None and dst_subnet is not None and src_subnet != dst_subnet:",
        ["tests/test_verify.py::test_acl_judges_sources_outside_the_cluster"],
    ),
    (
        "ICMP echo-reply return path",
        "ket_infra/verify.py",
        '        return Traffic("icmp", (0, 0))  # echo reply',
        "        return None",
        ["tests/test_verify.py::test_acl_denies_the_echo_reply"],
    ),
    (
        "several VPCs refused",
        "ket_infra/aws.py",
        "    if len(vpcs) > 1:",
        "    if False:",
        ["tests/test_aws.py::test_nodes_in_two_vpcs_are_refused"],
    ),
    (
        "Terraform < 1.5 refused",
        "ket_infra/terraform.py",
        "        if parts < MIN_VERSION:",
        "        if False:",
        ["tests/test_terraform.py::test_terraform_older_than_1_5_is_refused"],
    ),
    (
        "IP-in-IP as 94",
        "ket_infra/flows.py",
        '_flow("calico-ipip", "4",',
        '_flow("calico-ipip", "94",',
        ["tests/test_catalog_oracle.py"],
    ),
]
IGNORE = shutil.ignore_patterns(".venv", ".git", "mutants", ".work", ".hypothesis", "__pycache__", "*.egg-info")


def main() -> int:
    survived = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, path, old, new, tests in ROWS:
            scratch = Path(tmp) / "tree"
            shutil.rmtree(scratch, ignore_errors=True)
            shutil.copytree(ROOT, scratch, ignore=IGNORE)
            target = scratch / path
            text = target.read_text()
            if text.count(old) != 1:
                print(f"error: {path} no longer holds {old!r} exactly once; update {Path(__file__).name}")
                return 1
            target.write_text(text.replace(old, new))
            env = {**os.environ, "PYTHONPATH": str(scratch)}
            cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider", *tests]
            run = subprocess.run(cmd, cwd=scratch, env=env, capture_output=True, text=True)
            last = (run.stdout.strip().splitlines() or ["no output"])[-1]
            killed = run.returncode == 1
            survived += not killed
            names = " ".join(t.split("/")[-1] for t in tests)
            print(f"{'KILLED  ' if killed else 'SURVIVED'} {name}: {names} -> {last}", flush=True)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
