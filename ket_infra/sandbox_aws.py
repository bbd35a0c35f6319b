"""What AWS refuses and moto accepts: a layer in the sandbox's moto server (`python -m ket_infra.sandbox_server`).

moto answers much that EC2 refuses, so a run that passes against it may fail on its first real
account. This layer sits in front of moto's WSGI app (and hooks two of moto's describe calls) and
answers as EC2 does. Each behaviour names the AWS page it follows:

- VPC quotas, https://docs.aws.amazon.com/vpc/latest/userguide/amazon-vpc-limits.html
  ("Security groups" table): 5 security groups per network interface
  (SecurityGroupsPerInterfaceLimitExceeded); 60 inbound and 60 outbound rules per security group
  (RulesPerSecurityGroupLimitExceeded; moto checks it at a fixed 60, here the quota is settable to
  emulate a raised one). A rule naming a CIDR or a group counts as one.
- CreateSecurityGroup, https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateSecurityGroup.html:
  GroupName and GroupDescription "Up to 255 characters in length", valid characters
  "a-z, A-Z, 0-9, spaces, and ._-:/()#,@[]+=&;{}!$*", a name "Can't start with sg-"; the same limits
  for a rule's Description (API_IpRange.html, API_UserIdGroupPair.html): InvalidParameterValue.
- Tag restrictions, https://docs.aws.amazon.com/ec2/latest/devguide/tag-resources.html#tag-restrictions:
  at most 50 tags per resource (TagLimitExceeded; moto counts CreateTags, here TagSpecifications too),
  keys up to 128 and values up to 256 characters, the aws: prefix reserved (InvalidParameterValue).
- Error codes, https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html:
  FilterLimitExceeded ("The maximum number of filter values specified on a single call is 200");
  DependencyViolation for DeleteSecurityGroup while an interface carries the group or another
  group's rule refers to it (moto deletes it); InvalidPermission.Duplicate (moto checks it).
- MaxResults within each Describe call's documented range (5 to 1000 for DescribeSecurityGroups,
  ...), read from botocore's offline copy of the EC2 API model: InvalidParameterValue.
- Eventual consistency, https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html:
  "if you run a command to modify or describe the resource that you just created, its ID might not
  have propagated throughout the system": a group or rule created by the API stays invisible to
  DescribeSecurityGroups and DescribeSecurityGroupRules for `consistency_delay` seconds
  (InvalidGroup.NotFound / InvalidSecurityGroupRuleId.NotFound when asked for by ID, left out of
  filtered answers).
- Request throttling, https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html: a
  token bucket per API action, "the token bucket size for DescribeHosts, a non-mutating API
  action, is 100 tokens ... the refill rate is 20 tokens per second"; past it RequestLimitExceeded
  (HTTP 503). The default bucket is looser (500, 100/s; see Behaviours); `--throttle 100/20` is AWS's.

`/ket-infra/sandbox` (GET) shows the behaviours in force and how often each refused; a POST of
JSON changes them (what `sandbox up` does when it reuses a server). A moto reset forgets what
this layer counted.
"""

from __future__ import annotations

import copy
import functools
import io
import json
import re
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, fields
from typing import Any

CONFIG_PATH = "/ket-infra/sandbox"
GROUPS_PER_INTERFACE = 5
RULES_PER_GROUP = 60
FILTER_VALUES = 200
TEXT_MAX = 255  # group name, group description, rule description
TAGS_PER_RESOURCE = 50
TAG_KEY_MAX = 128
TAG_VALUE_MAX = 256
# what EC2 allows in a VPC security group's name and description and in a rule's description
TEXT_CHARS = re.compile(r"[a-zA-Z0-9 ._\-:/()#,@\[\]+=&;{}!$*]*")


