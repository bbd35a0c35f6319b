"""The sandbox's AWS API emulator: moto's server, with two fixes applied first, behind a layer that refuses
what AWS refuses (ket_infra.sandbox_aws).

Run as `python -m ket_infra.sandbox_server --port PORT [--host 127.0.0.1]`;
`ket-infra sandbox up` starts it in the background.

The fixes (written for moto 5.2.5, the lowest version pyproject.toml allows; the first
checked against 5.2.1 to 5.2.5 too):

1. A rule's description. moto keeps
the `Description` of a security-group rule whose source is another security
group (a `UserIdGroupPairs` entry) in the rule's `source_group` dict, but
`moto.ec2.models.security_groups.SecurityGroupRule.description` reads only
`ip_range["Description"]`, which such a rule does not have. So
DescribeSecurityGroups shows the description while the
AuthorizeSecurityGroupIngress/Egress response and DescribeSecurityGroupRules
(what Terraform's `aws_vpc_security_group_ingress_rule` reads back) return
none, and every `terraform plan` after an apply shows a description change.
The patch makes `description` fall back to `source_group["Description"]`
when moto's own property returns nothing. Where moto already returns a
description the patch changes nothing.

2. Several values of one filter. EC2 joins the values of a filter with OR
("the request returns all results that match any of the specified values",
EC2 API Reference, Filter). moto does so for a field with one value, but
for a field with several (`group-id` of DescribeNetworkInterfaces: the
groups an interface carries) `moto.ec2.utils.is_filter_matching` matches
only when the field's values are a subset or a superset of the filter's. An
interface carrying a group asked for and one not asked for is then left
out: the members of referenced groups that audit and detach read come back
short. The patch asks moto about each value on its own and joins the
answers with OR.

"""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

_PATCHED = "_ket_infra_patch"  # marks a function of moto the fixes below have replaced


def patch_moto() -> bool:
    """Apply both fixes to moto (idempotent); True if either was applied now."""
    described = _patch_description()
    filtered = _patch_filters()
    return described or filtered


def _patch_filters() -> bool:
    from moto.ec2 import utils

    original = utils.is_filter_matching
    if getattr(original, _PATCHED, False):
        return False

    def is_filter_matching(obj: Any, _filter: str, filter_value: Any) -> bool:
        if isinstance(filter_value, list) and len(filter_value) > 1:
            return any(original(obj, _filter, [one]) for one in filter_value)
        return original(obj, _filter, filter_value)

    setattr(is_filter_matching, _PATCHED, True)
    utils.is_filter_matching = is_filter_matching
    return True


def _patch_description() -> bool:
    from moto.ec2.models.security_groups import SecurityGroupRule

    original = SecurityGroupRule.__dict__.get("description")
    if not isinstance(original, property) or original.fget is None or getattr(original.fget, _PATCHED, False):
        return False
    fget = original.fget

    def description(self: Any) -> str | None:
        value = fget(self)
        if value is None:
            source_group = getattr(self, "source_group", None) or {}
            value = source_group.get("Description")
        return value  # type: ignore[no-any-return]

    setattr(description, _PATCHED, True)
    setattr(SecurityGroupRule, "description", property(description, original.fset, original.fdel, original.__doc__))  # noqa: B010
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m ket_infra.sandbox_server", description="moto server for the ket-infra sandbox"
    )
    parser.add_argument("--port", type=int, default=5000, help="port to listen on (default 5000)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--behaviours", default="{}", help="JSON: the AWS behaviours to enforce (ket_infra.sandbox_aws.Behaviours)"
    )
    args = parser.parse_args(argv)
    patch_moto()
    enforce_aws(json.loads(args.behaviours))
    serve(args.host, args.port)


def enforce_aws(behaviours: dict[str, Any]) -> None:
    """Refuse what AWS refuses (ket_infra.sandbox_aws), with BEHAVIOURS instead of the defaults."""
    from ket_infra import sandbox_aws

    sandbox_aws.STATE.behaviours.update(behaviours)
    sandbox_aws.hook_moto()


# A pause before each response. moto on loopback answers so fast that the
# Go AWS SDK inside Terraform's provider sometimes receives the response
# before its own writer goroutine has finished with the request; the SDK then
# closes the connection under the response and reports "use of closed
# network connection" on a 200 (aws/aws-sdk-go-v2 issues 1825 and 2737).
# With `max_retries = 1` that fails the run, and a retry of a create would
# meet InvalidPermission.Duplicate. Real AWS is never this fast.
RESPONSE_DELAY_S = 0.02


def _delayed(app: Any) -> Any:
    import time

    def wrapped(environ: Any, start_response: Any) -> Any:
        body = app(environ, start_response)
        time.sleep(RESPONSE_DELAY_S)
        return body

    return wrapped


# Where the server notes every AWS call it answers (one JSON line each), when set: the evidence
# `ket-infra iam-policy` is checked against (tests/test_iam_policy.py).
ACTION_LOG_VAR = "KET_INFRA_SANDBOX_ACTION_LOG"
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/[^/]+/[^/]+/([^/]+)/aws4_request")
_S3_OBJECT = {"GET": "GetObject", "HEAD": "GetObject", "PUT": "PutObject", "DELETE": "DeleteObject"}
_S3_BUCKET = {"GET": "ListBucket", "HEAD": "ListBucket", "PUT": "CreateBucket", "DELETE": "DeleteBucket"}


