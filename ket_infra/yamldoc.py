"""Read a YAML file into typed values, with errors that name file and key path.

Shared by the plan loader and the environment loader so that both report
bad input the same way: `FILE: KEY.PATH: what is wrong; how to fix it`.
"""

from __future__ import annotations

import difflib
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import yaml

from ket_infra.errors import InputError

_MAX_BYTES = 16 * 1024 * 1024  # a plan file is a few KiB, an audit report not much more; refuse a runaway file
# libyaml's loader is ~10x faster on large plans; same safe constructors.
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when there, else the pure-Python one


def is_huge(value: Any) -> bool:
    """An integer too long to print (Python refuses str() past 4300 digits)."""
    return isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64


def safe_key(key: Any) -> str:
    """A key as it can be shown on one line."""
    text = str(key) if not is_huge(key) else "<huge number>"
    return text if re.fullmatch(r"[\w.\-\[\]/]+", text) else repr(text)


def describe(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (dict, list)):
        return f"a {'mapping' if isinstance(value, dict) else 'list'}"
    if is_huge(value):
        return "a number too large"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def kind(value: Any) -> str:
    """What VALUE is, without showing it: for where a value may be a secret."""
    if value is None or isinstance(value, (dict, list)):
        return describe(value)
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string (not shown here)"
    if isinstance(value, (int, float)):
        return "a number (not shown here)"
    return "a value (not shown here)"


class Doc:
    """A mapping inside a YAML file, remembering where it came from."""

    def __init__(
        self,
        data: Mapping[Any, Any],
        path: str,
        error: type[InputError],
        prefix: str = "",
        source: bytes = b"",
        secret: bool = False,
    ) -> None:
        self.data = data
        self.path = path
        self.error = error
        self.prefix = prefix
        self.source = source  # the file's bytes as read and parsed (for the root mapping)
        self.secret = secret  # its values may be a secret: errors say what type a value is, never what it is

    def describe(self, value: Any) -> str:
        return kind(value) if self.secret else describe(value)

    def key(self, name: str) -> str:
        name = safe_key(name)
        return f"{self.prefix}.{name}" if self.prefix else name

    def fail(self, name: str | None, problem: str, fix: str | None = None) -> NoReturn:
        if name is not None and problem.startswith("is required") and name not in self.data:
            near = self.misspelt(name)
            if near is not None:  # the key is there, misspelt: that is the mistake to name
                fix = f"found {safe_key(near)}: did you mean {name}?" + (f" else {fix}" if fix else "")
        raise self.error(self.path, self.key(name) if name is not None else (self.prefix or None), problem, fix)

    def misspelt(self, name: str) -> str | None:
        """A key of this mapping a slip away from NAME (which is missing), as unknown keys are matched."""
        keys = [k for k in self.data if isinstance(k, str) and k != name]
        near = difflib.get_close_matches(name, keys, n=1, cutoff=0.8)
        return near[0] if near else None

    def has(self, name: str) -> bool:
        return self.data.get(name) is not None

    def raw(self, name: str) -> Any:
        return self.data.get(name)

    def reject_unknown(self, allowed: set[str]) -> None:
        for k in self.data:
            if not isinstance(k, str) or k not in allowed:
                near = difflib.get_close_matches(k, sorted(allowed), n=1) if isinstance(k, str) else []
                fix = f"did you mean {near[0]}? else remove it" if near else "remove it"
                self.fail(safe_key(k), "unknown key", f"{fix} (allowed here: {', '.join(sorted(allowed))})")

    def text(self, name: str, default: str | None = None, required: bool = False) -> str | None:
        value = self.data.get(name)
        if value is None:
            if required:
                self.fail(name, "is required", "set it")
            return default
        if isinstance(value, bool) or not isinstance(value, (str, int, float)) or is_huge(value):
            self.fail(name, f"must be a string, got {self.describe(value)}", "write a plain text value")
        text = str(value).strip()
        if "\x00" in text:
            self.fail(name, "contains a NUL character", "remove it")
        if not text:
            if required:
                self.fail(name, "is required and must not be empty", "set it")
            return default
        return text

    def integer(self, name: str, default: int | None = None) -> int | None:
        value = self.data.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or is_huge(value):
            if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,18}", value.strip()):
                return int(value.strip())
            self.fail(name, f"must be a whole number, got {self.describe(value)}", "write a number such as 3")
        return value

    def flag(self, name: str, default: bool) -> bool:
        value = self.data.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(name, f"must be true or false, got {self.describe(value)}", "write true or false")
        return value

    def mapping(self, name: str, secret: bool = False) -> Doc:
        """The mapping at NAME; SECRET: its value (and all below it) is never shown in an error."""
        secret = secret or self.secret
        value = self.data.get(name)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            shown = kind(value) if secret else describe(value)
            self.fail(name, f"must be a mapping, got {shown}", "write key: value pairs here")
        return Doc(value, self.path, self.error, self.key(name), secret=secret)

    def seq(self, name: str) -> list[Any]:
        value = self.data.get(name)
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(name, f"must be a list, got {self.describe(value)}", "write a list of - items here")
        return value

    def item(self, name: str, index: int, value: Any) -> Doc:
        key = f"{self.key(name)}[{index}]"
        if not isinstance(value, dict):
            problem = f"must be a mapping, got {self.describe(value)}"
            raise self.error(self.path, key, problem, "write key: value pairs here")
        return Doc(value, self.path, self.error, key, secret=self.secret)


