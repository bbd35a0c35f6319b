"""The least-privilege IAM policy ket-infra itself needs (`ket-infra iam-policy`).

Every action below was seen called in the sandbox while plan, apply, verify, audit and destroy
ran (the moto server's action log, `sandbox_server.ACTION_LOG_VAR`): by ket-infra's own boto3
code, by Terraform's AWS provider for the module's resources (aws_security_group,
aws_vpc_security_group_ingress_rule / _egress_rule, aws_network_interface_sg_attachment) and by
Terraform's s3 backend. tests/test_iam_policy.py holds the policy to that log, runs every command
as a user holding only this policy, and removes each action in turn.

Scoping follows AWS's Service Authorization Reference for Amazon EC2
(https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2.html) and the
EC2 User Guide:
- Describe* and GetManagedPrefixListEntries: no resource-level permissions for the Describe
  calls, so Resource "*", limited to the environment's region by the global key
  aws:RequestedRegion (IAM User Guide, "AWS global condition context keys").
- CreateSecurityGroup: the new security-group resource carries the request's tags, so
  aws:RequestTag/ket-infra/cluster (Terraform's default_tags) limits creation to this cluster's
  groups; the vpc resource of the same call has no tag to judge, only its ARN.
- Tags given at creation (TagSpecifications) are authorized as ec2:CreateTags with the condition
  key ec2:CreateAction naming the creating action ("Grant permission to tag Amazon EC2 resources
  during creation", EC2 User Guide, supported-iam-actions-tagging).
- Authorize/Revoke*, DeleteSecurityGroup: the security-group (and security-group-rule) resource
  carries its tags: ec2:ResourceTag/ket-infra/cluster limits them to what ket-infra created; a
  new rule (security-group-rule resource) is judged by aws:RequestTag instead.
- ModifyNetworkInterfaceAttribute: authorized on the network-interface and on every
  security-group the call names; the call names all the groups an interface keeps (foreign ones
  too), so no tag condition can hold for the groups. Which interfaces are the plan's nodes' is
  known only from AWS (IAM has no condition on a private address): the ARN pattern is as narrow
  as the region and account.
- The interface tag ket-infra writes for people (ket-infra/detached-groups): CreateTags and
  DeleteTags on network-interface, limited by aws:TagKeys to that key.
- ModifyInstanceAttribute (the source/destination check): on instance; the reference lists
  ec2:Attribute keys for it, but they are not relied on (not every Modify*Attribute call is seen
  to carry them), so it is limited only by region and account.
- sts:GetCallerIdentity (the account check, Terraform's provider) needs no permission: AWS
  answers it for any identity ("No permissions are required", STS API reference).
- The s3 backend (Terraform's "s3" backend documentation, "Permissions Required"): s3:ListBucket
  on the bucket; GetObject and PutObject on the state key and its lock file (`KEY.tflock`,
  use_lockfile), DeleteObject on the lock file; ket-infra's own records beside the state
  (`KEY.detached-groups.json`, `KEY.source-dest-check.json`): GetObject, PutObject, DeleteObject.
"""

from __future__ import annotations

from typing import Any

from ket_infra.aws import CLUSTER_TAG, DETACHED_TAG
from ket_infra.environment import Environment

COMMANDS = ("plan", "apply", "verify", "audit", "destroy")

# Read-only, per command (ket-infra's discovery, verify, audit and detach reads, Terraform's refresh).
_PLAN_READS = ("DescribeInstances", "DescribeSecurityGroups", "DescribeSecurityGroupRules", "DescribeNetworkInterfaces")
_VERIFY_READS = ("DescribeInstances", "DescribeSecurityGroups", "DescribeNetworkAcls", "GetManagedPrefixListEntries")
READS: dict[str, tuple[str, ...]] = {
    "plan": _PLAN_READS,
    "apply": (*_PLAN_READS, "DescribeNetworkAcls", "GetManagedPrefixListEntries"),  # then judged as verify judges
    "verify": _VERIFY_READS,
    "audit": (*_VERIFY_READS, "DescribeSecurityGroupRules", "DescribeNetworkInterfaces", "DescribeSubnets"),
    "destroy": _PLAN_READS,
}
# What changes the cloud, per command (read-only commands change nothing).
_GROUP_WRITES = (
    "AuthorizeSecurityGroupIngress",
    "AuthorizeSecurityGroupEgress",
    "RevokeSecurityGroupIngress",
    "RevokeSecurityGroupEgress",
    "DeleteSecurityGroup",
)
_HOST_WRITES = ("ModifyNetworkInterfaceAttribute", "ModifyInstanceAttribute", "CreateTags", "DeleteTags")
WRITES: dict[str, tuple[str, ...]] = {
    "plan": (),
    "apply": ("CreateSecurityGroup", *_GROUP_WRITES, *_HOST_WRITES),
    "verify": (),
    "audit": (),
    "destroy": (*_GROUP_WRITES, *_HOST_WRITES),
}
S3_COMMANDS = ("plan", "apply", "destroy")  # Terraform's state (and its lock), ket-infra's records
RECORD_SUFFIXES = (".detached-groups.json", ".source-dest-check.json")


