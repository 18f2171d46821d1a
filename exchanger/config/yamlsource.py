"""YAML loading that remembers where every value came from.

Config errors must point at `FILE:LINE`, so mappings and sequences keep the
line of each of their values. Duplicate keys are an error, not a silent
override (PyYAML's default).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class YMap(dict[Any, Any]):
    """A mapping that knows its own line, the line of each value and of each key."""

    line: int
    lines: dict[Any, int]
    key_lines: dict[Any, int]


class YList(list[Any]):
    """A sequence that knows its own line and the line of each item."""

    line: int
    lines: list[int]


class YamlError(ValueError):
    """Unparseable YAML; `line` is 1-based."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line


class _Loader(yaml.SafeLoader):
    pass


def _mapping(loader: _Loader, node: yaml.MappingNode) -> YMap:
    loader.flatten_mapping(node)
    result = YMap()
    result.line = node.start_mark.line + 1
    result.lines = {}
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            raise YamlError(f"keys must be strings, not {key!r}", key_node.start_mark.line + 1)
        if key in result:
            raise YamlError(f"duplicate key {key!r}", key_node.start_mark.line + 1)
        result[key] = loader.construct_object(value_node, deep=True)
        result.lines[key] = value_node.start_mark.line + 1
        result.key_lines[key] = key_node.start_mark.line + 1
    return result


def _sequence(loader: _Loader, node: yaml.SequenceNode) -> YList:
    result = YList(loader.construct_object(item, deep=True) for item in node.value)
    result.line = node.start_mark.line + 1
    result.lines = [item.start_mark.line + 1 for item in node.value]
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _sequence)


#: What usually causes PyYAML's most common complaints, said to whoever edits the file.
_YAML_HINTS = {
    "mapping values are not allowed here": (
        " (a value holding ': ' needs quotes, or a line is indented too far)"
    ),
    "could not find expected ':'": " (a key without ':' or a line indented too little)",
    "found character '\\t' that cannot start any token": " (indent with spaces, not tabs)",
    "expected <block end>, but found '-'": " (a list item indented differently from the others)",
}


def load(path: Path) -> Any:
    """Parse one YAML document from `path` with line information."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise YamlError(
            f"cannot read the file: {exc.strerror or exc.__class__.__name__}", 0
        ) from None
    except UnicodeDecodeError:
        raise YamlError("cannot read the file: it is not UTF-8 text", 0) from None
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        hint = _YAML_HINTS.get(str(exc.problem), "")
        raise YamlError(f"invalid YAML: {exc.problem or exc.context}{hint}", line) from None
    except yaml.YAMLError as exc:
        raise YamlError(f"invalid YAML: {exc.__class__.__name__}", 0) from None


class NotStreamable(Exception):
    """`iter_sequence` cannot read this file item by item; `load` it whole instead."""


def iter_sequence(path: Path) -> Iterator[tuple[Any, int]]:
    """The items of a file holding one YAML sequence, each with its line, built one at a time.

    `load` composes the whole document before building it, so a file of 10,000
    policies holds every node of the document at once (and leaves the heap that
    fragmented). This composes, builds and hands over one item at a time with the
    same parser and constructors. It is for files that are fine: on anything else
    (a parse or construction error, a document that is not one plain sequence) it
    raises `NotStreamable`, and the caller should `load` the file whole, which
    reports the problem exactly as before.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        raise NotStreamable from None
    loader: Any = _Loader(text)  # PyYAML's event API is untyped
    try:
        loader.get_event()  # stream start
        if not loader.check_event(yaml.DocumentStartEvent):
            raise NotStreamable
        loader.get_event()
        start = loader.peek_event()
        if not isinstance(start, yaml.SequenceStartEvent) or start.anchor is not None:
            raise NotStreamable
        if start.tag not in (None, "!", yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG):
            raise NotStreamable
        loader.get_event()
        index = 0
        while not loader.check_event(yaml.SequenceEndEvent):
            node = loader.compose_node(None, index)
            item = loader.construct_document(node)
            yield item, node.start_mark.line + 1
            index += 1
        loader.get_event()
        loader.get_event()  # document end
        if not loader.check_event(yaml.StreamEndEvent):
            raise NotStreamable  # several documents: `load` says what is wrong
    except (yaml.YAMLError, YamlError, RecursionError):
        raise NotStreamable from None
    finally:
        loader.dispose()


