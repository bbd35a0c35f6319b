"""Discovery and pre-change guards against moto (mock_aws)."""

from __future__ import annotations

import pytest

from ket_infra.aws import AwsError, check_interfaces, discover
from tests.conftest import EXAMPLES
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
    own = {f"{rules.cluster}-{g.name}" for g in rules.groups}
    with pytest.raises(AwsError, match=r"worker02 \(eni-[0-9a-f]+\) already carry 5 security groups"):
        check_interfaces(discover(plan, env), own, plan)


def test_same_address_in_two_vpcs_is_refused(aws: None) -> None:
    cloud, plan, env, _rules = build(EXAMPLES / "contiv.yaml")
    other = cloud.ec2.create_vpc(CidrBlock="10.2.0.0/16")["Vpc"]["VpcId"]
    subnet = cloud.ec2.create_subnet(VpcId=other, CidrBlock="10.2.1.0/24")["Subnet"]["SubnetId"]
    cloud.ec2.run_instances(
        ImageId=image_id(cloud.ec2), MinCount=1, MaxCount=1, SubnetId=subnet, PrivateIpAddress="10.2.1.31"
    )
    with pytest.raises(AwsError, match=r"worker01: the address 10.2.1.31 belongs to two instances"):
        discover(plan, env)


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


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
