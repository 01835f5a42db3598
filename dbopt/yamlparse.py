"""The YAML parsing behind :mod:`dbopt.yamlload`: PyYAML composes, dbopt constructs.

Spec and config loading loads PyYAML only here: a file whose parse dbopt's cache kept is
read without it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml

from dbopt.errors import Problem
from dbopt.yamlload import MAX_NODES, Document, Path_, line_column
from dbopt.yamlsyntax import syntax_problem

_PARSER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR_TAG = "tag:yaml.org,2002:str"

_CORE = "tag:yaml.org,2002:"
#: The only tags a spec may carry: what plain YAML resolves to by itself. Everything else
#: (!!python/..., !!binary, !!set, custom !tags) is refused, even where PyYAML's safe
#: constructor would accept it, so a document means the same to every YAML reader.
_SCALAR_TAGS = frozenset(_CORE + t for t in ("null", "bool", "int", "float", "str", "timestamp"))
_SEQUENCE_TAG = _CORE + "seq"
_MAPPING_TAG = _CORE + "map"


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


def parse(
    text: str, file: str, *, max_nodes: int = MAX_NODES
) -> tuple[Document | None, list[Problem]]:
    """:func:`dbopt.yamlload.load_text`: one YAML document from ``text``, and any problems."""
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
        line, column = line_column(text, exc.position)
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
