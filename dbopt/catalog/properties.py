"""What an index or materialized view carries besides its definition.

A replace builds a new object aside and swaps names. Anything that other objects, roles or
subsystems attach to the old object's OID — a comment, grants, an owner, CLUSTER ON, REPLICA
IDENTITY, statistics targets, storage settings, a tablespace, foreign keys, functions using
its row type — would silently stay behind with the old one. For each property this module
either carries it over (the statements run inside the swap's transaction, so the new object
has them the instant it gets the name) or refuses the replace before anything is built,
naming the property. The same facts say which drops would fail (a dependent object).

Read for the few objects a plan replaces or drops, in one query per kind.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from dbopt.catalog import catalog_sql
from dbopt.model import IndexSpec, QualifiedName


@dataclass(frozen=True, slots=True)
class Grant:
    """One privilege of one grantee (on the relation, or on one of its columns)."""

    grantee: str
    privilege: str
    grantable: bool
    grantor: str
    column: str | None = None


@dataclass(frozen=True, slots=True)
class IndexProperties:
    """What an index carries besides its definition."""

    oid: int
    comment: str | None
    tablespace: str | None
    clustered: bool
    replica_identity: bool
    has_expressions: bool
    not_null_columns: tuple[str, ...]  # of its table
    stat_targets: tuple[tuple[int, int], ...]  # (column position, target)
    extension: str | None
    security_labels: int
    partition_of: str | None
    dependents: tuple[str, ...]

    def blockers(self) -> list[str]:
        """What would make dropping this index fail or break something: never dropped then."""
        out = [f"{d} depends on it" for d in self.dependents]
        if self.extension:
            out.append(f"it belongs to extension {self.extension}")
        if self.partition_of:
            out.append(f"it is a partition of index {self.partition_of}")
        return out

    def drop_blockers(self) -> list[str]:
        """What dropping this index (prune, rollback) would take away from its table beyond
        the index: refused then, with what to do first."""
        out = self.blockers()
        if self.replica_identity:
            out.append(
                "it is its table's REPLICA IDENTITY index (logical replication and UPDATE or "
                "DELETE on a published table need it): ALTER TABLE ... REPLICA IDENTITY "
                "another index or DEFAULT first"
            )
        if self.clustered:
            out.append(
                "its table is CLUSTERed on it (a plain CLUSTER of the table would fail): "
                "ALTER TABLE ... SET WITHOUT CLUSTER first"
            )
        return out

    def refusals(self, new: IndexSpec, old: IndexSpec | None = None) -> list[str]:
        """Why a replace by ``new`` cannot keep what this index carries (empty: it can);
        ``old`` is this index's own definition as a spec, when it could be read."""
        out = self.blockers()
        if self.security_labels:
            out.append("it has security labels, which dbopt does not carry over")
        if self.replica_identity:
            problem = _replica_identity_problem(new, self.not_null_columns)
            if problem:
                out.append(f"it is its table's REPLICA IDENTITY index and {problem}")
        if self.clustered:
            if new.where is not None:
                out.append("the table is CLUSTERed on it and the new definition is partial")
            elif new.method not in _CLUSTERABLE:
                out.append(
                    f"the table is CLUSTERed on it and a {new.method} index cannot be clustered"
                )
        for position, _target in self.stat_targets:
            column = new.columns[position - 1] if position <= len(new.columns) else None
            before = old.columns[position - 1] if old and position <= len(old.columns) else None
            if column is None or column.expr is None:
                out.append(
                    f"expression {position} has a statistics target, and the new definition "
                    "has no expression there"
                )
            elif before is not None and _same(before.expr) != _same(column.expr):
                out.append(
                    f"expression {position} ({before.expr}) has a statistics target, and the "
                    f"new definition has another expression there ({column.expr})"
                )
        return out

    def carry(
        self, table: QualifiedName, name: QualifiedName, *, on_view: bool = False
    ) -> list[sql.Composed]:
        """Statements giving the index now called ``name`` what this one carried (on a view,
        CLUSTER ON is the view's to carry)."""
        out: list[sql.Composed] = []
        if self.comment is not None:
            out.append(
                sql.SQL("COMMENT ON INDEX {} IS {}").format(name.ident(), sql.Literal(self.comment))
            )
        for position, target in self.stat_targets:
            out.append(
                sql.SQL("ALTER INDEX {} ALTER COLUMN {} SET STATISTICS {}").format(
                    name.ident(), sql.Literal(position), sql.Literal(target)
                )
            )
        if self.clustered and not on_view:
            out.append(
                sql.SQL("ALTER TABLE {} CLUSTER ON {}").format(
                    table.ident(), sql.Identifier(name.name)
                )
            )
        if self.replica_identity:
            out.append(
                sql.SQL("ALTER TABLE {} REPLICA IDENTITY USING INDEX {}").format(
                    table.ident(), sql.Identifier(name.name)
                )
            )
        return out

    def carried(self) -> list[str]:
        """What :meth:`carry` keeps, in words (for the plan's reason)."""
        out = []
        if self.comment is not None:
            out.append("comment")
        if self.stat_targets:
            out.append("statistics targets")
        if self.clustered:
            out.append("CLUSTER ON")
        if self.replica_identity:
            out.append("REPLICA IDENTITY")
        if self.tablespace:
            out.append(f"tablespace {self.tablespace}")
        return out


