"""The one exception hierarchy: every failure a user can act on is a KetInfraError.

A message says what is wrong, where (file and key path, or the command) and
what to do. The CLI prints it as one line on stderr and exits 1.
"""

from __future__ import annotations

import re
import signal

_LONG = 100  # a word of a message longer than this (a 1 MB cluster name, say) is cut


def shorten(text: str) -> str:
    """TEXT with every word over _LONG characters cut to its start and '...': messages stay one short line."""
    return re.sub(rf"\S{{{_LONG + 1},}}", lambda m: m.group(0)[: _LONG - 3] + "...", text)


class KetInfraError(Exception):
    """Base class: an error with a message a user can act on."""


class InputError(KetInfraError):
    """A plan or environment file is unreadable, malformed or invalid."""

    def __init__(self, path: str, key: str | None, problem: str, fix: str | None = None) -> None:
        self.path = path
        self.key = key
        self.problem = problem
        self.fix = fix
        where = f"{path}: {shorten(key)}: " if key else f"{path}: "
        tail = f"; {fix}" if fix else ""
        super().__init__(f"{where}{shorten(problem)}{tail}")


class PlanError(InputError):
    """The KET plan file is invalid."""


class EnvironmentFileError(InputError):
    """The environment file is invalid."""


class QuotaError(KetInfraError):
    """A security group would exceed an AWS quota."""


class Interrupted(KetInfraError):
    """SIGINT, SIGTERM or SIGHUP stopped a run; whatever was running was let finish its own cleanup first."""

    def __init__(self, message: str, signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.signum = signum  # the first signal taken: the exit code is 128 + it


class Stopped(BaseException):
    """SIGTERM or SIGHUP came outside a Terraform run: raised where the run is, as Ctrl-C's KeyboardInterrupt is.

    Not an Exception: nothing that handles errors may take it for one and go on; what cleans up
    on the way out (a plan started ahead is stopped) runs.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


# --- an identity without a permission ----------------------------------------------------------------

# What AWS answers a call the identity's policies do not allow: EC2's UnauthorizedOperation (also
# with its Query-API "Client." prefix), the AccessDenied of S3, STS and IAM (and moto, for every
# service), AccessDeniedException of the JSON-protocol services.
DENIED_CODES = frozenset(
    {"UnauthorizedOperation", "Client.UnauthorizedOperation", "AccessDenied", "AccessDeniedException"}
)
_PERFORM = re.compile(r"not authorized to perform:? ([a-z0-9-]+:[A-Za-z0-9]+)")
# Operations whose IAM action has another name (S3's REST calls); the rest are SERVICE:OPERATION.
S3_ACTIONS = {
    "ListObjectsV2": "ListBucket",
    "ListObjects": "ListBucket",
    "HeadObject": "GetObject",
    "HeadBucket": "ListBucket",
}
S3_OPERATIONS = frozenset({*S3_ACTIONS, "GetObject", "PutObject", "DeleteObject"})
S3_READ = "s3:GetObject (or s3:ListBucket, where the object does not exist yet)"  # what S3's refused read lacks


def denied_action(code: str, message: str, service: str, operation: str) -> str | None:
    """The IAM action a refused call needed (None when CODE is no refusal): as the message names it,
    else SERVICE:OPERATION (EC2's UnauthorizedOperation names it only in an encoded message)."""
    if service.lower() == "s3" and operation in ("GetObject", "HeadObject") and code in (*DENIED_CODES, "Forbidden"):
        # S3 refuses a read without s3:GetObject on the key, and a read of a key that does not exist without
        # s3:ListBucket on the bucket, with the same 403 (S3 API Reference, GetObject and HeadObject,
        # "Permissions"); a HEAD's answer has no body, so the SDK names only its status ("Forbidden")
        return S3_READ
    if code not in DENIED_CODES:
        return None
    named = _PERFORM.search(message)
    if named:
        return named.group(1)
    service = service.lower()
    return f"{service}:{S3_ACTIONS.get(operation, operation) if service == 's3' else operation}"


def lacks(actions: list[str]) -> str:
    """The one-line cause for refused ACTIONS."""
    names = ", ".join(sorted(set(actions)))
    return f"the AWS identity lacks {names}; see ket-infra iam-policy"
