"""`dbopt advise`: index suggestions for a workload, as spec YAML with the numbers behind them.

The use case, :func:`advise`: read the workload (:mod:`.workload`), read what each query asks
of its tables from its parse tree (:mod:`.querytree`), derive candidate indexes
(:mod:`.candidates`), drop those that exist or are spec'd with an equivalent definition (the
planner's notion: the server's own ``pg_get_indexdef`` of each, normalised as ``dbopt plan``
does), choose among the rest with HypoPG (:mod:`.evaluation`), then name them by the spec
conventions, give each a ``reason`` from its queries and numbers, and a budget for each query
it serves that the specs do not budget yet (:mod:`.suggestions`); :mod:`.specwrite` renders or
merges the YAML. Nothing is executed but EXPLAIN, and no real index is created.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg

from dbopt.advise.candidates import candidates
from dbopt.advise.evaluation import THRESHOLD, Evaluation, evaluate
from dbopt.advise.querytree import ColumnInfo, TableInfo, TableUse, TypeClass, table_uses
from dbopt.advise.suggestions import NewBudget, Suggestion, WriteLoad, suggestions
from dbopt.advise.workload import (
    Skipped,
    Source,
    Workload,
    WorkloadQuery,
    budgeted_fingerprints,
    fingerprint,
    from_file,
    from_specs,
    from_statements,
    generic_method,
)
from dbopt.catalog import catalog_sql, inspect
from dbopt.config import Settings
from dbopt.deparse import canonical, normalize_specs
from dbopt.errors import InputError
from dbopt.livecheck import unsafe_calls
from dbopt.model import IndexSpec, QualifiedName, SpecSet
from dbopt.readonly import CallGraph
from dbopt.sqltext import SqlTextError, dollar_text
from dbopt.verify.hypothetical import require_hypopg
from dbopt.verify.select import check_budgets

__all__ = [
    "THRESHOLD",
    "Advice",
    "AdviseOptions",
    "NewBudget",
    "Source",
    "Suggestion",
    "WriteLoad",
    "advise",
]


@dataclass(frozen=True, slots=True)
class AdviseOptions:
    """What to advise on: the workload's source and its limits."""

    source: Source = Source.STATEMENTS
    queries_file: Path | None = None
    #: pg_stat_statements: statements called at least this often (Dexter's default: 100).
    min_calls: int = 100
    #: pg_stat_statements: this many statements, by total execution time.
    top: int = 50
    #: CREATE EXTENSION hypopg when the server has it but this database does not.
    create_extension: bool = False


@dataclass(frozen=True, slots=True)
class Advice:
    """What advise found: the suggestions, new budgets, and everything left out, with why."""

    workload: Workload
    suggestions: tuple[Suggestion, ...]
    budgets: tuple[NewBudget, ...]
    evaluation: Evaluation
    #: How queries with $n parameters were planned on this server.
    generic: str
    hypopg_version: str
    server_version: int
    #: Candidates left out because an index with an equivalent definition exists or is spec'd
    #: (with it), or one with their keys that carries their INCLUDE columns (True: covered).
    equivalent: tuple[tuple[IndexSpec, str, bool], ...] = ()
    #: Chosen candidates with the keys of an index that exists or is spec'd, and more
    #: INCLUDE columns (with that index): not suggested as a second index with those keys;
    #: said as that index widened, with what it would serve.
    widening: tuple[tuple[Suggestion, str], ...] = ()
    #: Queries read that advise could not use (no table it can index, no plan...).
    skipped: tuple[Skipped, ...] = ()
    #: Queries already budgeted in the specs (workload name -> budget name).
    budgeted: Mapping[str, str] | None = None
    #: Served queries that get no new budget, and why (a parameter without a value).
    unbudgeted: tuple[tuple[str, str], ...] = ()

    @property
    def generic_count(self) -> int:
        """How many of the planned queries have $n parameters (planned generically)."""
        return sum(1 for q in self.workload.queries if q.parameters)


