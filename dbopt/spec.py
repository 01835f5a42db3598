"""Spec files (indexes/*.yaml, views/*.yaml) -> validated, frozen dataclasses.

Loading never stops at the first mistake: every problem in every file is collected, each with
file:line:column, and raised together as one SpecError before any SQL runs.
"""

from __future__ import annotations

import graphlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dbopt import cron
from dbopt.docvalidate import check_document, dotted
from dbopt.errors import InputError, Problem, SpecError
from dbopt.model import (
    DEFAULT_SCHEMA,
    Expectation,
    IndexColumn,
    IndexSpec,
    Location,
    QualifiedName,
    QueryBudget,
    RefreshSpec,
    SpecSet,
    ViewSpec,
    parse_qualified,
)
from dbopt.readonly import static_refusals
from dbopt.schema import INDEX_FILE, MAX_IDENTIFIER_BYTES, VIEW_FILE
from dbopt.sqltext import SqlTextError, check_query, render_expression, render_query
from dbopt.words import suggest
from dbopt.yamlload import Document, Path_, load_file

SPEC_SUFFIXES = (".yaml", ".yml")

#: Storage parameters each index method accepts (PostgreSQL's reloptions for indexes).
STORAGE_PARAMETERS: dict[str, tuple[str, ...]] = {
    "btree": ("fillfactor", "deduplicate_items"),
    "hash": ("fillfactor",),
    "gist": ("fillfactor", "buffering"),
    "spgist": ("fillfactor",),
    "gin": ("fastupdate", "gin_pending_list_limit"),
    "brin": ("pages_per_range", "autosummarize"),
}
#: Methods that support INCLUDE columns and ASC/DESC/NULLS ordering.
INCLUDE_METHODS = ("btree", "gist", "spgist")
ORDERED_METHODS = ("btree",)


# --- building ------------------------------------------------------------------------------


