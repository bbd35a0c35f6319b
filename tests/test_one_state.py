"""One state per environment file, wherever ket-infra runs from.

The work folder (and with it the local Terraform state) follows the environment
file, not the current directory; every resource carries the identity of the
state that owns it, and a resource of another state is never adopted.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ket_infra.aws import Owned
from ket_infra.environment import AwsConfig, Backend, Environment, TerraformConfig, load_environment
from ket_infra.errors import KetInfraError
from ket_infra.render import Import, state_identity, work_dir
from ket_infra.workflow import refuse_foreign
from tests.conftest import base_plan, write_yaml


def test_the_work_folder_follows_the_environment_file_not_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    (repo / "environments").mkdir(parents=True)
    write_yaml(repo / "plan.yaml", base_plan())
    conventional = write_yaml(
        repo / "environments" / "staging.yaml", {"plan_file": "../plan.yaml", "aws": {"region": "eu-west-1"}}
    )
    (tmp_path / "ops").mkdir()
    lab = {"plan_file": "../repo/plan.yaml", "aws": {"region": "eu-west-1"}}
    elsewhere = write_yaml(tmp_path / "ops" / "lab.yaml", lab)
    seen = set()
    for cwd in (repo, tmp_path, repo / "environments"):
        monkeypatch.chdir(cwd)
        seen.add(work_dir(load_environment(str(conventional))))
    assert seen == {repo / ".work" / "staging"}  # beside environments/, as always
    monkeypatch.chdir(repo)
    assert work_dir(load_environment(str(elsewhere))) == tmp_path / "ops" / ".work" / "lab"


def env_with(backend: Backend) -> Environment:
    return Environment(
        name="lab",
        path="lab.yaml",
        plan_file=Path("plan.yaml"),
        aws=AwsConfig("eu-west-1"),
        terraform=TerraformConfig(backend=backend),
    )


def test_the_state_identity_names_the_state(tmp_path: Path) -> None:
    assert state_identity(env_with(Backend("s3", bucket="tfstate", key="ket/lab.tfstate")), tmp_path) == (
        "s3://tfstate/ket/lab.tfstate"
    )
    assert state_identity(env_with(Backend()), tmp_path) == f"local:{tmp_path / 'terraform.tfstate'}"
    assert (
        state_identity(env_with(Backend(path="../s#t%.tfstate")), tmp_path / "w")
        == f"local:{tmp_path / 's_t_.tfstate'}"
    )
    long = state_identity(env_with(Backend("s3", bucket="b", key="k" * 300)), tmp_path)
    assert long.startswith("sha256:") and len(long) == 71


def test_a_resource_of_another_state_is_never_adopted() -> None:
    owned = Owned(
        groups={"sg-1": "worker", "sg-2": "master"},
        rules=(),
        carried={},
        states={
            "sg-1": "local:/other/checkout/.work/lab/terraform.tfstate",
            "sg-2": "local:/here/.work/lab/terraform.tfstate",
        },
    )
    mine = Import('module.ket_cni_network.aws_security_group.this["master"]', "sg-2", "group")
    legacy = Import('module.ket_cni_network.aws_security_group.this["etcd"]', "sg-9", "group")  # made before the tag
    refuse_foreign(owned, [mine, legacy], "local:/here/.work/lab/terraform.tfstate")
    foreign = Import('module.ket_cni_network.aws_security_group.this["worker"]', "sg-1", "group")
    with pytest.raises(KetInfraError) as info:
        refuse_foreign(owned, [mine, foreign], "local:/here/.work/lab/terraform.tfstate")
    assert str(info.value) == (
        'group sg-1 (module.ket_cni_network.aws_security_group.this["worker"]) belongs to the Terraform state at '
        "local:/other/checkout/.work/lab/terraform.tfstate, not to this environment's at "
        "local:/here/.work/lab/terraform.tfstate: it will not be adopted; run ket-infra with the environment file "
        "that owns it (or destroy it from there) instead"
    )


def test_sandbox_files_do_not_depend_on_the_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ket_infra.sandbox import default_state_dir

    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    first = default_state_dir()
    monkeypatch.chdir(Path(os.sep))
    assert default_state_dir() == first and first.is_absolute()
