"""`dbopt import`: spec files for the indexes and materialized views a database already has.

Every definition is the server's own: ``pg_get_indexdef`` read back into an
:class:`~dbopt.model.IndexSpec` by the PostgreSQL parser (:mod:`dbopt.indexdef`), a view's
query exactly as ``pg_get_viewdef`` prints it. What the spec format cannot express (a
tablespace, an operator class with parameters, a method dbopt does not build, a storage
parameter it does not know) is never silently dropped: the index is left out of the specs,
said on the terminal and in a comment of its file. Before anything is written, the files are
loaded by dbopt's own validator and planned against the database exactly as ``dbopt plan``
would: an object that would not plan as unchanged is left out the same way, so a plan right
after an import has nothing to change.

Left out without a note: indexes that back a constraint (dbopt does not manage those), the
indexes of partitions attached to a partitioned index (the parent's spec makes them), objects
of extensions, system schemas and dbopt's history. INVALID indexes are left out with a note.

With ``adopt``, the imported objects are recorded in the history as a run of command
``import`` whose changes (action ``adopt``) carry the facts an apply records of what it made
— OID, table, the server's definition — so ``apply --prune`` may drop them once they leave the
specs. They existed before dbopt: a rollback never drops them (an import run has no undo).
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from dbopt.catalog import catalog_sql
from dbopt.config import Target
from dbopt.db import connect, unbounded
from dbopt.deparse import canonical
from dbopt.errors import DboptError, InputError, UnsafeActionError
from dbopt.guard import Identity, NotOursError, check
from dbopt.history import AdoptedObject, History
from dbopt.indexdef import DefinitionError, index_spec_from_definition
from dbopt.locks import take_run_lock
from dbopt.model import IndexSpec, QualifiedName
from dbopt.planner import ActionKind
from dbopt.replicas import require_primary
from dbopt.specfiles import (
    declares,
    file_header,
    file_names,
    kept_from,
    table_text,
    view_text,
    write_atomically,
)
from dbopt.sqltext import SqlTextError, render_expression
from dbopt.usecases import Locking, where

#: The names a replace of dbopt's gives an object for a moment: never imported.
_TEMPORARY_SUFFIXES = ("_dbopt_new", "_dbopt_old")
#: What a file name keeps of a relation's name; anything else becomes "_".
_UNSAFE_IN_FILE_NAME = re.compile(r"[^\w.\-]")


@dataclass(frozen=True, slots=True)
class ImportOptions:
    """What to import, where to write it, and whether to hand it to dbopt."""

    tables: tuple[QualifiedName, ...] = ()  # empty: every table and materialized view
    adopt: bool = False
    force: bool = False  # overwrite existing spec files
    index_dir: Path = Path("indexes")
    view_dir: Path = Path("views")
    locking: Locking = field(default_factory=Locking)
    yes: bool = False  # confirmed on the command line (environments with confirm: true)


@dataclass(frozen=True, slots=True)
class Left:
    """An object import leaves out of the specs (it stays as it is, unmanaged), and why."""

    name: QualifiedName
    reason: str

    def __str__(self) -> str:
        return f"{self.name}: {self.reason}"


@dataclass(frozen=True, slots=True)
class SpecFile:
    """One file import writes: an index file of a table or the file of a materialized view."""

    path: Path
    relation: QualifiedName
    kind: str  # table or view
    text: str
    indexes: tuple[QualifiedName, ...]
    left: tuple[Left, ...] = ()
    #: What it keeps of the file it overwrites (--force): queries, refresh, reasons...
    kept: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ImportOutcome:
    """What import wrote, what it left out and why, and what it adopted."""

    where: str
    files: tuple[SpecFile, ...]
    left: tuple[Left, ...]
    #: Left out without a note, counted: constraint indexes, partitions' attached indexes.
    unmanaged: Mapping[str, int] = field(default_factory=dict)
    compared: bool = True  # False on a standby: not planned against the database
    adopted: tuple[QualifiedName, ...] = ()
    already_owned: tuple[QualifiedName, ...] = ()
    run_id: int | None = None
    notes: tuple[str, ...] = ()


# --- the catalog -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Relation:
    oid: int
    name: QualifiedName
    relkind: str  # r, p or m
    is_partition: bool
    owned: bool
    extension: str | None
    comment: str | None

    @property
    def kind(self) -> str:
        return "view" if self.relkind == "m" else "table"


@dataclass(frozen=True, slots=True)
class _Index:
    oid: int
    name: QualifiedName
    table: QualifiedName
    definition: str
    key_texts: tuple[str, ...]  # each key column as the server prints it alone
    predicate: str | None  # the WHERE of a partial index, as the server prints it
    is_valid: bool
    is_partition: bool
    constraint_name: str | None
    extension: str | None
    tablespace: str | None
    comment: str | None


def _relations(conn: psycopg.Connection[Any], history: History) -> list[_Relation]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(catalog_sql("import_relations"), {"history_schema": history.schema})
        rows = cur.fetchall()
    return [
        _Relation(
            oid=int(r["oid"]),
            name=QualifiedName(r["schema"], r["name"]),
            relkind=r["relkind"],
            is_partition=bool(r["is_partition"]),
            owned=bool(r["owned"]),
            extension=r["extension"],
            comment=r["comment"],
        )
        for r in rows
    ]


def _indexes(conn: psycopg.Connection[Any], oids: Sequence[int]) -> list[_Index]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(catalog_sql("import_indexes"), {"oids": list(oids)})
        rows = cur.fetchall()
    return [
        _Index(
            oid=int(r["oid"]),
            name=QualifiedName(r["schema"], r["name"]),
            table=QualifiedName(r["table_schema"], r["table_name"]),
            definition=r["definition"],
            key_texts=tuple(r["key_texts"] or ()),
            predicate=r["predicate"],
            is_valid=bool(r["is_valid"]),
            is_partition=bool(r["is_partition"]),
            constraint_name=r["constraint_name"],
            extension=r["extension"],
            tablespace=r["tablespace"],
            comment=r["comment"],
        )
        for r in rows
        if r["definition"] is not None  # dropped since the list was read
    ]


def _view_queries(conn: psycopg.Connection[Any], oids: Sequence[int]) -> dict[int, str]:
    with conn.cursor() as cur:
        cur.execute(catalog_sql("import_views"), {"oids": list(oids)})
        return {int(oid): str(text) for oid, text in cur.fetchall() if text is not None}


def choose(relations: Sequence[_Relation], tables: Sequence[QualifiedName]) -> list[_Relation]:
    """The relations to import: ``tables`` (InputError naming any that is not a table or
    materialized view here), or every one that is not an extension's."""
    if not tables:
        return [r for r in relations if r.extension is None]
    by_name = {r.name: r for r in relations}
    unknown = [str(t) for t in tables if t not in by_name]
    if unknown:
        raise InputError(
            "no table or materialized view "
            + ", ".join(unknown)
            + " in this database: nothing was written"
        )
    wanted = set(tables)
    return [r for r in relations if r.name in wanted]


