"""What a saved plan depends on, as `apply` compares it: the YAML files by what they said when read, not their
bytes."""

from __future__ import annotations

from pathlib import Path

from ket_infra.workflow import _meaning


def test_the_same_data_written_otherwise_means_the_same(tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text("cluster:\n  name: east\n  version: v1.10.5\nrole: [master]\n")
    b.write_text("# reviewed\nrole:\n  - master\ncluster: {version: v1.10.5, name: east}\n")
    assert _meaning(a.read_bytes()) == _meaning(b.read_bytes())
    b.write_text("role: [master]\ncluster: {version: v1.10.5, name: west}\n")
    assert _meaning(a.read_bytes()) != _meaning(b.read_bytes())


def test_dates_and_binary_values_are_meant_too(tmp_path: Path) -> None:
    """YAML makes dates and bytes of such values; a plan file that has one still gets a fingerprint."""
    a = tmp_path / "a.yaml"
    a.write_text("reviewed: 2024-01-01\nblob: !!binary aGVsbG8=\n")
    first = _meaning(a.read_bytes())
    assert first == b'{"blob": "b\'hello\'", "reviewed": "2024-01-01"}'
    a.write_text("reviewed: 2024-01-02\nblob: !!binary aGVsbG8=\n")
    assert _meaning(a.read_bytes()) != first


def test_a_file_that_does_not_parse_counts_by_its_bytes(tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"
    a.write_bytes(b"key: [unclosed\n")
    assert _meaning(a.read_bytes()) == b"key: [unclosed\n"


def test_data_json_cannot_write_counts_by_its_bytes(tmp_path: Path) -> None:
    """Keys of mixed types or a number too long to print: no error, the bytes themselves stand for it."""
    for raw in (b"a: 1\n0: 2\n", b"n: " + b"9" * 5000 + b"\n", b"a: &x [*x]\n"):
        assert _meaning(raw) == raw


def test_the_files_count_as_read_not_as_they_are_when_the_plan_is_saved(tmp_path: Path) -> None:
    from ket_infra.plan import load_plan
    from tests.conftest import EXAMPLES

    path = tmp_path / "plan.yaml"
    path.write_bytes((EXAMPLES / "calico-overlay.yaml").read_bytes())
    plan = load_plan(path)
    path.write_text("edited: after reading\n")
    assert plan.source == (EXAMPLES / "calico-overlay.yaml").read_bytes()
