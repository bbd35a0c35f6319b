"""Finding the real Terraform CLI and the offline provider mirror for tests.

Tests that need them skip with a reason pytest prints (-ra) when absent, unless
KET_INFRA_NO_SKIP=1 (set by .ci/run, where both exist): then a skip is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

TERRAFORM = shutil.which("terraform")
AWS_PROVIDER = "registry.terraform.io/hashicorp/aws"
# Where an offline provider mirror is found when KET_INFRA_TF_PLUGIN_DIR is unset: this machine
# image's mirror, then Terraform's own implied local mirror directories on Linux.
MIRRORS = (
    Path("/opt/tf-plugins"),
    Path.home() / ".terraform.d" / "plugins",
    Path.home() / ".local" / "share" / "terraform" / "plugins",
    Path("/usr/local/share/terraform/plugins"),
    Path("/usr/share/terraform/plugins"),
)


def _plugin_dir() -> str | None:
    named = os.environ.get("KET_INFRA_TF_PLUGIN_DIR")
    if named:
        return named
    return next((str(m) for m in MIRRORS if (m / AWS_PROVIDER).is_dir()), None)


PLUGIN_DIR = _plugin_dir()


def missing() -> str | None:
    if TERRAFORM is None:
        return "terraform CLI not found on PATH"
    if not PLUGIN_DIR:
        return (
            "no offline mirror with hashicorp/aws: set KET_INFRA_TF_PLUGIN_DIR "
            f"(looked in {', '.join(str(m) for m in MIRRORS)})"
        )
    if not (Path(PLUGIN_DIR) / AWS_PROVIDER).is_dir():
        return f"no hashicorp/aws provider in KET_INFRA_TF_PLUGIN_DIR={PLUGIN_DIR}"
    return None


needs_terraform = pytest.mark.skipif(missing() is not None, reason=f"needs Terraform: {missing()}")
needs_terraform_cli = pytest.mark.skipif(TERRAFORM is None, reason="needs Terraform: terraform CLI not found on PATH")


def terraform(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    assert TERRAFORM is not None
    env = {**os.environ, "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}
    return subprocess.run(
        [TERRAFORM, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300, input=stdin
    )
