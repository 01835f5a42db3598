"""Spec files (indexes/*.yaml, views/*.yaml) -> validated, frozen dataclasses.

Loading never stops at the first mistake: every problem in every file is collected, each with
file:line:column, and raised together as one SpecError before any SQL runs.
"""

from __future__ import annotations

import graphlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbopt import cron
from dbopt.crossfile import cross_file_problems
from dbopt.docvalidate import check_document, dotted
from dbopt.errors import InputError, Problem, SpecError
from dbopt.gcpause import paused_gc
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
#: The keys of a column given as a mapping.
_COLUMN_KEYS = frozenset(("name", "expr", "order", "nulls", "opclass", "collation"))
#: Methods that support INCLUDE columns and ASC/DESC/NULLS ordering.
INCLUDE_METHODS = ("btree", "gist", "spgist")
ORDERED_METHODS = ("btree",)


# --- building ------------------------------------------------------------------------------

#: Where an index or view file names no relation dbopt can use: its items are still checked.
_UNNAMED = QualifiedName(DEFAULT_SCHEMA, "?")


def _text(raw: Mapping[str, Any], key: str) -> str | None:
    """``raw[key]`` when it is a string (the schema reports any other type)."""
    value = raw.get(key)
    return value if isinstance(value, str) else None


def _number(raw: Mapping[str, Any], key: str) -> float | None:
    """``raw[key]`` when it is a number greater than 0 (the schema reports anything else)."""
    value = raw.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


def _limit(raw: Mapping[str, Any], key: str) -> float | None:
    """``raw[key]`` when it is a number of at least 0 (the schema reports anything else)."""
    value = raw.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


def _whole(value: float | None) -> int | None:
    return None if value is None else int(value)


#: The budgets a query may state; it must state at least one.
BUDGET_KEYS = ("budget_ms", "max_buffers", "max_rows_examined", "max_cost")


def _items(raw: Mapping[str, Any], key: str) -> list[Any]:
    value = raw.get(key)
    return value if isinstance(value, list) else []


def _mapping(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key)
    return value if isinstance(value, dict) else {}


