"""What a saved plan depends on, as `apply` compares it: the YAML files by what they say, not their bytes."""

from __future__ import annotations

from pathlib import Path

from ket_infra.workflow import _meaning


def test_the_same_data_written_otherwise_means_the_same(tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text("cluster:\n  name: east\n  version: v1.10.5\nrole: [master]\n")
    b.write_text("# reviewed\nrole:\n  - master\ncluster: {version: v1.10.5, name: east}\n")
    assert _meaning(a) == _meaning(b)
    b.write_text("role: [master]\ncluster: {version: v1.10.5, name: west}\n")
    assert _meaning(a) != _meaning(b)


def test_dates_and_binary_values_are_meant_too(tmp_path: Path) -> None:
    """YAML makes dates and bytes of such values; a plan file that has one still gets a fingerprint."""
    a = tmp_path / "a.yaml"
    a.write_text("reviewed: 2024-01-01\nblob: !!binary aGVsbG8=\n")
    first = _meaning(a)
    assert first == b'{"blob": "b\'hello\'", "reviewed": "2024-01-01"}'
    a.write_text("reviewed: 2024-01-02\nblob: !!binary aGVsbG8=\n")
    assert _meaning(a) != first


def test_a_file_that_does_not_parse_counts_by_its_bytes(tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"
    a.write_bytes(b"key: [unclosed\n")
    assert _meaning(a) == b"key: [unclosed\n"


def test_a_missing_file_differs_from_an_empty_one(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert _meaning(tmp_path / "gone.yaml") != _meaning(empty)