def _relation_names(queries: Sequence[WorkloadQuery]) -> list[str]:
    """Every relation name the queries mention (FROM, JOIN, subqueries): the tables whose
    columns and statistics advise reads, so a catalog of thousands costs nothing more."""
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            rv = node.get("RangeVar")
            if isinstance(rv, dict) and rv.get("relname"):
                names.add(str(rv["relname"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for q in queries:
        try:
            walk(q.tree())
        except SqlTextError:
            continue
    return sorted(names)


def _tables(conn: psycopg.Connection[Any], names: Sequence[str]) -> dict[QualifiedName, TableInfo]:
    columns: dict[QualifiedName, dict[str, ColumnInfo]] = {}
    rows: dict[QualifiedName, float] = {}
    for schema, name, reltuples, column, type_class, n_distinct in conn.execute(
        catalog_sql("advise_columns"), {"names": list(names)}
    ):
        table = QualifiedName(schema, name)
        rows[table] = float(reltuples or 0)
        columns.setdefault(table, {})[column] = ColumnInfo(
            column, TypeClass(type_class), None if n_distinct is None else float(n_distinct)
        )
    return {t: TableInfo(t, cols, rows[t]) for t, cols in columns.items()}


def _installed(conn: psycopg.Connection[Any], extension: str) -> bool:
    row = conn.execute(catalog_sql("advise_extension"), {"name": extension}).fetchone()
    return row is not None


def _workload(
    conn: psycopg.Connection[Any], specs: SpecSet, options: AdviseOptions, calls: CallGraph
) -> Workload:
    if options.source == Source.FILE:
        if options.queries_file is None:
            raise InputError("--queries needs a file")
        return from_file(options.queries_file, calls)
    if options.source == Source.SPECS:
        if not specs.queries:
            raise InputError(
                "the specs have no budgeted queries (--from-specs has nothing to read)"
            )
        catalog = inspect(conn, specs.relations())
        check_budgets(specs.queries, specs, catalog, calls)
        return from_specs(specs.queries)
    return from_statements(conn, calls, min_calls=options.min_calls, top=options.top)


_INCLUDE = re.compile(r' INCLUDE \(((?:[^()"]|"[^"]*")*)\)')
_NAME = re.compile(r'"(?:[^"]|"")*"|[^, ]+')
_STORAGE = re.compile(r" WITH \((?:[^()']|'(?:[^']|'')*')*\)")


def _keys(text: str) -> tuple[str, frozenset[str]]:
    """A canonical definition (:func:`canonical`) as what serves lookups -- method, keys,
    predicate, without UNIQUE, NULLS NOT DISTINCT, INCLUDE and storage parameters -- and its
    INCLUDE columns. Only the part before the predicate is rewritten (a predicate's string
    may say anything)."""
    head, where, predicate = text.partition(" WHERE ")
    match = _INCLUDE.search(head)
    names = _NAME.findall(match.group(1)) if match else []
    include = frozenset(n[1:-1].replace('""', '"') if n.startswith('"') else n for n in names)
    head = _STORAGE.sub("", _INCLUDE.sub("", head, count=1), count=1)
    head = head.removeprefix("UNIQUE ").replace(" NULLS NOT DISTINCT", "", 1)
    return head + where + predicate, include


def _shape(spec: IndexSpec) -> tuple[Any, ...]:
    """What an index is, whatever its name and reason (a suggestion is a named candidate)."""
    return (spec.table, spec.method, spec.unique, spec.columns, spec.include, spec.where)


def _equivalents(
    conn: psycopg.Connection[Any],
    pool: Sequence[IndexSpec],
    specs: SpecSet,
    settings: Settings,
    calls: CallGraph,
) -> tuple[
    list[IndexSpec],
    list[tuple[IndexSpec, str, bool]],
    dict[tuple[Any, ...], str],
    list[IndexSpec],
]:
    """``pool`` without candidates an existing or spec'd index already is (or an earlier
    candidate), compared as the planner compares: canonical pg_get_indexdef text, and an
    index with the same keys (method, predicate) and every INCLUDE column of the candidate
    serves as well, UNIQUE or not; what was left out (with the index it is equivalent to);
    the kept candidates that would *widen* one (its keys, with more INCLUDE columns: a
    second index with the same keys doubles the writes for what that one would do with the
    columns added), by :func:`_shape`, with that index; the spec'd indexes on those tables
    that are not built yet."""
    tables = {c.table for c in pool}
    # Only the workload's tables are deparsed (the reads that lock): never a spec'd table the
    # workload does not touch, whose DDL left open elsewhere would make advise wait.
    catalog = inspect(conn, tables)
    known: dict[str, str] = {}
    constraints: set[str] = set()  # a constraint's index is not widened (its constraint is)
    for index in catalog.indexes.values():
        if index.table in tables and index.is_valid:
            known.setdefault(f"{index.table}|{canonical(index.definition)}", str(index.name.name))
            if index.backs_constraint:
                constraints.add(str(index.name.name))
    built = set(known)
    spec_indexes = [
        s for s in specs.all_indexes if s.table in tables and s.table in catalog.relations
    ]
    # Normalising a spec builds it on an empty copy, which runs what it calls (folded):
    # never what could change something (such a spec is then compared by nothing).
    unsafe = unsafe_calls(conn, spec_indexes, lambda: calls)
    spec_indexes = [s for s in spec_indexes if s not in unsafe]
    temp = [replace(c, name=f"dbopt_advise_candidate_{n:05d}") for n, c in enumerate(pool)]
    normalized, _trips = normalize_specs(conn, [*spec_indexes, *temp], settings.lock_timeout_ms)
    for spec in spec_indexes:
        text = normalized.get(spec.qualified_name)
        if text is not None:
            known.setdefault(f"{spec.table}|{text}", f"{spec.name} (spec'd)")
    pending = [
        spec
        for spec in spec_indexes
        if f"{spec.table}|{normalized.get(spec.qualified_name, '')}" not in built
    ]
    # By what serves lookups: the existing and spec'd indexes (not the candidates).
    theirs: dict[str, list[tuple[str, frozenset[str]]]] = {}
    for key, name in known.items():
        table, _sep, text = key.partition("|")
        keys, include = _keys(text)
        theirs.setdefault(f"{table}|{keys}", []).append((name, include))
    kept: list[IndexSpec] = []
    left: list[tuple[IndexSpec, str, bool]] = []
    widens: dict[tuple[Any, ...], str] = {}
    for original, named in zip(pool, temp, strict=True):
        text = normalized.get(named.qualified_name, "")
        key = f"{original.table}|{text}"
        if key in known:
            if not known[key].startswith("dbopt_advise_candidate_"):
                left.append((original, known[key], False))
            continue
        keys, _include = _keys(text)
        same_keys = theirs.get(f"{original.table}|{keys}", []) if text else []
        covering = [name for name, include in same_keys if set(original.include) <= include]
        if covering:
            # Its keys, and every column it carries, are there: "covered by" that one.
            left.append((original, covering[0], True))
            continue
        widenable = [name for name, _include in same_keys if name not in constraints]
        if widenable:
            widens[_shape(original)] = widenable[0]  # evaluated: said as widening if chosen
        known[key] = named.name
        kept.append(original)
    return kept, left, widens, pending


def advise(
    conn: psycopg.Connection[Any], specs: SpecSet, settings: Settings, options: AdviseOptions
) -> Advice:
    """Suggest indexes for a workload (see the package doc). Raises InputError (exit 2) for a
    workload that cannot be read, HypoPGMissingError when HypoPG is not in this database."""
    calls = CallGraph.read(conn)
    workload = _workload(conn, specs, options, calls)
    version = require_hypopg(conn, create=options.create_extension)
    tables = _tables(conn, _relation_names(workload.queries))
    trigram = _installed(conn, "pg_trgm")
    budgeted = budgeted_fingerprints(specs) if options.source != Source.SPECS else {}
    skipped: list[Skipped] = list(workload.skipped)
    uses_of: dict[str, tuple[TableUse, ...]] = {}
    found_of: dict[str, list[IndexSpec]] = {}
    pool: list[IndexSpec] = []
    queries: list[WorkloadQuery] = []
    by_name = {b.name: b for b in specs.queries}
    for q in workload.queries:
        fp = fingerprint(q.text) if budgeted else None
        if fp is not None and fp in budgeted:
            # Already budgeted: planned as the budget (its text and values), which plans where
            # the normalised text may not ($1 in INTERVAL $1, CURRENT_DATE + $1).
            q = replace(q, text=by_name[budgeted[fp]].sql, budget=by_name[budgeted[fp]])
        try:
            parsed = dollar_text(q.text) if q.budget is not None else q.text
            uses = table_uses(q.tree(), tables, settings.search_path, parsed)
        except SqlTextError as exc:
            skipped.append(Skipped(q.name, f"could not be read: {exc}"))
            continue
        found = [c for use in uses for c in candidates(use, tables[use.table], trigram=trigram)]
        if not found:
            skipped.append(Skipped(q.name, "no predicate, join or ORDER BY an index can serve"))
            continue
        uses_of[q.name] = uses
        found_of[q.name] = found
        queries.append(q)
        pool.extend(c for c in found if c not in pool)
    kept, equivalent, widens, pending = (
        _equivalents(conn, pool, specs, settings, calls) if pool else ([], [], {}, [])
    )
    tables_of = {name: frozenset(u.table for u in uses) for name, uses in uses_of.items()}
    position = {spec: i for i, spec in enumerate(kept)}
    origin = {
        name: [position[c] for c in found if c in position] for name, found in found_of.items()
    }
    rows = {name: info.rows for name, info in tables.items()}
    evaluation = evaluate(
        conn, queries, kept, tables_of, origin=origin, rows=rows, baseline=pending
    )
    already = {q.name: q.budget.name for q in queries if q.budget is not None}
    found_suggestions, budgets, unbudgeted = suggestions(conn, evaluation, specs, uses_of, already)
    # A chosen candidate with the keys of an index there or spec'd: that one, widened.
    widening = tuple(
        (s, widens[_shape(s.spec)]) for s in found_suggestions if _shape(s.spec) in widens
    )
    if widening:
        names = {s.spec.name for s, _name in widening}
        found_suggestions = tuple(s for s in found_suggestions if s.spec.name not in names)
        budgets = tuple(b for b in budgets if b.uses_index not in names)
    return Advice(
        workload=replace(workload, queries=tuple(queries)),
        suggestions=found_suggestions,
        budgets=budgets,
        evaluation=evaluation,
        generic=generic_method(conn.info.server_version),
        hypopg_version=version,
        server_version=conn.info.server_version,
        equivalent=tuple(equivalent),
        widening=widening,
        skipped=tuple(skipped) + evaluation.failed,
        budgeted=already,
        unbudgeted=unbudgeted,
    )
