"""Production's planner statistics, dumped to a file and restored into a CI database.

``dump`` reads, as any role that may read the tables, what the planner knows about the
relations the specs concern (see :func:`stats_names`): pg_class's relpages, reltuples and
relallvisible (relallfrozen from PostgreSQL 18 on) and pg_stats's rows for each column. It
only reads, so it works on a standby too, and from PostgreSQL 12 on.

``restore`` writes them with PostgreSQL 18's ``pg_restore_relation_stats`` and
``pg_restore_attribute_stats``, which the owner of a table may call (they need MAINTAIN on
it). Before 18 nothing can write pg_statistic but ANALYZE and a superuser, so restore refuses
a server older than 18. Everything in the file is checked against the target first (each
relation exists and may be maintained, each column exists with the same type); then it all
runs in one transaction, and any value the server will not take (a WARNING from those
functions) rolls all of it back.

What the planner then does with them, so nobody expects more: it takes a table's size from
its file, not from relpages: its row estimate is ``reltuples / relpages`` (production's rows
per page) times the pages the table has here. Selectivities (most common values, histograms,
distinct counts, null fractions, correlation) are production's; absolute row estimates are
production's fractions of this table's size. So a table of 100 rows (one page) still plans
a sequential scan, as it should; a seeded table of a few thousand rows plans what production
plans for a predicate whose selectivity decides the plan. ANALYZE, VACUUM, autovacuum and
CREATE INDEX on a table replace what was restored.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from dbopt.catalog import catalog_sql
from dbopt.errors import InputError, UnsupportedServerError
from dbopt.model import QualifiedName, SpecSet

if TYPE_CHECKING:
    from dbopt.config import Target

#: What a statistics file says it is; restore refuses anything else.
FORMAT = "dbopt-stats/1"
#: pg_restore_relation_stats and pg_restore_attribute_stats exist from here on.
RESTORE_MIN_VERSION = 180000
#: pg_stats has range_length_histogram, range_empty_frac, range_bounds_histogram from 17 on.
_RANGES_VERSION = 170000
_RANGE_COLUMNS = ("range_length_histogram", "range_empty_frac", "range_bounds_histogram")

#: The pg_stats values a file carries for a column, and the JSON type each must have
#: ("text" values are pg_stats's anyarray columns as text, read back with the column's type).
STAT_KEYS: dict[str, str] = {
    "null_frac": "number",
    "avg_width": "integer",
    "n_distinct": "number",
    "most_common_vals": "text",
    "most_common_freqs": "numbers",
    "histogram_bounds": "text",
    "correlation": "number",
    "most_common_elems": "text",
    "most_common_elem_freqs": "numbers",
    "elem_count_histogram": "numbers",
    "range_length_histogram": "text",
    "range_empty_frac": "number",
    "range_bounds_histogram": "text",
}
_KINDS = {"r": "table", "p": "partitioned table", "m": "materialized view"}

NOT_BEFORE_18 = (
    "PostgreSQL {version} cannot take restored planner statistics: "
    "pg_restore_relation_stats and pg_restore_attribute_stats arrive in PostgreSQL 18, and "
    "before that only ANALYZE or a superuser can write pg_statistic, so restore them into a "
    "CI database on PostgreSQL 18 or later."
)


@dataclass(frozen=True, slots=True)
class ColumnStats:
    """One column of a dumped relation: its type and pg_stats's rows for it.

    ``rows`` holds one mapping per ``inherited`` value pg_stats had (``inherited`` plus the
    :data:`STAT_KEYS` that were not NULL); empty when the column was never analyzed or when
    ``hidden`` (pg_stats did not show it to the dumping role).
    """

    name: str
    type: str
    rows: tuple[Mapping[str, Any], ...] = ()
    hidden: bool = False


@dataclass(frozen=True, slots=True)
class RelationStats:
    """A table or materialized view as the planner saw it where it was dumped."""

    name: QualifiedName
    kind: str
    relpages: int
    reltuples: float
    relallvisible: int
    relallfrozen: int | None
    columns: tuple[ColumnStats, ...]

    @property
    def hidden(self) -> list[str]:
        """The columns whose statistics the dumping role could not see."""
        return [c.name for c in self.columns if c.hidden]

    @property
    def analyzed(self) -> bool:
        """Whether any column has statistics."""
        return any(c.rows for c in self.columns)


@dataclass(frozen=True, slots=True)
class StatsDump:
    """What a statistics file holds."""

    server_version: str
    server_version_num: int
    database: str
    dumped_at: str
    relations: tuple[RelationStats, ...]
    #: Relations the specs name that the dumped database does not have.
    missing: tuple[QualifiedName, ...] = ()
    role: str = ""

    def to_json(self) -> str:
        """The file's text: stable key order, one relation after another."""
        doc = {
            "format": FORMAT,
            "server_version": self.server_version,
            "server_version_num": self.server_version_num,
            "database": self.database,
            "role": self.role,
            "dumped_at": self.dumped_at,
            "relations": [
                {
                    "schema": r.name.schema,
                    "name": r.name.name,
                    "kind": r.kind,
                    "relpages": r.relpages,
                    "reltuples": r.reltuples,
                    "relallvisible": r.relallvisible,
                    "relallfrozen": r.relallfrozen,
                    "columns": [
                        {
                            "name": c.name,
                            "type": c.type,
                            **({"hidden": True} if c.hidden else {}),
                            "stats": [dict(row) for row in c.rows],
                        }
                        for c in r.columns
                    ],
                }
                for r in self.relations
            ],
        }
        return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"


