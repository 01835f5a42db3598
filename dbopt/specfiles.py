"""Spec files as a person writes them: the YAML layout of an index or view file (flow lists
for key columns, block text for long queries, comments at the top), the file name of a
relation, what an existing file declares and keeps, and writing a file whole or not at all.
Used by `dbopt import`; pure except for the file reads and writes at the end."""

from __future__ import annotations

import hashlib
import os
import re
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from dbopt.model import DEFAULT_SCHEMA, IndexColumn, IndexSpec, QualifiedName

if TYPE_CHECKING:
    from dbopt.importer import Left

#: What a file name keeps of a relation's name; anything else becomes "_".
_UNSAFE_IN_FILE_NAME = re.compile(r"[^\w.\-]")


# --- YAML as a person writes it --------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """Block lists indented under their key, as the repository's spec files are."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style: str | None = None
    if "\n" in value:
        style = "|"
    elif "'" in value and '"' not in value and "\\" not in value:
        style = '"'  # SQL literals read better in double quotes than with doubled ''
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


class _Flow(list[Any]):
    """A list written on one line, as people write key columns: [a, {name: b, order: desc}]."""


def _represent_flow(dumper: yaml.SafeDumper, value: _Flow) -> yaml.SequenceNode:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=True)


_Dumper.add_representer(str, _represent_str)
_Dumper.add_representer(_Flow, _represent_flow)


def _dump(data: Mapping[str, Any]) -> str:
    return yaml.dump(
        dict(data),
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=None,
        allow_unicode=True,
        width=4096,
    )


def _column(col: IndexColumn) -> str | dict[str, str]:
    if col.expr is None and not (col.order or col.nulls or col.opclass or col.collation):
        return col.name or ""
    out: dict[str, str] = {"name": col.name or ""} if col.expr is None else {"expr": col.expr}
    for key in ("order", "nulls", "opclass", "collation"):
        value = getattr(col, key)
        if value:
            out[key] = value
    return out


def _storage_value(text: str) -> str | int:
    """An integer as an integer (fillfactor: 90); anything else exactly as the server has it
    (the spec keeps 'false' as 'false', which the server stores and prints as given)."""
    return int(text) if text.isdigit() and str(int(text)) == text else text


def index_entry(spec: IndexSpec) -> dict[str, Any]:
    """One item of a spec file's ``indexes`` list, only the keys that differ from defaults."""
    out: dict[str, Any] = {"name": spec.name, "columns": _Flow(_column(c) for c in spec.columns)}
    if spec.method != "btree":
        out["method"] = spec.method
    if spec.unique:
        out["unique"] = True
    if spec.nulls_not_distinct:
        out["nulls_not_distinct"] = True
    if spec.include:
        out["include"] = _Flow(spec.include)
    if spec.where is not None:
        out["where"] = spec.where
    if spec.storage:
        out["with"] = {k: _storage_value(v) for k, v in spec.storage}
    if spec.reason:
        out["reason"] = spec.reason
    return out


def _comment_lines(text: str, indent: str = "") -> list[str]:
    lines = textwrap.wrap(text, width=96, subsequent_indent=indent + "  ", break_on_hyphens=False)
    return [f"# {indent}{line}".rstrip() for line in lines]


def file_header(source: str, at: datetime, left: Sequence[Left]) -> str:
    when = at.strftime("%Y-%m-%d %H:%M:%S UTC")
    # Wrapped like every comment line: a name holding a line break cannot end the comment.
    lines = [
        *_comment_lines(f"Imported by `dbopt import` on {when}, as the server defines it,"),
        *_comment_lines(f"from {source}."),
    ]
    if left:
        lines.append("# Left out (unmanaged, as they are in the database):")
        for item in left:
            lines += _comment_lines(str(item), indent="  ")
    return "\n".join(lines) + "\n"


def table_text(
    table: QualifiedName,
    specs: Sequence[IndexSpec],
    header: str,
    kept: Mapping[str, Any] | None = None,
) -> str:
    """An index file: the header comment, ``table``, its ``indexes`` (and ``kept``: what the
    file it replaces said that a database cannot, its budgets)."""
    data: dict[str, Any] = {"table": str(table), "indexes": [index_entry(s) for s in specs]}
    return header + _dump({**data, **(kept or {})})


def view_text(
    view: QualifiedName,
    query: str,
    specs: Sequence[IndexSpec],
    reason: str | None,
    header: str,
    kept: Mapping[str, Any] | None = None,
) -> str:
    """A view file: the header comment, name, schema, the server's query and the indexes
    (and ``kept``: the refresh, dependencies and budgets of the file it replaces)."""
    data: dict[str, Any] = {"name": view.name, "schema": view.schema}
    data["query"] = query.strip().rstrip(";").rstrip() + "\n"
    if specs:
        data["indexes"] = [index_entry(s) for s in specs]
    data.update(kept or {})
    if reason:
        data["reason"] = reason
    return header + _dump(data)


#: What a spec file says that no database can: kept when --force overwrites the file.
_KEPT_KEYS = {"table": ("queries",), "view": ("refresh", "depends_on", "queries")}


def kept_from(path: Path, kind: str) -> tuple[dict[str, Any], dict[str, str]]:
    """From a spec file about to be overwritten: its budgets (a view's refresh and
    dependencies too), and each index's reason by index name. Nothing from a file that
    cannot be read (the validator then judges what is written, as always)."""
    try:
        data = yaml.safe_load(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}, {}
    if not isinstance(data, dict):
        return {}, {}
    kept = {k: data[k] for k in _KEPT_KEYS[kind] if data.get(k)}
    reasons: dict[str, str] = {}
    for item in data.get("indexes") or ():
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            why = item.get("reason", item.get("comment"))
            if isinstance(why, str) and why:
                reasons[item["name"]] = why
    return kept, reasons


def file_names(names: Iterable[QualifiedName]) -> dict[QualifiedName, str]:
    """A file name per relation: ``<name>.yaml`` in public, ``<schema>.<name>.yaml`` elsewhere,
    with what a file name cannot hold replaced and a short hash of the real name added when
    that changed it, or when two names differ only by case (one file on macOS and Windows)."""
    names = list(names)
    stems: dict[QualifiedName, str] = {}
    for name in names:
        base = name.name if name.schema == DEFAULT_SCHEMA else f"{name.schema}.{name.name}"
        safe = _UNSAFE_IN_FILE_NAME.sub("_", base)
        if safe.startswith("."):
            safe = "_" + safe[1:]
        stems[name] = safe if safe == base else f"{safe}-{_digest(name)}"
    lowered: dict[str, int] = {}
    for stem in stems.values():
        lowered[stem.lower()] = lowered.get(stem.lower(), 0) + 1
    return {
        name: (f"{stem}-{_digest(name)}" if lowered[stem.lower()] > 1 else stem) + ".yaml"
        for name, stem in stems.items()
    }


def _digest(name: QualifiedName) -> str:
    return hashlib.sha256(f"{name.schema}\0{name.name}".encode()).hexdigest()[:8]


# --- files on disk ---------------------------------------------------------------------------


def declares(path: Path) -> QualifiedName | None:
    """The table or view an existing spec file is about (None when it cannot be read)."""
    from dbopt.model import parse_qualified

    try:
        data = yaml.safe_load(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(data, dict):
        return None
    try:
        if isinstance(data.get("table"), str):
            return parse_qualified(data["table"])
        if isinstance(data.get("name"), str):
            schema = data.get("schema", DEFAULT_SCHEMA)
            return QualifiedName(str(schema), data["name"])
    except ValueError:
        return None
    return None


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (a temporary file renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
