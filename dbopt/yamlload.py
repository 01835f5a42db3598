"""Safe, bounded YAML loading that remembers where every value came from.

PyYAML's safe loader gives values without positions and accepts duplicate keys silently; dbopt
needs file:line:column for every error and must not be taken down by an alias bomb. So we let
PyYAML compose the node graph (that part is safe and linear in the file size) and construct the
plain values ourselves, counting nodes as aliases are expanded.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dbopt import yamlcache
from dbopt.errors import Problem
from dbopt.yamlsyntax import syntax_problem

#: Spec and config files are small; anything bigger is a mistake or an attack.
MAX_FILE_BYTES = 1024 * 1024
#: Values constructed per file, counting every expansion of an alias.
MAX_NODES = 100_000

Path_ = tuple[str | int, ...]

_PARSER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR_TAG = "tag:yaml.org,2002:str"

_CORE = "tag:yaml.org,2002:"
#: The only tags a spec may carry: what plain YAML resolves to by itself. Everything else
#: (!!python/..., !!binary, !!set, custom !tags) is refused, even where PyYAML's safe
#: constructor would accept it, so a document means the same to every YAML reader.
_SCALAR_TAGS = frozenset(_CORE + t for t in ("null", "bool", "int", "float", "str", "timestamp"))
_SEQUENCE_TAG = _CORE + "seq"
_MAPPING_TAG = _CORE + "map"


@dataclass(slots=True)
class Document:
    """A loaded YAML document: plain Python data plus the position of every value and key."""

    file: str
    data: Any
    positions: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    key_positions: dict[Path_, tuple[int, int]] = field(default_factory=dict)

    def where(self, path: Path_, *, key: bool = False) -> tuple[int, int]:
        """Line and column (1-based) of the value (or key) at ``path``, else its nearest parent."""
        table = self.key_positions if key else self.positions
        if path in table:
            return table[path]
        probe = tuple(path)
        while probe:
            probe = probe[:-1]
            if probe in self.positions:
                return self.positions[probe]
        return (1, 1)

    def problem(self, path: Path_, message: str, *, key: bool = False) -> Problem:
        """A Problem located at ``path`` in this document."""
        line, column = self.where(path, key=key)
        return Problem(self.file, line, column, message)


class _LimitExceeded(Exception):
    pass


class _TagRefused(Exception):
    def __init__(self, node: yaml.Node) -> None:
        super().__init__(node.tag)
        self.node = node

    def problem(self, file: str) -> Problem:
        tag = str(self.node.tag)
        shown = "!!" + tag.removeprefix(_CORE) if tag.startswith(_CORE) else tag
        mark = self.node.start_mark
        return Problem(
            file,
            mark.line + 1,
            mark.column + 1,
            f"the tag '{shown}' is not allowed: dbopt reads plain YAML only (strings, numbers, "
            "true/false, lists and mappings); remove the tag",
        )


class _Builder:
    """Turns a composed node graph into plain values, recording positions."""

    def __init__(self, doc: Document, max_nodes: int) -> None:
        self.doc = doc
        self.max_nodes = max_nodes
        self.count = 0
        self.problems: list[Problem] = []
        self._constructor = yaml.SafeLoader("")
        self._active: set[int] = set()

    def build(self, node: yaml.Node, path: Path_) -> Any:
        self.count += 1
        if self.count > self.max_nodes:
            raise _LimitExceeded
        mark = node.start_mark
        self.doc.positions.setdefault(path, (mark.line + 1, mark.column + 1))
        if id(node) in self._active:
            raise _LimitExceeded  # a recursive alias: infinite by construction
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node)
        if node.tag != (_SEQUENCE_TAG if isinstance(node, yaml.SequenceNode) else _MAPPING_TAG):
            raise _TagRefused(node)
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
        finally:
            self._active.discard(id(node))
        raise TypeError(f"unexpected YAML node {node!r}")  # pragma: no cover

    def _scalar(self, node: yaml.ScalarNode) -> Any:
        if node.tag == _CORE + "value":
            return node.value  # a plain '=' resolves to the obscure !!value tag: it is text
        if node.tag not in _SCALAR_TAGS:
            raise _TagRefused(node)
        if node.tag == _STR_TAG:
            return node.value  # most scalars: skip the constructor's bookkeeping
        try:
            return self._constructor.construct_object(node, deep=True)
        except ValueError as exc:
            # 2024-13-01 looks like a date to YAML, and datetime refuses it.
            mark = node.start_mark
            self.problems.append(
                Problem(
                    self.doc.file,
                    mark.line + 1,
                    mark.column + 1,
                    f"'{node.value}' reads as a date or time in YAML, but is not a valid one "
                    f"({exc}): correct it, or quote it to make it a string",
                )
            )
            return node.value

    def _mapping(self, node: yaml.MappingNode, path: Path_) -> dict[str, Any]:
        # Resolve YAML merge keys (<<) the way PyYAML's SafeLoader does.
        self._constructor.flatten_mapping(node)
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key_mark = key_node.start_mark
            if not isinstance(key_node, yaml.ScalarNode):
                self.problems.append(
                    Problem(
                        self.doc.file,
                        key_mark.line + 1,
                        key_mark.column + 1,
                        "a mapping key must be a plain string",
                    )
                )
                continue
            value = self._scalar(key_node)
            # `null:`, `yes:` or `1:` are keys as written, not 'None', 'True' or '1'.
            key = value if isinstance(value, str) else str(key_node.value)
            if key in result:
                first = self.doc.key_positions[(*path, key)]
                self.problems.append(
                    Problem(
                        self.doc.file,
                        key_mark.line + 1,
                        key_mark.column + 1,
                        f"duplicate key '{key}' (first given at line {first[0]}); "
                        "remove one of them",
                    )
                )
                continue
            self.doc.key_positions[(*path, key)] = (key_mark.line + 1, key_mark.column + 1)
            result[key] = self.build(value_node, (*path, key))
        return result


def load_text(
    text: str, file: str, *, max_nodes: int = MAX_NODES
) -> tuple[Document | None, list[Problem]]:
    """Load one YAML document from ``text``; returns the document (or None) and any problems."""
    doc = Document(file=file, data=None)
    try:
        try:
            nodes = list(_compose_all(text, _PARSER))
        except yaml.YAMLError:
            # Parse again with the pure-Python parser: same verdict, clearer messages.
            nodes = list(_compose_all(text, yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        return None, [syntax_problem(exc, file, text)]
    except yaml.reader.ReaderError as exc:
        line, column = _line_column(text, exc.position)
        return None, [
            Problem(
                file,
                line,
                column,
                f"invalid YAML: the control character #x{exc.character:04x} is not allowed; "
                "remove it",
            )
        ]
    except yaml.YAMLError as exc:  # pragma: no cover - every YAMLError above is marked
        return None, [Problem(file, 1, 1, f"invalid YAML: {exc}")]
    if not nodes:
        return None, [Problem(file, 1, 1, "the file is empty; remove it or add a spec")]
    if len(nodes) > 1:
        mark = nodes[1].start_mark
        return None, [
            Problem(
                file,
                mark.line + 1,
                mark.column + 1,
                "more than one YAML document ('---') in one file; use one file per spec",
            )
        ]
    builder = _Builder(doc, max_nodes)
    try:
        doc.data = builder.build(nodes[0], ())
    except _LimitExceeded:
        return None, [
            Problem(
                file,
                1,
                1,
                f"the document expands to more than {max_nodes} values (an alias bomb or a "
                "recursive alias?); write the values out or split the file",
            )
        ]
    except _TagRefused as exc:
        return None, [exc.problem(file)]
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        return None, [Problem(file, line, column, f"invalid YAML value: {exc.problem}")]
    return doc, builder.problems


def _line_column(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of a 0-based character offset."""
    before = text[:offset]
    return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1