# --- dump -------------------------------------------------------------------------------------


def stats_names(specs: SpecSet) -> set[tuple[str | None, str]]:
    """The relations whose statistics a dump holds, as the specs name them.

    The tables of the index specs, the materialized views of the view specs, the relation
    each budget is written under, and every relation a budgeted query reads or an
    expectation names (``None`` schema: unqualified, resolved with the search_path). The
    server then adds what plain views among them read and the partitions under them.
    """
    from dbopt.privileges import budget_relations

    names: set[tuple[str | None, str]] = {(n.schema, n.name) for n in specs.relations()}
    return names | budget_relations(specs)


def _text_version(conn: psycopg.Connection[Any]) -> str:
    reported = conn.info.parameter_status("server_version") or ""
    return reported.split()[0] if reported else str(conn.info.server_version)


def dump(target: Target, specs: SpecSet) -> StatsDump:
    """Read the planner statistics of :func:`stats_names`'s relations on ``target``.

    Reads only, in a READ ONLY transaction: any role that may SELECT the tables can dump
    (pg_stats shows a column only to a role that may SELECT it: see
    :attr:`RelationStats.hidden`).
    """
    from dbopt.db import connect, read_only_transaction
    from dbopt.privileges import resolve

    with connect(target.dsn, settings=target.settings, read_only=True) as conn:
        access = resolve(conn, stats_names(specs), target.settings.search_path)
        named = {a.name for a in access}
        wanted = {QualifiedName(n.schema, n.name) for n in specs.relations()}
        version_num = conn.info.server_version
        with read_only_transaction(conn), conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                catalog_sql("stats_relations"),
                {
                    "schemas": [n.schema for n in sorted(named)],
                    "names": [n.name for n in sorted(named)],
                },
            )
            rels = cur.fetchall()
            cur.execute(
                catalog_sql("stats_columns").format(ranges=_ranges_sql(version_num)),
                {"schemas": [r["schema"] for r in rels], "names": [r["name"] for r in rels]},
            )
            cols = cur.fetchall()
        database = _one(conn, "current_database")
        role = _one(conn, "current_role")
        version = _text_version(conn)
    found = {QualifiedName(r["schema"], r["name"]) for r in rels}
    if not found:
        raise InputError(
            f"nothing to dump: none of the tables and materialized views the specs concern "
            f"exists in {target.describe()}"
        )
    return StatsDump(
        server_version=version,
        server_version_num=version_num,
        database=str(database),
        role=str(role),
        dumped_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        relations=tuple(_relation(r, cols) for r in rels),
        missing=tuple(sorted(wanted - found - named)),
    )


def _one(conn: psycopg.Connection[Any], name: str) -> str:
    """The one value catalog query ``name`` returns."""
    row = conn.execute(catalog_sql(name)).fetchone()
    return "" if row is None else str(row[0])


