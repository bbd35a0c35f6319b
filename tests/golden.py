"""Golden-file comparison: UPDATE_GOLDEN=1 rewrites, otherwise a diff fails."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest


def check_golden(path: Path, actual: str) -> None:
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual)
        return
    if not path.exists():
        pytest.fail(f"{path} is missing; run UPDATE_GOLDEN=1 make test and review it")
    expected = path.read_text()
    if expected != actual:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), actual.splitlines(True), str(path), "actual"))
        pytest.fail(f"{path} is out of date; review this diff, then run UPDATE_GOLDEN=1 make test:\n{diff}")
