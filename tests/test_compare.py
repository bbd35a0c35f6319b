"""compare: KET's comparison facts (held against KET's table, written out by hand), each option's figures
(held against `rules` for a plan that names that CNI), whether routed mode can work here, and KET's notes
where they matter (the Contiv preview warning, the node-side checks verify ends with)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from ket_infra.compare import compare
from ket_infra.layout import layout
from ket_infra.plan import load_plan
from tests.conftest import EXAMPLES, ROOT, write_yaml

# kismatic v1.12.0 docs/networking.md lines 22-29, "CNI Provider Comparison", copied by hand:
# | Data Path Technique | L3 with BGP Peering or IPIP Encapsulation | UDP Encapsulation | VXLAN |
# | Requires etcd cluster | Yes | No | Yes |
# | Multicast Support | No | Yes | Yes |
# | Ingress Policy | Yes | Yes | Yes<sup>1</sup> |
# | Egress Policy | Yes | No | Yes |
# | Can Encrypt Traffic | No | Yes | No |
KET_TABLE = {
    "calico": ("L3 with BGP Peering or IPIP Encapsulation", True, False, True, True, False),
    "weave": ("UDP Encapsulation", False, True, True, False, True),
    "contiv": ("VXLAN", True, True, True, True, False),
}
FACT_KEYS = ("data_path", "requires_etcd", "multicast", "ingress_policy", "egress_policy", "can_encrypt")
OPTION_KEYS = {
    "provider", "mode", "encrypted", "data_path", "requires_etcd", "multicast", "ingress_policy", "egress_policy",
    "can_encrypt", "groups", "rules", "protocols", "host_settings", "workable", "reasons", "warnings", "current",
}  # fmt: skip
CNI_BLOCKS = {
    ("calico", "overlay", False): {"provider": "calico", "options": {"calico": {"mode": "overlay"}}},
    ("calico", "routed", False): {"provider": "calico", "options": {"calico": {"mode": "routed"}}},
    ("weave", None, False): {"provider": "weave"},
    ("weave", None, True): {"provider": "weave", "options": {"weave": {"password": "x" * 20}}},
    ("contiv", None, False): {"provider": "contiv"},
}


def test_every_option_carries_kets_comparison_facts() -> None:
    doc = compare(load_plan(EXAMPLES / "weave-encrypted.yaml"), None, None)
    assert set(doc) == {"plan", "current", "default", "options"}
    assert [(o["provider"], o["mode"], o["encrypted"]) for o in doc["options"]] == list(CNI_BLOCKS)
    for o in doc["options"]:
        assert set(o) == OPTION_KEYS
        assert tuple(o[k] for k in FACT_KEYS) == KET_TABLE[o["provider"]], o["provider"]
    assert doc["current"] == {"provider": "weave", "mode": None, "encrypted": True}
    assert [o["current"] for o in doc["options"]] == [False, False, False, True, False]
    assert (doc["default"]["provider"], doc["default"]["mode"]) == ("calico", "overlay")
    assert "strong network policy support (granular policy at the Pod level)" in doc["default"]["reasons"]


@pytest.mark.parametrize("example", ["calico-overlay", "contiv", "v1-4-legacy"])
def test_each_options_figures_are_what_rules_gives_for_that_cni(tmp_path: Path, example: str) -> None:
    source = yaml.safe_load((EXAMPLES / f"{example}.yaml").read_text())
    doc = compare(load_plan(EXAMPLES / f"{example}.yaml"), None, None)
    for o in doc["options"]:
        data = copy.deepcopy(source)
        data.setdefault("add_ons", {})["cni"] = CNI_BLOCKS[(o["provider"], o["mode"], o["encrypted"])]
        data["cluster"].get("networking", {}).pop("type", None)
        rs = layout(load_plan(write_yaml(tmp_path / "variant.yaml", data)))
        assert (o["groups"], o["rules"]) == (len(rs.groups), len(rs.rules)), o["provider"]
        assert o["host_settings"] == [
            {"group": h.group, "source_dest_check": h.source_dest_check} for h in rs.host_settings
        ]
        cni_protocols = {r.protocol for r in rs.rules if r.protocol not in ("tcp", "udp", "icmp")}
        labels = {"4": "IP-in-IP (4)", "50": "ESP (50)", "all": "all, from the pod CIDR (routed pod traffic)"}
        assert set(o["protocols"]) == {labels[p] for p in cni_protocols}, o


def test_the_protocols_and_host_settings_each_option_needs() -> None:
    doc = compare(load_plan(EXAMPLES / "calico-overlay.yaml"), None, None)
    by = {(o["provider"], o["mode"], o["encrypted"]): o for o in doc["options"]}
    assert by["calico", "overlay", False]["protocols"] == ["IP-in-IP (4)"]
    assert by["weave", None, True]["protocols"] == ["ESP (50)"]
    assert by["weave", None, False]["protocols"] == by["contiv", None, False]["protocols"] == []
    routed = by["calico", "routed", False]
    assert {h["source_dest_check"] for h in routed["host_settings"]} == {False}
    assert all(not o["host_settings"] for key, o in by.items() if key != ("calico", "routed", False))


def test_routed_is_unknown_offline_and_judged_from_the_subnets() -> None:
    plan = load_plan(EXAMPLES / "calico-overlay.yaml")  # etcd and masters in 10.0.1.0/24, the others in 10.0.2.0/24

    def routed(subnets: dict[str, list[str]] | None) -> dict[str, Any]:
        return next(o for o in compare(plan, None, subnets)["options"] if o["mode"] == "routed")

    offline = routed(None)
    assert offline["workable"] is None and offline["reasons"][0].startswith("unknown offline: ")
    split = {
        "subnet-a": ["etcd01", "etcd02", "etcd03", "master01", "master02"],
        "subnet-b": ["worker01", "worker02", "worker03", "ingress01", "storage01"],
    }
    apart = routed(split)
    assert apart["workable"] is False
    assert apart["reasons"][0] == (
        "cannot work here: the kubelet nodes are in 2 subnets (subnet-a: master01, master02; subnet-b: ingress01, "
        "storage01, worker01 ...) and the VPC router knows no pod routes between them; use overlay (IP-in-IP) or "
        "move the nodes into one subnet"
    )
    together = routed({"subnet-a": split["subnet-a"][:3], "subnet-b": split["subnet-a"][3:] + split["subnet-b"]})
    assert together["workable"] is True  # the etcd-only nodes run no kubelet
    assert all(o["workable"] is True for o in compare(plan, None, split)["options"] if o["mode"] != "routed")


def test_kets_notes_where_they_matter() -> None:
    doc = compare(load_plan(EXAMPLES / "calico-overlay.yaml"), None, None)
    warnings = {(o["provider"], o["mode"], o["encrypted"]): o["warnings"] for o in doc["options"]}
    contiv = warnings["contiv", None, False]
    assert any(
        w.startswith('KET supports Contiv as a "preview"')
        and all(f"contiv/netplugin#{n}" in w for n in (940, 937, 871, 777, 942))
        and "does not support the Kubernetes NetworkPolicy API" in w
        for w in contiv
    )
    assert any("no egress policy" in w for w in warnings["weave", None, False] + warnings["weave", None, True])
    assert any("Calico cannot encrypt traffic" in w and "Weave" in w for w in warnings["calico", "overlay", False])


def test_the_readme_and_the_checked_in_comparison_are_current() -> None:
    from ket_infra.compare import markdown

    expected = markdown(compare(load_plan(EXAMPLES / "calico-overlay.yaml"), None, None))
    expected = expected.replace(str(EXAMPLES / "calico-overlay.yaml"), "examples/calico-overlay.yaml")
    assert (EXAMPLES / "calico-overlay.compare.md").read_text() == expected
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- compare:start", 1)[1].split("-->\n", 1)[1].split("<!-- compare:end -->", 1)[0]
    assert block == expected


def test_the_cli_formats() -> None:
    from tests.test_cli import run

    plan = str(EXAMPLES / "contiv.yaml")
    doc = json.loads(run("compare", plan, "--format", "json").stdout)
    assert doc["current"] == {"provider": "contiv", "mode": None, "encrypted": False}
    table = run("compare", plan)
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    blank = lines.index("")  # the heading wraps at 80 columns when the checkout's path is long
    assert " ".join(lines[:blank]) == f"compare {plan} (current: Contiv)"
    assert lines[blank + 1] == "Calico overlay (KET default)" and "Contiv (current)" in lines  # stacked: no terminal
    assert any(ln.startswith("  works here ") and "unknown" in ln for ln in lines)
    assert run("compare", plan, "--format", "markdown").stdout.startswith("Current choice: Contiv.\n\n| | Calico ")


@pytest.mark.parametrize("width", [60, 80, 120])
def test_the_table_fits_the_terminal_side_by_side_or_stacked(width: int) -> None:
    """Side by side the comparison is 190-328 columns: a narrower terminal gets one block per option, every
    line within its width, every value still there."""
    from ket_infra.compare import table

    doc = compare(load_plan(EXAMPLES / "calico-overlay.yaml"), None, None)
    text = table(doc, width)
    assert max(len(ln) for ln in text.splitlines()) <= width
    for option in ("Calico overlay (current) (KET default)", "Calico routed", "Weave", "Weave encrypted", "Contiv"):
        assert option in text.splitlines()
    assert "  protocols beyond tcp/udp  ESP (50)" in text
    wide = table(doc, 1000)
    assert "| Calico routed " in wide.splitlines()[2] and max(len(ln) for ln in wide.splitlines()) > 190


def test_the_contiv_warning_is_in_plan_and_verify_too(tmp_path: Path) -> None:
    """rules shows it (examples/contiv.rules.md); plan says it once the nodes are found, and verify (after
    plan) names it by its id in one note instead of repeating it."""
    from tests.test_cli import run

    env = write_yaml(
        tmp_path / "lab.yaml",
        {
            "plan_file": str(EXAMPLES / "contiv.yaml"),
            "aws": {"region": "eu-west-1", "endpoint_url": "http://127.0.0.1:9"},  # nothing listens there
        },
    )
    assert 'KET supports Contiv as a "preview"' in (EXAMPLES / "contiv.rules.md").read_text()
    result = run("verify", "--env", str(env), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("note: 6 warning(s) apply (contiv-preview, contiv-limit, "), result.stderr
    result = run("rules", "--env", str(env), cwd=tmp_path)
    assert 'warning: KET supports Contiv as a "preview"' in result.stderr


def test_each_cni_has_its_node_side_check() -> None:
    from ket_infra.cni_facts import NODE_CHECKS

    assert any("calico/ctl:v1.6.4 node status" in c for c in NODE_CHECKS["calico"])
    assert any("/home/weave/weave --local status peers" in c for c in NODE_CHECKS["weave"])
    assert any("/contiv/bin/netctl" in c and c.endswith("global info") for c in NODE_CHECKS["contiv"])