def _ranges_sql(version_num: int) -> sql.Composable:
    """pg_stats's range columns where it has them (17+), else NULLs of their types."""
    return catalog_sql(
        "stats_ranges" if version_num >= _RANGES_VERSION else "stats_ranges_before_17"
    )


def _relation(rel: Mapping[str, Any], cols: Sequence[Mapping[str, Any]]) -> RelationStats:
    """One relation's figures and its columns' rows, from the two catalog reads."""
    mine = [c for c in cols if (c["schema"], c["name"]) == (rel["schema"], rel["name"])]
    columns: dict[str, ColumnStats] = {}
    for c in mine:
        previous = columns.get(c["column"])
        rows = previous.rows if previous else ()
        if c["inherited"] is not None:
            stats = {k: _plain(c[k]) for k in STAT_KEYS if c[k] is not None}
            rows = (*rows, {"inherited": bool(c["inherited"]), **stats})
        columns[c["column"]] = ColumnStats(c["column"], c["type"], rows, not c["visible"])
    return RelationStats(
        name=QualifiedName(rel["schema"], rel["name"]),
        kind=_KINDS.get(rel["relkind"], rel["relkind"]),
        relpages=int(rel["relpages"]),
        reltuples=float(rel["reltuples"]),
        relallvisible=int(rel["relallvisible"]),
        relallfrozen=None if rel["relallfrozen"] is None else int(rel["relallfrozen"]),
        columns=tuple(columns.values()),
    )


def _plain(value: Any) -> Any:
    """A value as JSON holds it (real[] arrives as a list of floats; real as a float)."""
    if isinstance(value, list):
        return [float(v) for v in value]
    return value


# --- the file ---------------------------------------------------------------------------------


def load(path: Path) -> StatsDump:
    """Read a statistics file :func:`dump` wrote; InputError (naming the file and the entry)
    when it is not one."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(
            f"{path}: not a JSON statistics file from `dbopt stats dump`: {exc}"
        ) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InputError(
            f'{path}: not a statistics file from `dbopt stats dump` (no "format": "{FORMAT}")'
        )
    reader = _Reader(str(path))
    relations = tuple(
        reader.relation(i, r) for i, r in enumerate(reader.items(doc, "relations", "the file"))
    )
    version_num = reader.typed(doc, "server_version_num", "integer", "the file")
    reader.done()
    return StatsDump(
        server_version=str(doc.get("server_version", "")),
        server_version_num=int(version_num or 0),
        database=str(doc.get("database", "")),
        role=str(doc.get("role", "")),
        dumped_at=str(doc.get("dumped_at", "")),
        relations=relations,
    )


def _is(value: Any, kind: str) -> bool:
    """Whether a JSON value has one of :data:`STAT_KEYS`'s types."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "number":
        return number
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "text":
        return isinstance(value, str)
    if kind == "numbers":
        return isinstance(value, list) and all(_is(v, "number") for v in value)
    return isinstance(value, bool) if kind == "boolean" else isinstance(value, str)


