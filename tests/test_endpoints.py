"""Endpoints the plan names (PORTS.md section 8): each gets its flow, from the nodes that use it, to
the address the plan or the environment gives, or a warning; nothing when the key is unset."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from ket_infra.environment import AwsConfig, Environment
from ket_infra.errors import PlanError
from ket_infra.flows import required_flows
from ket_infra.layout import RuleSet, layout
from ket_infra.plan import load_plan
from ket_infra.verify import verify
from tests.conftest import base_plan, node, write_yaml

ENV = Environment(
    name="t",
    path="t.yaml",
    plan_file=Path("plan.yaml"),
    aws=AwsConfig("eu-west-1"),
    installer_cidr="10.9.9.9/32",
)
KUBELET_GROUPS = ("master", "worker")
ALL_GROUPS = ("etcd", "master", "worker")


def rules_for(tmp_path: Path, data: dict[str, Any], env: Environment = ENV) -> RuleSet:
    return layout(load_plan(write_yaml(tmp_path / "plan.yaml", data)), env)


def egress(rs: RuleSet, flow: str) -> set[tuple[str, int | None, int | None, str | None]]:
    return {(r.group, r.from_port, r.to_port, r.peer.cidr) for r in rs.rules if flow in r.flows and r.peer.cidr}


def plan_error(tmp_path: Path, data: dict[str, Any]) -> str:
    with pytest.raises(PlanError) as info:
        load_plan(write_yaml(tmp_path / "plan.yaml", data))
    return str(info.value)


def test_an_nfs_server_by_address_is_reached_by_master_and_workers_on_2049(tmp_path: Path) -> None:
    data = base_plan()
    data["nfs"] = {"nfs_volume": [{"nfs_host": "10.0.8.5", "mount_path": "/exports/a"}]}
    rs = rules_for(tmp_path, data)
    assert egress(rs, "nfs") == {(g, 2049, 2049, "10.0.8.5/32") for g in KUBELET_GROUPS}
    assert any(w.startswith("nfs.nfs_volume: ket-infra opens NFSv4 (tcp 2049)") for w in rs.warnings)
    nfs = next(r for r in rs.rules if "nfs" in r.flows)
    assert "nfs.nfs_volume[].nfs_host" in nfs.purpose and "new-share.yaml:8-13" in nfs.citations[0]


def test_an_nfs_server_by_name_needs_the_environment(tmp_path: Path) -> None:
    data = base_plan()
    data["nfs"] = {"nfs_volume": [{"nfs_host": "files.example.com", "mount_path": "/exports"}]}
    rs = rules_for(tmp_path, data)
    assert egress(rs, "nfs") == set()
    assert any(w.startswith("nfs.nfs_volume[].nfs_host files.example.com is a DNS name") for w in rs.warnings)
    rs = rules_for(tmp_path, data, replace(ENV, endpoint_cidrs=(("nfs", ("10.0.8.0/28",)),)))
    assert egress(rs, "nfs") == {(g, 2049, 2049, "10.0.8.0/28") for g in KUBELET_GROUPS}
    assert not any("is a DNS name" in w for w in rs.warnings)


def test_an_nfs_server_on_a_node_is_opened_on_that_node(tmp_path: Path) -> None:
    data = base_plan()
    data["storage"] = {"expected_count": 1, "nodes": [node("files01", "10.0.1.51")]}
    data["nfs"] = {"nfs_volume": [{"nfs_host": "10.0.1.51", "mount_path": "/srv"}]}
    rs = rules_for(tmp_path, data)
    assert egress(rs, "nfs") == set()
    into = {(r.group, r.peer.group) for r in rs.rules if "nfs-on-files01" in r.flows and r.direction == "ingress"}
    assert into == {("storage", "master"), ("storage", "worker")}


def test_a_proxy_takes_the_downloads_and_the_registry(tmp_path: Path) -> None:
    data = base_plan()
    data["cluster"]["networking"].update(http_proxy="http://10.0.7.7:3128", https_proxy="10.0.7.7:3128")
    data["docker_registry"] = {"server": "10.0.6.6:5000"}
    env = replace(ENV, egress_cidrs=("10.0.5.0/24",))
    rs = rules_for(tmp_path, data, env)
    assert egress(rs, "http-proxy") == egress(rs, "https-proxy") == {(g, 3128, 3128, "10.0.7.7/32") for g in ALL_GROUPS}
    flows = {f for r in rs.rules for f in r.flows}
    assert not flows & {"downloads-http", "downloads-https", "registry"}
    # no_proxy names what the nodes reach directly: the downloads to egress_cidrs stay, the registry too
    data["cluster"]["networking"]["no_proxy"] = "10.0.6.6,.internal"
    rs = rules_for(tmp_path, data, env)
    assert {"downloads-http", "downloads-https", "registry"} <= {f for r in rs.rules for f in r.flows}


def test_a_proxy_without_a_port_opens_what_its_clients_dial(tmp_path: Path) -> None:
    data = base_plan()
    data["cluster"]["networking"]["http_proxy"] = "proxy.example.com"
    rs = rules_for(tmp_path, data)
    assert (
        "cluster.networking.http_proxy proxy.example.com names no port: docker, yum and apt disagree on the "
        "default, so tcp 80 and 1080 are opened to it; write the port (http://host:port) to open only that one"
    ) in rs.warnings
    assert any(w.startswith("cluster.networking.http_proxy is a DNS name") for w in rs.warnings)
    rs = rules_for(tmp_path, data, replace(ENV, endpoint_cidrs=(("proxy", ("10.0.7.0/28",)),)))
    assert egress(rs, "http-proxy") == {(g, 80, 80, "10.0.7.0/28") for g in ALL_GROUPS}
    assert egress(rs, "http-proxy-1080") == {(g, 1080, 1080, "10.0.7.0/28") for g in ALL_GROUPS}
    names = {f.name for f in required_flows(load_plan(tmp_path / "plan.yaml"), ENV)}
    assert {"downloads-https", "http-proxy"} <= names and "downloads-http" not in names  # https is not proxied


def test_the_aws_cloud_provider_reaches_the_aws_apis(tmp_path: Path) -> None:
    data = base_plan()
    data["cluster"]["cloud_provider"] = {"provider": "aws", "config": ""}
    rs = rules_for(tmp_path, data)
    assert egress(rs, "aws-api") == set()
    assert any(w.startswith("cluster.cloud_provider.provider is aws: kubelet") for w in rs.warnings)
    rs = rules_for(tmp_path, data, replace(ENV, egress_cidrs=("10.0.5.0/24",)))
    assert egress(rs, "aws-api") == {(g, 443, 443, "10.0.5.0/24") for g in KUBELET_GROUPS}
    rs = rules_for(tmp_path, data, replace(ENV, endpoint_cidrs=(("aws_api", ("10.0.4.0/28",)),)))
    assert egress(rs, "aws-api") == {(g, 443, 443, "10.0.4.0/28") for g in KUBELET_GROUPS}
    data["cluster"]["cloud_provider"] = {"provider": "vsphere"}
    assert "aws-api" not in {f for r in rules_for(tmp_path, data).rules for f in r.flows}


def test_nodeports_the_plan_turns_on_open_to_nodeport_cidrs(tmp_path: Path) -> None:
    data = base_plan()
    data["add_ons"] = {
        "dashboard": {"options": {"service_type": "NodePort", "node_port": "30443"}},
        "heapster": {"options": {"heapster": {"service_type": "NodePort"}}},
    }
    rs = rules_for(tmp_path, data)
    assert [w for w in rs.warnings if "NodePort" in w] == [
        f"{key} exposes a NodePort (tcp {ports}) on every kubelet node but nodeport_cidrs is empty: nothing outside "
        "the cluster can reach it"
        for key, ports in (
            ("add_ons.heapster.options.heapster.service_type", "30000-32767"),
            ("add_ons.dashboard.options.service_type", "30443"),
        )
    ]
    rs = rules_for(tmp_path, data, replace(ENV, nodeport_cidrs=("192.0.2.0/24",)))
    into = {(r.group, r.from_port, r.to_port) for r in rs.rules if r.peer.cidr == "192.0.2.0/24"}
    assert into == {(g, 30000, 32767) for g in KUBELET_GROUPS}  # 30443 merges into the heapster range


def test_an_outside_heapster_sink_is_reached_from_the_workers(tmp_path: Path) -> None:
    data = base_plan()
    data["add_ons"] = {"heapster": {"options": {"heapster": {"sink": "influxdb:http://10.0.3.3:8086?db=k8s"}}}}
    assert egress(rules_for(tmp_path, data), "heapster-sink") == {("worker", 8086, 8086, "10.0.3.3/32")}
    data["add_ons"]["heapster"]["options"]["heapster"]["sink"] = "influxdb:http://monitoring-influxdb:8086"
    assert egress(rules_for(tmp_path, data), "heapster-sink") == set()  # a Service in the cluster


def test_kubelet_scrape_only_with_a_scraper_and_from_where_it_runs(tmp_path: Path) -> None:
    data = base_plan()
    scrape = {
        (r.group, r.direction, r.peer.group) for r in rules_for(tmp_path, data).rules if "kubelet-scrape" in r.flows
    }
    assert ("master", "ingress", "worker") in scrape
    data["add_ons"] = {"heapster": {"disable": True}, "metrics_server": {"disable": True}}
    assert not [r for r in rules_for(tmp_path, data).rules if "kubelet-scrape" in r.flows]
    data["add_ons"] = {"heapster": {"disable": True}}
    data["master"]["nodes"][0]["kubelet"] = {"option_overrides": {"register-schedulable": "true"}}
    scrape = {(r.group, r.peer.group) for r in rules_for(tmp_path, data).rules if "kubelet-scrape" in r.flows}
    assert ("worker", "master") in scrape  # the master now runs Deployments: metrics-server may land there
    data["cluster"]["kubelet"] = {"option_overrides": {"register-schedulable": False}}
    del data["master"]["nodes"][0]["kubelet"]
    assert not [r for r in rules_for(tmp_path, data).rules if "kubelet-scrape" in r.flows]  # nowhere to run


def test_routed_node_to_pod_rules_stay_off_nodes_without_pod_network_pods(tmp_path: Path) -> None:
    """A stacked etcd+master node runs no pod-network pod: its etcd port is not opened to the workers."""
    data = base_plan({"provider": "calico", "options": {"calico": {"mode": "routed"}}})
    data["etcd"]["nodes"] = [node("control01", "10.0.1.21")]
    data["master"]["nodes"] = [node("control01", "10.0.1.21")]
    rs = rules_for(tmp_path, data)
    assert not [r for r in rs.rules if r.group == "etcd-master" and r.direction == "ingress" and r.to_port == 65535]
    assert not [r for r in rs.rules if r.peer.group == "worker" and r.group == "etcd-master" and r.from_port == 2379]
    assert [r for r in rs.rules if r.group == "worker" and r.direction == "ingress" and r.to_port == 65535]


@pytest.mark.parametrize(
    ("where", "value", "message"),
    [
        (("master", "load_balancer"), "10.0.1.100", "master.load_balancer: '10.0.1.100' is not host:port"),
        (("cluster", "networking", "http_proxy"), "socks5://p:1080", "is not an http or https proxy URL"),
        (("cluster", "networking", "https_proxy"), "http://proxy:99999", "has no valid port"),
        (("cluster", "cloud_provider", "provider"), "amazon", "is not a cloud provider KET knows"),
        (("add_ons", "dashboard", "options", "service_type"), "Nodeport", "'Nodeport' is not a Service type"),
        (("add_ons", "dashboard", "options", "node_port"), "30443", "is only used with service_type NodePort"),
        (("cluster", "kubelet", "option_overrides", "register-schedulable"), "yes", "is not true or false"),
    ],
)
def test_bad_endpoint_values_are_one_line_naming_the_key(
    tmp_path: Path, where: tuple[str, ...], value: str, message: str
) -> None:
    data = base_plan()
    section = data
    for part in where[:-1]:
        section = section.setdefault(part, {})
    section[where[-1]] = value
    error = plan_error(tmp_path, data)
    assert message in error and "\n" not in error and ".".join(where[:2]) in error


def test_nfs_volumes_are_checked_as_ket_checks_them(tmp_path: Path) -> None:
    data = base_plan()
    data["nfs"] = {"nfs_volume": [{"nfs_host": "10.0.8.5", "mount_path": "exports"}]}
    assert "nfs.nfs_volume[0].mount_path: 'exports' is not an absolute path" in plan_error(tmp_path, data)
    data["nfs"] = {"nfs_volume": [{"nfs_host": "10.0.8.5", "mount_path": "/e"}] * 2}
    assert "nfs.nfs_volume[1].mount_path: 10.0.8.5:/e is listed twice" in plan_error(tmp_path, data)
    data["nfs"] = {"nfs_volume": [{"mount_path": "/e"}]}
    assert "nfs.nfs_volume[0].nfs_host: is required" in plan_error(tmp_path, data)


def test_unset_keys_bring_no_endpoint_flow(tmp_path: Path) -> None:
    """A plan that names no endpoint gets none of their flows (the example plans' empty strings included)."""
    data = base_plan()
    data["cluster"]["networking"].update(http_proxy="", https_proxy="", no_proxy="")
    data["cluster"]["cloud_provider"] = {"provider": "", "config": ""}
    data["nfs"] = {"nfs_volume": []}
    data["add_ons"] = {"dashboard": {"options": {"service_type": "ClusterIP", "node_port": ""}}}
    rs = rules_for(tmp_path, data, replace(ENV, egress_cidrs=("10.0.5.0/24",), nodeport_cidrs=("192.0.2.0/24",)))
    endpoint = {"apiserver-lb", "apiserver-from-lb", "nfs", "http-proxy", "https-proxy", "aws-api", "heapster-sink"}
    assert not endpoint & {f for r in rs.rules for f in r.flows}
    assert not [r for r in rs.rules if r.flows[0].startswith("nodeport-")]


def test_verify_names_the_plan_key_of_a_blocked_endpoint_flow(aws: None, tmp_path: Path) -> None:
    from tests.test_verify import Cloud

    data = base_plan()
    data["master"]["load_balancer"] = "10.0.1.100:443"
    data["nfs"] = {"nfs_volume": [{"nfs_host": "10.0.1.200", "mount_path": "/exports"}]}
    path = write_yaml(tmp_path / "plan.yaml", data)
    plan = load_plan(path)
    env = replace(ENV, plan_file=path, egress_cidrs=("10.0.1.250/32",))
    rules = layout(plan, env)
    cloud = Cloud(plan, rules)
    cloud.lock_down_default_group()
    assert verify(plan, env, rules).ok
    cloud.revoke("worker", "egress", lambda r: r.get("CidrIpv4") == "10.0.1.100/32")
    report = verify(plan, env, rules)
    (check,) = [c for c in report.checks if c.status == "blocked"]
    assert (check.rule, check.from_port, check.source.label) == ("apiserver-lb", 443, "worker")
    assert check.reason.endswith("(needed for plan key master.load_balancer)")