@dataclass
class Behaviours:
    """What the sandbox enforces; the defaults keep `make demo` and the end-to-end tests converging."""

    consistency_delay: float = 0.5  # seconds a new group or rule stays invisible to Describe calls
    # tokens per action's bucket (0: no throttling), and tokens added back per second. AWS's own figures
    # for non-mutating actions (100, 20/s; --throttle 100/20) throttle the refresh of a few hundred rules,
    # which Terraform's provider, pointed at the sandbox with max_retries = 1, does not outlast: the
    # default is looser, so that `make demo` and the end-to-end tests converge.
    throttle_bucket: int = 500
    throttle_rate: float = 100.0
    rules_quota: int = RULES_PER_GROUP  # inbound (and, apart, outbound) rules per group
    groups_per_interface: int = GROUPS_PER_INTERFACE

    def update(self, doc: dict[str, Any]) -> None:
        """Take the known keys of DOC (as JSON sends them); refuse unknown keys and bad values."""
        known = {f.name: f.type for f in fields(self)}
        for key, value in doc.items():
            if key not in known or isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{key}: not a behaviour, or not a number >= 0")
            setattr(self, key, int(value) if known[key] in ("int", int) else float(value))

    def summary(self) -> str:
        """One line: what this sandbox refuses, as `sandbox up` prints it."""
        throttle = (
            f"RequestLimitExceeded past {self.throttle_bucket} calls at once, {self.throttle_rate:g}/s after (per action)"
            if self.throttle_bucket
            else "no throttling"
        )
        return (
            f"{self.groups_per_interface} groups per interface, {self.rules_quota} rules per group and direction, "
            f"names/descriptions/tags as EC2 allows, {FILTER_VALUES} filter values per call, MaxResults bounds, "
            "DependencyViolation, InvalidPermission.Duplicate, "
            f"new groups and rules invisible for {self.consistency_delay:g} s, {throttle}"
        )


class _State:
    """The layer's memory: behaviours, when each new group or rule becomes visible, buckets, refusals."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.behaviours = Behaviours()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.visible_at: dict[str, float] = {}
            self.buckets: dict[str, tuple[float, float]] = {}  # action -> (tokens, when counted)
            self.refused: Counter[str] = Counter()

    def hidden(self, resource_id: str) -> bool:
        at = self.visible_at.get(resource_id)
        return at is not None and time.monotonic() < at

    def born(self, ids: list[str]) -> None:
        if self.behaviours.consistency_delay > 0:
            at = time.monotonic() + self.behaviours.consistency_delay
            with self.lock:
                self.visible_at.update(dict.fromkeys(ids, at))

    def count(self, code: str) -> None:
        with self.lock:
            self.refused[code] += 1

    def take_token(self, action: str) -> bool:
        """One token from ACTION's bucket; False when it is empty (throttled)."""
        b = self.behaviours
        if b.throttle_bucket <= 0:
            return True
        now = time.monotonic()
        with self.lock:
            tokens, then = self.buckets.get(action, (float(b.throttle_bucket), now))
            tokens = min(float(b.throttle_bucket), tokens + (now - then) * b.throttle_rate)
            if tokens < 1:
                self.buckets[action] = (tokens, now)
                return False
            self.buckets[action] = (tokens - 1, now)
            return True


STATE = _State()


class Refusal(Exception):
    """An EC2 error answer: code, message, HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


# --- the checks, one per behaviour, on the Query API's flat parameters ----------------------------------


def _indexed(params: dict[str, str], pattern: str) -> list[tuple[str, str]]:
    rx = re.compile(pattern)
    return [(k, v) for k, v in params.items() if rx.fullmatch(k)]


def check_filters(params: dict[str, str]) -> None:
    n = len(_indexed(params, r"Filter\.\d+\.Value\.\d+"))
    if n > FILTER_VALUES:
        raise Refusal(
            "FilterLimitExceeded", f"The maximum number of filter values specified on a single call is {FILTER_VALUES}"
        )


@functools.cache
def _max_results_range(action: str) -> tuple[int, int] | None:
    """(min, max) of ACTION's MaxResults in botocore's EC2 model, None when it has none."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("ec2")
    try:
        shape = model.operation_model(action).input_shape
    except Exception:  # an action botocore does not know: moto answers it
        return None
    member = shape.members.get("MaxResults") if shape is not None else None
    if member is None:
        return None
    meta = member.metadata
    return int(meta.get("min", 1)), int(meta.get("max", 2**31 - 1))


