"""Fuzz the plan and environment loaders (and the layout after a successful load).

Only ket_infra's own errors may escape: PlanError from load_plan, QuotaError from
layout, EnvironmentFileError from load_environment. Input errors must be one line
that starts with the file's path.
"""

from __future__ import annotations

import contextlib
import copy
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ket_infra.environment import Environment, load_environment
from ket_infra.errors import EnvironmentFileError, InputError, PlanError, QuotaError
from ket_infra.layout import layout
from ket_infra.plan import load_plan

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.yaml"))
EXAMPLE_TEXT = {p.name: p.read_text() for p in EXAMPLES}
EXAMPLE_DATA = {name: yaml.safe_load(text) for name, text in EXAMPLE_TEXT.items()}

SETTINGS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

BASE_ENV: dict[str, Any] = {
    "plan_file": "../examples/calico-overlay.yaml",
    "aws": {"region": "eu-west-1", "account_id": "123456789012", "endpoint_url": "http://127.0.0.1:5000"},
    "terraform": {"binary": "terraform", "backend": {"type": "local", "path": "x.tfstate"}, "plugin_dir": "plugins"},
    "installer_cidr": "10.0.0.5/32",
    "ingress_cidrs": ["0.0.0.0/0", "192.0.2.0/24"],
    "api_cidrs": ["10.1.0.0/16"],
    "preflight": True,
    "extra_rules": [
        {"name": "x-tcp", "protocol": "tcp", "ports": "6000-6001", "to": "kubelet", "from": ["master"], "purpose": "p"},
        {
            "name": "x-icmp",
            "protocol": "icmp",
            "ports": "8--1",
            "to": "all",
            "from_cidr": "10.9.0.0/16",
            "purpose": "p",
        },
        {"name": "x-gre", "protocol": "47", "to": ["worker", "master"], "from": "kubelet", "purpose": "p"},
    ],
}
BASE_ENV_S3 = {**BASE_ENV, "terraform": {"backend": {"type": "s3", "bucket": "b", "key": "k", "use_lockfile": False}}}

# Values that have broken parsers before: odd numbers, unicode digits, addresses, huge and empty things.
INTERESTING = [
    "",
    " ",
    "--1",
    "-1",
    "0",
    "1.5",
    "²",
    "٣",
    "1e400",
    "0x10",
    "10.0.0.1",
    "10.0.0.0/8",
    "0.0.0.0/0",
    "::/0",
    "fe80::1",
    "256.1.1.1",
    "10.0.0.1/33",
    "overlay",
    "routed",
    "calico",
    "weave",
    "contiv",
    "custom",
    "kubelet",
    "all",
    "tcp",
    "udp",
    "icmp",
    "4",
    "300",
    "65536",
    "80-79",
    "a\nb",
    "a\x00b",
    "\u2028",
    "x" * 300,
    "eu-west-1",
    "http://x",
    # reach HCL or the file system: must be escaped or refused
    "${timestamp()}",
    "%{if true}X%{endif}",
    "http://127.0.0.1:5731#${timestamp()}",
    "..",
    "../../etc",
    "a/b",
    "worker 😀",
    'say "hi"',
    "back\\slash",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(INTERESTING),
)
KEYS = st.one_of(
    st.sampled_from(
        [
            "cluster",
            "networking",
            "pod_cidr_block",
            "service_cidr_block",
            "type",
            "add_ons",
            "cni",
            "provider",
            "options",
            "calico",
            "mode",
            "weave",
            "password",
            "disable",
            "etcd",
            "master",
            "worker",
            "ingress",
            "storage",
            "nodes",
            "expected_count",
            "host",
            "ip",
            "internalip",
            "load_balancer",
            "load_balanced_fqdn",
            "plan_file",
            "aws",
            "region",
            "terraform",
            "backend",
            "extra_rules",
            "ports",
            "from",
            "from_cidr",
            "to",
            "name",
            "protocol",
            "purpose",
            "installer_cidr",
            "ingress_cidrs",
            "api_cidrs",
            "preflight",
        ]
    ),
    st.text(max_size=10),
    st.integers(-5, 5),
    st.booleans(),
)
STRUCTURES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=5),
    max_leaves=30,
)


# --------------------------------------------------------------------------- running the loaders


def check_input_error(exc: InputError, path: Path) -> None:
    message = str(exc)
    assert message.startswith(str(path)), message
    assert len(message.splitlines()) == 1, f"not one line: {message!r}"
    assert exc.path == str(path)


def run_plan(path: Path) -> None:
    try:
        plan = load_plan(path)
    except PlanError as exc:
        check_input_error(exc, path)
        return
    with contextlib.suppress(QuotaError):
        layout(plan)