class _Reader:
    """Reads the parts of a statistics file, collecting every problem before refusing."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.problems: list[str] = []

    def typed(self, obj: Mapping[str, Any], key: str, kind: str, where: str) -> Any:
        value = obj.get(key)
        if not _is(value, kind):
            self.problems.append(
                f'{where}: "{key}" must be {"an" if kind == "integer" else "a"} {kind}'
            )
            return None
        return value

    def items(self, obj: Mapping[str, Any], key: str, where: str) -> list[Mapping[str, Any]]:
        value = obj.get(key)
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.problems.append(f'{where}: "{key}" must be a list of objects')
            return []
        return value

    def relation(self, i: int, raw: Mapping[str, Any]) -> RelationStats:
        schema = self.typed(raw, "schema", "name", f"relation {i + 1}")
        name = self.typed(raw, "name", "name", f"relation {i + 1}")
        where = f"{schema}.{name}" if schema and name else f"relation {i + 1}"
        relallfrozen = raw.get("relallfrozen")
        if relallfrozen is not None and not _is(relallfrozen, "integer"):
            self.problems.append(f'{where}: "relallfrozen" must be an integer or null')
        relpages = self.typed(raw, "relpages", "integer", where) or 0
        reltuples = self.typed(raw, "reltuples", "number", where) or 0.0
        relallvisible = self.typed(raw, "relallvisible", "integer", where) or 0
        columns = tuple(self.column(where, c) for c in self.items(raw, "columns", where))
        return RelationStats(
            name=QualifiedName(str(schema), str(name)),
            kind=str(raw.get("kind", "table")),
            relpages=relpages,
            reltuples=reltuples,
            relallvisible=relallvisible,
            relallfrozen=relallfrozen if isinstance(relallfrozen, int) else None,
            columns=columns,
        )

    def column(self, where: str, raw: Mapping[str, Any]) -> ColumnStats:
        name = self.typed(raw, "name", "name", f"{where}: a column")
        here = f"{where}: column {name}"
        type_ = self.typed(raw, "type", "name", here)
        rows: list[Mapping[str, Any]] = []
        for row in self.items(raw, "stats", here):
            self.typed(row, "inherited", "boolean", here)
            unknown = sorted(set(row) - set(STAT_KEYS) - {"inherited"})
            if unknown:
                self.problems.append(f"{here}: unknown statistics {', '.join(unknown)}")
            for key, kind in STAT_KEYS.items():
                if key in row and not _is(row[key], kind):
                    self.problems.append(f'{here}: "{key}" must be a {kind}')
            rows.append(row)
        return ColumnStats(str(name), str(type_), tuple(rows), bool(raw.get("hidden", False)))

    def done(self) -> None:
        if self.problems:
            raise InputError(
                _problem_lines(self.label, "is not a valid statistics file", self.problems)
            )


def _problem_lines(label: str, what: str, problems: Iterable[str]) -> str:
    """``FILE what; nothing was restored:`` and one indented line per problem."""
    lines = list(problems)
    return f"{label} {what}; nothing was restored:\n" + "\n".join(f"  {p}" for p in lines)


# --- restore ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Restored:
    """A relation whose statistics restore wrote."""

    name: QualifiedName
    relpages: int
    reltuples: float
    columns: int
    #: Columns the file had no statistics for (hidden from the dumping role, never analyzed):
    #: their statistics here were left as they were.
    kept: tuple[str, ...]
    #: Whether autovacuum may analyze it here (and so replace what was restored).
    autovacuum: bool


@dataclass(frozen=True, slots=True)
class RestoreReport:
    """What restore wrote, and what the user should know about it."""

    source: str
    relations: tuple[Restored, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def autovacuumed(self) -> list[QualifiedName]:
        """The restored relations autovacuum may analyze (and so overwrite)."""
        return [r.name for r in self.relations if r.autovacuum]


def _check(
    dump: StatsDump, targets: Mapping[QualifiedName, Mapping[str, Any]], role: str
) -> list[str]:
    """Every way the file does not fit this database: missing relations and columns, other
    column types, relations the role may not maintain."""
    problems: list[str] = []
    for rel in dump.relations:
        here = targets.get(rel.name)
        if here is None or here["relkind"] not in _KINDS:
            what = "no such table or materialized view here"
            problems.append(
                f"{rel.name}: {what}"
                if here is None
                else f"{rel.name}: is not a table or materialized view here"
            )
            continue
        if not here["can_maintain"]:
            problems.append(
                f"{rel.name}: role {role} may not restore its statistics (that needs MAINTAIN "
                "on it: run as its owner, or "
                + sql.SQL("GRANT MAINTAIN ON {} TO {}")
                .format(rel.name.ident(), sql.Identifier(role))
                .as_string()
                + ")"
            )
        types: Mapping[str, str] = here["columns"]
        for col in rel.columns:
            if col.name not in types:
                problems.append(f"{rel.name}: column {col.name} ({col.type}) does not exist here")
            elif types[col.name] != col.type:
                problems.append(
                    f"{rel.name}: column {col.name} is {types[col.name]} here but {col.type} "
                    "in the file"
                )
    return problems


def restore(target: Target, dump: StatsDump, label: str) -> RestoreReport:
    """Write ``dump``'s statistics into ``target`` (PostgreSQL 18+, never a standby).

    Checks the whole file against the database first and refuses (InputError, nothing
    written) when a relation or column is missing, a column's type differs or the role may
    not maintain a relation; then restores everything in one transaction, rolled back when
    the server refuses any value.
    """
    from dbopt.db import connect
    from dbopt.replicas import require_primary

    with connect(target.dsn, settings=target.settings) as conn:
        if conn.info.server_version < RESTORE_MIN_VERSION:
            raise UnsupportedServerError(NOT_BEFORE_18.format(version=_text_version(conn)))
        require_primary(conn, "stats restore")
        names = [r.name for r in dump.relations]
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                catalog_sql("stats_targets"),
                {"schemas": [n.schema for n in names], "names": [n.name for n in names]},
            )
            targets = {QualifiedName(r["schema"], r["name"]): r for r in cur.fetchall()}
        role = _one(conn, "current_role")
        problems = _check(dump, targets, role)
        if problems:
            raise InputError(_problem_lines(label, "does not fit this database", problems))
        _write(conn, dump, label)
        version = _text_version(conn)
        major = conn.info.server_version // 10000
    restored = tuple(
        Restored(
            r.name,
            r.relpages,
            r.reltuples,
            sum(1 for c in r.columns if c.rows),
            tuple(c.name for c in r.columns if not c.rows),
            bool(targets[r.name]["autovacuum"]),
        )
        for r in dump.relations
    )
    return RestoreReport(
        f"PostgreSQL {dump.server_version}, database {dump.database}, {dump.dumped_at}",
        restored,
        tuple(_notes(dump, targets, version, major)),
    )


def _notes(
    dump: StatsDump, targets: Mapping[QualifiedName, Mapping[str, Any]], version: str, major: int
) -> Iterable[str]:
    """What restore could not make production's: other majors, columns the file lacks."""
    if dump.server_version_num // 10000 != major:
        yield (
            f"the file comes from PostgreSQL {dump.server_version} and this is {version}: "
            "relations, columns and column types were checked; the values were read by this "
            "server's type input functions and checked by pg_restore_attribute_stats"
            + (
                "; range histograms are only dumped from PostgreSQL 17 on"
                if dump.server_version_num < _RANGES_VERSION
                else ""
            )
        )
    for rel in dump.relations:
        missing = sorted(set(targets[rel.name]["columns"]) - {c.name for c in rel.columns})
        if missing:
            listed = ", ".join(missing)
            yield f"{rel.name}: the file has no columns {listed}: their statistics here were kept"