def _same(expression: str | None) -> str:
    """An expression as compared: the parser writes ``AT TIME ZONE`` as
    ``pg_catalog.timezone(...)`` where the server prints ``timezone(...)``."""
    return (expression or "").replace("pg_catalog.", "")


#: Index methods a table can be CLUSTERed on (pg_am.amclusterable).
_CLUSTERABLE = ("btree", "gist")


def _replica_identity_problem(new: IndexSpec, not_null: tuple[str, ...]) -> str | None:
    if not new.unique:
        return "the new definition is not unique"
    if new.where is not None:
        return "the new definition is partial"
    if not new.plain_columns:
        return "the new definition has expressions"
    nullable = [c.name for c in new.columns if c.name not in not_null]
    if nullable:
        return f"the new definition has nullable columns ({', '.join(map(str, nullable))})"
    return None


@dataclass(frozen=True, slots=True)
class ViewProperties:
    """What a materialized view carries besides its query."""

    oid: int
    owner: str
    current_role: str
    comment: str | None
    tablespace: str | None
    reloptions: tuple[tuple[str, str], ...]
    populated: bool
    grants: tuple[Grant, ...]
    column_comments: tuple[tuple[str, str], ...]
    stat_targets: tuple[tuple[str, int], ...]
    storage: tuple[tuple[str, str], ...]
    clustered_index: str | None
    default_grantees: tuple[str, ...]
    statistics: tuple[str, ...]
    extension: str | None
    security_labels: int
    dependents: tuple[str, ...]

    def blockers(self) -> list[str]:
        """What would make replacing or dropping this view fail or break something."""
        out = [f"{d} depends on it" for d in self.dependents]
        if self.extension:
            out.append(f"it belongs to extension {self.extension}")
        if self.statistics:
            out.append(
                "extended statistics "
                + ", ".join(self.statistics)
                + " are defined on it (dbopt does not recreate them)"
            )
        return out

    def refusals(self, new_columns: Collection[str] | None) -> list[str]:
        """Why a replace cannot keep what this view carries (``new_columns``: its columns)."""
        out = self.blockers()
        if self.security_labels:
            out.append("it has security labels, which dbopt does not carry over")
        for grant in self.grants:
            if grant.grantor != self.owner and grant.grantee != self.owner:
                out.append(
                    f"{grant.privilege} to {grant.grantee} was granted by {grant.grantor}, not "
                    "by its owner: dbopt cannot grant it again in that role's name"
                )
        owner_privileges = {g.privilege for g in self.grants if g.grantee == self.owner}
        if self.grants and not owner_privileges >= _OWNER_PRIVILEGES:
            out.append("its owner's own privileges were revoked, which dbopt does not carry over")
        if new_columns is not None:
            wanted = set(new_columns)
            for what, column in self._column_properties():
                if column not in wanted:
                    out.append(f"column {column} has {what}, but the new query has no such column")
        return out

    def _column_properties(self) -> list[tuple[str, str]]:
        out = [("a comment", c) for c, _ in self.column_comments]
        out += [("a statistics target", c) for c, _ in self.stat_targets]
        out += [("a storage setting", c) for c, _ in self.storage]
        out += [(f"a {g.privilege} grant", g.column) for g in self.grants if g.column]
        return out

    def build_options(self) -> tuple[tuple[tuple[str, str], ...], str | None]:
        """Storage parameters and tablespace the new view is created with."""
        return self.reloptions, self.tablespace

    def carry_before_swap(self, new: QualifiedName) -> list[sql.Composed]:
        """Statements on the new view (still under its temporary name) before the swap."""
        out: list[sql.Composed] = []
        if self.owner != self.current_role:
            out.append(
                sql.SQL("ALTER MATERIALIZED VIEW {} OWNER TO {}").format(
                    new.ident(), sql.Identifier(self.owner)
                )
            )
        return out

    def carry(self, name: QualifiedName) -> list[sql.Composed]:
        """Statements giving the view now called ``name`` what this one carried."""
        out: list[sql.Composed] = []
        # Default privileges gave the new view grants the old one may not have had (the
        # DBA revoked them): the new view gets exactly the old one's.
        for grantee in self.default_grantees:
            if grantee == self.owner:
                continue
            who = sql.SQL("PUBLIC") if grantee == "PUBLIC" else sql.Identifier(grantee)
            out.append(sql.SQL("REVOKE ALL ON {} FROM {}").format(name.ident(), who))
        for grant in self.grants:
            if grant.grantee == self.owner:
                continue
            out.append(_grant(grant, name))
        if self.comment is not None:
            out.append(
                sql.SQL("COMMENT ON MATERIALIZED VIEW {} IS {}").format(
                    name.ident(), sql.Literal(self.comment)
                )
            )
        for column, text in self.column_comments:
            out.append(
                sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(
                    name.ident(), sql.Identifier(column), sql.Literal(text)
                )
            )
        for column, target in self.stat_targets:
            out.append(
                sql.SQL("ALTER MATERIALIZED VIEW {} ALTER COLUMN {} SET STATISTICS {}").format(
                    name.ident(), sql.Identifier(column), sql.Literal(target)
                )
            )
        for column, storage in self.storage:
            out.append(
                sql.SQL("ALTER MATERIALIZED VIEW {} ALTER COLUMN {} SET STORAGE {}").format(
                    name.ident(), sql.Identifier(column), sql.SQL(_STORAGE[storage])
                )
            )
        if self.clustered_index is not None:
            out.append(
                sql.SQL("ALTER MATERIALIZED VIEW {} CLUSTER ON {}").format(
                    name.ident(), sql.Identifier(self.clustered_index)
                )
            )
        return out

    def carried(self) -> list[str]:
        """What is carried over, in words (for the plan's reason)."""
        out = []
        if self.owner != self.current_role:
            out.append(f"owner {self.owner}")
        if any(g.grantee != self.owner for g in self.grants):
            out.append("grants")
        if self.comment is not None or self.column_comments:
            out.append("comments")
        if self.reloptions:
            out.append("storage parameters")
        if self.tablespace:
            out.append(f"tablespace {self.tablespace}")
        if self.stat_targets or self.storage:
            out.append("column settings")
        if self.clustered_index:
            out.append("CLUSTER ON")
        return out