# --- definitions into specs (pure) -----------------------------------------------------------


def index_spec(index: _Index) -> IndexSpec | str:
    """The spec of ``index`` exactly as the server defines it, or why the spec format cannot
    say it."""
    from dbopt.spec import STORAGE_PARAMETERS

    if index.tablespace:
        return (
            f"it lives in tablespace {index.tablespace}, and a spec cannot name a tablespace "
            "(a spec without it would plan a replace)"
        )
    try:
        spec = index_spec_from_definition(
            index.definition, table=index.table, name=index.name.name, reason=index.comment
        )
    except DefinitionError as exc:
        return f"the spec format cannot express it ({exc})"
    unknown = [k for k, _v in spec.storage if k not in STORAGE_PARAMETERS[spec.method]]
    if unknown:
        return (
            f"storage parameter {', '.join(unknown)} is not one a spec may set for "
            f"{spec.method} indexes"
        )
    try:
        columns = tuple(
            replace(c, expr=_server_text(c.expr, index.key_texts[i : i + 1]))
            if c.expr is not None
            else c
            for i, c in enumerate(spec.columns)
        )
        predicate = index.predicate
        where_ = None if spec.where is None else _server_text(spec.where, (predicate or "",))
    except SqlTextError as exc:
        return f"dbopt cannot read its expression back: {exc}"
    return replace(spec, columns=columns, where=where_)