def check_max_results(action: str, params: dict[str, str]) -> None:
    raw = params.get("MaxResults")
    if raw is None:
        return
    bounds = _max_results_range(action)
    if bounds is None:
        return
    lo, hi = bounds
    if not raw.lstrip("-").isdigit() or not lo <= int(raw) <= hi:
        raise Refusal(
            "InvalidParameterValue",
            f"Value ( {raw} ) for parameter maxResults is invalid. Expecting a value between {lo} and {hi}.",
        )


def _text(what: str, value: str) -> None:
    if len(value) > TEXT_MAX:
        raise Refusal("InvalidParameterValue", f"{what} is too long: {len(value)} characters, at most {TEXT_MAX}")
    if not TEXT_CHARS.fullmatch(value):
        bad = sorted({c for c in value if not TEXT_CHARS.fullmatch(c)})
        raise Refusal(
            "InvalidParameterValue",
            f"Invalid {what}: characters {''.join(bad)!r} are not allowed; allowed are a-z, A-Z, 0-9, spaces, "
            "and ._-:/()#,@[]+=&;{}!$*",
        )


def check_group_text(params: dict[str, str]) -> None:
    name = params.get("GroupName", "")
    if name.lower().startswith("sg-"):
        raise Refusal("InvalidParameterValue", f"Invalid security group name {name!r}: a name cannot start with sg-")
    _text("security group name", name)
    _text("security group description", params.get("GroupDescription", ""))


def check_rule_descriptions(params: dict[str, str]) -> None:
    for key, value in _indexed(params, r"(IpPermissions|SecurityGroupRule)\.\d+\.(.+\.)?Description"):
        _text(f"rule description ({key})", value)


def check_tags(params: dict[str, str]) -> None:
    tags = _indexed(params, r"(TagSpecification\.\d+\.)?Tag\.\d+\.Key")
    per_spec = Counter(k.rsplit("Tag.", 1)[0] for k, v in tags if not v.lower().startswith("aws:"))
    if any(n > TAGS_PER_RESOURCE for n in per_spec.values()):
        raise Refusal("TagLimitExceeded", f"The maximum number of tags per resource is {TAGS_PER_RESOURCE}")
    for key, tag in tags:
        if tag.lower().startswith("aws:"):
            raise Refusal(
                "InvalidParameterValue", f"Tag keys starting with 'aws:' are reserved for internal use: {tag}"
            )
        if len(tag) > TAG_KEY_MAX:
            raise Refusal("InvalidParameterValue", f"Tag key exceeds the maximum length of {TAG_KEY_MAX} characters")
        value = params.get(key[: -len("Key")] + "Value", "")
        if len(value) > TAG_VALUE_MAX:
            raise Refusal(
                "InvalidParameterValue", f"Tag value exceeds the maximum length of {TAG_VALUE_MAX} characters"
            )


def check_groups_per_interface(params: dict[str, str]) -> None:
    limit = STATE.behaviours.groups_per_interface
    groups = {v for _, v in _indexed(params, r"(.+\.)?SecurityGroupId\.\d+")}
    if len(groups) > limit:
        raise Refusal(
            "SecurityGroupsPerInterfaceLimitExceeded",
            f"You have exceeded the maximum number of security groups ({limit}) allowed per network interface",
        )


def check_dependencies(backend: Any, params: dict[str, str]) -> None:
    """DeleteSecurityGroup: refused while an interface carries the group or another group's rule refers to it."""
    group_id = params.get("GroupId")
    if not group_id or backend is None:
        return
    for eni in list(backend.enis.values()):
        if any(getattr(g, "id", g) == group_id for g in eni.group_set):
            raise Refusal("DependencyViolation", f"resource {group_id} has a dependent object")
    for groups in list(backend.groups.values()):
        for group in list(groups.values()):
            if group.id == group_id:
                continue
            for rule in [*group.ingress_rules, *group.egress_rules]:
                if (getattr(rule, "source_group", None) or {}).get("GroupId") == group_id:
                    raise Refusal("DependencyViolation", f"resource {group_id} has a dependent object")