def _statement(sid: str, actions: list[str], resources: list[str], condition: dict[str, Any] | None = None) -> Any:
    out: dict[str, Any] = {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources}
    if condition:
        out["Condition"] = condition
    return out


def policy(env: Environment | None, commands: tuple[str, ...] = COMMANDS) -> dict[str, Any]:
    """The IAM policy document for COMMANDS in ENV (without ENV: any region, account and ket-infra cluster)."""
    from ket_infra.plan import load_plan

    region = env.aws.region if env else "*"
    account = (env.aws.account_id or "*") if env else "*"
    cluster = load_plan(env.plan_file).cluster if env else None
    arn = f"arn:aws:ec2:{region}:{account}"
    reads = sorted({f"ec2:{a}" for c in commands for a in READS[c]})
    writes = {a for c in commands for a in WRITES[c]}

    def tagged(key: str) -> dict[str, Any]:
        """A condition on the ket-infra/cluster tag under KEY: this cluster's, or (no ENV) any cluster's."""
        if cluster is None:
            return {"StringLike": {f"{key}/{CLUSTER_TAG}": "*"}}
        return {"StringEquals": {f"{key}/{CLUSTER_TAG}": cluster}}

    def have(*actions: str) -> list[str]:
        return [f"ec2:{a}" for a in actions if a in writes]

    region_only = {"StringEquals": {"aws:RequestedRegion": region}} if env else None
    statements = [_statement("ReadTheCluster", reads, ["*"], region_only)]
    creating = have("CreateSecurityGroup")
    if creating:
        statements += [
            _statement("CreateThisClustersGroups", creating, [f"{arn}:security-group/*"], tagged("aws:RequestTag")),
            _statement("CreateGroupsInTheVpc", creating, [f"{arn}:vpc/*"]),
            _statement(
                "TagWhatItCreates",
                ["ec2:CreateTags"],
                [f"{arn}:security-group/*", f"{arn}:security-group-rule/*"],
                {
                    "StringEquals": {
                        "ec2:CreateAction": [
                            "CreateSecurityGroup",
                            "AuthorizeSecurityGroupIngress",
                            "AuthorizeSecurityGroupEgress",
                        ]
                    }
                },
            ),
        ]
    own = have(*_GROUP_WRITES)
    if own:
        statements.append(
            _statement(
                "ChangeOnlyThisClustersGroups",
                own,
                [f"{arn}:security-group/*", f"{arn}:security-group-rule/*"],
                tagged("ec2:ResourceTag"),
            )
        )
    new_rules = have("AuthorizeSecurityGroupIngress", "AuthorizeSecurityGroupEgress")
    if new_rules:
        statements.append(
            _statement(
                "AddRulesTaggedForThisCluster", new_rules, [f"{arn}:security-group-rule/*"], tagged("aws:RequestTag")
            )
        )
    interfaces = have("ModifyNetworkInterfaceAttribute")
    if interfaces:
        statements.append(
            _statement(
                "AttachAndDetachGroupsOnInterfaces",
                interfaces,
                [f"{arn}:network-interface/*", f"{arn}:security-group/*"],
            )
        )
    tags = have("CreateTags", "DeleteTags")
    if tags:
        statements.append(
            _statement(
                "TagInterfacesWithTheDetachedGroups",
                tags,
                [f"{arn}:network-interface/*"],
                {"ForAllValues:StringEquals": {"aws:TagKeys": [DETACHED_TAG]}, "Null": {"aws:TagKeys": "false"}},
            )
        )
    check = have("ModifyInstanceAttribute")
    if check:
        statements.append(_statement("SetTheSourceDestCheck", check, [f"{arn}:instance/*"]))
    backend = env.terraform.backend if env else None
    if backend is not None and backend.type == "s3" and set(commands) & set(S3_COMMANDS):
        bucket, key = backend.bucket, backend.key
        lock = [f"arn:aws:s3:::{bucket}/{key}.tflock"] if backend.use_lockfile else []
        records = [f"arn:aws:s3:::{bucket}/{key}{suffix}" for suffix in RECORD_SUFFIXES]
        statements += [
            _statement("ListTheStateBucket", ["s3:ListBucket"], [f"arn:aws:s3:::{bucket}"]),
            _statement(
                "ReadAndWriteTheStateAndRecords",
                ["s3:GetObject", "s3:PutObject"],
                [f"arn:aws:s3:::{bucket}/{key}", *lock, *records],
            ),
            _statement("RemoveTheLockAndRecords", ["s3:DeleteObject"], [*lock, *records]),
        ]
    return {"Version": "2012-10-17", "Statement": statements}


def actions(document: dict[str, Any]) -> list[str]:
    """Every action DOCUMENT allows, once each."""
    return sorted({a for s in document["Statement"] for a in s["Action"]})


def parse_commands(text: str) -> tuple[str, ...]:
    """`plan,apply` -> ("plan", "apply"), in ket-infra's order; an unknown name is one line naming the choices."""
    from ket_infra.errors import KetInfraError

    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in COMMANDS]
    if unknown or not names:
        raise KetInfraError(
            f"--commands: {', '.join(unknown) or 'nothing given'}: not a ket-infra command that calls AWS; "
            f"give a comma-separated list of {', '.join(COMMANDS)}"
        )
    return tuple(c for c in COMMANDS if c in names)