def _server_text(parsed: str, server: Sequence[str]) -> str:
    """An expression as the server prints it on its own (``email <> ''::text``), when it is
    the same expression as the one read out of the whole definition (else that one)."""
    text = server[0].strip() if server else ""
    if text and _rendered(text) == _rendered(parsed):
        return text
    return render_expression(parsed)


def _rendered(text: str) -> str:
    try:
        return render_expression(text)
    except SqlTextError:
        return ""


def _shape(spec: IndexSpec) -> tuple[Any, ...]:
    """What dbopt's validator calls the same definition (two such indexes are refused)."""
    columns = tuple(
        c if c.expr is None else replace(c, expr=_rendered(c.expr)) for c in spec.columns
    )
    return (
        columns,
        spec.method,
        spec.unique,
        spec.nulls_not_distinct,
        spec.include,
        None if spec.where is None else _rendered(spec.where),
    )


def without_twins(specs: Sequence[IndexSpec]) -> tuple[list[IndexSpec], list[Left]]:
    """Indexes of one relation with duplicates left out (the specs refuse two indexes of the
    same definition); a non-unique index that is a left prefix of another gets a reason
    (the specs ask why it is worth keeping)."""
    kept: list[IndexSpec] = []
    left: list[Left] = []
    first: dict[tuple[Any, ...], IndexSpec] = {}
    for spec in sorted(specs, key=lambda s: s.name):
        twin = first.get(_shape(spec))
        if twin is not None:
            left.append(
                Left(
                    spec.qualified_name,
                    f"it has the same definition as {twin.name}, and the specs refuse "
                    "duplicate indexes (one of the two is probably not needed)",
                )
            )
            continue
        first[_shape(spec)] = spec
        kept.append(spec)
    longer: dict[tuple[Any, ...], IndexSpec] = {}
    for spec in kept:
        columns, method, *_rest, where_ = _shape(spec)
        for k in range(1, len(columns)):
            longer.setdefault((method, where_, columns[:k]), spec)
    out = []
    for spec in kept:
        columns, method, *_rest, where_ = _shape(spec)
        other = longer.get((method, where_, columns))
        if other is not None and not spec.unique and not spec.reason:
            spec = replace(
                spec,
                reason=f"a left prefix of {other.name}, which serves the same lookups "
                "(imported as the database has it)",
            )
        out.append(spec)
    return out, left


# --- building the files ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Draft:
    """The files import would write, with the catalog facts behind them."""

    files: tuple[SpecFile, ...]
    left: tuple[Left, ...]
    unmanaged: Mapping[str, int]
    indexes: Mapping[QualifiedName, _Index]  # the imported ones
    relations: Mapping[QualifiedName, _Relation]  # the relations of the files


