"""Discovery and pre-change guards against moto (mock_aws)."""

from __future__ import annotations

import pytest

from ket_infra.aws import AwsError, check_interfaces, discover
from tests.conftest import EXAMPLES, free_port
from tests.test_verify import build, image_id


def add_groups(cloud, host: str, count: int) -> None:  # type: ignore[no-untyped-def]
    eni = cloud.enis[host]
    current = [
        g["GroupId"]
        for g in cloud.ec2.describe_network_interfaces(NetworkInterfaceIds=[eni])["NetworkInterfaces"][0]["Groups"]
    ]
    extra = [
        cloud.ec2.create_security_group(GroupName=f"{host}-extra-{i}", Description="x", VpcId=cloud.vpc)["GroupId"]
        for i in range(count)
    ]
    cloud.ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=[*current, *extra][:5])


def test_replan_with_five_groups_including_our_own_is_fine(aws: None) -> None:
    cloud, plan, env, rules = build(EXAMPLES / "contiv.yaml")
    add_groups(cloud, "worker01", 3)  # default + ket-infra's + 3 others = 5
    own = {f"{rules.cluster}-{g.name}" for g in rules.groups}
    check_interfaces(discover(plan, env), own, plan)


def test_interface_full_of_other_groups_is_refused(aws: None) -> None:
    cloud, plan, env, rules = build(EXAMPLES / "contiv.yaml")
    eni = cloud.enis["worker02"]
    default = next(
        g["GroupId"]
        for g in cloud.ec2.describe_network_interfaces(NetworkInterfaceIds=[eni])["NetworkInterfaces"][0]["Groups"]
    )
    cloud.ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=[default])
    add_groups(cloud, "worker02", 4)
    storage = cloud.enis["storage01"]
    cloud.ec2.modify_network_interface_attribute(NetworkInterfaceId=storage, Groups=[default])
    add_groups(cloud, "storage01", 4)
    own = {f"{rules.cluster}-{g.name}" for g in rules.groups}
    with pytest.raises(AwsError) as info:
        check_interfaces(discover(plan, env), own, plan)
    assert str(info.value) == (
        f"{plan.path}: worker02 ({eni}), storage01 ({storage}) already carry 5 security groups, the AWS limit per "
        "interface; detach one before applying"
    )


def test_same_address_in_two_vpcs_is_refused(aws: None) -> None:
    cloud, plan, env, _rules = build(EXAMPLES / "contiv.yaml")
    other = cloud.ec2.create_vpc(CidrBlock="10.2.0.0/16")["Vpc"]["VpcId"]
    subnet = cloud.ec2.create_subnet(VpcId=other, CidrBlock="10.2.1.0/24")["Subnet"]["SubnetId"]
    cloud.ec2.run_instances(
        ImageId=image_id(cloud.ec2), MinCount=1, MaxCount=1, SubnetId=subnet, PrivateIpAddress="10.2.1.31"
    )
    with pytest.raises(AwsError) as info:
        discover(plan, env)
    message = str(info.value)
    twin = next(
        i["InstanceId"]
        for r in cloud.ec2.describe_instances()["Reservations"]
        for i in r["Instances"]
        if i["VpcId"] == other
    )
    first, second = sorted([(cloud.instances["worker01"], cloud.vpc), (twin, other)])
    assert message in (
        f"worker01: the address 10.2.1.31 belongs to two instances ({a} in {va} and {b} in {vb}); ket-infra cannot "
        "tell which is the node: stop the other one or use another region/account"
        for (a, va), (b, vb) in ((first, second), (second, first))
    ), message


def source_dest_check(cloud, host: str) -> bool:  # type: ignore[no-untyped-def]
    attr = cloud.ec2.describe_instance_attribute(InstanceId=cloud.instances[host], Attribute="sourceDestCheck")
    return bool(attr["SourceDestCheck"]["Value"])