def iam_action(method: str, path: str, query: str, body: bytes, authorization: str) -> tuple[str, str, str] | None:
    """(IAM action, resource, access key) of one request, as IAM names them; None for moto's own API.

    The service is the one the request is signed for (SigV4's credential scope). Query-protocol
    services (EC2, STS, IAM) name the action in `Action=`; S3 is REST: the method on a bucket or an
    object (path style, as ket-infra and Terraform's s3 backend use it against an endpoint).
    """
    from urllib.parse import parse_qs

    found = _CREDENTIAL.search(authorization)
    if path.startswith("/moto-api") or found is None:
        return None
    key, service = found.group(1), found.group(2)
    if service == "s3":
        bucket, _, obj = path.lstrip("/").partition("/")
        if obj:
            return f"s3:{_S3_OBJECT.get(method, method)}", f"arn:aws:s3:::{bucket}/{obj}", key
        return f"s3:{_S3_BUCKET.get(method, method)}", f"arn:aws:s3:::{bucket}", key
    params = parse_qs(query)
    if not params.get("Action"):
        params = parse_qs(body.decode("utf-8", errors="replace"))
    action = (params.get("Action") or ["?"])[0]
    return f"{service}:{action}", "*", key


def _logged(app: Any, log_path: str) -> Any:
    """APP, noting each AWS call (its IAM action, resource, caller's access key, status, user agent) in LOG_PATH."""
    import io
    import json
    import threading

    lock = threading.Lock()

    def wrapped(environ: Any, start_response: Any) -> Any:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        status: list[str] = []

        def started(code: str, headers: Any, *rest: Any) -> Any:
            status.append(code)
            return start_response(code, headers, *rest)

        result = app(environ, started)
        what = iam_action(
            environ.get("REQUEST_METHOD", ""),
            environ.get("PATH_INFO", ""),
            environ.get("QUERY_STRING", ""),
            body,
            environ.get("HTTP_AUTHORIZATION", ""),
        )
        if what is not None:
            line = {
                "action": what[0],
                "resource": what[1],
                "key": what[2],
                "status": int(status[0].split()[0]) if status else 0,
                "agent": environ.get("HTTP_USER_AGENT", ""),
            }
            with lock, open(log_path, "a", encoding="utf-8") as out:
                out.write(json.dumps(line) + "\n")
        return result

    return wrapped


# S3 answers a GET or HEAD of a key that does not exist with 404 only to a caller allowed s3:ListBucket on
# the bucket, and with 403 AccessDenied to any other (S3 API Reference, GetObject and HeadObject,
# "Permissions"): Terraform's s3 backend reads a state that does not exist yet on a first run. moto answers
# 404 to everyone; while moto judges IAM (its `/moto-api/reset-auth`), the sandbox answers as S3 does.
_ACCESS_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>'
)


def _may_list(access_key_id: str, bucket: str) -> bool:
    """Whether moto's IAM lets ACCESS_KEY_ID's user s3:ListBucket BUCKET (True while moto judges nothing)."""
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.core.models import DEFAULT_ACCOUNT_ID  # the sandbox's account
    from moto.iam.access_control import IAMPolicy, PermissionResult, create_access_key

    if ActionAuthenticatorMixin.request_count < settings.INITIAL_NO_AUTH_ACTION_COUNT:
        return True
    try:
        key = create_access_key(DEFAULT_ACCOUNT_ID, "aws", access_key_id, {})
        policies = key.collect_policies()
    except Exception:  # moto knows no such key: it has refused the call itself
        return True
    judged = {IAMPolicy(p).is_action_permitted("s3:ListBucket", f"arn:aws:s3:::{bucket}") for p in policies}
    return PermissionResult.PERMITTED in judged and PermissionResult.DENIED not in judged


def _missing_key_needs_list(app: Any) -> Any:
    """APP, answering a read of a missing S3 key as S3 does to a caller without s3:ListBucket (403, not 404)."""

    def wrapped(environ: Any, start_response: Any) -> Any:
        method = environ.get("REQUEST_METHOD", "")
        what = iam_action(method, environ.get("PATH_INFO", ""), "", b"", environ.get("HTTP_AUTHORIZATION", ""))
        if what is None or what[0] != "s3:GetObject" or method not in ("GET", "HEAD"):
            return app(environ, start_response)
        answer: list[Any] = []

        def held(status: str, headers: Any, exc_info: Any = None) -> Any:
            answer[:] = [status, headers, exc_info]
            return lambda _data: None  # moto's apps return their body, never write it

        body = app(environ, held)
        bucket = what[1].removeprefix("arn:aws:s3:::").partition("/")[0]
        if answer and answer[0].startswith("404") and not _may_list(what[2], bucket):
            if hasattr(body, "close"):
                body.close()
            denied = b"" if method == "HEAD" else _ACCESS_DENIED
            start_response("403 Forbidden", [("Content-Type", "application/xml"), ("Content-Length", str(len(denied)))])
            return [denied]
        start_response(*answer)
        return body

    return wrapped


def serve(host: str, port: int) -> None:
    """moto's server app (as `moto.server.main` builds it), with the response delay, S3's answer to a read of a
    missing key (and the action log)."""
    import os

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import run_simple

    os.environ.setdefault("MOTO_PORT", str(port))
    from ket_infra.sandbox_aws import layer

    app = layer(_missing_key_needs_list(DomainDispatcherApplication(create_backend_app)))
    log_path = os.environ.get(ACTION_LOG_VAR)
    if log_path:
        app = _logged(app, log_path)  # outermost: what the layer refuses is logged too
    run_simple(host, port, _delayed(app), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