def _draft(
    chosen: Sequence[_Relation],
    indexes: Sequence[_Index],
    queries: Mapping[int, str],
    options: ImportOptions,
    source: str,
    at: datetime,
    excluded: Mapping[QualifiedName, str],
) -> _Draft:
    """The files for ``chosen`` (``excluded``: objects a plan showed would not round-trip)."""
    per_table: dict[QualifiedName, list[_Index]] = {}
    for index in indexes:
        per_table.setdefault(index.table, []).append(index)
    unmanaged = {"constraint indexes": 0, "indexes of partitions": 0}
    all_left: list[Left] = []
    files: list[SpecFile] = []
    imported: dict[QualifiedName, _Index] = {}
    relations: dict[QualifiedName, _Relation] = {}
    pending: list[tuple[_Relation, list[IndexSpec], list[Left]]] = []
    for relation in chosen:
        left: list[Left] = []
        if relation.extension is not None:
            left.append(Left(relation.name, f"it belongs to extension {relation.extension}"))
            all_left.extend(left)
            continue
        if relation.kind == "table" and ("." in relation.name.schema or "." in relation.name.name):
            left.append(
                Left(relation.name, "a spec's table: key cannot name a relation with a dot")
            )
            all_left.extend(left)
            continue
        if relation.name.name.endswith(_TEMPORARY_SUFFIXES):
            left.append(Left(relation.name, "it carries one of dbopt's temporary names"))
            all_left.extend(left)
            continue
        if relation.name in excluded:
            all_left.append(Left(relation.name, excluded[relation.name]))
            continue
        specs: list[IndexSpec] = []
        for index in per_table.get(relation.name, []):
            if index.constraint_name is not None:
                unmanaged["constraint indexes"] += 1
                continue
            if index.is_partition:
                unmanaged["indexes of partitions"] += 1  # made by the parent's spec
                continue
            why: str | None = excluded.get(index.name)
            if why is None and index.extension is not None:
                why = f"it belongs to extension {index.extension}"
            elif why is None and index.name.name.endswith(_TEMPORARY_SUFFIXES):
                why = "it carries one of dbopt's temporary names (an interrupted replace?)"
            elif why is None and not index.is_valid:
                why = "it is INVALID (a failed concurrent build?): drop or rebuild it by hand"
            if why is None:
                found = index_spec(index)
                if isinstance(found, str):
                    why = found
                else:
                    specs.append(found)
                    imported[index.name] = index
                    continue
            left.append(Left(index.name, why))
        specs, twins = without_twins(specs)
        for twin in twins:
            imported.pop(twin.name, None)
        left += twins
        if relation.kind == "table" and not specs and not left:
            continue  # nothing but constraint indexes: no file to write
        if relation.kind == "view" and relation.oid not in queries:
            continue  # dropped since the list was read
        pending.append((relation, specs, left))
    # Per folder: a table and a view may share a name (they never share a file).
    names = {
        **file_names(r.name for r, _s, _l in pending if r.kind == "table"),
        **file_names(r.name for r, _s, _l in pending if r.kind == "view"),
    }
    for relation, specs, left in pending:
        header = file_header(source, at, left)
        folder = options.view_dir if relation.kind == "view" else options.index_dir
        path = folder / names[relation.name]
        kept: dict[str, Any] = {}
        reasons: dict[str, str] = {}
        if options.force and path.is_file():
            kept, reasons = kept_from(path, relation.kind)
            specs = [replace(s, reason=reasons.get(s.name, s.reason)) for s in specs]
        kept_words = list(kept) + (["reasons"] if any(s.name in reasons for s in specs) else [])
        if relation.kind == "view":
            text = view_text(
                relation.name, queries[relation.oid], specs, relation.comment, header, kept
            )
        else:
            text = table_text(relation.name, specs, header, kept)
        files.append(
            SpecFile(
                path,
                relation.name,
                relation.kind,
                text,
                tuple(s.qualified_name for s in specs),
                tuple(left),
                tuple(kept_words),
            )
        )
        relations[relation.name] = relation
        all_left.extend(left)
    return _Draft(tuple(files), tuple(all_left), unmanaged, imported, relations)


def _round_trip(
    conn: psycopg.Connection[Any], files: Sequence[SpecFile], target: Target, history: History
) -> tuple[dict[QualifiedName, str], bool]:
    """Load ``files`` with dbopt's validator and plan them against the database as `dbopt
    plan` would: what would not plan as unchanged, and why; False when the plan could not
    compare (a standby)."""
    from dbopt.errors import SpecError
    from dbopt.plans import build_plan
    from dbopt.spec import load_specs

    if not files:
        return {}, True
    with tempfile.TemporaryDirectory(prefix="dbopt-import-") as tmp:
        root = Path(tmp)
        for item in files:
            folder = root / ("views" if item.kind == "view" else "indexes")
            folder.mkdir(exist_ok=True)
            (folder / item.path.name).write_text(item.text, "utf-8")
        try:
            specs = load_specs([(root / "indexes", False), (root / "views", False)])
        except SpecError as exc:
            raise SpecError(
                "the spec files import would write are refused by dbopt's validator (what it "
                "keeps of a file --force overwrites, or a bug in dbopt); nothing was written",
                exc.problems,
            ) from None
    result = build_plan(conn, specs, target.settings, history)
    ours = {i for f in files for i in f.indexes} | {f.relation for f in files if f.kind == "view"}
    drifted: dict[QualifiedName, str] = {}
    compared = True
    for action in result.actions:
        if action.name not in ours:
            continue
        if action.kind == ActionKind.SKIP:
            compared = compared and action.compared
            continue
        drifted[action.name] = (
            f"dbopt would plan a {action.kind.value} of it: PostgreSQL reads its spec back as "
            f"{action.desired!r}, the database has {action.current!r}"
        )
    return drifted, compared