CHECKS: dict[str, list[Any]] = {
    "CreateSecurityGroup": [check_group_text],
    "AuthorizeSecurityGroupIngress": [check_rule_descriptions],
    "AuthorizeSecurityGroupEgress": [check_rule_descriptions],
    "UpdateSecurityGroupRuleDescriptionsIngress": [check_rule_descriptions],
    "UpdateSecurityGroupRuleDescriptionsEgress": [check_rule_descriptions],
    "ModifySecurityGroupRules": [check_rule_descriptions],
    "ModifyNetworkInterfaceAttribute": [check_groups_per_interface],
    "CreateNetworkInterface": [check_groups_per_interface],
    "RunInstances": [check_groups_per_interface],
}


# --- hooks in moto: the rules quota, and what Describe calls may not see yet ------------------------------

_HOOKED = "_ket_infra_aws_hooks"


def hook_moto() -> bool:
    """Make moto's rules quota the configured one and hide new groups and rules from its describe calls
    (idempotent); True if hooked now."""
    from moto.ec2.exceptions import (
        InvalidSecurityGroupNotFoundError,
        InvalidSecurityGroupRuleIdNotFoundError,
        RulesPerSecurityGroupLimitExceededError,
    )
    from moto.ec2.models.security_groups import SecurityGroupBackend

    if getattr(SecurityGroupBackend, _HOOKED, False):
        return False
    describe_groups = SecurityGroupBackend.describe_security_groups
    describe_rules = SecurityGroupBackend.describe_security_group_rules

    def quota(
        self: Any,
        group: Any,
        current_rule_nb: int,
        ip_ranges: list[Any],
        source_groups: list[Any] | None = None,
        egress: bool = False,
    ) -> None:
        limit = STATE.behaviours.rules_quota if group.vpc_id else 100
        if current_rule_nb + len(ip_ranges or []) + len(source_groups or []) > limit:
            raise RulesPerSecurityGroupLimitExceededError

    def seen(group: Any) -> Any:
        ingress = [r for r in group.ingress_rules if not STATE.hidden(r.id)]
        egress = [r for r in group.egress_rules if not STATE.hidden(r.id)]
        if len(ingress) == len(group.ingress_rules) and len(egress) == len(group.egress_rules):
            return group
        view = copy.copy(group)
        view.ingress_rules, view.egress_rules = ingress, egress
        return view

    def groups(self: Any, group_ids: Any = None, groupnames: Any = None, filters: Any = None) -> Any:
        for gid in group_ids or []:
            if STATE.hidden(gid):
                STATE.count("InvalidGroup.NotFound (consistency)")
                raise InvalidSecurityGroupNotFoundError(gid)
        found = describe_groups(self, group_ids=group_ids, groupnames=groupnames, filters=filters)
        return [seen(g) for g in found if not STATE.hidden(g.id)]

    def rules(self: Any, sg_rule_ids: Any, filters: Any) -> Any:
        for rid in sg_rule_ids or []:
            if STATE.hidden(rid):
                STATE.count("InvalidSecurityGroupRuleId.NotFound (consistency)")
                raise InvalidSecurityGroupRuleIdNotFoundError(rid)
        return [r for r in describe_rules(self, sg_rule_ids, filters) if not STATE.hidden(r.id)]

    SecurityGroupBackend._verify_group_will_respect_rule_count_limit = quota  # type: ignore[method-assign]
    SecurityGroupBackend.describe_security_groups = groups  # type: ignore[method-assign]
    SecurityGroupBackend.describe_security_group_rules = rules  # type: ignore[method-assign]
    setattr(SecurityGroupBackend, _HOOKED, True)
    return True


# --- the WSGI layer ------------------------------------------------------------------------------------