_OWNER_PRIVILEGES = {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"}
_STORAGE = {"p": "PLAIN", "e": "EXTERNAL", "m": "MAIN", "x": "EXTENDED"}
_PRIVILEGES = _OWNER_PRIVILEGES | {"MAINTAIN"}


def _grant(grant: Grant, on: QualifiedName) -> sql.Composed:
    if grant.privilege not in _PRIVILEGES:  # from aclexplode: never user text, but check
        raise ValueError(f"unexpected privilege {grant.privilege!r}")
    privilege: sql.Composable = sql.SQL(grant.privilege)
    if grant.column is not None:
        privilege = sql.SQL("{} ({})").format(privilege, sql.Identifier(grant.column))
    grantee = sql.SQL("PUBLIC") if grant.grantee == "PUBLIC" else sql.Identifier(grant.grantee)
    return sql.SQL("GRANT {} ON {} TO {}{}").format(
        privilege,
        on.ident(),
        grantee,
        sql.SQL(" WITH GRANT OPTION" if grant.grantable else ""),
    )


@dataclass(frozen=True, slots=True)
class Properties:
    """Properties of the indexes and views a plan replaces or drops, by OID."""

    indexes: Mapping[int, IndexProperties]
    views: Mapping[int, ViewProperties]


def _pairs(values: Sequence[str]) -> tuple[tuple[int, int], ...]:
    return tuple((int(a), int(b)) for a, _, b in (v.partition(":") for v in values))


def _grants(raw: Any) -> tuple[Grant, ...]:
    items = json.loads(raw) if isinstance(raw, str) else raw
    return tuple(
        Grant(i["grantee"], i["privilege"], bool(i["grantable"]), i["grantor"], i["column"])
        for i in items
    )


def _json(raw: Any) -> Any:
    return json.loads(raw) if isinstance(raw, str) else raw


def read_properties(
    conn: psycopg.Connection[Any], index_oids: Collection[int], view_oids: Collection[int]
) -> Properties:
    """The properties of these indexes and views (at most one query per kind)."""
    indexes: dict[int, IndexProperties] = {}
    views: dict[int, ViewProperties] = {}
    with conn.cursor(row_factory=dict_row) as cur:
        if index_oids:
            cur.execute(catalog_sql("index_properties"), {"oids": sorted(index_oids)})
            for r in cur.fetchall():
                indexes[int(r["oid"])] = IndexProperties(
                    oid=int(r["oid"]),
                    comment=r["comment"],
                    tablespace=r["tablespace"],
                    clustered=bool(r["clustered"]),
                    replica_identity=bool(r["replica_identity"]),
                    has_expressions=bool(r["has_expressions"]),
                    not_null_columns=tuple(r["not_null_columns"]),
                    stat_targets=_pairs(r["stat_targets"]),
                    extension=r["extension"],
                    security_labels=int(r["security_labels"]),
                    partition_of=r["partition_of"],
                    dependents=tuple(r["dependents"]),
                )
        if view_oids:
            cur.execute(catalog_sql("matview_properties"), {"oids": sorted(view_oids)})
            for r in cur.fetchall():
                grants = _grants(r["grants"]) + _grants(r["column_grants"])
                views[int(r["oid"])] = ViewProperties(
                    oid=int(r["oid"]),
                    owner=r["owner"],
                    current_role=r["current_role"],
                    comment=r["comment"],
                    tablespace=r["tablespace"],
                    reloptions=tuple(
                        (k, v) for k, _, v in (o.partition("=") for o in r["reloptions"])
                    ),
                    populated=bool(r["populated"]),
                    grants=grants,
                    column_comments=tuple((c, t) for c, t in _json(r["column_comments"])),
                    stat_targets=tuple((c, int(t)) for c, t in _json(r["stat_targets"])),
                    storage=tuple((c, s) for c, s in _json(r["storage"])),
                    clustered_index=r["clustered_index"],
                    default_grantees=tuple(r["default_grantees"]),
                    statistics=tuple(r["statistics"]),
                    extension=r["extension"],
                    security_labels=int(r["security_labels"]),
                    dependents=tuple(r["dependents"]),
                )
    return Properties(indexes, views)