class _FileReader:
    """Builds the dataclasses of one document, collecting semantic problems.

    The document may break the schema (those problems are already reported): every check
    whose input is well-typed still runs, and a check is skipped only when what it needs is
    itself wrong (no usable name, an unknown method...).
    """

    def __init__(self, doc: Document, invalid: frozenset[Path_] = frozenset()) -> None:
        self.doc = doc
        #: Paths the schema rejected.
        self.invalid = invalid
        self.problems: list[Problem] = []
        #: Indexes with a problem of their own: kept out of the checks that compare indexes.
        self.broken: set[Location] = set()

    def loc(self, path: Path_) -> Location:
        line, column = self.doc.where(path)
        return Location(self.doc.file, line, column)

    def err(self, path: Path_, message: str, *, key: bool = False) -> None:
        self.problems.append(self.doc.problem(path, f"{dotted(path)}: {message}", key=key))

    def rejected(self, path: Path_) -> bool:
        """Did the schema reject ``path`` or anything inside it?"""
        return any(p[: len(path)] == path for p in self.invalid)

    def identifier(self, path: Path_, value: str) -> str:
        size = len(value.encode("utf-8"))
        if size > MAX_IDENTIFIER_BYTES:
            self.err(
                path,
                f"'{value}' is {size} bytes long; PostgreSQL would silently truncate it to "
                f"{MAX_IDENTIFIER_BYTES} bytes: choose a shorter name",
            )
        return value

    def qualified(self, path: Path_, value: Any, default_schema: str) -> QualifiedName | None:
        """The relation name at ``path``, or None when there is none to use."""
        if not isinstance(value, str):
            return None
        try:
            name = parse_qualified(value, default_schema)
        except ValueError as exc:
            self.err(path, str(exc))
            return None
        self.identifier(path, name.schema)
        self.identifier(path, name.name)
        return name

    def expression(self, path: Path_, text: str, what: str) -> str:
        try:
            return render_expression(text)
        except SqlTextError as exc:
            self.err(path, f"{what} is not valid: {exc}")
            return text

    def index(self, path: Path_, raw: Any, table: QualifiedName) -> IndexSpec | None:
        """The index at ``path``; None when it has no name to know it by."""
        if not isinstance(raw, dict):
            return None
        before = len(self.problems)
        spec = self._index(path, raw, table)
        if spec is not None and (len(self.problems) > before or self.rejected(path)):
            self.broken.add(spec.location)
        return spec

    def _index(self, path: Path_, raw: Mapping[str, Any], table: QualifiedName) -> IndexSpec | None:
        name = _text(raw, "name") or None  # "" is reported by the schema
        if name is not None:
            self.identifier((*path, "name"), name)
        given = raw.get("method", "btree")
        #: None when the method is not one PostgreSQL has: the checks it decides are skipped.
        method = given if given in STORAGE_PARAMETERS else None
        columns = [
            self.column((*path, "columns", i), c, method)
            for i, c in enumerate(_items(raw, "columns"))
        ]
        unique = raw.get("unique", False)
        if unique is True and method not in (None, "btree"):
            self.err((*path, "unique"), f"only btree indexes can be unique, not {method}")
        nnd = raw.get("nulls_not_distinct", False)
        if nnd is True and unique is False:
            self.err((*path, "nulls_not_distinct"), "only applies to a unique index")
        include = [
            self.identifier((*path, "include", i), c)
            for i, c in enumerate(_items(raw, "include"))
            if isinstance(c, str)
        ]
        if include and method is not None and method not in INCLUDE_METHODS:
            self.err(
                (*path, "include"),
                f"{method} indexes cannot INCLUDE columns (only {', '.join(INCLUDE_METHODS)})",
            )
        keys = {c.name for c in columns if c is not None and c.name}
        for i, col in enumerate(_items(raw, "include")):
            if isinstance(col, str) and col in keys:
                self.err((*path, "include", i), f"'{col}' is already a key column")
        where = _text(raw, "where")
        if where is not None:
            where = self.expression((*path, "where"), where, "the predicate")
        storage = self.storage((*path, "with"), _mapping(raw, "with"), method)
        if "reason" in raw and "comment" in raw:
            self.err((*path, "comment"), "give either reason or comment, not both")
        if name is None:
            return None
        return IndexSpec(
            name=name,
            table=table,
            columns=tuple(c for c in columns if c is not None),
            location=self.loc(path),
            method=given if isinstance(given, str) else "btree",
            unique=unique is True,
            nulls_not_distinct=nnd is True,
            include=tuple(include),
            where=where,
            storage=storage,
            reason=_text(raw, "reason") or _text(raw, "comment"),
        )

    def column(self, path: Path_, raw: Any, method: str | None) -> IndexColumn | None:
        if isinstance(raw, str):
            return IndexColumn(name=self.identifier(path, raw))
        if not isinstance(raw, dict):
            return None
        misspelt = not raw.keys() <= _COLUMN_KEYS  # reported by the schema, with a suggestion
        if ("name" in raw) == ("expr" in raw) and not ("name" not in raw and misspelt):
            self.err(path, "give exactly one of name (a column) or expr (an expression)")
        if ("order" in raw or "nulls" in raw) and method not in (None, *ORDERED_METHODS):
            self.err(path, f"{method} indexes do not support order or nulls (only btree)")
        expr = _text(raw, "expr")
        if expr is not None:
            expr = self.expression((*path, "expr"), expr, "the expression")
        name = _text(raw, "name")
        if name is not None:
            self.identifier((*path, "name"), name)
        for key in ("opclass", "collation"):
            value = _text(raw, key)
            if value is None:
                continue
            try:
                parse_qualified(value, "pg_catalog")
            except ValueError:
                self.err((*path, key), f"'{value}' is not a name: write name or schema.name")
        return IndexColumn(
            name=name,
            expr=expr,
            order=_text(raw, "order"),
            nulls=_text(raw, "nulls"),
            opclass=_text(raw, "opclass"),
            collation=_text(raw, "collation"),
        )

    def storage(
        self, path: Path_, raw: Mapping[str, Any], method: str | None
    ) -> tuple[tuple[str, str], ...]:
        out = []
        for key, value in raw.items():
            if method is not None and key not in STORAGE_PARAMETERS[method]:
                allowed = STORAGE_PARAMETERS[method]
                hint = suggest(key, allowed) or f"; {method} accepts: {', '.join(allowed)}"
                self.err((*path, key), f"unknown storage parameter '{key}'{hint}", key=True)
                continue
            text = ("on" if value else "off") if isinstance(value, bool) else str(value)
            out.append((key, text))
        return tuple(sorted(out))

    def query(self, path: Path_, raw: Any, relation: str) -> QueryBudget | None:
        """The budgeted query at ``path``; None when it has no name to know it by."""
        if not isinstance(raw, dict):
            return None
        given = raw.get("params")
        # Placeholders and params are matched only when params is a mapping (or absent).
        params = dict(given) if isinstance(given, dict) else {} if given is None else None
        text = _text(raw, "sql")
        if text is not None:
            text = self.query_text((*path, "sql"), text, params)
        budget = _number(raw, "budget_ms")
        if not any(key in raw for key in BUDGET_KEYS):
            self.err(
                path,
                "no budget: give budget_ms (p95 latency in ms) and/or a deterministic "
                "max_buffers, max_rows_examined or max_cost",
            )
        warn = _number(raw, "warn_ms")
        if warn is not None and "budget_ms" not in raw:
            self.err((*path, "warn_ms"), "warns below budget_ms: give budget_ms too", key=True)
        if warn is not None and budget is not None and warn >= budget:
            self.err((*path, "warn_ms"), f"must be below budget_ms ({budget:g}), got {warn:g}")
        timeout = _number(raw, "timeout_ms")
        if timeout is not None and budget is not None and timeout < budget:
            self.err((*path, "timeout_ms"), f"must be at least budget_ms ({budget:g})")
        expect_raw = _mapping(raw, "expect")
        uses_index = [
            self.identifier((*path, "expect", "uses_index", i), n)
            for i, n in enumerate(_items(expect_raw, "uses_index"))
            if isinstance(n, str)
        ]
        no_seq_scan_on = [
            self.qualified((*path, "expect", "no_seq_scan_on", i), n, DEFAULT_SCHEMA)
            for i, n in enumerate(_items(expect_raw, "no_seq_scan_on"))
        ]
        plan_margin = _number(expect_raw, "plan_margin")
        if plan_margin is not None and not uses_index:
            self.err(
                (*path, "expect", "plan_margin"),
                "applies to expect.uses_index: name the indexes the plan must keep using",
            )
        name = _text(raw, "name") or None
        if name is None:
            return None
        runs, warmup = raw.get("runs", 20), raw.get("warmup", 3)
        return QueryBudget(
            name=name,
            sql=text or "",
            budget_ms=budget,
            location=self.loc(path),
            relation=relation,
            params=params or {},
            uses_placeholders=True,
            warn_ms=warn,
            runs=runs if isinstance(runs, int) else 20,
            warmup=warmup if isinstance(warmup, int) else 3,
            timeout_ms=timeout,
            description=_text(raw, "description"),
            max_buffers=_whole(_limit(raw, "max_buffers")),
            max_rows_examined=_whole(_limit(raw, "max_rows_examined")),
            max_cost=_limit(raw, "max_cost"),
            expect=Expectation(
                uses_index=tuple(uses_index),
                no_seq_scan_on=tuple(n for n in no_seq_scan_on if n is not None),
                plan_margin=plan_margin,
            ),
        )

    def query_text(self, path: Path_, text: str, params: Mapping[str, Any] | None) -> str:
        """The budget query's text as verify sends it; its problems reported at ``path``."""
        # Always psycopg's grammar (%(name)s, and %% for a literal %), with or without params,
        # so what validate checks is exactly what verify sends.
        try:
            checked = check_query(text, with_placeholders=True)
        except SqlTextError as exc:
            self.err(path, f"the query is not valid: {exc}")
            return text
        # verify changes nothing: calls known to change something are refused here, without
        # a database; verify and validate --dsn also check what the database holds.
        for refusal in static_refusals(text, with_placeholders=True):
            self.err(path, str(refusal))
        if params is not None:
            for name in checked.placeholders:
                if name not in params:
                    self.err(path, f"placeholder %({name})s has no value: add it under params")
            for name in params:
                if name not in checked.placeholders:
                    self.err(
                        (*path[:-1], "params", name),
                        f"parameter '{name}' is not used in sql",
                        key=True,
                    )
        return checked.text

    def index_file(self) -> tuple[QualifiedName | None, list[IndexSpec], list[QueryBudget]]:
        """The table (None when it has no usable name), its indexes and its budgets."""
        data = self.doc.data
        table = self.qualified(("table",), data.get("table"), DEFAULT_SCHEMA)
        on = table or _UNNAMED
        indexes = [
            self.index(("indexes", i), raw, on) for i, raw in enumerate(_items(data, "indexes"))
        ]
        queries = [
            self.query(("queries", i), raw, str(on))
            for i, raw in enumerate(_items(data, "queries"))
        ]
        # Indexes of a table without a usable name are checked, but compared with nothing.
        found = [i for i in indexes if i is not None] if table is not None else []
        return table, found, [q for q in queries if q is not None]

    def view_file(self) -> tuple[ViewSpec, bool]:
        """The view, and whether it has a usable name (only then is it compared with others)."""
        data = self.doc.data
        schema = _text(data, "schema") if "schema" in data else DEFAULT_SCHEMA
        if schema is not None:
            self.identifier(("schema",), schema)
        given = _text(data, "name") or None
        if given is not None:
            self.identifier(("name",), given)
        named = schema is not None and given is not None
        name = (
            QualifiedName(schema, given) if schema is not None and given is not None else _UNNAMED
        )
        query = _text(data, "query") or ""
        if query:
            try:
                query = render_query(query)
            except SqlTextError as exc:
                self.err(("query",), f"the view query is not valid: {exc}")
        indexes = [
            self.index(("indexes", i), raw, name) for i, raw in enumerate(_items(data, "indexes"))
        ]
        refresh_raw = _mapping(data, "refresh")
        schedule = _text(refresh_raw, "schedule")
        if schedule is not None:
            try:
                schedule = cron.parse(schedule)
            except InputError as exc:
                self.err(("refresh", "schedule"), str(exc))
        mode = refresh_raw.get("mode", "auto")
        depends_on = [
            (
                self.qualified(("depends_on", i), d, schema or DEFAULT_SCHEMA),
                self.loc(("depends_on", i)),
            )
            for i, d in enumerate(_items(data, "depends_on"))
        ]
        queries = [
            self.query(("queries", i), raw, str(name))
            for i, raw in enumerate(_items(data, "queries"))
        ]
        view = ViewSpec(
            name=name,
            query=query,
            location=self.loc(()),
            indexes=tuple(i for i in indexes if i is not None),
            refresh=RefreshSpec(schedule=schedule, mode=mode if isinstance(mode, str) else "auto"),
            depends_on=tuple(d for d, _ in depends_on if d is not None),
            queries=tuple(q for q in queries if q is not None),
            reason=_text(data, "reason") or _text(data, "comment"),
            depends_on_at=tuple(at for d, at in depends_on if d is not None),
        )
        if "reason" in data and "comment" in data:
            self.err(("comment",), "give either reason or comment, not both")
        # An index the schema rejected may be the unique one: judge only a complete list.
        if (
            mode == "concurrent"
            and not self.rejected(("indexes",))
            and view.concurrent_refresh_index() is None
        ):
            self.err(
                ("refresh", "mode"),
                "REFRESH MATERIALIZED VIEW CONCURRENTLY needs a unique index on plain columns "
                "(no expression, no WHERE): add one under indexes, or use mode: auto",
            )
        return view, named


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