def run_env(path: Path) -> None:
    try:
        env = load_environment(path)
    except EnvironmentFileError as exc:
        check_input_error(exc, path)
        return
    check_rendered(env)


def check_rendered(env: Environment) -> None:
    """What an environment that loads renders: nothing Terraform would evaluate, a work folder inside .work."""
    from ket_infra.render import root_module, work_dir, work_root

    assert work_dir(env).parent == work_root(env)
    plan = load_plan(EXAMPLES[0])
    main = root_module(layout(plan), env, "local:/w/terraform.tfstate")
    for literal in re.findall(r'"(?:[^"\\]|\\.)*"', main):
        # every ${ and %{ of a value is written $${ / %%{: Terraform reads it as text
        assert not re.search(r"(?<![$])[$]\{|(?<![%])%\{", literal.replace("$${", "").replace("%%{", "")), literal


def with_file(content: bytes) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "input.yaml"
        path.write_bytes(content)
        yield path


def feed(content: bytes | str, plan: bool = True, env: bool = True) -> None:
    data = content.encode("utf-8", "surrogatepass") if isinstance(content, str) else content
    for path in with_file(data):
        if plan:
            run_plan(path)
        if env:
            run_env(path)


def dump(value: Any) -> str:
    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True)


# --------------------------------------------------------------------------- mutations of real files


def paths_of(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += paths_of(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += paths_of(v, (*prefix, i))
    return out


def parent_of(doc: Any, path: tuple[Any, ...]) -> Any:
    for step in path[:-1]:
        doc = doc[step]
    return doc


@st.composite
def mutated(draw: st.DrawFn, base: Any) -> Any:
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 4))):
        paths = paths_of(doc)
        if not paths:
            break
        path = paths[draw(st.integers(0, len(paths) - 1))]
        parent = parent_of(doc, path)
        op = draw(st.sampled_from(["delete", "replace", "replace", "duplicate-nodes"]))
        if op == "delete":
            del parent[path[-1]]
        elif op == "replace":
            parent[path[-1]] = draw(STRUCTURES)
        else:
            role = draw(st.sampled_from(["etcd", "master", "worker", "ingress", "storage"]))
            group = doc.get(role) if isinstance(doc, dict) else None
            if isinstance(group, dict) and isinstance(group.get("nodes"), list) and group["nodes"]:
                nodes = group["nodes"]
                nodes.append(copy.deepcopy(nodes[draw(st.integers(0, len(nodes) - 1))]))
                if draw(st.booleans()):
                    group["expected_count"] = len(nodes)
                if draw(st.booleans()):  # the same node listed under another role as well
                    other = draw(st.sampled_from(["etcd", "master", "worker", "ingress", "storage"]))
                    target = doc.setdefault(other, {})
                    if isinstance(target, dict):
                        target.setdefault("nodes", [])
                        if isinstance(target["nodes"], list):
                            target["nodes"].append(copy.deepcopy(nodes[-1]))
                            target["expected_count"] = len(target["nodes"])
    return doc


_VALUE_LINE = re.compile(r"^(\s*(?:- )?[A-Za-z_]+:) (\S.*)$")


@st.composite
def token_spliced(draw: st.DrawFn, text: str) -> str:
    """Replace the value of one `key: value` line by raw YAML text (for values no dumper writes)."""
    lines = text.splitlines()
    candidates = [i for i, line in enumerate(lines) if _VALUE_LINE.match(line)]
    for _ in range(draw(st.integers(1, 2))):
        i = candidates.pop(draw(st.integers(0, len(candidates) - 1)))
        m = _VALUE_LINE.match(lines[i])
        assert m is not None
        token = draw(
            st.sampled_from(
                [
                    "0x" + "f" * 4000,  # an int too long for str()
                    "0b" + "1" * 16000,
                    "1" * 5000,  # a decimal int too long for int()
                    '"a\\0b"',  # NUL inside a string
                    '"a\\nb"',
                    "!!binary aGVsbG8=",
                    "!!set {a, b}",
                    "2001-13-45",
                    "2001-01-01",
                    "2001-01-01 10:00:00",
                    "190:20:30",
                    ".nan",
                    "-.inf",
                    "~",
                    "[]",
                    "{}",
                    "*nothing",
                    "&a [*a]",
                    "!!python/object:os.system x",
                    '"--1"',
                    '"²"',
                    "'٣'",
                    "<<: {a: 1}",
                    "|\n  multi\n  line",
                ]
            )
        )
        lines[i] = f"{m.group(1)} {token}"
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the tests