def test_source_dest_check_is_turned_off_and_back_on(aws: None) -> None:
    from ket_infra.aws import set_source_dest_check

    cloud, plan, env, _rules = build(EXAMPLES / "contiv.yaml")  # contiv: every check starts on
    found = discover(plan, env)
    assert all(n.source_dest_check for n in found.nodes)
    workers = [n for n in found.nodes if n.host.startswith("worker")]
    lines: list[str] = []
    assert set_source_dest_check(env, workers, False, lines.append) == len(workers) == 2
    assert {n.host: source_dest_check(cloud, n.host) for n in found.nodes} == {
        "etcd01": True,
        "master01": True,
        "worker01": False,
        "worker02": False,
        "storage01": True,
    }
    assert lines == [f"  {n.host} ({n.instance_id}): source/dest check off" for n in workers]
    assert not any(n.source_dest_check for n in discover(plan, env).nodes if n.host.startswith("worker"))
    assert set_source_dest_check(env, workers, False, lines.append) == 0  # already off
    assert set_source_dest_check(env, workers, True, lines.append) == 2
    assert all(source_dest_check(cloud, n.host) for n in found.nodes)


def test_nodes_in_two_vpcs_are_refused(aws: None) -> None:
    cloud, plan, env, _rules = build(EXAMPLES / "contiv.yaml")
    assert discover(plan, env).vpc_id == cloud.vpc
    # worker01 moves to another VPC with the same address range (AWS allows overlapping VPCs)
    ec2 = cloud.ec2
    address = plan.node("worker01").address
    ec2.terminate_instances(InstanceIds=[cloud.instances["worker01"]])
    other = ec2.create_vpc(CidrBlock=f"{address.rsplit('.', 2)[0]}.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=other, CidrBlock=f"{address.rsplit('.', 1)[0]}.0/24")["Subnet"]["SubnetId"]
    ec2.run_instances(ImageId=image_id(ec2), MinCount=1, MaxCount=1, SubnetId=subnet, PrivateIpAddress=address)
    with pytest.raises(AwsError) as info:
        discover(plan, env)
    message = str(info.value)
    assert message.startswith(f"{plan.path}: the nodes are in 2 VPCs (")
    assert f"{other}: worker01" in message
    assert f"{cloud.vpc}: etcd01, master01, storage01, worker02" in message
    assert message.endswith("a cluster's nodes must share one VPC")


NO_CREDENTIALS = {
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials",
    "AWS_CONFIG_FILE": "/nonexistent/config",
    "AWS_EC2_METADATA_DISABLED": "true",  # never ask an instance metadata service
}


def without_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    for key, value in NO_CREDENTIALS.items():
        monkeypatch.setenv(key, value)


def test_aws_errors_are_one_line_that_says_what_to_fix(aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each kind of botocore failure, raised for real, becomes one line naming the step and the fix."""
    from dataclasses import replace

    from ket_infra.aws import aws_errors, client
    from tests.test_verify import env_for

    env = env_for(EXAMPLES / "contiv.yaml")

    def fails(env_: object, call: object) -> str:
        with pytest.raises(AwsError) as info, aws_errors(env_, "doing the step"):  # type: ignore[arg-type]
            call()  # type: ignore[operator]
        message = str(info.value)
        assert "\n" not in message and message.startswith("doing the step: "), message
        return message

    ec2 = client(env, "ec2")
    said = fails(env, lambda: ec2.describe_security_groups(GroupIds=["sg-0123456789abcdef0"]))
    assert said.startswith("doing the step: AWS said InvalidGroup.NotFound: "), said
    said = fails(env, lambda: ec2.describe_instances(MaxResults="many"))
    assert "Parameter validation failed" in said and "MaxResults" in said

    monkeypatch.setattr("time.sleep", lambda _s: None)  # botocore's retry backoff
    port = free_port()
    gone = replace(env, aws=replace(env.aws, endpoint_url=f"http://127.0.0.1:{port}"))
    said = fails(gone, lambda: client(gone, "ec2").describe_vpcs())
    assert said == (
        f"doing the step: cannot reach http://127.0.0.1:{port} (EndpointConnectionError); "
        "check t.yaml: aws.endpoint_url and the network"
    )


def test_missing_credentials_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from ket_infra.aws import check_account
    from tests.test_verify import env_for

    without_credentials(monkeypatch)
    with pytest.raises(AwsError) as info:
        check_account(env_for(EXAMPLES / "contiv.yaml"))
    assert str(info.value) == (
        "checking the AWS account: no AWS credentials found; set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
    )


@pytest.mark.parametrize(
    ("endpoint", "environ", "expected"),
    [
        ("http://127.0.0.1:5000", {}, {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}),
        ("http://localhost:4566", {}, {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}),
        ("http://[::1]:5000", {}, {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}),
        ("http://127.0.0.1:5000", {"AWS_PROFILE": "lab"}, {}),
        ("http://127.0.0.1:5000", {"AWS_ACCESS_KEY_ID": "AKIAREAL"}, {}),
        ("https://ec2.eu-west-1.amazonaws.com", {}, {}),
        (None, {}, {}),
    ],
)
def test_stand_in_credentials_only_for_a_local_emulator(
    monkeypatch: pytest.MonkeyPatch, endpoint: str | None, environ: dict[str, str], expected: dict[str, str]
) -> None:
    from dataclasses import replace

    from ket_infra.aws import credentials_env
    from tests.test_verify import env_for

    without_credentials(monkeypatch)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    env = env_for(EXAMPLES / "contiv.yaml")
    assert credentials_env(replace(env, aws=replace(env.aws, endpoint_url=endpoint))) == expected


def test_account_guard(aws: None) -> None:
    from dataclasses import replace

    from ket_infra.aws import check_account
    from tests.test_verify import env_for

    env = env_for(EXAMPLES / "contiv.yaml")
    assert check_account(env) == "123456789012"  # moto's account
    assert check_account(replace(env, aws=replace(env.aws, account_id="123456789012"))) == "123456789012"
    with pytest.raises(AwsError) as info:
        check_account(replace(env, aws=replace(env.aws, account_id="210987654321")))
    assert str(info.value) == (
        "t.yaml: aws.account_id: the credentials are for account 123456789012, not 210987654321; "
        "use credentials of the right account or fix account_id"
    )


def test_missing_nodes_are_named(aws: None) -> None:
    cloud, plan, env, _rules = build(EXAMPLES / "contiv.yaml")
    cloud.ec2.terminate_instances(InstanceIds=[cloud.instances["worker02"], cloud.instances["etcd01"]])
    with pytest.raises(AwsError) as info:
        discover(plan, env)
    assert str(info.value) == (
        f"{plan.path}: 2 node(s) not found as EC2 instances in eu-west-1: etcd01 (10.2.1.11), worker02 (10.2.1.32); "
        "check internalip/ip in the plan file, the region and the account"
    )


def test_discovery_reads_each_node_interface(aws: None) -> None:
    from ket_infra.aws import Counter, client

    cloud, plan, env, rules = build(EXAMPLES / "contiv.yaml")
    counter = Counter()
    found = discover(plan, env, client(env, "ec2", counter))
    assert counter.calls == {"DescribeInstances": 1} and counter.total == 1
    assert [n.host for n in found.nodes] == [n.host for n in plan.nodes]
    for n in found.nodes:
        assert n.instance_id == cloud.instances[n.host] and n.network_interface_id == cloud.enis[n.host]
        assert n.address == plan.node(n.host).address and n.vpc_id == cloud.vpc == found.vpc_id
        assert n.subnet_id == next(iter(cloud.subnets.values()))
        assert n.security_groups[-1] == cloud.groups[plan.node(n.host).group]
        assert n.security_group_names[-1] == f"{rules.cluster}-{plan.node(n.host).group}"
        assert n.source_dest_check is True
    assert found.node("worker02").address == "10.2.1.32"


def test_routed_mode_needs_one_subnet() -> None:
    from ket_infra.aws import Discovery, NodeInterface, check_routed_subnets
    from ket_infra.plan import load_plan

    plan = load_plan(EXAMPLES / "contiv.yaml")

    def iface(host: str, subnet: str) -> NodeInterface:
        return NodeInterface(host, "10.2.1.1", "i-1", "eni-1", subnet, "vpc-1", ("sg-1",), True)

    hosts = {"master01", "worker01", "worker02", "storage01"}
    same = Discovery("vpc-1", (*(iface(h, "subnet-a") for h in sorted(hosts)), iface("etcd01", "subnet-e")))
    check_routed_subnets(plan, same, hosts)  # etcd01 runs no kubelet: its subnet does not matter
    split = Discovery(
        "vpc-1",
        (
            *(iface(h, "subnet-a") for h in ("m1", "m2", "m3")),
            *(iface(h, "subnet-b") for h in ("s1", "s2", "s3", "s4")),
        ),
    )
    with pytest.raises(AwsError) as info:
        check_routed_subnets(plan, split, {"m1", "m2", "m3", "s1", "s2", "s3", "s4"})
    assert str(info.value) == (
        f"{plan.path}: add_ons.cni.options.calico.mode: routed needs every kubelet node in one subnet, but they are "
        "in 2 (subnet-a: m1, m2, m3; subnet-b: s1, s2, s3 ...); use mode overlay (IP-in-IP) or move the nodes"
    )


def test_owned_resources_are_found_by_their_tags(aws: None) -> None:
    from ket_infra.aws import CLUSTER_TAG, ENVIRONMENT_TAG, GROUP_TAG, owned_resources

    cloud, plan, env, _rules = build(EXAMPLES / "contiv.yaml")
    ec2 = cloud.ec2

    def group(name: str, tags: dict[str, str]) -> str:
        spec = [{"ResourceType": "security-group", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
        return str(
            ec2.create_security_group(GroupName=name, Description="x", VpcId=cloud.vpc, TagSpecifications=spec)[
                "GroupId"
            ]
        )

    ours = {CLUSTER_TAG: "analytics", ENVIRONMENT_TAG: "t"}
    tagged = group("analytics-worker-2", {**ours, GROUP_TAG: "worker"})
    by_name = group("analytics-storage-x", ours)  # no group tag: the key comes from the name
    group("analytics-other-env", {CLUSTER_TAG: "analytics", ENVIRONMENT_TAG: "prod"})
    group("someone-else", {CLUSTER_TAG: "other", ENVIRONMENT_TAG: "t"})
    rule = ec2.authorize_security_group_ingress(
        GroupId=tagged,
        IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 10250, "ToPort": 10250, "IpRanges": [{"CidrIp": "10.2.1.0/24"}]}
        ],
        TagSpecifications=[{"ResourceType": "security-group-rule", "Tags": [{"Key": "Name", "Value": "worker-in-x"}]}],
    )["SecurityGroupRules"][0]["SecurityGroupRuleId"]
    out = ec2.authorize_security_group_egress(
        GroupId=by_name,
        IpPermissions=[
            {"IpProtocol": "udp", "FromPort": 4789, "ToPort": 4789, "IpRanges": [{"CidrIp": "10.2.1.0/24"}]}
        ],
        TagSpecifications=[
            {"ResourceType": "security-group-rule", "Tags": [{"Key": "Name", "Value": "storage-out-y"}]}
        ],
    )["SecurityGroupRules"][0]["SecurityGroupRuleId"]
    ec2.authorize_security_group_ingress(  # a rule without a Name tag is not ket-infra's
        GroupId=tagged,
        IpPermissions=[{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "10.2.1.0/24"}]}],
    )
    eni = cloud.enis["worker01"]
    current = [
        g["GroupId"]
        for g in ec2.describe_network_interfaces(NetworkInterfaceIds=[eni])["NetworkInterfaces"][0]["Groups"]
    ]
    ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=[*current, tagged])

    owned = owned_resources(env, "analytics", discover(plan, env))
    assert owned.groups == {tagged: "worker", by_name: "storage-x"}
    assert [(r.rule_id, r.name, r.group_id, r.direction) for r in owned.rules] == sorted(
        [(rule, "worker-in-x", tagged, "ingress"), (out, "storage-out-y", by_name, "egress")]
    )
    assert owned.carried == {"worker01": (tagged,)}


def test_each_aws_step_names_itself_when_aws_is_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from ket_infra.aws import Discovery, NodeInterface, client, owned_resources, set_source_dest_check
    from ket_infra.plan import load_plan
    from ket_infra.verify import read_state
    from tests.test_verify import env_for

    monkeypatch.setattr("time.sleep", lambda _s: None)
    port = free_port()
    env = env_for(EXAMPLES / "contiv.yaml")
    gone = replace(env, aws=replace(env.aws, endpoint_url=f"http://127.0.0.1:{port}"))
    node = NodeInterface("worker01", "10.2.1.31", "i-1", "eni-1", "subnet-1", "vpc-1", ("sg-1",), True)
    found = Discovery("vpc-1", (node,))
    tail = f": cannot reach http://127.0.0.1:{port} (EndpointConnectionError); check t.yaml: aws.endpoint_url and the network"
    steps = [
        ("finding the plan's nodes in EC2", lambda: discover(load_plan(EXAMPLES / "contiv.yaml"), gone)),
        ("looking for the security groups ket-infra made", lambda: owned_resources(gone, "analytics", found)),
        ("setting the EC2 source/destination check", lambda: set_source_dest_check(gone, [node], False, print)),
        (
            "reading security groups",
            lambda: read_state(gone, found, client(gone, "ec2")),
        ),
    ]
    for doing, call in steps:
        with pytest.raises(AwsError) as info:
            call()
        assert str(info.value) == doing + tail


def test_counter_counts_each_call() -> None:
    from ket_infra.aws import Counter

    counter = Counter()
    for event in (
        "before-call.ec2.DescribeInstances",
        "before-call.ec2.DescribeInstances",
        "before-call.sts.GetCallerIdentity",
    ):
        counter(event)
    assert counter.calls == {"DescribeInstances": 2, "GetCallerIdentity": 1} and counter.total == 3


def test_source_dest_check_changes_only_what_differs(aws: None) -> None:
    from ket_infra.aws import set_source_dest_check

    cloud, plan, env, _rules = build(EXAMPLES / "contiv.yaml")
    found = discover(plan, env)
    first, second = found.node("worker01"), found.node("worker02")
    cloud.ec2.modify_instance_attribute(InstanceId=first.instance_id, SourceDestCheck={"Value": False})
    lines: list[str] = []
    assert set_source_dest_check(env, [first, second], False, lines.append) == 1  # worker01 was already off
    assert lines == [f"  worker02 ({second.instance_id}): source/dest check off"]
    assert not source_dest_check(cloud, "worker02")


def test_client_retries_throttling_and_gives_up_on_a_dead_endpoint_quickly(monkeypatch: pytest.MonkeyPatch) -> None:
    """Standard retry mode (throttling backs off, 5 attempts); 5 s to connect, 30 s to read; the environment's region and endpoint."""
    from dataclasses import replace

    from ket_infra.aws import Counter, client
    from tests.test_verify import env_for

    without_credentials(monkeypatch)
    env = env_for(EXAMPLES / "contiv.yaml")
    local = replace(env, aws=replace(env.aws, endpoint_url="http://127.0.0.1:5999", region="eu-central-1"))
    counter = Counter()
    c = client(local, "ec2", counter)
    config = c.meta.config
    assert config.retries == {"mode": "standard", "total_max_attempts": 6}  # botocore's count: 1 try + 5 retries
    assert (config.connect_timeout, config.read_timeout) == (5, 30)
    assert c.meta.region_name == "eu-central-1" and c.meta.endpoint_url == "http://127.0.0.1:5999"
    credentials = c._request_signer._credentials
    assert (credentials.access_key, credentials.secret_key) == ("testing", "testing")  # the emulator's stand-ins


def test_a_stopped_node_is_still_found(aws: None) -> None:
    """Rules are applied before `kismatic install`, possibly while some machines are stopped."""
    cloud, plan, env, _rules = build(EXAMPLES / "contiv.yaml")
    cloud.ec2.stop_instances(InstanceIds=[cloud.instances["worker01"]])
    assert discover(plan, env).node("worker01").instance_id == cloud.instances["worker01"]


def test_no_describe_call_asks_more_than_200_filter_values(aws: None, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """EC2 refuses a call whose filters carry more than 200 values in all (FilterLimitExceeded); moto does
    not, so every call is counted here. 401 addresses and the 3 instance states take 3 calls, not 2."""
    import yaml

    from ket_infra.aws import client
    from ket_infra.environment import AwsConfig, Environment
    from ket_infra.plan import load_plan

    def nodes(role: str, first: int, count: int) -> dict[str, object]:
        members = [{"host": f"{role}{i}", "ip": f"10.0.{i // 200}.{10 + i % 200}"} for i in range(first, first + count)]
        return {"expected_count": count, "nodes": members}

    doc = {
        "cluster": {
            "name": "big",
            "networking": {"pod_cidr_block": "172.16.0.0/16", "service_cidr_block": "172.20.0.0/16"},
        },
        "add_ons": {"cni": {"provider": "calico", "options": {"calico": {"mode": "overlay"}}}},
        "etcd": nodes("etcd", 0, 1),
        "master": nodes("master", 1, 1),
        "worker": nodes("worker", 2, 399),
    }
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(doc))
    plan = load_plan(tmp_path / "plan.yaml")
    env = Environment(name="big", path="big.yaml", plan_file=plan.path, aws=AwsConfig("eu-west-1"))
    asked: list[list[str]] = []

    def count(params: dict, **_kw: object) -> None:  # type: ignore[type-arg]
        values = [v for f in params.get("Filters", []) for v in f["Values"]]
        assert len(values) + len(params.get("InstanceIds", [])) <= 200, len(values)
        asked.append([v for f in params.get("Filters", []) if f["Name"] == "private-ip-address" for v in f["Values"]])

    ec2 = client(env, "ec2")
    ec2.meta.events.register("provide-client-params.ec2.DescribeInstances", count)
    with pytest.raises(AwsError, match="401 node"):
        discover(plan, env, ec2)
    assert len(asked) == 3 and sorted(a for call in asked for a in call) == sorted(n.address for n in plan.nodes)


def test_lookups_at_once_answer_in_order_and_raise_the_first_items_error() -> None:
    """The answers of the filter chunks asked for at once come in the chunks' order whatever the timing; an error
    is the first failing chunk's; never more than `most` threads at a time."""
    import threading
    import time

    from ket_infra.aws import _at_once

    running: list[int] = []
    peak = [0]
    lock = threading.Lock()

    def ask(n: int) -> int:
        with lock:
            running.append(n)
            peak[0] = max(peak[0], len(running))
        time.sleep(0.05 * (10 - n))  # the later chunks answer first
        with lock:
            running.remove(n)
        if n in (7, 5):
            raise ValueError(f"chunk {n}")
        return n * n

    assert _at_once(ask, [1, 2, 3], most=2) == [1, 4, 9]
    assert peak[0] == 2
    with pytest.raises(ValueError, match="chunk 5"):
        _at_once(ask, [1, 5, 7, 2])