def _compose_all(text: str, parser: Any) -> Iterator[yaml.Node]:
    # libyaml's parser (same YAML, same marks) when PyYAML was built with it: ~10x faster on
    # big spec sets; values are still constructed by the safe constructor above.
    loader = parser(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is not None:
                yield node
    finally:
        loader.dispose()


def load_file(
    path: Path, *, display: str | None = None, max_bytes: int = MAX_FILE_BYTES
) -> tuple[Document | None, list[Problem]]:
    """Load a YAML file with size and expansion limits; never raises for bad content."""
    name = display or str(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            return None, [
                Problem(
                    name,
                    1,
                    1,
                    f"the file is {size} bytes, more than the {max_bytes} allowed; "
                    "split it into several files",
                )
            ]
        raw = path.read_bytes()
    except OSError as exc:
        return None, [Problem(name, 1, 1, f"cannot read the file: {exc.strerror}")]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        valid = raw[: exc.start].decode("utf-8")  # everything before the bad byte decodes
        line, column = _line_column(valid, len(valid))
        return None, [
            Problem(
                name,
                line,
                column,
                f"the file is not UTF-8 (byte 0x{raw[exc.start]:02x}: {exc.reason}); "
                "save it as UTF-8",
            )
        ]
    cached = yamlcache.get(raw, MAX_NODES)
    if cached is not None:
        data, positions, key_positions = cached
        return Document(name, data, positions, key_positions), []
    doc, problems = load_text(text, name)
    if doc is not None and not problems:
        yamlcache.put(raw, MAX_NODES, (doc.data, doc.positions, doc.key_positions))
    return doc, problems