@settings(SETTINGS, max_examples=300)
@given(text=st.text(max_size=400))
def test_random_text(text: str) -> None:
    feed(text)


@settings(SETTINGS, max_examples=200)
@given(data=st.binary(max_size=400))
def test_random_bytes(data: bytes) -> None:
    feed(data)


@settings(SETTINGS, max_examples=300)
@given(value=STRUCTURES)
def test_random_structures(value: Any) -> None:
    feed(dump(value))


@settings(SETTINGS, max_examples=150)
@given(value=st.dictionaries(KEYS, STRUCTURES, max_size=8))
def test_random_mappings(value: dict[Any, Any]) -> None:
    feed(dump(value))


@settings(SETTINGS, max_examples=400)
@given(data=st.data(), name=st.sampled_from(sorted(EXAMPLE_DATA)))
def test_mutated_plans(data: st.DataObject, name: str) -> None:
    feed(dump(data.draw(mutated(EXAMPLE_DATA[name]))), env=False)


@settings(SETTINGS, max_examples=200)
@given(data=st.data(), name=st.sampled_from(sorted(EXAMPLE_TEXT)))
def test_spliced_plans(data: st.DataObject, name: str) -> None:
    feed(data.draw(token_spliced(EXAMPLE_TEXT[name])), env=False)


@settings(SETTINGS, max_examples=300)
@given(data=st.data(), base=st.sampled_from([BASE_ENV, BASE_ENV_S3]))
def test_mutated_environments(data: st.DataObject, base: dict[str, Any]) -> None:
    feed(dump(data.draw(mutated(base))), plan=False)


@settings(SETTINGS, max_examples=150)
@given(data=st.data())
def test_spliced_environments(data: st.DataObject) -> None:
    feed(data.draw(token_spliced(dump(BASE_ENV))), plan=False)


@settings(SETTINGS, max_examples=200)
@given(name=st.one_of(st.text(min_size=1, max_size=70), st.sampled_from(INTERESTING)))
def test_environment_file_names(name: str) -> None:
    """Any file name: refused in one line, or an environment whose work folder is one folder inside .work."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = Path(tmp) / f"{name}.yaml"
            path.write_text(dump(BASE_ENV))
        except (OSError, ValueError):
            return  # a name the file system itself refuses
        try:
            env = load_environment(path)
        except EnvironmentFileError as exc:
            assert len(str(exc).splitlines()) == 1, str(exc)
            return
        check_rendered(env)


# --------------------------------------------------------------------------- regressions: inputs the fuzzers found

HUGE = "0x" + "f" * 4000  # a YAML int with ~4800 decimal digits: str() of it raises ValueError


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("expected_count", '"--1"'),  # str.isdigit() after lstrip("-"), then int() fails
        ("expected_count", '"²"'),  # "²".isdigit() is True, int("²") fails
        ("expected_count", HUGE),
        ("host", HUGE),
        ("ip", HUGE),
        ("pod_cidr_block", HUGE),
        ("expected_count", '"\u0663"'),  # an Arabic-Indic 3: isdigit and int() agree; must not crash
        ("ip", '"10.0.0.1\nx"'),
    ],
)
def test_known_bad_plan_values(key: str, value: str) -> None:
    text = re.sub(rf"(\b{key}:) .*", lambda m: f"{m.group(1)} {value}", EXAMPLE_TEXT["calico-overlay.yaml"], count=1)
    assert value in text
    feed(text, env=False)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("protocol: '47'", "protocol: '²'"),  # isdigit() but not int()
        ("plan_file: ../examples/calico-overlay.yaml", 'plan_file: "a\\0b"'),  # NUL: Path.resolve raises ValueError
        ("plugin_dir: plugins", 'plugin_dir: "a\\0b"'),
        ("ports: 6000-6001", f"ports: {HUGE}"),
        ("preflight: true", '"pre\\nflight": true'),  # the unknown key is echoed raw: a two-line message
        ("binary: terraform", '"bin\\u2028ary": terraform'),
    ],
)
def test_known_bad_environment_values(old: str, new: str) -> None:
    text = dump(BASE_ENV)
    assert old in text
    feed(text.replace(old, new), plan=False)


def test_base_inputs_are_valid() -> None:
    """The fuzzers start from inputs that load: mutations, not the seeds, cause the errors."""
    for text in EXAMPLE_TEXT.values():
        for path in with_file(text.encode()):
            layout(load_plan(path))
    for env in (BASE_ENV, BASE_ENV_S3):
        for path in with_file(dump(env).encode()):
            load_environment(path)