# --- files on disk ---------------------------------------------------------------------------


def _conflicts(files: Sequence[SpecFile], options: ImportOptions) -> None:
    """Refuse (InputError, nothing written) to overwrite a spec file without ``force``, or to
    write a second file for a relation another spec file already declares."""
    existing = [str(f.path) for f in files if f.path.exists()]
    if existing and not options.force:
        raise InputError(
            "these spec files exist already: "
            + ", ".join(existing)
            + "; nothing was written (--force overwrites them)"
        )
    ours = {f.path.resolve() for f in files}
    declared = {f.relation: f for f in files}
    clashes = []
    for folder in {options.index_dir, options.view_dir}:
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.suffix not in (".yaml", ".yml") or path.resolve() in ours:
                continue
            name = declares(path)
            if name is not None and name in declared:
                clashes.append(f"{path} already declares {name}")
    if clashes:
        raise InputError(
            "; ".join(clashes)
            + ": import would write a second spec for it; nothing was written (import the "
            "other tables with --table, or remove that file)"
        )


# --- adopting --------------------------------------------------------------------------------


def _adoptable(draft: _Draft, queries: Mapping[int, str]) -> list[AdoptedObject]:
    """What the history must say of each imported object: the facts an apply records."""
    objects = []
    for item in draft.files:
        relation = draft.relations[item.relation]
        if item.kind == "view":
            query = queries[relation.oid]
            objects.append(
                AdoptedObject("view", relation.name, relation.name, relation.oid, query, query)
            )
        for name in item.indexes:
            index = draft.indexes[name]
            objects.append(
                AdoptedObject(
                    "index",
                    index.name,
                    index.table,
                    index.oid,
                    canonical(index.definition),
                    index.definition,
                )
            )
    return objects


def _identity(obj: AdoptedObject) -> Identity:
    if obj.object_type == "view":
        return Identity("view", obj.name, oid=obj.oid, definition=obj.definition)
    return Identity(
        "index", obj.name, oid=obj.oid, table=obj.table, definition=obj.definition, invalid=False
    )


# --- the use case ----------------------------------------------------------------------------