class _FileReader:
    """Builds the dataclasses of one schema-valid document, collecting semantic problems."""

    def __init__(self, doc: Document, skip: frozenset[Path_] = frozenset()) -> None:
        self.doc = doc
        #: Items (("indexes", 2), ("queries", 0), ...) the schema already rejected.
        self.skip = skip
        self.problems: list[Problem] = []
        #: Indexes with a problem of their own: kept out of the checks that compare indexes.
        self.broken: set[Location] = set()

    def loc(self, path: Path_) -> Location:
        line, column = self.doc.where(path)
        return Location(self.doc.file, line, column)

    def err(self, path: Path_, message: str, *, key: bool = False) -> None:
        self.problems.append(self.doc.problem(path, f"{dotted(path)}: {message}", key=key))

    def identifier(self, path: Path_, value: str) -> str:
        size = len(value.encode("utf-8"))
        if size > MAX_IDENTIFIER_BYTES:
            self.err(
                path,
                f"'{value}' is {size} bytes long; PostgreSQL would silently truncate it to "
                f"{MAX_IDENTIFIER_BYTES} bytes: choose a shorter name",
            )
        return value

    def qualified(self, path: Path_, value: str, default_schema: str) -> QualifiedName:
        try:
            name = parse_qualified(value, default_schema)
        except ValueError as exc:
            self.err(path, str(exc))
            return QualifiedName(default_schema, value)
        self.identifier(path, name.schema)
        self.identifier(path, name.name)
        return name

    def expression(self, path: Path_, text: str, what: str) -> str:
        try:
            return render_expression(text)
        except SqlTextError as exc:
            self.err(path, f"{what} is not valid: {exc}")
            return text

    def items(self, key: str) -> list[tuple[Path_, Any]]:
        """The schema-valid items of the list under ``key``, with their paths."""
        return [
            ((key, i), raw)
            for i, raw in enumerate(self.doc.data.get(key, []))
            if (key, i) not in self.skip
        ]

    def index(self, path: Path_, raw: Mapping[str, Any], table: QualifiedName) -> IndexSpec:
        before = len(self.problems)
        spec = self._index(path, raw, table)
        if len(self.problems) > before:
            self.broken.add(spec.location)
        return spec

    def _index(self, path: Path_, raw: Mapping[str, Any], table: QualifiedName) -> IndexSpec:
        name = self.identifier((*path, "name"), raw["name"])
        method = raw.get("method", "btree")
        columns = tuple(
            self.column((*path, "columns", i), c, method) for i, c in enumerate(raw["columns"])
        )
        unique = bool(raw.get("unique", False))
        if unique and method != "btree":
            self.err((*path, "unique"), f"only btree indexes can be unique, not {method}")
        nnd = bool(raw.get("nulls_not_distinct", False))
        if nnd and not unique:
            self.err((*path, "nulls_not_distinct"), "only applies to a unique index")
        include = tuple(
            self.identifier((*path, "include", i), c) for i, c in enumerate(raw.get("include", []))
        )
        if include and method not in INCLUDE_METHODS:
            self.err(
                (*path, "include"),
                f"{method} indexes cannot INCLUDE columns (only {', '.join(INCLUDE_METHODS)})",
            )
        keys = {c.name for c in columns if c.name}
        for i, col in enumerate(include):
            if col in keys:
                self.err((*path, "include", i), f"'{col}' is already a key column")
        where = raw.get("where")
        if where is not None:
            where = self.expression((*path, "where"), where, "the predicate")
        storage = self.storage((*path, "with"), raw.get("with", {}), method)
        if "reason" in raw and "comment" in raw:
            self.err((*path, "comment"), "give either reason or comment, not both")
        return IndexSpec(
            name=name,
            table=table,
            columns=columns,
            location=self.loc(path),
            method=method,
            unique=unique,
            nulls_not_distinct=nnd,
            include=include,
            where=where,
            storage=storage,
            reason=raw.get("reason", raw.get("comment")),
        )

    def column(self, path: Path_, raw: str | Mapping[str, Any], method: str) -> IndexColumn:
        if isinstance(raw, str):
            return IndexColumn(name=self.identifier(path, raw))
        if ("name" in raw) == ("expr" in raw):
            self.err(path, "give exactly one of name (a column) or expr (an expression)")
            return IndexColumn(name=str(raw.get("name", "?")))
        if ("order" in raw or "nulls" in raw) and method not in ORDERED_METHODS:
            self.err(path, f"{method} indexes do not support order or nulls (only btree)")
        expr = raw.get("expr")
        if expr is not None:
            expr = self.expression((*path, "expr"), expr, "the expression")
        name = raw.get("name")
        if name is not None:
            self.identifier((*path, "name"), name)
        for key in ("opclass", "collation"):
            if key in raw:
                try:
                    parse_qualified(raw[key], "pg_catalog")
                except ValueError:
                    self.err((*path, key), f"'{raw[key]}' is not a name: write name or schema.name")
        return IndexColumn(
            name=name,
            expr=expr,
            order=raw.get("order"),
            nulls=raw.get("nulls"),
            opclass=raw.get("opclass"),
            collation=raw.get("collation"),
        )

    def storage(
        self, path: Path_, raw: Mapping[str, Any], method: str
    ) -> tuple[tuple[str, str], ...]:
        allowed = STORAGE_PARAMETERS[method]
        out = []
        for key, value in raw.items():
            if key not in allowed:
                hint = suggest(key, allowed) or f"; {method} accepts: {', '.join(allowed)}"
                self.err((*path, key), f"unknown storage parameter '{key}'{hint}", key=True)
                continue
            text = ("on" if value else "off") if isinstance(value, bool) else str(value)
            out.append((key, text))
        return tuple(sorted(out))

    def query(self, path: Path_, raw: Mapping[str, Any], relation: str) -> QueryBudget:
        params = dict(raw.get("params") or {})
        text = raw["sql"]
        # Always psycopg's grammar (%(name)s, and %% for a literal %), with or without params,
        # so what validate checks is exactly what verify sends.
        placeholders = True
        try:
            checked = check_query(text, with_placeholders=placeholders)
        except SqlTextError as exc:
            self.err((*path, "sql"), f"the query is not valid: {exc}")
        else:
            # verify changes nothing: calls known to change something are refused here, without
            # a database; verify and validate --dsn also check what the database holds.
            for refusal in static_refusals(text, with_placeholders=placeholders):
                self.err((*path, "sql"), str(refusal))
            for name in checked.placeholders:
                if name not in params:
                    self.err(
                        (*path, "sql"),
                        f"placeholder %({name})s has no value: add it under params",
                    )
            for name in params:
                if name not in checked.placeholders:
                    self.err(
                        (*path, "params", name),
                        f"parameter '{name}' is not used in sql",
                        key=True,
                    )
            text = checked.text
        budget = float(raw["budget_ms"])
        warn = raw.get("warn_ms")
        if warn is not None and float(warn) >= budget:
            self.err((*path, "warn_ms"), f"must be below budget_ms ({budget:g}), got {warn:g}")
        timeout = raw.get("timeout_ms")
        if timeout is not None and float(timeout) < budget:
            self.err((*path, "timeout_ms"), f"must be at least budget_ms ({budget:g})")
        expect_raw = raw.get("expect", {})
        expect = Expectation(
            uses_index=tuple(
                self.identifier((*path, "expect", "uses_index", i), n)
                for i, n in enumerate(expect_raw.get("uses_index", []))
            ),
            no_seq_scan_on=tuple(
                self.qualified((*path, "expect", "no_seq_scan_on", i), n, DEFAULT_SCHEMA)
                for i, n in enumerate(expect_raw.get("no_seq_scan_on", []))
            ),
        )
        return QueryBudget(
            name=raw["name"],
            sql=text,
            budget_ms=budget,
            location=self.loc(path),
            relation=relation,
            params=params,
            uses_placeholders=placeholders,
            warn_ms=None if warn is None else float(warn),
            runs=int(raw.get("runs", 20)),
            warmup=int(raw.get("warmup", 3)),
            timeout_ms=None if timeout is None else float(timeout),
            description=raw.get("description"),
            expect=expect,
        )

    def index_file(self) -> tuple[list[IndexSpec], list[QueryBudget]]:
        data = self.doc.data
        table = self.qualified(("table",), data["table"], DEFAULT_SCHEMA)
        indexes = [self.index(path, raw, table) for path, raw in self.items("indexes")]
        queries = [self.query(path, raw, str(table)) for path, raw in self.items("queries")]
        return indexes, queries

    def view_file(self) -> ViewSpec:
        data = self.doc.data
        schema = self.identifier(("schema",), data.get("schema", DEFAULT_SCHEMA))
        name = QualifiedName(schema, self.identifier(("name",), data["name"]))
        try:
            query = render_query(data["query"])
        except SqlTextError as exc:
            self.err(("query",), f"the view query is not valid: {exc}")
            query = data["query"]
        indexes = tuple(self.index(path, raw, name) for path, raw in self.items("indexes"))
        refresh_raw = data.get("refresh", {})
        schedule = refresh_raw.get("schedule")
        if schedule is not None:
            try:
                schedule = cron.parse(schedule)
            except InputError as exc:
                self.err(("refresh", "schedule"), str(exc))
        refresh = RefreshSpec(schedule=schedule, mode=refresh_raw.get("mode", "auto"))
        view = ViewSpec(
            name=name,
            query=query,
            location=self.loc(()),
            indexes=indexes,
            refresh=refresh,
            depends_on=tuple(
                self.qualified(("depends_on", i), d, schema)
                for i, d in enumerate(data.get("depends_on", []))
            ),
            queries=tuple(self.query(path, raw, str(name)) for path, raw in self.items("queries")),
            reason=data.get("reason", data.get("comment")),
            depends_on_at=tuple(
                self.loc(("depends_on", i)) for i in range(len(data.get("depends_on", [])))
            ),
        )
        if "reason" in data and "comment" in data:
            self.err(("comment",), "give either reason or comment, not both")
        # An index the schema rejected may be the unique one: judge only a complete list.
        complete = not any(key == "indexes" for key, _ in self.skip)
        if refresh.mode == "concurrent" and complete and view.concurrent_refresh_index() is None:
            self.err(
                ("refresh", "mode"),
                "REFRESH MATERIALIZED VIEW CONCURRENTLY needs a unique index on plain columns "
                "(no expression, no WHERE): add one under indexes, or use mode: auto",
            )
        return view


