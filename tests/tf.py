"""Finding the real Terraform CLI and the offline provider mirror for tests.

Tests that need them skip with a reason pytest prints (-ra) when absent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

TERRAFORM = shutil.which("terraform")
PLUGIN_DIR = os.environ.get("KET_INFRA_TF_PLUGIN_DIR")
AWS_PROVIDER = "registry.terraform.io/hashicorp/aws"


def missing() -> str | None:
    if TERRAFORM is None:
        return "terraform CLI not found on PATH"
    if not PLUGIN_DIR:
        return "KET_INFRA_TF_PLUGIN_DIR is not set (an offline mirror with hashicorp/aws is needed; .ci/run sets it)"
    if not (Path(PLUGIN_DIR) / AWS_PROVIDER).is_dir():
        return f"no hashicorp/aws provider in KET_INFRA_TF_PLUGIN_DIR={PLUGIN_DIR}"
    return None


needs_terraform = pytest.mark.skipif(missing() is not None, reason=f"needs Terraform: {missing()}")
needs_terraform_cli = pytest.mark.skipif(TERRAFORM is None, reason="needs Terraform: terraform CLI not found on PATH")


def terraform(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert TERRAFORM is not None
    env = {**os.environ, "TF_IN_AUTOMATION": "1"}
    return subprocess.run([TERRAFORM, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)