def _error(start_response: Any, refusal: Refusal) -> list[bytes]:
    from xml.sax.saxutils import escape

    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
        f"<Code>{escape(refusal.code)}</Code><Message>{escape(refusal.message)}</Message>"
        f"</Error></Errors><RequestID>{uuid.uuid4()}</RequestID></Response>"
    ).encode()
    reason = "Service Unavailable" if refusal.status == 503 else "Bad Request"
    start_response(f"{refusal.status} {reason}", [("Content-Type", "text/xml"), ("Content-Length", str(len(body)))])
    return [body]


def _json(start_response: Any, doc: Any, status: str = "200 OK") -> list[bytes]:
    body = json.dumps(doc).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def _scope(environ: dict[str, Any]) -> tuple[str, str]:
    """(service, region) from the request's SigV4 credential scope ("" when unsigned)."""
    match = re.search(r"Credential=[^/]+/\d+/([^/]+)/([^/]+)/", environ.get("HTTP_AUTHORIZATION", ""))
    return (match.group(2), match.group(1)) if match else ("", "")


def _backend(region: str) -> Any:
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.ec2.models import ec2_backends

    try:
        return ec2_backends[DEFAULT_ACCOUNT_ID][region]
    except KeyError:
        return None


def check(action: str, params: dict[str, str], region: str) -> None:
    """Raise the Refusal EC2 would answer ACTION with, before moto sees it."""
    if not STATE.take_token(action):
        raise Refusal("RequestLimitExceeded", "Request limit exceeded.", 503)
    check_filters(params)
    check_max_results(action, params)
    check_tags(params)
    for one in CHECKS.get(action, []):
        one(params)
    if action == "DeleteSecurityGroup":
        check_dependencies(_backend(region), params)


def _created(action: str, body: bytes) -> list[str]:
    """The ids of the groups or rules a successful ACTION made (from moto's XML answer)."""
    text = body.decode("utf-8", "replace")
    if action == "CreateSecurityGroup":
        return re.findall(r"<groupId>(sg-[0-9a-f]+)</groupId>", text)
    if action in ("AuthorizeSecurityGroupIngress", "AuthorizeSecurityGroupEgress"):
        return re.findall(r"<securityGroupRuleId>(sgr-[0-9a-f]+)</securityGroupRuleId>", text)
    return []


def layer(app: Any) -> Any:
    """APP (moto's WSGI app) behind the checks above."""

    def wrapped(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if path == CONFIG_PATH:
            return _config(environ, start_response)
        if path == "/moto-api/reset":
            STATE.reset()
            return app(environ, start_response)
        service, region = _scope(environ)
        if service != "ec2":
            return app(environ, start_response)
        size = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(size) if size else b""
        environ["wsgi.input"] = io.BytesIO(raw)
        query = environ.get("QUERY_STRING", "") + "&" + raw.decode("utf-8", "replace")
        params = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        action = params.get("Action", "")
        try:
            check(action, params, region)
        except Refusal as refusal:
            STATE.count(refusal.code)
            return _error(start_response, refusal)
        status: list[str] = []

        def record(st: str, headers: Any, *exc: Any) -> Any:
            status.append(st)
            return start_response(st, headers, *exc)

        body = b"".join(app(environ, record))
        if status and status[0].startswith("2"):
            STATE.born(_created(action, body))
        return [body]

    return wrapped


def _config(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    if environ.get("REQUEST_METHOD") == "POST":
        size = int(environ.get("CONTENT_LENGTH") or 0)
        try:
            doc = json.loads(environ["wsgi.input"].read(size) or b"{}")
            if not isinstance(doc, dict):
                raise ValueError("send a JSON object")
            with STATE.lock:
                STATE.behaviours.update(doc)
                STATE.buckets.clear()  # full buckets of the new size
        except ValueError as exc:
            return _json(start_response, {"error": str(exc)}, "400 Bad Request")
    return _json(start_response, {"behaviours": asdict(STATE.behaviours), "refused": dict(STATE.refused)})