class Problems:
    """Collects `FILE:LINE: message` errors and warnings while loading."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def error(self, where: str, line: int, message: str) -> None:
        self.errors.append(f"{location(where, line)}: {message}")

    def warn(self, where: str, line: int, message: str) -> None:
        self.warnings.append(f"{location(where, line)}: warning: {message}")


def location(where: str, line: int) -> str:
    """`FILE:LINE`, or just `FILE` for a problem of no line (an unreadable file, an env var)."""
    return f"{where}:{line}" if line > 0 else where


#: What a value of each type is called in an error message.
_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    YMap: "a mapping",
    YList: "a list",
}


def _expected(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if set(kinds) == {int, float}:
        return "a number"
    return " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)


def _found(value: Any) -> str:
    for kind in (bool, int, float, str, YMap, YList):
        if isinstance(value, kind):
            return _TYPE_NAMES[kind]
    return type(value).__name__


@dataclass
class Section:
    """A YAML mapping being read, with the file it came from, for error lines."""

    data: YMap
    file: str
    problems: Problems
    path: str = ""

    def line(self, key: str | None = None) -> int:
        return self.data.lines.get(key, self.data.line) if key else self.data.line

    def error(self, key: str | None, message: str) -> None:
        name = f"{self.path}.{key}" if self.path and key else (key or self.path)
        self.problems.error(self.file, self.line(key), f"{name}: {message}" if name else message)

    def warn(self, key: str | None, message: str) -> None:
        self.problems.warn(self.file, self.line(key), message)

    def only(self, allowed: frozenset[str]) -> None:
        """Unknown keys are errors at the key's own line (its value may start lower)."""
        key_lines: dict[Any, int] = getattr(self.data, "key_lines", {})
        for key in self.data:
            if key not in allowed:
                name = f"{self.path}.{key}" if self.path else key
                self.problems.error(
                    self.file,
                    key_lines.get(key, self.line(key)),
                    f"{name}: unknown key (allowed: {', '.join(sorted(allowed))})",
                )

    def sub(self, key: str, *, required: bool = False) -> Section | None:
        value = self.data.get(key)
        if value is None:
            if required:
                self.error(key, "required")
            return None
        if not isinstance(value, YMap):
            self.error(key, "must be a mapping")
            return None
        return Section(value, self.file, self.problems, f"{self.path}.{key}" if self.path else key)

    def get(self, key: str, kind: type | tuple[type, ...], *, required: bool = False) -> Any:
        value = self.data.get(key)
        if value is None:
            if required:
                self.error(key, "required")
            return None
        wrong_bool = isinstance(value, bool) and bool not in (
            kind if isinstance(kind, tuple) else (kind,)
        )
        if wrong_bool or not isinstance(value, kind):
            self.error(key, f"must be {_expected(kind)}, not {_found(value)}")
            return None
        return value

    def integer(self, key: str, low: int, high: int, default: int) -> int:
        value = self.get(key, int)
        if value is None:
            return default
        if not low <= value <= high:
            self.error(key, f"must be between {low} and {high}")
            return default
        return int(value)

    def strings(self, key: str, *, required: bool = False) -> list[tuple[str, int]] | None:
        """A non-empty list of non-empty strings, with the line of each item."""
        value = self.get(key, YList, required=required)
        if value is None:
            return None
        if not value:
            self.error(key, "must not be empty")
            return None
        out = []
        for item, line in zip(value, value.lines, strict=True):
            if not isinstance(item, str) or not item:
                self.problems.error(self.file, line, f"{key}: items must be non-empty strings")
                continue
            out.append((item, line))
        return out
