"""advise's suggestions as spec YAML: printed, or merged into the spec files.

The merge is a ruamel.yaml round trip: what a file says stays as it is written (comments, key
order, flow lists, quotes); the suggestions are appended to its ``indexes`` and ``queries``
lists, and a table without a file gets a new one (named as `dbopt import` names them).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarstring import DoubleQuotedScalarString, LiteralScalarString

from dbopt.advise.suggestions import NewBudget, Suggestion
from dbopt.model import QualifiedName
from dbopt.spec import SPEC_SUFFIXES
from dbopt.specfiles import declares, file_names, index_entry, write_atomically


@dataclass(frozen=True, slots=True)
class WrittenFile:
    """A spec file advise wrote: which, whether new, and what it added."""

    path: Path
    created: bool
    indexes: tuple[str, ...]
    queries: tuple[str, ...]


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)  # the repository's layout: "  - name: x"
    yaml.width = 4096
    return yaml


def _plain(value: Any) -> Any:
    """specfiles' entry values as ruamel nodes (flow lists stay on one line)."""
    if isinstance(value, list):
        seq = CommentedSeq(_plain(v) for v in value)
        if type(value).__name__ == "_Flow":
            seq.fa.set_flow_style()
        return seq
    if isinstance(value, dict):
        out = CommentedMap()
        for k, v in value.items():
            out[k] = _plain(v)
        if all(not isinstance(v, (list, dict)) for v in value.values()):
            out.fa.set_flow_style()  # a key column's options, storage parameters
        return out
    return value


def index_node(suggestion: Suggestion) -> CommentedMap:
    """One ``indexes`` item (the keys `dbopt import` writes, through specfiles)."""
    node = _plain(index_entry(suggestion.spec))
    assert isinstance(node, CommentedMap)
    node.fa.set_block_style()
    return node


def budget_node(budget: NewBudget) -> CommentedMap:
    """One ``queries`` item, with why its numbers as a comment above it."""
    node = CommentedMap()
    node["name"] = budget.name
    node["sql"] = LiteralScalarString(budget.sql.rstrip() + "\n")
    if budget.params:
        # Quoted: dbopt reads YAML 1.1, where a plain 14:00 is the number 840.
        params = CommentedMap({k: DoubleQuotedScalarString(v) for k, v in budget.params.items()})
        params.fa.set_flow_style()
        node["params"] = params
    if budget.budget_ms is not None:
        node["budget_ms"] = (
            int(budget.budget_ms) if budget.budget_ms.is_integer() else budget.budget_ms
        )
    node["max_cost"] = budget.max_cost
    expect = CommentedMap()
    uses = CommentedSeq([budget.uses_index])
    uses.fa.set_flow_style()
    expect["uses_index"] = uses
    node["expect"] = expect
    node.yaml_set_start_comment(f"dbopt advise: {budget.why}", indent=4)
    return node


def _append(doc: CommentedMap, key: str, items: Sequence[CommentedMap]) -> None:
    if not items:
        return
    current = doc.get(key)
    if not isinstance(current, CommentedSeq):
        current = CommentedSeq()
        doc[key] = current
    for item in items:
        current.append(item)


def _dump(doc: Any) -> str:
    out = io.StringIO()
    _yaml().dump(doc, out)
    return out.getvalue()


def merged_text(
    text: str | None,
    table: QualifiedName,
    suggestions: Sequence[Suggestion],
    budgets: Sequence[NewBudget],
) -> str:
    """``text`` (a spec file, or None for a new one) with the suggestions and budgets added."""
    if text is None or not text.strip():
        doc = CommentedMap()
        doc["table"] = str(table)
        doc.yaml_set_start_comment(f"{table}: suggested by `dbopt advise`")
    else:
        loaded = _yaml().load(text)
        if not isinstance(loaded, CommentedMap):
            raise ValueError("not a mapping")
        doc = loaded
    _append(doc, "indexes", [index_node(s) for s in suggestions])
    _append(doc, "queries", [budget_node(b) for b in budgets])
    return _dump(doc)


def by_table(
    suggestions: Sequence[Suggestion], budgets: Sequence[NewBudget]
) -> dict[QualifiedName, tuple[list[Suggestion], list[NewBudget]]]:
    """The suggestions and budgets of each table, in table order."""
    out: dict[QualifiedName, tuple[list[Suggestion], list[NewBudget]]] = {}
    for s in suggestions:
        out.setdefault(s.spec.table, ([], []))[0].append(s)
    for b in budgets:
        out.setdefault(b.table, ([], []))[1].append(b)
    return dict(sorted(out.items()))


def render(
    suggestions: Sequence[Suggestion], budgets: Sequence[NewBudget]
) -> dict[QualifiedName, str]:
    """The YAML of each table's suggestions, as a new spec file would hold them."""
    return {t: merged_text(None, t, s, b) for t, (s, b) in by_table(suggestions, budgets).items()}


def write(
    index_dir: Path,
    spec_dirs: Sequence[Path],
    suggestions: Sequence[Suggestion],
    budgets: Sequence[NewBudget],
) -> list[WrittenFile]:
    """Merge into the spec file of each table, found in any of ``spec_dirs`` (a view's file
    included: its ``indexes`` and ``queries``), else a new file in ``index_dir`` (created when
    missing); each file whole or not at all."""
    existing: dict[QualifiedName, Path] = {}
    for folder in dict.fromkeys([index_dir, *spec_dirs]):
        # Every suffix the loader reads: a table's orders.yml is its file, not a new one.
        files = folder.iterdir() if folder.is_dir() else iter(())
        for path in sorted(p for p in files if p.suffix in SPEC_SUFFIXES and p.is_file()):
            declared = declares(path)
            if declared is not None:
                existing.setdefault(declared, path)
    grouped = by_table(suggestions, budgets)
    names = file_names(grouped)
    written: list[WrittenFile] = []
    for table, (found, new_budgets) in grouped.items():
        path = existing.get(table) or index_dir / names[table]
        text = path.read_text("utf-8") if path.exists() else None
        write_atomically(path, merged_text(text, table, found, new_budgets))
        written.append(
            WrittenFile(
                path,
                text is None,
                tuple(s.spec.name for s in found),
                tuple(b.name for b in new_budgets),
            )
        )
    return written
