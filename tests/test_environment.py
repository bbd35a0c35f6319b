"""The environment file: defaults, extra rules, and errors that name the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ket_infra.environment import env_path, load_environment
from ket_infra.errors import EnvironmentFileError
from tests.conftest import ROOT


def write_env(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "staging.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


MINIMAL = {"plan_file": "plan.yaml", "aws": {"region": "eu-west-1"}}


def test_minimal_environment_has_safe_defaults(tmp_path: Path) -> None:
    env = load_environment(write_env(tmp_path, MINIMAL))
    assert env.name == "staging"
    assert env.plan_file == (tmp_path / "plan.yaml").resolve()
    assert (env.installer_cidr, env.ingress_cidrs, env.api_cidrs, env.extra_flows) == (None, (), (), ())
    assert env.preflight is True
    assert env.terraform.binary == "terraform"
    assert env.terraform.backend.type == "local"


def test_example_environment_loads() -> None:
    env = load_environment(ROOT / "environments" / "example.yaml")
    assert env.aws.account_id == "123456789012"
    assert env.plan_file == (ROOT / "examples" / "calico-overlay.yaml").resolve()


def test_env_name_or_path() -> None:
    assert env_path("staging") == Path("environments/staging.yaml")
    assert env_path("conf/x.yaml") == Path("conf/x.yaml")


def test_extra_rules(tmp_path: Path) -> None:
    data = dict(
        MINIMAL,
        extra_rules=[
            {
                "name": "flannel-vxlan",
                "protocol": "udp",
                "ports": 8472,
                "to": "kubelet",
                "from": "kubelet",
                "purpose": "flannel",
            },
            {
                "name": "metrics",
                "protocol": "tcp",
                "ports": "6781-6782",
                "to": ["worker"],
                "from_cidr": "10.5.0.0/24",
                "purpose": "scrape",
            },
            {"name": "gre", "protocol": 47, "to": "all", "from": ["master"], "purpose": "GRE"},
        ],
    )
    flows = load_environment(write_env(tmp_path, data)).extra_flows
    assert [(f.name, f.protocol, f.ports) for f in flows] == [
        ("flannel-vxlan", "udp", (8472, 8472)),
        ("metrics", "tcp", (6781, 6782)),
        ("gre", "47", None),
    ]
    assert flows[0].to == ("master", "worker", "ingress", "storage")
    assert flows[1].src_cidr == "10.5.0.0/24"


def rule(**kw: Any) -> dict[str, Any]:
    base = {"name": "x", "protocol": "tcp", "ports": 80, "to": "worker", "from": "master", "purpose": "p"}
    base.update(kw)
    return {k: v for k, v in base.items() if v is not None}


BAD: list[tuple[str, dict[str, Any], str, str]] = [
    ("unknown top key", {"planfile": "x"}, "planfile", "unknown key"),
    ("unknown aws key", {"aws": {"region": "eu-west-1", "profile": "p"}}, "aws.profile", "unknown key"),
    ("region missing", {"aws": {}}, "aws.region", "is required"),
    ("region malformed", {"aws": {"region": "Europe"}}, "aws.region", "not an AWS region"),
    ("account not 12 digits", {"aws": {"region": "eu-west-1", "account_id": "12345"}}, "aws.account_id", "12-digit"),
    (
        "endpoint not a url",
        {"aws": {"region": "eu-west-1", "endpoint_url": "localhost"}},
        "aws.endpoint_url",
        "http(s) URL",
    ),
    (
        "backend unknown",
        {"terraform": {"backend": {"type": "gcs"}}},
        "terraform.backend.type",
        "not a supported backend",
    ),
    (
        "s3 without bucket",
        {"terraform": {"backend": {"type": "s3", "key": "k"}}},
        "terraform.backend.bucket",
        "is required",
    ),
    ("installer cidr bad", {"installer_cidr": "10.0.0.5/40"}, "installer_cidr", "not a valid CIDR"),
    ("ingress cidrs not a list", {"ingress_cidrs": "0.0.0.0/0"}, "ingress_cidrs", "must be a list"),
    ("ingress cidr bad", {"ingress_cidrs": ["nope"]}, "ingress_cidrs[0]", "not a valid CIDR"),
    ("preflight not bool", {"preflight": "no"}, "preflight", "true or false"),
    ("egress cidr bad", {"egress_cidrs": ["10.0.0.0/33"]}, "egress_cidrs[0]", "not a valid CIDR"),
    ("egress cidr ipv6", {"egress_cidrs": ["::/0"]}, "egress_cidrs[0]", "not an IPv4 CIDR"),
    ("brick ports zero", {"gluster_brick_ports": 0}, "gluster_brick_ports", "0 is out of range"),
    ("brick ports past 65535", {"gluster_brick_ports": 16385}, "gluster_brick_ports", "1 to 16384"),
    ("brick ports a word", {"gluster_brick_ports": "many"}, "gluster_brick_ports", "whole number"),
    ("extra rule unknown key", {"extra_rules": [rule(port=1)]}, "extra_rules[0].port", "unknown key"),
    ("extra rule no name", {"extra_rules": [rule(name=None)]}, "extra_rules[0].name", "is required"),
    ("extra rule bad name", {"extra_rules": [rule(name="Bad Name")]}, "extra_rules[0].name", "not a valid rule name"),
    ("extra rule builtin name", {"extra_rules": [rule(name="calico-bgp")]}, "extra_rules[0].name", "already the name"),
    ("extra rule bad protocol", {"extra_rules": [rule(protocol="sctpx")]}, "extra_rules[0].protocol", "not a protocol"),
    ("extra rule no ports", {"extra_rules": [rule(ports=None)]}, "extra_rules[0].ports", "is required"),
    ("extra rule bad ports", {"extra_rules": [rule(ports="90-80")]}, "extra_rules[0].ports", "not a valid ports range"),
    ("extra rule ports on proto 4", {"extra_rules": [rule(protocol="4")]}, "extra_rules[0].ports", "has no ports"),
    ("extra rule bad role", {"extra_rules": [rule(to="gateway")]}, "extra_rules[0].to", "not a role"),
    (
        "extra rule both sources",
        {"extra_rules": [rule(from_cidr="10.0.0.0/8")]},
        "extra_rules[0]",
        "exactly one of from",
    ),
    (
        "extra rule all from the world",
        {"extra_rules": [rule(protocol="all", ports=None, **{"from": None}, from_cidr="0.0.0.0/0")]},
        "extra_rules[0].protocol",
        "opens every port of these nodes to the internet",
    ),
    (
        "extra rule allow_world not a bool",
        {"extra_rules": [rule(protocol="all", ports=None, **{"from": None}, from_cidr="0.0.0.0/0", allow_world="y")]},
        "extra_rules[0].allow_world",
        "true or false",
    ),
    (
        "extra rule all between groups",
        {"extra_rules": [rule(protocol="all", ports=None)]},
        "extra_rules[0].protocol",
        "never allowed",
    ),
    ("detach_groups not a list", {"detach_groups": "default"}, "detach_groups", "must be a list"),
    ("detach_groups entry not a name", {"detach_groups": ["default", 7]}, "detach_groups[1]", "not a security group"),
    ("detach_groups entry empty", {"detach_groups": [" "]}, "detach_groups[0]", "give a group id (sg-...) or name"),
    ("detach_groups bad id", {"detach_groups": ["sg-12"]}, "detach_groups[0]", "8 or 17 hex digits"),
    (
        "detach_groups newline forges a line",
        {"detach_groups": ["default", "x\nerror: forged"]},
        "detach_groups[1]",
        "characters AWS never allows in a group name",
    ),
    ("detach_groups control character", {"detach_groups": ["de\tfault"]}, "detach_groups[0]", "never allows"),
    ("detach_groups non-ascii", {"detach_groups": ["défaut"]}, "detach_groups[0]", "never allows"),
    ("ephemeral_ports not a range", {"ephemeral_ports": 32768}, "ephemeral_ports", '"LOW-HIGH", such as'),
    ("ephemeral_ports upside down", {"ephemeral_ports": "60999-32768"}, "ephemeral_ports", "not a port range"),
    ("ephemeral_ports too high", {"ephemeral_ports": "32768-65536"}, "ephemeral_ports", "not a port range"),
]


def test_ephemeral_ports_default_to_linuxs_range(tmp_path: Path) -> None:
    assert load_environment(write_env(tmp_path, MINIMAL)).ephemeral_ports == (32768, 60999)
    changed = load_environment(write_env(tmp_path, {**MINIMAL, "ephemeral_ports": "49152 - 65535"}))
    assert changed.ephemeral_ports == (49152, 65535)


def test_detach_groups_keeps_ids_and_names_once_each(tmp_path: Path) -> None:
    groups = ["default", "sg-0123abcd", "sg-0123456789abcdef0", "default"]
    env = load_environment(write_env(tmp_path, {**MINIMAL, "detach_groups": groups}))
    assert env.detach_groups == ("default", "sg-0123abcd", "sg-0123456789abcdef0")
    assert load_environment(write_env(tmp_path, MINIMAL)).detach_groups == ()
    odd = "k8s nodes._-:/()#,@[]+=&;{}!$*"  # every character AWS allows in a group name
    assert load_environment(write_env(tmp_path, {**MINIMAL, "detach_groups": [odd]})).detach_groups == (odd,)


@pytest.mark.parametrize(("case", "change", "key", "words"), BAD, ids=[b[0] for b in BAD])
def test_bad_environment(tmp_path: Path, case: str, change: dict[str, Any], key: str, words: str) -> None:
    path = write_env(tmp_path, {**MINIMAL, **change})
    with pytest.raises(EnvironmentFileError) as info:
        load_environment(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert words in message
    assert "\n" not in message


def test_missing_environment_file(tmp_path: Path) -> None:
    with pytest.raises(EnvironmentFileError, match="environment file not found"):
        load_environment(tmp_path / "nope.yaml")


def test_all_from_the_world_is_kept_when_the_rule_says_allow_world(tmp_path: Path) -> None:
    world = rule(protocol="all", ports=None, **{"from": None}, from_cidr="0.0.0.0/0", allow_world=True)
    env = load_environment(write_env(tmp_path, {**MINIMAL, "extra_rules": [world]}))
    assert env.extra_flows[0].protocol == "all" and env.extra_flows[0].src_cidr == "0.0.0.0/0"


@pytest.mark.parametrize(
    ("change", "key", "suggestion"),
    [
        ({"planfile": "x"}, "planfile", "did you mean plan_file? else remove it"),
        ({"egress_cidr": ["10.0.0.0/8"]}, "egress_cidr", "did you mean egress_cidrs? else remove it"),
        (
            {"aws": {"region": "eu-west-1", "acount_id": "1"}},
            "aws.acount_id",
            "did you mean account_id? else remove it",
        ),
        ({"terraform": {"plugin-dir": "/m"}}, "terraform.plugin-dir", "did you mean plugin_dir? else remove it"),
        ({"zzz": 1}, "zzz", "remove it (allowed here: "),
    ],
)
def test_an_unknown_key_gets_the_nearest_known_one(
    tmp_path: Path, change: dict[str, Any], key: str, suggestion: str
) -> None:
    path = write_env(tmp_path, {**MINIMAL, **change})
    with pytest.raises(EnvironmentFileError) as info:
        load_environment(path)
    assert str(info.value).startswith(f"{path}: {key}: unknown key; {suggestion}"), str(info.value)


@pytest.mark.parametrize(
    ("text", "key", "lines"),
    [
        ("plan_file: plan.yaml\naws:\n  region: eu-west-1\n  region: us-east-1\n", "aws.region", (3, 4)),
        (
            "plan_file: plan.yaml\naws: {region: eu-west-1}\npreflight: true\nplan_file: other.yaml\n",
            "plan_file",
            (1, 4),
        ),
        (
            "plan_file: plan.yaml\naws: {region: eu-west-1}\nextra_rules:\n  - name: a\n    from: worker\n"
            "    to: master\n    protocol: tcp\n    purpose: test\n    ports: 1\n    ports: 2\n",
            "extra_rules[0].ports",
            (9, 10),
        ),
        ("plan_file: plan.yaml\naws: {region: eu-west-1}\npreflight: yes\npreflight: false\n", "preflight", (3, 4)),
    ],
)
def test_a_key_given_twice_is_refused_with_both_lines(
    tmp_path: Path, text: str, key: str, lines: tuple[int, int]
) -> None:
    """YAML readers keep the last of two equal keys without a word; which one the author meant is unknown."""
    path = tmp_path / "staging.yaml"
    path.write_text(text)
    with pytest.raises(EnvironmentFileError) as info:
        load_environment(path)
    assert str(info.value) == f"{path}: {key}: is given twice (lines {lines[0]} and {lines[1]}); keep one of them"
