"""Safe, bounded YAML loading that remembers where every value came from.

PyYAML's safe loader gives values without positions and accepts duplicate keys silently; dbopt
needs file:line:column for every error and must not be taken down by an alias bomb. So we let
PyYAML compose the node graph (that part is safe and linear in the file size) and construct the
plain values ourselves, counting nodes as aliases are expanded (:mod:`dbopt.yamlparse`, loaded
only to parse: a file kept in dbopt's cache is read without PyYAML).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbopt import yamlcache
from dbopt.errors import Problem

#: Spec and config files are small; anything bigger is a mistake or an attack.
MAX_FILE_BYTES = 1024 * 1024
#: Values constructed per file, counting every expansion of an alias.
MAX_NODES = 100_000

Path_ = tuple[str | int, ...]


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


def load_text(
    text: str, file: str, *, max_nodes: int = MAX_NODES
) -> tuple[Document | None, list[Problem]]:
    """Load one YAML document from ``text``; returns the document (or None) and any problems."""
    from dbopt.yamlparse import parse

    return parse(text, file, max_nodes=max_nodes)


def line_column(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of a 0-based character offset."""
    before = text[:offset]
    return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1


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
        line, column = line_column(valid, len(valid))
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