def _spec_files(dirs: Sequence[tuple[Path, bool]]) -> tuple[list[Path], list[Problem]]:
    files: list[Path] = []
    problems: list[Problem] = []
    for directory, required in dirs:
        if not directory.is_dir():
            if required:
                problems.append(Problem(str(directory), 1, 1, "no such directory: check --specs"))
            continue
        files.extend(
            sorted(p for p in directory.iterdir() if p.suffix in SPEC_SUFFIXES and p.is_file())
        )
    return files, problems


def _display(path: Path) -> str:
    """Relative to the working directory when the file is under it, else as given."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def load_specs(dirs: Sequence[tuple[Path, bool]]) -> SpecSet:
    """Load and validate every spec file in ``dirs`` (each with: must it exist?).

    Raises SpecError listing every problem found, in file order.
    """
    files, problems = _spec_files(dirs)
    if not files and not problems:
        where = ", ".join(str(d) for d, _ in dirs) or "(none)"
        raise SpecError(
            f"no spec files (*.yaml) found in {where}: write indexes/<table>.yaml or "
            "views/<name>.yaml, or point --specs at the directory that holds them"
        )
    indexes: list[IndexSpec] = []
    queries: list[QueryBudget] = []
    views: list[ViewSpec] = []
    names: list[str] = []
    broken: set[Location] = set()
    #: Views whose file is too broken to read: other views may still depend on them.
    unread_views: set[QualifiedName] = set()
    for path in files:
        display = _display(path)
        names.append(display)
        doc, found = load_file(path, display=display)
        problems.extend(found)
        if doc is None:
            continue
        data = doc.data
        if not isinstance(data, dict):
            problems.append(doc.problem((), "a spec file must be a mapping of keys to values"))
            continue
        if "table" in data or not ("query" in data or "name" in data):
            schema, kind = INDEX_FILE, "index"
        else:
            schema, kind = VIEW_FILE, "view"
        if kind == "index" and "table" not in data:
            problems.append(
                doc.problem(
                    (),
                    "cannot tell what this file is: an index file needs 'table', a view file "
                    "needs 'name' and 'query'",
                )
            )
            continue
        found, invalid = check_document(doc, schema)
        problems.extend(found)
        # Items of the indexes/queries lists are checked one by one, so a typo in one index
        # does not hide the problems of the others; any other schema error stops the file.
        if any(len(p) < 2 or p[0] not in ("indexes", "queries") for p in invalid):
            if kind == "view":
                unread_views.add(_view_name(data))
            continue
        reader = _FileReader(doc, frozenset(p[:2] for p in invalid))
        if kind == "index":
            file_indexes, file_queries = reader.index_file()
            indexes.extend(file_indexes)
            queries.extend(file_queries)
        else:
            views.append(reader.view_file())
        problems.extend(reader.problems)
        broken |= reader.broken
    specs = SpecSet(tuple(indexes), tuple(views), tuple(queries), tuple(names))
    problems.extend(_cross_file_problems(specs, broken, unread_views))
    if problems:
        # In file order, then by position; a stable sort keeps same-place problems in order.
        order = {name: i for i, name in enumerate(names)}
        problems.sort(key=lambda p: (order.get(p.file, -1), p.line, p.column))
        count = len(problems)
        raise SpecError(
            f"{count} problem{'s' if count != 1 else ''} in the specs; nothing was run",
            problems,
        )
    return specs


def _view_name(data: Mapping[str, Any]) -> QualifiedName:
    """The name a view file gives, as far as it can be read."""
    schema = data.get("schema", DEFAULT_SCHEMA)
    return QualifiedName(
        schema if isinstance(schema, str) else DEFAULT_SCHEMA, str(data.get("name", ""))
    )


def _located(loc: Location, message: str) -> Problem:
    return loc.problem(message)


def _cross_file_problems(
    specs: SpecSet,
    broken: Iterable[Location] = (),
    unread_views: Iterable[QualifiedName] = (),
) -> list[Problem]:
    """Checks that need every file: duplicate names, twin indexes, view dependencies.

    ``broken`` indexes (with a problem already reported) are not compared with others: their
    definition is a guess. Depending on an ``unread_views`` view is not an error.
    """
    broken = set(broken)
    problems: list[Problem] = []
    seen: dict[QualifiedName, Location] = {}
    relations: Iterable[tuple[QualifiedName, Location, str]] = [
        *((i.qualified_name, i.location, "index") for i in specs.all_indexes),
        *((v.name, v.location, "materialized view") for v in specs.views),
    ]
    for name, loc, what in relations:
        if name in seen:
            problems.append(
                _located(
                    loc,
                    f"{what} name '{name}' is already used at {seen[name]}; rename one of "
                    "them (indexes and materialized views share one namespace per schema)",
                )
            )
        else:
            seen[name] = loc
    twins: dict[tuple[Any, ...], IndexSpec] = {}
    for index in specs.all_indexes:
        if index.location in broken:
            continue
        shape = (
            index.table,
            index.columns,
            index.method,
            index.unique,
            index.nulls_not_distinct,
            index.include,
            index.where,
        )
        if shape in twins:
            problems.append(
                _located(
                    index.location,
                    f"index '{index.name}' has the same definition as "
                    f"'{twins[shape].name}' ({twins[shape].location}): keep one",
                )
            )
        else:
            twins[shape] = index
    problems.extend(
        _left_prefix_problems([i for i in specs.all_indexes if i.location not in broken])
    )
    query_names: dict[str, Location] = {}
    for query in specs.queries:
        if query.name in query_names:
            problems.append(
                _located(
                    query.location,
                    f"query name '{query.name}' is already used at {query_names[query.name]}",
                )
            )
        else:
            query_names[query.name] = query.location
    problems.extend(_view_graph_problems(specs.views, set(unread_views)))
    return problems


def _dependency_at(view: ViewSpec, dep: QualifiedName) -> Location:
    """Where ``view`` names ``dep`` under depends_on (else the view itself)."""
    for name, loc in zip(view.depends_on, view.depends_on_at, strict=False):
        if name == dep:
            return loc
    return view.location


def _left_prefix_problems(indexes: Sequence[IndexSpec]) -> list[Problem]:
    """A non-unique index whose key is a left prefix of another's is redundant without a reason.

    The longer index serves every lookup of the shorter one (same method, same predicate);
    keeping both costs writes and space, so the spec must say why (e.g. a much smaller index
    for a hot query).
    """
    longer: dict[tuple[Any, ...], IndexSpec] = {}
    for index in indexes:
        for k in range(1, len(index.columns)):
            key = (index.table, index.method, index.where, index.columns[:k])
            longer.setdefault(key, index)
    problems = []
    for index in indexes:
        key = (index.table, index.method, index.where, index.columns)
        other = longer.get(key)
        if other is None or index.unique or index.reason:
            continue
        problems.append(
            _located(
                index.location,
                f"index '{index.name}' is a left prefix of '{other.name}' ({other.location}), "
                "which serves the same lookups: remove it, or say why it is worth keeping "
                "under reason",
            )
        )
    return problems


def _view_graph_problems(
    views: Sequence[ViewSpec], unread: set[QualifiedName] | None = None
) -> list[Problem]:
    by_name = {v.name: v for v in views}
    problems: list[Problem] = []
    graph: dict[QualifiedName, set[QualifiedName]] = {}
    for view in views:
        deps = graph.setdefault(view.name, set())
        for dep in view.depends_on:
            if dep == view.name:
                problems.append(
                    _located(
                        _dependency_at(view, dep),
                        f"view '{view.name}' depends on itself; remove it from depends_on",
                    )
                )
            elif dep in by_name:
                deps.add(dep)
            elif dep not in (unread or set()):
                known = [str(n) for n in sorted(by_name)]
                problems.append(
                    _located(
                        _dependency_at(view, dep),
                        f"depends_on names '{dep}', which is not a view in the specs"
                        + suggest(str(dep), known),
                    )
                )
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        # graphlib lists each node before the node that depends on it; reverse the list so
        # that every view is followed by the view it depends on, and start at the first name.
        ring: list[QualifiedName] = list(reversed(exc.args[1]))[:-1]
        start = ring.index(min(ring))
        ring = ring[start:] + ring[:start]
        shown = " -> ".join(str(n) for n in [*ring, ring[0]])
        problems.append(
            _located(
                _dependency_at(by_name[ring[0]], ring[1]),
                f"materialized views depend on each other in a cycle: {shown} "
                "(each depends on the next); remove one of these depends_on entries",
            )
        )
    return problems


def view_order(views: Sequence[ViewSpec]) -> list[ViewSpec]:
    """Views sorted so that every view comes after the views it depends on (stable by name)."""
    by_name = {v.name: v for v in views}
    graph = {v.name: {d for d in v.depends_on if d in by_name} for v in views}
    return [by_name[n] for n in dependency_order(graph)]


def dependency_order(graph: Mapping[QualifiedName, set[QualifiedName]]) -> list[QualifiedName]:
    """Every name after the names it depends on; ties broken by name, so the order is stable."""
    sorter = graphlib.TopologicalSorter(graph)
    sorter.prepare()
    ordered: list[QualifiedName] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready())
        ordered.extend(ready)
        sorter.done(*ready)
    return ordered
