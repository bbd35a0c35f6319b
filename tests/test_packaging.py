"""The wheel on its own: built from the sources, installed (not editable) in a throwaway venv,
and run from a directory outside the repository, through the whole sandbox flow: the commands
of the pipeline examples in examples/ci/, then destroy.

The throwaway venv borrows the test environment's installed dependencies through a .pth
line (a plain path: the editable install's own .pth hook is not run), so the test needs no
network; ket_infra itself is imported from the wheel, which the test checks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path
from xml.etree import ElementTree

import pytest
import yaml

from tests.ci_examples import GITHUB, GITLAB, shell_lines
from tests.conftest import EXAMPLES, ROOT, free_port
from tests.tf import PLUGIN_DIR, needs_terraform

SOURCES = ("ket_infra", "pyproject.toml", "README.md", "LICENSE")


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the wheel from a copy of the sources (the build leaves nothing in the checkout)."""
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("dist")
    built = run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(src)], cwd=src
    )
    assert built.returncode == 0, built.stdout + built.stderr
    # the license is an SPDX string with its file: no setuptools deprecation warning
    assert "Deprecat" not in built.stdout + built.stderr, built.stdout + built.stderr
    (path,) = out.glob("ket_infra-*.whl")
    return path


def test_wheel_carries_the_template_the_module_and_the_license(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    module = {n.rsplit("/", 1)[1] for n in names if n.startswith("ket_infra/modules/ket-cni-network/")}
    assert {"main.tf", "variables.tf", "outputs.tf", "versions.tf"} <= module
    assert "ket_infra/templates/main.tf.j2" in names
    lab = {"__init__", "topology", "nftables", "net", "probes", "daemons", "report"}  # a subpackage
    assert {f"ket_infra/lab/{m}.py" for m in lab} <= names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    assert "License-Expression: Apache-2.0" in zipfile.ZipFile(wheel).read(metadata).decode()


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed; returns its bin folder."""
    venv = tmp_path_factory.mktemp("venv")
    made = run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=venv)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    got = run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", str(wheel)], venv
    )
    assert got.returncode == 0, got.stdout + got.stderr
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], venv).stdout.strip())
    (site / "borrowed-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    where = run([str(python), "-c", "import ket_infra, jinja2; print(ket_infra.__file__)"], venv)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(site), f"ket_infra imported from {where.stdout}, not the wheel"
    return venv / "bin"


@needs_terraform
@pytest.mark.e2e
@pytest.mark.slow
def test_installed_wheel_runs_the_sandbox_flow_outside_the_repository(installed: Path, tmp_path: Path) -> None:
    work = tmp_path / "elsewhere"
    work.mkdir()
    shutil.copy(EXAMPLES / "calico-overlay.yaml", work / "plan.yaml")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MUTANT_UNDER_TEST", "AWS_PROFILE")}
    env["KET_INFRA_TF_PLUGIN_DIR"] = PLUGIN_DIR or ""
    env["PATH"] = f"{installed}{os.pathsep}{env.get('PATH', '')}"
    port = free_port()

    def ket(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        done = run(["ket-infra", *args], cwd=work, env=env)
        assert done.returncode == code, f"ket-infra {' '.join(args)}: {done.stdout}\n{done.stderr}"
        return done

    assert shutil.which("ket-infra", path=env["PATH"]) == str(installed / "ket-infra")
    ket("sandbox", "up", "plan.yaml", "--port", str(port), "--env-file", "environments/pkg.yaml")
    try:
        env_file = work / "environments" / "pkg.yaml"
        data = yaml.safe_load(env_file.read_text())
        data["preflight"] = False  # half the rules: a shorter run, the same code paths
        env_file.write_text(yaml.safe_dump(data))
        # the pipeline examples' network stage, line by line as the CI systems run them: the GitHub
        # workflow's steps (changes applied), then GitLab's jobs (nothing left to change)
        variables = {**env, "KET_ENV": "pkg", "KET_PLAN": "plan.yaml", "GITHUB_STEP_SUMMARY": str(work / "summary.md")}
        for path in (GITHUB, GITLAB):
            for line in shell_lines(path):
                done = run(["bash", "-e", "-o", "pipefail", "-c", line], cwd=work, env=variables)
                assert done.returncode == 0, f"{path.name}: {line}: {done.stdout}\n{done.stderr}"
            rules = (work / "rules.md").read_text()
            assert "| IP-in-IP (4) | - | group master | Calico IP-in-IP tunnel |" in rules
            planned = json.loads((work / "plan.json").read_text())
            if path == GITHUB:
                assert planned["counts"]["create"] > 0
                assert (work / ".work" / "pkg" / "modules" / "ket-cni-network" / "main.tf").is_file()
                assert rules in (work / "summary.md").read_text()
            else:
                assert planned["changes"] == []
            report = ElementTree.parse(work / "verify.xml").getroot()
            assert report.get("failures") == "0" and int(report.get("tests", "0")) > 0
    finally:  # (sandbox down empties the cloud: a destroy would run the modules the plans ran once more)
        ket("sandbox", "down", "--port", str(port))