def import_database(
    target: Target,
    history: History,
    options: ImportOptions,
    *,
    confirm: Callable[[str], bool] | None = None,
    created: Callable[[str], None] | None = None,
) -> ImportOutcome:
    """Write spec files for what the database has (and, with ``adopt``, record it as
    dbopt's). Every refusal comes before the first file is written: unknown tables, files
    that exist (without ``force``), and for ``adopt`` a standby, another run, a history the
    role may not write, a relation the role does not own, no confirmation."""
    settings = unbounded(target.settings)
    with connect(target.dsn, application_name="dbopt-import", settings=settings) as conn:
        if options.adopt:
            require_primary(conn, "import --adopt")
            take_run_lock(
                conn, wait=options.locking.wait, wait_timeout_ms=options.locking.wait_timeout_ms
            )
            history.require_grants(conn, "write")
            history.writable(conn)
        source = where(conn) + (f" (environment {target.env})" if target.env else "")
        at = datetime.now(UTC)
        chosen = choose(_relations(conn, history), options.tables)
        oids = [r.oid for r in chosen]
        indexes = _indexes(conn, oids)
        queries = _view_queries(conn, [r.oid for r in chosen if r.relkind == "m"])
        excluded: dict[QualifiedName, str] = {}
        compared = True
        for _attempt in range(3):
            draft = _draft(chosen, indexes, queries, options, source, at, excluded)
            drifted, compared = _round_trip(conn, draft.files, target, history)
            if not drifted:
                break
            excluded.update(drifted)
        else:  # pragma: no cover - each pass leaves out what drifted; none is left after two
            raise DboptError("dbopt import could not write specs that plan as unchanged")
        _conflicts(draft.files, options)
        objects: list[AdoptedObject] = []
        already: list[QualifiedName] = []
        if options.adopt:
            objects, already = _to_adopt(conn, history, draft, queries)
            _confirm_adoption(objects, target, source, options, confirm)
        for item in draft.files:
            write_atomically(item.path, item.text)
        run_id = None
        notes: list[str] = []
        if objects:
            history.ensure(conn, created=created)
            run_id = _record(conn, history, objects, target.env)
            credible = {o.oid for o in history.owned(conn)}
            notes += [
                f"{o.name}: the history's owner is not a member of its owner, so dbopt will not "
                "count it as its own (see `dbopt init`)"
                for o in objects
                if o.oid not in credible
            ]
    return ImportOutcome(
        where=source,
        files=draft.files,
        left=draft.left,
        unmanaged={k: v for k, v in draft.unmanaged.items() if v},
        compared=compared,
        adopted=tuple(o.name for o in objects),
        already_owned=tuple(already),
        run_id=run_id,
        notes=tuple(notes),
    )


def _to_adopt(
    conn: psycopg.Connection[Any],
    history: History,
    draft: _Draft,
    queries: Mapping[int, str],
) -> tuple[list[AdoptedObject], list[QualifiedName]]:
    """What to record as dbopt's (and what is dbopt's already); refused when the role does
    not own a relation of them (dbopt could never drop or replace it there)."""
    owned = {o.oid for o in history.owned(conn)}
    found = _adoptable(draft, queries)
    objects = [o for o in found if o.oid not in owned]
    not_owned = sorted({str(o.table) for o in objects if not draft.relations[_file_of(o)].owned})
    if not_owned:
        raise UnsafeActionError(
            "import --adopt refused: the current role does not own "
            + ", ".join(not_owned)
            + ": dbopt could never drop or replace what it adopted there; run as the owner "
            "(or a member of it), or import without --adopt; nothing was written"
        )
    return objects, [o.name for o in found if o.oid in owned]


def _confirm_adoption(
    objects: Sequence[AdoptedObject],
    target: Target,
    source: str,
    options: ImportOptions,
    confirm: Callable[[str], bool] | None,
) -> None:
    """Ask, in an environment with ``confirm: true`` (unless confirmed on the command line)."""
    if not objects or not target.settings.confirm or options.yes:
        return
    question = (
        f"import --adopt: hand {len(objects)} existing object(s) to dbopt on {target.env} "
        f"({source})"
    )
    if confirm is None or not confirm(question):
        raise UnsafeActionError("not confirmed; nothing was written")


def _file_of(obj: AdoptedObject) -> QualifiedName:
    """The relation whose file holds ``obj`` (a view's indexes are in the view's file)."""
    return obj.name if obj.object_type == "view" else obj.table


def _record(
    conn: psycopg.Connection[Any],
    history: History,
    objects: Sequence[AdoptedObject],
    environment: str | None,
) -> int:
    """Check every object is still what was read (OID, table, definition, valid) and record
    them, in one transaction: all adopted, or none."""
    with conn.transaction():
        for obj in objects:
            try:
                check(conn, _identity(obj))
            except NotOursError as exc:
                raise UnsafeActionError(
                    f"import --adopt: {exc} since import read it; nothing was adopted (the "
                    "spec files were written: run import --adopt --force again)"
                ) from None
        return history.record_adoption(conn, objects, environment)


__all__ = [
    "ImportOptions",
    "ImportOutcome",
    "Left",
    "SpecFile",
    "import_database",
    "index_spec",
    "without_twins",
]
