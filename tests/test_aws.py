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