@dataclass(slots=True)
class _Loaded:
    """What the spec files say so far, and every problem found in them."""

    problems: list[Problem] = field(default_factory=list)
    indexes: list[IndexSpec] = field(default_factory=list)
    queries: list[QueryBudget] = field(default_factory=list)
    views: list[ViewSpec] = field(default_factory=list)
    #: Each index file's table, where the file names it (two files for one table clash).
    tables: list[tuple[QualifiedName, Location]] = field(default_factory=list)
    #: Indexes with a problem of their own: not compared with the others.
    broken: set[Location] = field(default_factory=set)
    #: Names of files that may be views dbopt could not read: depending on one is no error.
    unread: set[str] = field(default_factory=set)

    def read(self, path: Path, display: str) -> None:
        """Read one spec file: every problem in it, and whatever of it can be used."""
        doc, found = load_file(path, display=display)
        self.problems.extend(found)
        if doc is None:
            self.unread.add(path.stem)
            return
        data = doc.data
        if not isinstance(data, dict):
            self.problems.append(doc.problem((), "a spec file must be a mapping of keys to values"))
            self.unread.add(path.stem)
            return
        if "table" not in data and "query" not in data and "name" not in data:
            self.problems.append(
                doc.problem(
                    (),
                    "cannot tell what this file is: an index file needs 'table', a view file "
                    "needs 'name' and 'query'",
                )
            )
            self.unread.add(path.stem)
            return
        kind = "index" if "table" in data else "view"
        found, invalid = check_document(doc, INDEX_FILE if kind == "index" else VIEW_FILE)
        self.problems.extend(found)
        # Every check whose input is usable runs, whatever else the schema rejected.
        reader = _FileReader(doc, frozenset(invalid))
        if kind == "index":
            table, indexes, queries = reader.index_file()
            if table is not None:
                self.tables.append((table, reader.loc(("table",))))
            self.indexes.extend(indexes)
            self.queries.extend(queries)
        else:
            view, named = reader.view_file()
            if named:
                self.views.append(view)
            else:
                self.unread.add(path.stem)
                # Compared with nothing, but its budgets' names must still be unique.
                self.queries.extend(view.queries)
        self.problems.extend(reader.problems)
        self.broken |= reader.broken


