"""`ket-infra iam-policy`: the policy is what ket-infra calls, and each action in it is needed.

moto enforces IAM once told to (its `INITIAL_NO_AUTH_ACTION_COUNT`): every call is then signed by an
IAM user and judged against that user's policies. moto judges the action of every call and the
resource of S3 calls; it does not judge EC2 resource ARNs (it asks with "*") nor conditions (a
statement with one fails). So the policy is given to moto as `moto_view` makes it: EC2 statements
on "*", no conditions; the S3 statements keep their resources. Conditions and EC2 ARNs are held to
AWS's Service Authorization Reference in ket_infra/iam.py, not here.

In-process (mock_aws): each action ket-infra's own boto3 code calls, removed in turn, makes the
command's step that calls it fail with one line naming it. With the sandbox and real Terraform
(test_e2e-style, marked e2e): the actions only Terraform calls, and the whole workflow as a user
holding only the policy.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from ket_infra import iam
from ket_infra.cli import cli
from ket_infra.errors import S3_ACTIONS, S3_READ, KetInfraError, lacks
from ket_infra.sandbox import sandbox_down, sandbox_up
from tests.conftest import EXAMPLES, ROOT, base_plan, node, write_yaml
from tests.tf import needs_terraform

ROUTED = {"provider": "calico", "options": {"calico": {"mode": "routed"}}}
BUCKET, KEY = "ket-state", "test/ket.tfstate"


def moto_view(document: dict[str, Any], without: Collection[str] = ()) -> dict[str, Any]:
    """DOCUMENT as moto can judge it (see the module doc), WITHOUT these actions.

    moto judges an S3 call as the action named after its operation (s3:HeadObject, s3:ListObjectsV2),
    where AWS judges it as the IAM action S3_ACTIONS maps it to (s3:GetObject, s3:ListBucket): each S3
    action allowed allows those operations too.
    """
    statements = []
    for s in document["Statement"]:
        actions = [a for a in s["Action"] if a not in without]
        actions += [f"s3:{op}" for op, action in S3_ACTIONS.items() if f"s3:{action}" in actions]
        if not actions:
            continue
        ec2 = any(r.startswith("arn:aws:ec2:") for r in s["Resource"])
        statements.append({"Effect": "Allow", "Action": actions, "Resource": "*" if ec2 else s["Resource"]})
    return {"Version": document["Version"], "Statement": statements}


def test_the_example_policy_is_the_commands_output() -> None:
    result = CliRunner().invoke(cli, ["iam-policy", "--env", str(ROOT / "environments" / "example.yaml")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == json.loads((EXAMPLES / "iam-policy.json").read_text())


def test_verify_and_audit_are_read_only_and_commands_are_checked() -> None:
    result = CliRunner().invoke(cli, ["iam-policy", "--commands", "verify,audit"])
    assert result.exit_code == 0, result.output
    read = iam.actions(json.loads(result.output))
    assert read == [
        "ec2:DescribeInstances",
        "ec2:DescribeNetworkAcls",
        "ec2:DescribeNetworkInterfaces",
        "ec2:DescribeSecurityGroupRules",
        "ec2:DescribeSecurityGroups",
        "ec2:DescribeSubnets",
        "ec2:GetManagedPrefixListEntries",
    ]
    with pytest.raises(KetInfraError, match=r"^--commands: deploy: not a ket-infra command that calls AWS; give "):
        iam.parse_commands("verify,deploy")


# --- in-process: what ket-infra's own boto3 code calls ---------------------------------------------


class World:
    """A kismatic-provision-like cluster in moto (routed Calico, s3 backend), and the workflow's steps."""

    def __init__(self, root: Path) -> None:
        import boto3

        from ket_infra import sandbox

        self.root = root
        self.ec2 = boto3.client("ec2", region_name="eu-west-1")
        self.s3 = boto3.client("s3", region_name="eu-west-1")
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(sandbox, "_ec2", lambda _port: self.ec2)
            plan = write_yaml(root / "plan.yaml", base_plan(ROUTED))
            seeded = sandbox.seed(0, sandbox.load_plan(plan), like=sandbox.LIKE_KISMATIC_PROVISION)
        self.default = seeded.groups[0].group_id
        self.s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        backend = {"type": "s3", "bucket": BUCKET, "key": KEY, "region": "eu-west-1"}
        env = {"plan_file": "plan.yaml", "aws": {"region": "eu-west-1"}, "terraform": {"backend": backend}}
        self.env_file = write_yaml(root / "env.yaml", env)
        # a group ket-infra took off an interface (its record says so), another one there now
        self.other = self.ec2.create_security_group(GroupName="other", Description="other", VpcId=seeded.vpc_id)
        self.eni = self.ec2.describe_network_interfaces()["NetworkInterfaces"][0]["NetworkInterfaceId"]
        self.book = root / "detached.json"
        self.prefix_list = self.ec2.create_managed_prefix_list(
            PrefixListName="office", MaxEntries=2, AddressFamily="IPv4", Entries=[{"Cidr": "10.0.1.5/32"}]
        )["PrefixList"]["PrefixListId"]
        self.users = 0
        self.lines: list[str] = []

    def reset(self) -> None:
        """The cloud as the steps expect it: the record's group off the interface, every check on, no records."""
        self.ec2.modify_network_interface_attribute(NetworkInterfaceId=self.eni, Groups=[self.other["GroupId"]])
        self.book.write_text(json.dumps({"detached": {self.eni: [self.default]}}))
        for r in self.ec2.describe_instances()["Reservations"]:
            for i in r["Instances"]:
                self.ec2.modify_instance_attribute(InstanceId=i["InstanceId"], SourceDestCheck={"Value": True})
        self.s3.delete_object(Bucket=BUCKET, Key=f"{KEY}.source-dest-check.json")
        self.lines.clear()

    def context(self) -> Any:
        from ket_infra import workflow

        return workflow.context(str(self.env_file), self.lines.append, base=self.root)

    def as_user(self, document: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
        """From now on (until the test ends) every call is judged, signed as a user holding only DOCUMENT."""
        import boto3
        from moto import settings
        from moto.core.authorization import ActionAuthenticatorMixin

        self.users += 1
        name = f"ket-{self.users}"
        iam_client = boto3.client("iam", region_name="us-east-1")
        iam_client.create_user(UserName=name)
        iam_client.put_user_policy(UserName=name, PolicyName="ket-infra", PolicyDocument=json.dumps(document))
        key = iam_client.create_access_key(UserName=name)["AccessKey"]
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
        monkeypatch.setattr(ActionAuthenticatorMixin, "request_count", 0)


def _discover(w: World) -> None:
    from ket_infra import aws

    ctx = w.context()
    aws.discover(ctx.plan, ctx.env)


def _verify(w: World) -> None:
    from ket_infra.verify import verify

    ctx = w.context()
    verify(ctx.plan, ctx.env, ctx.rules)


def _prefix_lists(w: World) -> None:
    from ket_infra import aws
    from ket_infra.verify import read_prefix_lists

    ctx = w.context()
    assert read_prefix_lists(ctx.env, [w.prefix_list], aws.client(ctx.env, "ec2")) == {w.prefix_list: ("10.0.1.5/32",)}


def _audit(w: World) -> None:
    from ket_infra.audit import audit

    ctx = w.context()
    audit(ctx.plan, ctx.env, ctx.rules)


def _source_dest_check(w: World) -> None:
    from ket_infra import workflow

    workflow.host_settings(w.context(), restore=False)


def _reattach(w: World) -> None:
    from ket_infra import aws, detach

    ctx = w.context()
    detach.reattach(ctx.env, aws.discover(ctx.plan, ctx.env), w.lines.append, record=detach.Record(path=w.book))


def _records(w: World) -> None:
    from ket_infra import detach

    ctx = w.context()
    record = detach.CheckRecord.of(ctx.env, ctx.work)
    book = {**record.read(), "i-1": detach.Checked("worker01", False)}
    record.write(book)
    assert record.read() == book
    record.write({})
    assert record.read() == {}


# Each action ket-infra's own code calls: the step of a command that calls it (plan, apply, verify,
# audit and destroy all start by finding the nodes; apply and destroy set the check and move groups;
# apply and destroy keep their records beside an s3 state).
STEPS: dict[str, Callable[[World], None]] = {
    "ec2:DescribeInstances": _discover,
    "ec2:DescribeSecurityGroups": _verify,
    "ec2:DescribeNetworkAcls": _verify,
    "ec2:GetManagedPrefixListEntries": _prefix_lists,
    "ec2:DescribeSecurityGroupRules": _audit,
    "ec2:DescribeNetworkInterfaces": _audit,
    "ec2:DescribeSubnets": _audit,
    "ec2:ModifyInstanceAttribute": _source_dest_check,
    "ec2:CreateTags": _reattach,
    "ec2:ModifyNetworkInterfaceAttribute": _reattach,
    "ec2:DeleteTags": _reattach,
    "s3:GetObject": _records,
    "s3:PutObject": _records,
    "s3:DeleteObject": _records,
}
# What only Terraform (the AWS provider, the s3 backend) calls: proven with the sandbox and real Terraform
# (test_the_workflow_with_the_policy_and_without_terraforms_actions), each case one ket-infra run without
# these actions, several at once where Terraform reports each refused call on its own.
TERRAFORM_CASES: dict[str, frozenset[str]] = {
    "plan": frozenset({"s3:ListBucket"}),  # the s3 backend reads the state at init
    "apply": frozenset({"ec2:CreateSecurityGroup"}),
    "apply, rules swapped": frozenset(  # Terraform meets each refused rule on its own
        {
            "ec2:AuthorizeSecurityGroupIngress",
            "ec2:AuthorizeSecurityGroupEgress",
            "ec2:RevokeSecurityGroupIngress",
            "ec2:RevokeSecurityGroupEgress",
        }
    ),
    "destroy": frozenset({"ec2:DeleteSecurityGroup"}),
}
TERRAFORM_ONLY = set().union(*TERRAFORM_CASES.values())


def _policy(root: Path) -> dict[str, Any]:
    from ket_infra.environment import load_environment

    return iam.policy(load_environment(str(root / "env.yaml")))


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from moto import mock_aws

    from ket_infra.sandbox_server import patch_moto

    patch_moto()  # moto answers as the sandbox and the other moto tests see it
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("AWS_PROFILE", raising=False)
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            patch.setenv(name, "testing")
        with mock_aws():
            yield World(tmp_path_factory.mktemp("iam"))


@pytest.fixture
def world(cloud: World) -> World:
    cloud.reset()
    return cloud


def test_every_action_of_the_policy_has_its_case(tmp_path: Path) -> None:
    """The cases below are generated from the policy: a new action in it without a case fails here."""
    write_yaml(tmp_path / "plan.yaml", base_plan(ROUTED))
    backend = {"type": "s3", "bucket": BUCKET, "key": KEY, "region": "eu-west-1", "use_lockfile": True}
    write_yaml(
        tmp_path / "env.yaml",
        {"plan_file": "plan.yaml", "aws": {"region": "eu-west-1"}, "terraform": {"backend": backend}},
    )
    assert sorted(set(STEPS) | TERRAFORM_ONLY) == iam.actions(_policy(tmp_path))
    assert not set(STEPS) & TERRAFORM_ONLY
    assert sum(len(removed) for removed in TERRAFORM_CASES.values()) == len(TERRAFORM_ONLY)  # one case each


def test_each_step_works_with_the_policy(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from moto import settings

    world.as_user(moto_view(_policy(world.root)), monkeypatch)
    for step in dict.fromkeys(STEPS.values()):
        step(world)
    monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", float("inf"))  # the test's own look
    groups = world.ec2.describe_network_interfaces(NetworkInterfaceIds=[world.eni])["NetworkInterfaces"][0]["Groups"]
    assert sorted(g["GroupId"] for g in groups) == sorted([world.default, world.other["GroupId"]])


@pytest.mark.parametrize("action", sorted(STEPS))
def test_without_one_action_its_step_fails_naming_it(
    world: World, action: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.as_user(moto_view(_policy(world.root), without={action}), monkeypatch)
    with pytest.raises(KetInfraError) as info:
        STEPS[action](world)
    message = str(info.value)
    assert "\n" not in message
    assert message.endswith(lacks([S3_READ if action == "s3:GetObject" else action])), message


def test_terraforms_refusals_name_each_missing_action() -> None:
    """The AWS provider's and the s3 backend's errors (aws-sdk-go-v2's `operation error` text) as one line."""
    from ket_infra.terraform import denied

    error = (
        "Error: creating Security Group (test-etcd): operation error EC2: CreateSecurityGroup, https response error "
        "StatusCode: 403, RequestID: 1, api error UnauthorizedOperation: You are not authorized to perform this "
        "operation. Encoded authorization failure message: xyz\n"
        "Error: operation error EC2: AuthorizeSecurityGroupIngress, https response error StatusCode: 403, "
        "api error AccessDenied: User: arn:aws:iam::123456789012:user/ket is not authorized to perform: "
        "ec2:AuthorizeSecurityGroupIngress\n"
        "Error: Failed to get existing workspaces: operation error S3: ListObjectsV2, https response error "
        "StatusCode: 403, api error AccessDenied: Access Denied\n"
        "Error: operation error EC2: DescribeVpcs, https response error StatusCode: 400, api error "
        "InvalidVpcID.NotFound: gone\n"
    )
    assert denied(error) == ["ec2:CreateSecurityGroup", "ec2:AuthorizeSecurityGroupIngress", "s3:ListBucket"]
    assert lacks(denied(error)) == (
        "the AWS identity lacks ec2:AuthorizeSecurityGroupIngress, ec2:CreateSecurityGroup, s3:ListBucket; "
        "see ket-infra iam-policy"
    )
    # S3 answers a HEAD without a body, so the SDK names only the status: 403 is s3:GetObject missing, or,
    # for an object that does not exist yet (the first run's state), s3:ListBucket (S3 API reference, HeadObject)
    head = (
        'Error: Error refreshing state: Unable to access object "test/ket.tfstate" in S3 bucket "ket-state": '
        "operation error S3: HeadObject, https response error StatusCode: 403, RequestID: , HostID: , api error "
        "Forbidden: Forbidden\n"
    )
    assert lacks(denied(head)) == (
        "the AWS identity lacks s3:GetObject (or s3:ListBucket, where the object does not exist yet); "
        "see ket-infra iam-policy"
    )


# --- end to end: the sandbox's moto server judging every call, real Terraform ---------------------------


@needs_terraform
@pytest.mark.e2e
def test_the_workflow_with_the_policy_and_without_terraforms_actions(tmp_path: Path) -> None:
    """A one-node cluster (Calico routed, moved off kismatic-provision's wide-open group with detach_groups, state
    in the sandbox's s3) as IAM users of the sandbox's moto server, which judges every call once told to
    (`/moto-api/reset-auth`). moto judges the action of EC2 calls (their resource as "*") and S3's bucket and key,
    and takes a statement with a condition for a deny: each user holds the policy as `moto_view` makes it, its EC2
    statements on "*" and no conditions (those are held to AWS's reference in ket_infra/iam.py, not here).

    Each action only Terraform calls (TERRAFORM_CASES), taken away, makes the command whose Terraform run needs
    it fail with one line naming it (several at once where Terraform meets each refusal on its own: rules
    swapped for others) and saying what may be half-applied; a user holding exactly the policy runs plan,
    apply, verify, audit and destroy, each succeeding, and destroy leaves the node's interface as it was. The
    sandbox's action log holds every call: each one accepted is an action of the policy (sts:GetCallerIdentity
    needs none), each one refused is one the run's user lacks. 13 Terraform runs (and `terraform version`):
    2 inits, 11 that start the AWS provider.
    """
    import urllib.request

    from ket_infra.environment import load_environment
    from ket_infra.sandbox_server import ACTION_LOG_VAR
    from tests.test_e2e import Sandbox, one_line_error

    box = Sandbox(tmp_path)
    log = tmp_path / "actions.jsonl"
    data = base_plan(ROUTED)
    for role in ("etcd", "master", "worker"):  # one node, one group: the fewest Terraform resources
        data[role]["nodes"] = [node("node01", "10.0.1.11")]
    plan = write_yaml(tmp_path / "plan.yaml", data)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ACTION_LOG_VAR, str(log))  # the server started now notes every call
        sandbox_up(plan, box.port, box.env_file, box.root / ".work", progress=lambda _m: None,
                   like="kismatic-provision")  # fmt: skip
    try:
        ec2, iam_client = box.client(), box.client("iam")
        box.client("s3").create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        instance = ec2.describe_instances()["Reservations"][0]["Instances"][0]
        # kismatic-provision leaves the check off; on here, so that apply changes it and destroy puts it back
        ec2.modify_instance_attribute(InstanceId=instance["InstanceId"], SourceDestCheck={"Value": True})

        def interface() -> tuple[list[str], bool]:
            """The node's groups and check."""
            eni = ec2.describe_network_interfaces()["NetworkInterfaces"][0]
            check = ec2.describe_instances()["Reservations"][0]["Instances"][0]["SourceDestCheck"]
            return sorted(g["GroupName"] for g in eni["Groups"]), check

        as_it_was = interface()
        assert as_it_was == (["default"], True)
        backend = {
            "type": "s3",
            "bucket": BUCKET,
            "key": KEY,
            "region": "eu-west-1",
            "use_lockfile": True,
            "endpoint_url": f"http://127.0.0.1:{box.port}",
        }
        # an ingress rule from an extra CIDR and egress to the downloads' CIDR, swapped below
        first = {"egress_cidrs": ["10.0.1.60/32"], "extra_rules": [_extra_rule("10.0.1.60/32")]}
        env = box.env_with("iam", **{"terraform.backend": backend}, detach_groups=["default"], preflight=False, **first)
        policy = iam.policy(load_environment(str(env)))

        keys: dict[str, str] = {}  # access key -> user
        lacking: dict[str, frozenset[str]] = {}  # user -> the actions taken from the policy

        def user(name: str, without: frozenset[str] = frozenset()) -> dict[str, str]:
            iam_client.create_user(UserName=name)
            document = json.dumps(moto_view(policy, without))
            iam_client.put_user_policy(UserName=name, PolicyName="ket-infra", PolicyDocument=document)
            key = iam_client.create_access_key(UserName=name)["AccessKey"]
            keys[key["AccessKeyId"]], lacking[name] = name, without
            return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}

        def judged(on: bool) -> None:
            """moto judges every call from now on (ON), or none (the test's own calls, as the sandbox's admin)."""
            url = f"http://127.0.0.1:{box.port}/moto-api/reset-auth"
            # text/plain: urllib's default form type would leave moto's request.data empty
            asked = urllib.request.Request(url, b"0" if on else b"inf", {"Content-Type": "text/plain"}, method="POST")
            with urllib.request.urlopen(asked, timeout=10):
                pass

        def run(who: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
            judged(True)
            try:
                return box.run(*args, env_file=env, extra=who)
            finally:
                judged(False)

        users = {case: user(f"without-{i}", removed) for i, (case, removed) in enumerate(TERRAFORM_CASES.items())}
        full = user("full")

        def refused(case: str, *args: str) -> str:
            """The one error line of ARGS run without CASE's actions: it names each of them."""
            line = one_line_error(run(users[case], *args))
            # s3:ListBucket: the s3 backend reads the state, which does not exist yet; S3 refuses that read
            # as it refuses one without s3:GetObject, and the line names both
            named = sorted(S3_READ if a == "s3:ListBucket" else a for a in TERRAFORM_CASES[case])
            assert f": {lacks(named)}" in line, line
            return line

        refused("plan", "plan")  # nothing planned, nothing changed
        line = refused("apply", "apply", "--auto-approve")
        assert line.endswith("-- the apply may have made part of its changes; run ket-infra plan --env "
                             f"{env} to see what is left, then apply again (a rerun converges)"), line  # fmt: skip
        assert box.ket_groups() == [] and interface() == as_it_was
        planned = run(full, "plan")
        assert planned.returncode == 0, planned.stdout + planned.stderr
        applied = run(full, "apply")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert "detach_groups: done on 1 interface(s); destroy puts the groups back" in applied.stderr  # progress
        assert interface() == (["test-etcd-master-worker"], False)
        for command in ("verify", "audit"):
            judged_ok = run(full, command)
            assert judged_ok.returncode == 0, judged_ok.stdout + judged_ok.stderr

        # the rules of 10.0.1.60 give way to those of 10.0.1.61: each refused, all named at once
        rules = ec2.describe_security_group_rules()["SecurityGroupRules"]
        swapped = yaml.safe_load(env.read_text())
        swapped.update(egress_cidrs=["10.0.1.61/32"], extra_rules=[_extra_rule("10.0.1.61/32")])
        env.write_text(yaml.safe_dump(swapped))
        line = refused("apply, rules swapped", "apply", "--auto-approve")
        assert "-- the apply may have made part of its changes; run ket-infra plan" in line, line
        assert ec2.describe_security_group_rules()["SecurityGroupRules"] == rules
        line = refused("destroy", "destroy", "--auto-approve")
        assert line.endswith(f"-- the destroy may have removed part of ket-infra's groups and rules; run ket-infra "
                             f"destroy --env {env} again once fixed (the source/dest checks are put back after it)"), line  # fmt: skip
        assert [g["GroupName"] for g in box.ket_groups()] == ["test-etcd-master-worker"]

        destroyed = run(full, "destroy", "--auto-approve")
        assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
        assert box.ket_groups() == [] and interface() == as_it_was
    finally:
        sandbox_down(box.port, box.root / ".work")

    calls = [json.loads(line) for line in log.read_text().splitlines()]
    ours = [c for c in calls if c["key"] in keys]
    accepted = {c["action"] for c in ours if c["status"] < 400}
    assert accepted - {"sts:GetCallerIdentity"} <= set(iam.actions(policy)), "called, not in the policy"
    # called only where a rule names a prefix list: test_without_one_action_its_step_fails_naming_it calls it
    assert set(iam.actions(policy)) - accepted == {"ec2:GetManagedPrefixListEntries"}
    denied = {(keys[c["key"]], c["action"]) for c in ours if c["status"] == 403}
    # S3 refuses a read of a missing key (logged as the read, s3:GetObject) to a user without s3:ListBucket
    missing = {"s3:GetObject"}
    assert all(a in lacking[name] or (a in missing and "s3:ListBucket" in lacking[name]) for name, a in denied), denied
    assert {action for _name, action in denied} == TERRAFORM_ONLY | missing


def _extra_rule(cidr: str) -> dict[str, Any]:
    return {"name": "probe", "protocol": "tcp", "ports": 9999, "to": "all", "from_cidr": cidr, "purpose": "a probe"}
