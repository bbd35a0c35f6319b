"""The plan loader: KET's defaults and KET's validation, with actionable errors."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from ket_infra.errors import PlanError
from ket_infra.plan import Cni, load_plan
from tests.conftest import EXAMPLES, base_plan, node, write_yaml


def test_minimal_plan_defaults_to_calico_overlay(plan_file) -> None:
    plan = load_plan(plan_file(base_plan()))
    assert (plan.cni.provider, plan.cni.mode, plan.cni.disabled) == ("calico", "overlay", False)
    assert [n.host for n in plan.nodes] == ["etcd01", "master01", "worker01"]
    assert plan.cluster == "test"


@pytest.mark.parametrize(
    ("legacy_type", "mode"),
    [(None, "overlay"), ("overlay", "overlay"), ("routed", "routed")],
)
def test_legacy_networking_type_sets_calico_mode(plan_file, legacy_type: str | None, mode: str) -> None:
    data = base_plan()
    if legacy_type:
        data["cluster"]["networking"]["type"] = legacy_type
    plan = load_plan(plan_file(data))
    assert (plan.cni.provider, plan.cni.mode) == ("calico", mode)


def test_legacy_type_ignored_when_cni_block_present(plan_file) -> None:
    data = base_plan({"provider": "weave"})
    data["cluster"]["networking"]["type"] = "routed"
    assert load_plan(plan_file(data)).cni.provider == "weave"


def test_v1_4_example_reads_as_calico_overlay() -> None:
    plan = load_plan(EXAMPLES / "v1-4-legacy.yaml")
    assert (plan.cni.provider, plan.cni.mode) == ("calico", "overlay")
    assert plan.load_balancer == "10.3.1.21:6443"  # KET's migration appends :6443 (pkg/install/plan.go:84-86)
    assert plan.node("worker01").roles == {"worker", "ingress"}


def test_same_host_in_several_groups_is_one_node_with_several_roles(plan_file) -> None:
    data = base_plan()
    data["master"]["nodes"] = [node("etcd01", "10.0.1.11")]
    plan = load_plan(plan_file(data))
    assert [n.host for n in plan.nodes] == ["etcd01", "worker01"]
    assert plan.node("etcd01").roles == {"etcd", "master"}
    assert plan.node("etcd01").group == "etcd-master"
    assert plan.first("master") == plan.node("etcd01")


def test_internalip_is_the_address_when_set(plan_file) -> None:
    data = base_plan()
    data["worker"]["nodes"] = [node("worker01", "203.0.113.5", "10.0.2.5")]
    assert load_plan(plan_file(data)).node("worker01").address == "10.0.2.5"


def test_weave_password_is_not_kept(plan_file) -> None:
    plan = load_plan(plan_file(base_plan({"provider": "weave", "options": {"weave": {"password": "hunter2-secret"}}})))
    assert plan.cni.encrypted is True
    assert "hunter2-secret" not in repr(plan)


def test_empty_weave_password_means_not_encrypted(plan_file) -> None:
    plan = load_plan(plan_file(base_plan({"provider": "weave", "options": {"weave": {"password": ""}}})))
    assert plan.cni.encrypted is False


def test_disabled_cni_skips_provider_checks(plan_file) -> None:
    plan = load_plan(plan_file(base_plan({"disable": True, "provider": "nonsense"})))
    assert plan.cni.disabled is True


def test_unknown_keys_are_ignored_like_ket(plan_file) -> None:
    data = base_plan()
    data["something_new"] = {"x": 1}
    data["etcd"]["nodes"][0]["future_field"] = "y"
    load_plan(plan_file(data))


def test_pod_cidr_is_normalised_to_its_network(plan_file) -> None:
    data = base_plan()
    data["cluster"]["networking"]["pod_cidr_block"] = "172.16.5.1/16"
    assert load_plan(plan_file(data)).pod_cidr == "172.16.0.0/16"


def test_a_slash_8_pod_cidr_is_still_a_cluster_network(plan_file) -> None:
    data = base_plan()
    data["cluster"]["networking"]["pod_cidr_block"] = "172.0.0.0/8"
    data["cluster"]["networking"]["service_cidr_block"] = "192.168.0.0/16"
    assert load_plan(plan_file(data)).pod_cidr == "172.0.0.0/8"


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        cur: Any = data
        for p in parents:
            cur = cur[int(p)] if isinstance(cur, list) else cur.setdefault(p, {})
        if value is _DELETE:
            del cur[last]
        elif isinstance(cur, list):
            cur[int(last)] = value
        else:
            cur[last] = value

    return mutate


_DELETE = object()

BAD_PLANS: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    # (case id, mutation, key path expected in the message, words expected in the message)
    (
        "pod cidr missing",
        _set("cluster.networking.pod_cidr_block", _DELETE),
        "cluster.networking.pod_cidr_block",
        "is required",
    ),
    (
        "pod cidr invalid",
        _set("cluster.networking.pod_cidr_block", "172.16.0.0/33"),
        "cluster.networking.pod_cidr_block",
        "not a valid CIDR",
    ),
    (
        "service cidr missing",
        _set("cluster.networking.service_cidr_block", ""),
        "cluster.networking.service_cidr_block",
        "is required",
    ),
    (
        "service cidr not ipv4",
        _set("cluster.networking.service_cidr_block", "fd00::/64"),
        "cluster.networking.service_cidr_block",
        "not an IPv4 CIDR",
    ),
    # Nodes are in 10.0.1.0/24: these CIDRs contain none of them, so only the size guard can refuse them.
    (
        "pod cidr half the internet",
        _set("cluster.networking.pod_cidr_block", "128.0.0.0/1"),
        "cluster.networking.pod_cidr_block",
        "'128.0.0.0/1' spans the internet, not a cluster network; use a private range",
    ),
    (
        "pod cidr a /7",
        _set("cluster.networking.pod_cidr_block", "172.0.0.0/7"),
        "cluster.networking.pod_cidr_block",
        "spans the internet",
    ),
    (
        "service cidr a /4",
        _set("cluster.networking.service_cidr_block", "192.0.0.0/4"),
        "cluster.networking.service_cidr_block",
        "spans the internet",
    ),
    (
        "pod cidr holds a node",
        _set("cluster.networking.pod_cidr_block", "10.0.0.0/16"),
        "cluster.networking.pod_cidr_block",
        "10.0.0.0/16 contains the address 10.0.1.11 of node 'etcd01'",
    ),
    ("no etcd nodes", _set("etcd.nodes", []), "etcd.nodes", "at least one node"),
    ("no master group", _set("master", _DELETE), "master.nodes", "at least one node"),
    ("no worker nodes", _set("worker.nodes", None), "worker.nodes", "at least one node"),
    ("expected_count missing", _set("etcd.expected_count", _DELETE), "etcd.expected_count", "is required"),
    ("expected_count zero", _set("master.expected_count", 0), "master.expected_count", "greater than 0"),
    ("expected_count mismatch", _set("worker.expected_count", 3), "worker.expected_count", "is 3 but 1 node(s)"),
    ("expected_count not a number", _set("worker.expected_count", "three"), "worker.expected_count", "whole number"),
    (
        "optional group mismatch",
        _set("ingress", {"expected_count": 2, "nodes": []}),
        "ingress.expected_count",
        "is 2 but 0",
    ),
    ("host missing", _set("etcd.nodes.0.host", _DELETE), "etcd.nodes[0].host", "is required"),
    ("ip missing", _set("master.nodes.0.ip", _DELETE), "master.nodes[0].ip", "is required"),
    ("ip invalid", _set("master.nodes.0.ip", "10.0.1.300"), "master.nodes[0].ip", "not a valid IP address"),
    (
        "internalip invalid",
        _set("worker.nodes.0.internalip", "bogus"),
        "worker.nodes[0].internalip",
        "not a valid IP address",
    ),
    ("node not a mapping", _set("worker.nodes.0", "worker01"), "worker.nodes[0]", "must be a mapping"),
    ("nodes not a list", _set("worker.nodes", {"host": "w"}), "worker.nodes", "must be a list"),
    (
        "same host, other ip",
        _set("worker.nodes.0", node("etcd01", "10.0.1.99")),
        "worker.nodes[0]",
        "different addresses",
    ),
    (
        "same ip, other host",
        _set("worker.nodes.0", node("worker01", "10.0.1.11")),
        "worker.nodes[0].ip",
        "10.0.1.11 is also the ip",
    ),
    ("cni provider missing", _set("add_ons", {"cni": {"options": {}}}), "add_ons.cni.provider", "is required"),
    (
        "cni provider unknown",
        _set("add_ons", {"cni": {"provider": "flannel"}}),
        "add_ons.cni.provider",
        "'flannel' is not a valid CNI provider",
    ),
    (
        "calico mode missing",
        _set("add_ons", {"cni": {"provider": "calico"}}),
        "add_ons.cni.options.calico.mode",
        "is required",
    ),
    (
        "calico mode unknown",
        _set("add_ons", {"cni": {"provider": "calico", "options": {"calico": {"mode": "bgp"}}}}),
        "add_ons.cni.options.calico.mode",
        "'bgp' is not a valid Calico mode",
    ),
    (
        "legacy type unknown",
        _set("cluster.networking.type", "vxlan"),
        "cluster.networking.type",
        "not a valid networking type",
    ),
    (
        "cni disable not a bool",
        _set("add_ons", {"cni": {"disable": "nope", "provider": "calico"}}),
        "add_ons.cni.disable",
        "true or false",
    ),
    ("cluster not a mapping", _set("cluster", ["a"]), "cluster", "must be a mapping"),
    ("cluster name with a space", _set("cluster.name", "my cluster"), "cluster.name", "cannot name security groups"),
    ("cluster name too long", _set("cluster.name", "c" * 64), "cluster.name", "at most 63"),
    ("ip is ipv6", _set("etcd.nodes.0.ip", "fd00::1"), "etcd.nodes[0].ip", "not an IPv4 address"),
    (
        "pod cidr is ipv6",
        _set("cluster.networking.pod_cidr_block", "fd00::/48"),
        "cluster.networking.pod_cidr_block",
        "not an IPv4 CIDR",
    ),
    (
        "internalip is another node's ip",
        _set("worker.nodes.0", node("worker01", "10.0.1.31", "10.0.1.11")),
        "worker.nodes[0].internalip",
        "10.0.1.11 is also the ip",
    ),
    ("host with a space", _set("worker.nodes.0.host", "worker 01"), "worker.nodes[0].host", "not a valid host name"),
    ("host with an emoji", _set("worker.nodes.0.host", "worker😀"), "worker.nodes[0].host", "not a valid host name"),
    ("host with a newline", _set("etcd.nodes.0.host", "etcd\n01"), "etcd.nodes[0].host", "not a valid host name"),
    ("host label too long", _set("master.nodes.0.host", "m" * 64), "master.nodes[0].host", "not a valid host name"),
    ("ssh port zero", _set("cluster.ssh", {"ssh_port": 0}), "cluster.ssh.ssh_port", "is not a port"),
    ("ssh port a word", _set("cluster.ssh", {"ssh_port": "ssh"}), "cluster.ssh.ssh_port", "whole number"),
    (
        "registry port bad",
        _set("docker_registry", {"server": "reg.lan:99999"}),
        "docker_registry.server",
        "no valid port",
    ),
    (
        "disconnected not a bool",
        _set("cluster.disconnected_installation", "yes"),
        "cluster.disconnected_installation",
        "true or false",
    ),
]


# What each bad plan above is told, word for word after the file name: the whole line is the contract.
EXACT: dict[str, str] = {
    "pod cidr missing": "cluster.networking.pod_cidr_block: is required; set it to an IPv4 CIDR such as 172.16.0.0/16",
    "pod cidr invalid": "cluster.networking.pod_cidr_block: '172.16.0.0/33' is not a valid CIDR; use a CIDR such as 172.16.0.0/16",
    "service cidr missing": "cluster.networking.service_cidr_block: is required; set it to an IPv4 CIDR such as 172.16.0.0/16",
    "service cidr not ipv4": "cluster.networking.service_cidr_block: 'fd00::/64' is not an IPv4 CIDR; KET clusters use IPv4; use a CIDR such as 172.16.0.0/16",
    "pod cidr half the internet": "cluster.networking.pod_cidr_block: '128.0.0.0/1' spans the internet, not a cluster network; use a private range such as 172.16.0.0/16",
    "pod cidr a /7": "cluster.networking.pod_cidr_block: '172.0.0.0/7' spans the internet, not a cluster network; use a private range such as 172.16.0.0/16",
    "service cidr a /4": "cluster.networking.service_cidr_block: '192.0.0.0/4' spans the internet, not a cluster network; use a private range such as 172.16.0.0/16",
    "pod cidr holds a node": "cluster.networking.pod_cidr_block: 10.0.0.0/16 contains the address 10.0.1.11 of node 'etcd01'; pods and nodes must not share addresses: choose a pod CIDR outside the node network",
    "no etcd nodes": "etcd.nodes: at least one node is required; list the etcd nodes",
    "no master group": "master.nodes: at least one node is required; list the master nodes",
    "no worker nodes": "worker.nodes: at least one node is required; list the worker nodes",
    "expected_count missing": "etcd.expected_count: is required and must be greater than 0; set it to 1, the number of etcd nodes listed",
    "expected_count zero": "master.expected_count: is required and must be greater than 0; set it to 1, the number of master nodes listed",
    "expected_count mismatch": "worker.expected_count: is 3 but 1 node(s) are listed; make expected_count match the nodes listed",
    "expected_count not a number": "worker.expected_count: must be a whole number, got 'three'; write a number such as 3",
    "optional group mismatch": "ingress.expected_count: is 2 but 0 node(s) are listed; make expected_count match the nodes listed",
    "host missing": "etcd.nodes[0].host: is required; set the node's hostname",
    "ip missing": "master.nodes[0].ip: is required; set the node's IP address",
    "ip invalid": "master.nodes[0].ip: '10.0.1.300' is not a valid IP address; use an IPv4 address such as 10.0.1.10",
    "internalip invalid": "worker.nodes[0].internalip: 'bogus' is not a valid IP address; use an IPv4 address such as 10.0.1.10",
    "node not a mapping": "worker.nodes[0]: must be a mapping, got 'worker01'; write key: value pairs here",
    "nodes not a list": "worker.nodes: must be a list, got a mapping; write a list of - items here",
    "same host, other ip": "worker.nodes[0]: host 'etcd01' is also listed at etcd.nodes[0] with different addresses (ip 10.0.1.11, internalip unset); one host is one node: give it the same ip and internalip in every group",
    "same ip, other host": "worker.nodes[0].ip: 10.0.1.11 is also the ip of host 'etcd01' (etcd.nodes[0]); two different nodes cannot share an address: fix the address or use the same host name",
    "cni provider missing": "add_ons.cni.provider: is required when add_ons.cni is present; use one of calico, weave, contiv, custom",
    "cni provider unknown": "add_ons.cni.provider: 'flannel' is not a valid CNI provider; use one of calico, weave, contiv, custom",
    "calico mode missing": "add_ons.cni.options.calico.mode: is required for the calico provider; use overlay or routed",
    "calico mode unknown": "add_ons.cni.options.calico.mode: 'bgp' is not a valid Calico mode; use overlay or routed",
    "legacy type unknown": "cluster.networking.type: 'vxlan' is not a valid networking type; use overlay or routed",
    "cni disable not a bool": "add_ons.cni.disable: must be true or false, got 'nope'; write true or false",
    "cluster not a mapping": "cluster: must be a mapping, got a list; write key: value pairs here",
    "cluster name with a space": "cluster.name: 'my cluster' cannot name security groups; use letters, digits, '.', '_' and '-' (at most 63)",
    "cluster name too long": f"cluster.name: {'c' * 64!r} cannot name security groups; use letters, digits, '.', '_' and '-' (at most 63)",
    "ip is ipv6": "etcd.nodes[0].ip: 'fd00::1' is not an IPv4 address; use an IPv4 address such as 10.0.1.10",
    "pod cidr is ipv6": "cluster.networking.pod_cidr_block: 'fd00::/48' is not an IPv4 CIDR; KET clusters use IPv4; use a CIDR such as 172.16.0.0/16",
    "internalip is another node's ip": "worker.nodes[0].internalip: 10.0.1.11 is also the ip of host 'etcd01' (etcd.nodes[0]); two different nodes cannot share an address: fix the address or use the same host name",
    "host with a space": "worker.nodes[0].host: 'worker 01' is not a valid host name; Kubernetes names nodes after it: use letters, digits and '-', in '.'-separated labels of at most 63 that start and end with a letter or digit (RFC 1123)",
    "host with an emoji": "worker.nodes[0].host: 'worker😀' is not a valid host name; Kubernetes names nodes after it: use letters, digits and '-', in '.'-separated labels of at most 63 that start and end with a letter or digit (RFC 1123)",
    "host with a newline": "etcd.nodes[0].host: 'etcd\\n01' is not a valid host name; Kubernetes names nodes after it: use letters, digits and '-', in '.'-separated labels of at most 63 that start and end with a letter or digit (RFC 1123)",
    "host label too long": f"master.nodes[0].host: {repr('m' * 64)[:57]}... is not a valid host name; Kubernetes names nodes after it: use letters, digits and '-', in '.'-separated labels of at most 63 that start and end with a letter or digit (RFC 1123)",
    "ssh port zero": "cluster.ssh.ssh_port: 0 is not a port; use the port sshd listens on (1-65535), usually 22",
    "ssh port a word": "cluster.ssh.ssh_port: must be a whole number, got 'ssh'; write a number such as 3",
    "registry port bad": "docker_registry.server: 'reg.lan:99999' has no valid port after ':'; write host:port with a port from 1 to 65535",
    "disconnected not a bool": "cluster.disconnected_installation: must be true or false, got 'yes'; write true or false",
}


@pytest.mark.parametrize(("case", "mutate", "key", "words"), BAD_PLANS, ids=[c[0] for c in BAD_PLANS])
def test_bad_plan_names_file_key_and_fix(plan_file, case: str, mutate, key: str, words: str) -> None:
    data = copy.deepcopy(base_plan())
    mutate(data)
    path = plan_file(data)
    with pytest.raises(PlanError) as info:
        load_plan(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert words in message
    assert message == f"{path}: {EXACT[case]}"
    assert "\n" not in message
    assert info.value.fix, f"no fix offered: {message}"


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"cluster: [unclosed\n", "invalid YAML"),
        (b"cluster:\n  name: a\n bad: indent\n", "invalid YAML"),
        (b"", "is empty"),
        (b"- just\n- a list\n", "must be a YAML mapping"),
        (b"cluster: \xff\xfe\n", "line 1: not valid UTF-8"),
        (b"cluster: !!python/object:os.system {}\n", "invalid YAML"),
    ],
)
def test_broken_files_name_the_file(tmp_path: Path, content: bytes, words: str) -> None:
    path = tmp_path / "broken.yaml"
    path.write_bytes(content)
    with pytest.raises(PlanError) as info:
        load_plan(path)
    assert str(info.value).startswith(f"{path}: ")
    assert words in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="KET plan file not found; check the path"):
        load_plan(tmp_path / "nope.yaml")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="is a directory"):
        load_plan(tmp_path)


def test_optional_groups_may_be_empty_or_uncounted(plan_file) -> None:
    data = base_plan()
    data["ingress"] = {"expected_count": 0, "nodes": []}
    data["storage"] = {"nodes": [node("storage01", "10.0.1.51")]}  # KET counts optional groups only when given
    plan = load_plan(plan_file(data))
    assert plan.hosts("ingress") == () and plan.hosts("storage") == ("storage01",)
    assert plan.first("ingress") is None and plan.first("storage") == plan.node("storage01")
    with pytest.raises(KeyError):
        plan.node("nobody")


def test_role_order_and_group_names() -> None:
    from ket_infra.plan import group_name, role_key

    assert group_name({"storage", "etcd", "master"}) == "etcd-master-storage"
    assert role_key({"worker", "etcd"}) == (0, 2)
    assert sorted([{"storage"}, {"master", "worker"}, {"etcd"}], key=role_key) == [
        {"etcd"},
        {"master", "worker"},
        {"storage"},
    ]


def test_members_keep_the_plan_order(plan_file) -> None:
    data = base_plan()
    data["worker"] = {
        "expected_count": 3,
        "nodes": [node("w3", "10.0.1.33"), node("w1", "10.0.1.31"), node("etcd01", "10.0.1.11")],
    }
    plan = load_plan(plan_file(data))
    assert plan.hosts("worker") == ("w3", "w1", "etcd01")
    assert plan.first("worker") == plan.node("w3")
    assert [n.host for n in plan.nodes] == ["etcd01", "master01", "w3", "w1"]
    assert plan.node("etcd01").roles == {"etcd", "worker"} and plan.node("etcd01").group == "etcd-worker"
    assert plan.load_balancer is None


def test_defaults_and_what_the_plan_names(plan_file) -> None:
    data = base_plan({"disable": True})
    del data["cluster"]["name"]
    data["master"]["load_balancer"] = "10.0.1.200:6443"
    data["ingress"] = {"expected_count": 1, "nodes": [node("ingress01", "10.0.1.41", "10.0.1.41")]}  # ip == internalip
    path = plan_file(data)
    plan = load_plan(path)
    assert plan.cluster == "kubernetes"  # KET's default cluster name
    assert plan.path == str(path)
    assert plan.load_balancer == "10.0.1.200:6443"
    assert plan.cni == Cni("none", None, False, True)
    assert plan.node("ingress01").address == "10.0.1.41"
    assert plan.hosts("storage") == ()
    with pytest.raises(KeyError, match="nobody"):
        plan.node("nobody")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("reg.lan:5000", ("reg.lan", "5000")),
        ("10.0.1.200:6443", ("10.0.1.200", "6443")),
        ("[fd00::1]:443", ("fd00::1", "443")),  # Go's net.SplitHostPort: brackets around a v6 host
        ("XReg.LAN:5000", ("XReg.LAN", "5000")),  # only the brackets come off, never letters
        ("reg.lan", ("reg.lan", None)),  # no port
        ("fd00::1", ("fd00::1", None)),  # a bare v6 address: its colons are not a port
        ("[fd00::1]", ("[fd00::1]", None)),
        ("[fd00::1:443", ("[fd00::1:443", None)),  # unclosed bracket
        ("fd00::1]:443", ("fd00::1]:443", None)),  # unopened bracket
    ],
)
def test_host_and_port_are_split_the_way_ket_splits_them(value: str, expected: tuple[str, str | None]) -> None:
    from ket_infra.plan import split_host_port

    assert split_host_port(value) == expected


@pytest.mark.parametrize(("port", "ok"), [("1", True), ("65535", True), ("0", False), ("65536", False)])
def test_the_registry_port_is_1_to_65535(plan_file, port: str, ok: bool) -> None:
    data = base_plan()
    data["docker_registry"] = {"server": f"[fd00::5]:{port}"}
    if ok:
        registry = load_plan(plan_file(data)).install.registry
        assert registry is not None and (registry.host, registry.port) == ("fd00::5", int(port))
    else:
        with pytest.raises(PlanError, match=r"docker_registry.server: .* has no valid port after ':'"):
            load_plan(plan_file(data))


@pytest.mark.parametrize(
    ("registry", "expected"),
    [
        ({"server": "reg.lan"}, ("reg.lan", 443)),  # no port: https
        ({"address": "10.0.1.5", "port": 8443}, ("10.0.1.5", 8443)),  # plans older than v1.7
        ({"address": "10.0.1.5", "port": 1}, ("10.0.1.5", 1)),
        ({"address": "10.0.1.5", "port": 65535}, ("10.0.1.5", 65535)),
        ({"server": "reg.lan:5000", "address": "10.0.1.5", "port": 8443}, ("reg.lan", 5000)),  # server wins
        ({"address": "10.0.1.5"}, None),  # an address without its port is no registry
        ({"port": 8443}, None),
        ({"address": "10.0.1.5", "port": 0}, None),  # Go's zero value: unset, as KET reads it
    ],
)
def test_the_registry_from_server_or_the_legacy_address_and_port(plan_file, registry, expected) -> None:
    data = base_plan()
    data["docker_registry"] = registry
    found = load_plan(plan_file(data)).install.registry
    assert ((found.host, found.port) if found is not None else None) == expected


@pytest.mark.parametrize("port", [65536, -1])
def test_the_legacy_registry_port_is_1_to_65535(plan_file, port: int) -> None:
    data = base_plan()
    data["docker_registry"] = {"address": "10.0.1.5", "port": port}
    with pytest.raises(PlanError) as exc:
        load_plan(plan_file(data))
    assert str(exc.value).endswith(f"docker_registry.port: {port} is not a port; use the registry's port (1-65535)")


@pytest.mark.parametrize(("port", "ok"), [(1, True), (65535, True), (65536, False)])
def test_the_ssh_port_is_1_to_65535(plan_file, port: int, ok: bool) -> None:
    data = base_plan()
    data["cluster"]["ssh"] = {"ssh_port": port}
    if ok:
        assert load_plan(plan_file(data)).install.ssh_port == port
    else:
        with pytest.raises(PlanError, match=rf"cluster.ssh.ssh_port: {port} is not a port; use the port sshd listens"):
            load_plan(plan_file(data))


@pytest.mark.parametrize(
    ("cluster", "packages", "disconnected"),
    [
        ({}, True, False),
        ({"disable_package_installation": True}, False, False),
        ({"allow_package_installation": False}, False, False),
        # KET's migration: a legacy allow_package_installation wins over disable_package_installation
        ({"allow_package_installation": True, "disable_package_installation": True}, True, False),
        ({"disconnected_installation": True}, True, True),
    ],
)
def test_package_installation_and_disconnected_as_ket_reads_them(
    plan_file, cluster: dict[str, Any], packages: bool, disconnected: bool
) -> None:
    data = base_plan()
    data["cluster"].update(cluster)
    install = load_plan(plan_file(data)).install
    assert (install.packages, install.disconnected) == (packages, disconnected)


def test_cluster_names_may_use_capitals(plan_file) -> None:
    data = base_plan()
    data["cluster"]["name"] = "Prod-East.2"
    assert load_plan(plan_file(data)).cluster == "Prod-East.2"


def test_an_optional_group_counting_nodes_it_does_not_list(plan_file) -> None:
    data = base_plan()
    data["storage"] = {"expected_count": 1, "nodes": []}
    with pytest.raises(PlanError) as info:
        load_plan(plan_file(data))
    assert str(info.value).endswith(
        "storage.expected_count: is 1 but 0 node(s) are listed; make expected_count match the nodes listed"
    )


def test_a_file_over_16_mib_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as handle:
        handle.truncate(16 * 1024 * 1024 + 1)
    with pytest.raises(PlanError) as info:
        load_plan(path)
    assert (
        str(info.value)
        == f"{path}: is over 16777216 bytes, too large for a KET plan file; check that this is the right file"
    )


@pytest.mark.parametrize(
    ("value", "encrypted"),
    [
        ("2025-03-14", True),  # a YAML date
        ("!!binary c2VjcmV0", True),
        ("12345", True),
        ('""', False),
        ("!!set {s3cr3t: null}", None),
        ("[s3cr3t]", None),
        ("{nested: s3cr3t}", None),
    ],
)
def test_the_weave_password_is_never_shown_whatever_its_type(
    tmp_path: Path, value: str, encrypted: bool | None
) -> None:
    """Any single value turns encryption on; a collection is refused. The value appears in no message."""
    path = tmp_path / "plan.yaml"
    text = yaml.safe_dump(base_plan({"provider": "weave", "options": {"weave": {"password": "PLACEHOLDER"}}}))
    path.write_text(text.replace("PLACEHOLDER", value))
    if encrypted is None:
        with pytest.raises(PlanError) as info:
            load_plan(path)
        message = str(info.value)
        assert message.endswith(
            "add_ons.cni.options.weave.password: must be a single value (not shown here); write the password as a quoted string"
        )
        assert not any(secret in message for secret in ("s3cr3t", "2025", "c2Vj"))
    else:
        assert load_plan(path).cni.encrypted is encrypted


@pytest.mark.parametrize("service", ["172.16.0.0/16", "172.16.128.0/20", "172.0.0.0/8"])
def test_pod_and_service_cidrs_must_not_overlap(plan_file, service: str) -> None:
    data = base_plan()
    data["cluster"]["networking"]["service_cidr_block"] = service
    with pytest.raises(PlanError) as info:
        load_plan(plan_file(data))
    assert str(info.value).endswith(
        f"cluster.networking.service_cidr_block: {service} overlaps the pod CIDR 172.16.0.0/16; pods and services "
        "need separate ranges: choose a service CIDR outside pod_cidr_block"
    )


def test_a_huge_value_is_cut_in_the_message(plan_file) -> None:
    data = base_plan()
    data["cluster"]["name"] = "c" * 1_000_000
    with pytest.raises(PlanError) as info:
        load_plan(plan_file(data))
    message = str(info.value)
    assert len(message) < 400 and "'ccc" in message and "... cannot name security groups" in message


def test_a_key_one_slip_from_a_known_one_is_a_warning(plan_file) -> None:
    from ket_infra.layout import layout

    data = base_plan({"provider": "weave", "options": {"weave": {"pasword": "s3cret"}}})
    data["master"]["load_balancr"] = "10.0.1.100:6443"
    data["worker"]["nodes"][0]["internal_ip"] = "10.0.1.99"
    data["cluster"]["some_future_key"] = True  # unknown and like nothing KET reads: KET ignores it, so do we
    plan = load_plan(plan_file(data))
    assert plan.typos == (
        "plan key add_ons.cni.options.weave.pasword is not one KET knows, so KET and ket-infra ignore its value; "
        "did you mean password?",
        "plan key master.load_balancr is not one KET knows, so KET and ket-infra ignore its value; "
        "did you mean load_balancer?",
        "plan key worker.nodes[0].internal_ip is not one KET knows, so KET and ket-infra ignore its value; "
        "did you mean internalip?",
    )
    assert plan.cni.encrypted is False  # the misspelt password is not read: Weave would run unencrypted
    assert set(plan.typos) <= set(layout(plan).warnings)


def test_the_examples_have_no_slips() -> None:
    for path in sorted(EXAMPLES.glob("*.yaml")):
        assert load_plan(path).typos == (), path


SECRET = "hunter2 s3cr3t!"


@pytest.mark.parametrize(
    ("cni", "key"),
    [
        ({"provider": "weave", "options": {"weave": SECRET}}, "add_ons.cni.options.weave"),
        ({"provider": "weave", "options": SECRET}, "add_ons.cni.options"),
        ({"provider": "calico", "options": SECRET}, "add_ons.cni.options"),
        ({"provider": "calico", "options": {"calico": SECRET}}, "add_ons.cni.options.calico"),
        ({"provider": "weave", "options": {"weave": 31337}}, "add_ons.cni.options.weave"),
    ],
)
def test_a_password_pasted_where_a_mapping_belongs_is_not_shown(tmp_path: Path, cni: dict[str, Any], key: str) -> None:
    """Whatever is written under add_ons.cni.options may be the Weave password: an error there names the
    key and the type, never the value."""
    from tests.test_cli import run

    path = write_yaml(tmp_path / "plan.yaml", base_plan(cni))
    kind = "a number" if isinstance(cni["options"], dict) and cni["options"].get("weave") == 31337 else "a string"
    want = f"{path}: {key}: must be a mapping, got {kind} (not shown here); write key: value pairs here"
    with pytest.raises(PlanError) as info:
        load_plan(path)
    assert str(info.value) == want
    result = run("rules", str(path))
    assert (result.returncode, result.stdout, result.stderr) == (1, "", f"error: {want}\n")
    assert not any(s in result.stderr for s in ("hunter2", "s3cr3t", "31337"))


@pytest.mark.parametrize("name", [SECRET, "hunter2-s3cr3t"])
def test_the_weave_password_pasted_into_the_cluster_name_is_refused_unshown(tmp_path: Path, name: str) -> None:
    """The cluster name is in every group name, tag and output: the Weave password there is refused, unshown,
    whether or not it would make a valid name."""
    from tests.test_cli import run

    data = base_plan({"provider": "weave", "options": {"weave": {"password": name}}})
    data["cluster"]["name"] = name
    path = write_yaml(tmp_path / "plan.yaml", data)
    want = (
        f"{path}: cluster.name: is the Weave password (add_ons.cni.options.weave.password; not shown here); "
        "give the cluster its own name"
    )
    with pytest.raises(PlanError) as info:
        load_plan(path)
    assert str(info.value) == want
    result = run("rules", str(path), "--format", "json")
    assert (result.returncode, result.stdout, result.stderr) == (1, "", f"error: {want}\n")


def test_a_key_given_twice_is_refused_as_ket_refuses_it(tmp_path: Path) -> None:
    """KET's reader (Go yaml.v2) refuses a mapping key already defined; PyYAML kept the last one silently."""
    from tests.test_cli import run

    text = yaml.safe_dump(base_plan(), sort_keys=False)
    twice = text.replace("  name: test\n", "  name: test\n  name: other\n")
    path = tmp_path / "plan.yaml"
    path.write_text(twice)
    want = f"{path}: cluster.name: is given twice (lines 2 and 3); keep one of them"
    with pytest.raises(PlanError) as info:
        load_plan(path)
    assert str(info.value) == want
    result = run("rules", str(path))
    assert (result.returncode, result.stdout, result.stderr) == (1, "", f"error: {want}\n")
    node_twice = text.replace(
        "  - host: worker01\n    ip: 10.0.1.31\n", "  - host: worker01\n    ip: 10.0.1.31\n    ip: 10.0.1.32\n"
    )
    assert node_twice != text
    path.write_text(node_twice)
    with pytest.raises(PlanError, match=r"plan.yaml: worker.nodes\[0\].ip: is given twice \(lines \d+ and \d+\)"):
        load_plan(path)


def test_a_merge_key_is_no_key_given_twice(tmp_path: Path) -> None:
    """`<<: *anchor` then a key of the anchor's: the later key overrides, as YAML merge keys mean."""
    text = yaml.safe_dump(base_plan(), sort_keys=False)
    text = text.replace("worker:\n", "x-worker: &w {host: someone, ip: 10.0.1.99}\nworker:\n")
    text = text.replace(
        "  - host: worker01\n    ip: 10.0.1.31\n", "  - <<: *w\n    host: worker01\n    ip: 10.0.1.31\n"
    )
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    assert load_plan(path).node("worker01").ip == "10.0.1.31"
