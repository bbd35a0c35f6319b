"""Whether the namespace lab can run here, and why not.

The lab needs root, network namespaces and the Debian packages nftables, bird2,
etcd-server and etcd-client (.ci/run installs them). Where it cannot run its
tests skip with the reason, and fail under KET_INFRA_NO_SKIP=1 (tests/conftest.py).
"""

from __future__ import annotations

import pytest

from ket_infra import lab


def need_lab(daemons: bool = True) -> None:
    """Skip the calling test (or fixture), saying why, when the lab cannot run here."""
    problem = lab.unavailable(daemons)
    if problem:
        pytest.skip(f"the namespace lab cannot run here: {problem}")