def _write(conn: psycopg.Connection[Any], dump: StatsDump, label: str) -> None:
    """Clear and restore every relation's and column's statistics in one transaction."""
    warnings: list[str] = []

    def on_notice(diag: psycopg.errors.Diagnostic) -> None:
        if diag.severity_nonlocalized == "WARNING" and diag.message_primary:
            warnings.append(diag.message_primary)

    refused: list[str] = []

    def run(cur: psycopg.Cursor[Any], name: str, params: Mapping[str, Any], what: str) -> None:
        before = len(warnings)
        cur.execute(catalog_sql(name), params)
        results = [row[0] for row in cur.fetchall()]
        said = warnings[before:]
        if said or any(r is False for r in results):
            refused.append(f"{what}: {'; '.join(said) or 'not restored'}")

    base = {"version": dump.server_version_num or None}
    conn.add_notice_handler(on_notice)
    try:
        with conn.transaction() as tx, conn.cursor() as cur:
            for rel in dump.relations:
                names = {"schema": rel.name.schema, "name": rel.name.name}
                run(
                    cur,
                    "stats_restore_relation",
                    {
                        **base,
                        **names,
                        "relpages": rel.relpages,
                        "reltuples": rel.reltuples,
                        "relallvisible": rel.relallvisible,
                        "relallfrozen": rel.relallfrozen,
                    },
                    str(rel.name),
                )
                for col in rel.columns:
                    if not col.rows:
                        continue  # hidden or never analyzed: what is here stays
                    column = {**names, "column": col.name}
                    run(cur, "stats_clear_attribute", column, f"{rel.name} column {col.name}")
                    for row in col.rows:
                        params = {**base, **column, **dict.fromkeys(STAT_KEYS), **row}
                        what = f"{rel.name} column {col.name}"
                        run(cur, "stats_restore_attribute", params, what)
            if refused:
                raise psycopg.Rollback(tx)  # leaves the block: nothing stays
    finally:
        conn.remove_notice_handler(on_notice)
    if refused:
        raise InputError(_problem_lines(label, "holds values this server refuses", refused))