def shown_path(path: Path) -> str:
    """A path as a message shows it: as it is, or quoted when it holds a newline or another control character."""
    return str(path) if str(path).isprintable() else repr(str(path))


def read(path: Path, error: type[InputError], what: str, kind: str = "YAML") -> str:
    """The text of PATH, an input file of KIND (YAML, JSON): a regular file of at most 16 MiB in UTF-8.

    Every file a user gives ket-infra comes through here, so a FIFO, a device or a runaway file is
    refused the same way wherever it is given."""
    shown = shown_path(path)
    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError
        if not stat.S_ISREG(mode):
            # a FIFO would block forever, /dev/zero never ends
            raise error(shown, None, "is not a regular file", f"give the path of the {what} ({kind})")
        # Read at most the limit and one byte more: the size stat reported may not be what is read.
        with path.open("rb") as handle:
            raw = handle.read(_MAX_BYTES + 1)
        if len(raw) > _MAX_BYTES:
            raise error(
                shown, None, f"is over {_MAX_BYTES} bytes, too large for a {what}", "check that this is the right file"
            )
    except FileNotFoundError:
        raise error(shown, None, f"{what} not found", "check the path") from None
    except IsADirectoryError:
        raise error(shown, None, f"is a directory, not a {what}", f"give the path of the {kind} file") from None
    except OSError as exc:
        raise error(shown, None, f"cannot read {what}: {exc.strerror}", "check the path and permissions") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        lineno = raw[: exc.start].count(b"\n") + 1
        raise error(shown, None, f"line {lineno}: not valid UTF-8", "save the file as UTF-8 text") from None


_MERGE = "tag:yaml.org,2002:merge"


def _refuse_keys_given_twice(loader: Any, root: yaml.Node, shown: str, error: type[InputError]) -> None:
    """A mapping key given twice is an error, as KET's reader (Go yaml.v2) has it: PyYAML would keep
    the last one without a word. Keys compare as YAML reads them (`yes` is `true`); the keys a merge
    (`<<: *anchor`) brings in may be overridden, as merge keys mean."""
    done: set[int] = set()  # an anchor's node is walked once, however many aliases name it
    todo: list[tuple[yaml.Node, str]] = [(root, "")]
    while todo:
        node, at = todo.pop()
        if id(node) in done:
            continue
        done.add(id(node))
        children: list[tuple[yaml.Node, str]] = []
        if isinstance(node, yaml.SequenceNode):
            children = [(item, f"{at}[{i}]") for i, item in enumerate(node.value)]
        elif isinstance(node, yaml.MappingNode):
            lines: dict[Any, int] = {}
            for key_node, value in node.value:
                if key_node.tag == _MERGE or not isinstance(key_node, yaml.ScalarNode):
                    children.append((value, at))
                    continue
                key = loader.construct_object(key_node)
                name = f"{at}.{safe_key(key)}" if at else safe_key(key)
                line = key_node.start_mark.line + 1
                if key in lines:
                    raise error(shown, name, f"is given twice (lines {lines[key]} and {line})", "keep one of them")
                lines[key] = line
                children.append((value, name))
        todo.extend(reversed(children))


def load(path: Path, error: type[InputError], what: str) -> Doc:
    """Parse PATH as a YAML mapping; any failure becomes ERROR naming the file."""
    shown = shown_path(path)
    text = read(path, error, what)
    try:
        loader = LOADER(text)  # a safe loader (no arbitrary objects)
        try:
            node = loader.get_single_node()
            if node is not None:
                _refuse_keys_given_twice(loader, node, shown, error)
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = (exc.problem or exc.context or "syntax error").strip()
        raise error(shown, None, f"{where}invalid YAML: {problem}", "fix the YAML syntax") from None
    except (yaml.YAMLError, RecursionError, ValueError) as exc:
        raise error(shown, None, f"invalid YAML: {type(exc).__name__}", "fix the YAML syntax") from None
    if data is None:
        raise error(shown, None, f"is empty, expected a {what}", "check that this is the right file")
    if not isinstance(data, dict):
        raise error(shown, None, f"must be a YAML mapping, got {describe(data)}", f"check that this is a {what}")
    return Doc(data, shown, error, source=text.encode("utf-8"))  # the bytes as read: valid UTF-8 round-trips
