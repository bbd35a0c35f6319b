"""The sandbox's AWS API emulator: moto's server, with one fix applied first, behind a layer that refuses
what AWS refuses (ket_infra.sandbox_aws).

Run as `python -m ket_infra.sandbox_server --port PORT [--host 127.0.0.1]`;
`ket-infra sandbox up` starts it in the background.

The fix (written for moto 5.2.5, checked against 5.2.1 to 5.2.5): moto keeps
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

"""

from __future__ import annotations

import argparse
import json
from typing import Any

_PATCHED = "_ket_infra_description_patch"


def patch_moto() -> bool:
    """Apply the rule-description fix to moto (idempotent); True if applied now."""
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


def serve(host: str, port: int) -> None:
    """moto's server app (as `moto.server.main` builds it), with the response delay."""
    import os

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import run_simple

    os.environ.setdefault("MOTO_PORT", str(port))
    from ket_infra.sandbox_aws import layer

    app = DomainDispatcherApplication(create_backend_app)
    run_simple(host, port, _delayed(layer(app)), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