def load_specs(dirs: Sequence[tuple[Path, bool]], *, allow_empty: bool = False) -> SpecSet:
    """Load and validate every spec file in ``dirs`` (each with: must it exist?).

    Raises SpecError listing every problem found in every file, in file order: a file that
    cannot be read, or an item that breaks the schema, hides nothing else. No spec file at
    all is an error too, unless ``allow_empty`` (`dbopt advise` starts from none).
    """
    with paused_gc():
        return _load_specs(dirs, allow_empty)


def _load_specs(dirs: Sequence[tuple[Path, bool]], allow_empty: bool = False) -> SpecSet:
    files, problems = _spec_files(dirs)
    if not files and not problems and allow_empty:
        return SpecSet()
    if not files and not problems:
        where = ", ".join(str(d) for d, _ in dirs) or "(none)"
        raise SpecError(
            f"no spec files (*.yaml) found in {where}: write indexes/<table>.yaml or "
            "views/<name>.yaml, or point --specs at the directory that holds them"
        )
    loaded = _Loaded(problems=problems)
    names: list[str] = []
    for path in files:
        names.append(_display(path))
        loaded.read(path, names[-1])
    specs = SpecSet(tuple(loaded.indexes), tuple(loaded.views), tuple(loaded.queries), tuple(names))
    problems.extend(cross_file_problems(specs, loaded.broken, loaded.unread, loaded.tables))
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
