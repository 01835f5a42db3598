"""What is there of dbopt's history in a database, its layout version, and what the current
role may do with it (:class:`HistoryFacts`): one query's answer, worded into the grants or the
``dbopt init`` a role needs."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

#: The history's layout: 1 = dbopt 0.1 (names only), 2 = objects' OIDs and facts, 3 = a
#: version stamp (``schema_version``) and runs that stop before their end ('stopped'). (The
#: read indexes, ``history_indexes.sql``, change no layout: every dbopt reads and writes a
#: history with or without them.)
HISTORY_VERSION = 3

#: The history's read indexes (created by ``history_indexes.sql``).
READ_INDEXES = ("changes_replaced", "changes_running", "runs_running")

#: Privileges in the words of a GRANT statement, per kind of object.
_ON = {"schema": "SCHEMA", "table": "TABLE", "sequence": "SEQUENCE"}


@dataclass(frozen=True, slots=True)
class HistoryObject:
    """One object of the history (its schema, a table, a sequence) and the current role."""

    kind: str  # schema, table or sequence
    name: str | None  # None for the schema itself
    present: bool
    owned: bool  # the role is (a member of) its owner
    owner: str | None
    missing_read: tuple[str, ...]  # privileges plan/status/verify need and the role lacks
    missing_write: tuple[str, ...]  # privileges a run needs and the role lacks


@dataclass(frozen=True, slots=True)
class HistoryFacts:
    """What is there of dbopt's history, its layout version, and what the role may do."""

    schema: str
    role: str
    database: str
    may_create_schema: bool  # CREATE on the database
    objects: tuple[HistoryObject, ...]
    version: int | None  # None: no history, or not readable by the role

    @property
    def exists(self) -> bool:
        return self.object("changes").present

    def object(self, name: str | None) -> HistoryObject:
        return next(o for o in self.objects if o.name == name)

    def missing(self, mode: str) -> list[tuple[HistoryObject, tuple[str, ...]]]:
        """The objects the role lacks privileges on for ``mode`` (read or write), and which."""
        out = []
        for o in self.objects:
            lacking = o.missing_read if mode == "read" else o.missing_write
            if o.present and lacking:
                out.append((o, lacking))
        return out

    def access_problem(self, mode: str) -> str:
        """One line: the grants the role lacks to read (or write) the history."""
        groups: dict[tuple[str, tuple[str, ...]], list[sql.Identifier]] = {}
        order = {"schema": 0, "table": 1, "sequence": 2}
        for o, privs in sorted(self.missing(mode), key=lambda m: order[m[0].kind]):
            parts = (self.schema,) if o.name is None else (self.schema, o.name)
            groups.setdefault((o.kind, privs), []).append(sql.Identifier(*parts))
        lacking = "; ".join(
            sql.SQL("GRANT {} ON {} {} TO {}")
            .format(
                sql.SQL(", ").join(sql.SQL(p) for p in privs),  # privilege keywords
                sql.SQL(_ON[kind]),
                sql.SQL(", ").join(names),
                sql.Identifier(self.role),
            )
            .as_string()
            for (kind, privs), names in groups.items()
        )
        verb = "read" if mode == "read" else "record runs in"
        return (
            f"role {self.role} may not {verb} dbopt's history (schema {self.schema}); "
            f"missing: {lacking} (`dbopt init` prints every grant)"
        )

    def setup_problem(self) -> str | None:
        """Why this role cannot create (or upgrade) the history itself, or None."""
        schema = self.object(None)
        if not self.exists:
            if schema.present and not schema.owned:
                return (
                    f"there is no dbopt history in schema {self.schema} (owned by "
                    f"{schema.owner}) and role {self.role} may not create it: run "
                    f"`dbopt init` once as {schema.owner}"
                )
            if not schema.present and not self.may_create_schema:
                return (
                    f"there is no dbopt history (schema {self.schema}) in database "
                    f"{self.database} and role {self.role} may not create schemas there: run "
                    "`dbopt init` once as a role that may (the owner of the application's "
                    "tables, with CREATE on the database)"
                )
            return None
        if self.version is None:
            return self.access_problem("read")
        if self.version > HISTORY_VERSION:
            return (
                f"dbopt's history in schema {self.schema} has layout {self.version}, written "
                f"by a newer dbopt; this one knows layout {HISTORY_VERSION}: upgrade dbopt"
            )
        others = sorted({o.owner or "" for o in self.objects if o.present and not o.owned})
        if others:
            return (
                f"dbopt's history in schema {self.schema} has layout {self.version}; this "
                f"dbopt records layout {HISTORY_VERSION}: run `dbopt init` once as "
                f"{', '.join(others)} (its owner) to upgrade it"
            )
        return None

    def install_words(self) -> str:
        """What :meth:`History.install` did, in words."""
        if not self.exists:
            return f"created dbopt's history in schema {self.schema} (layout {HISTORY_VERSION})"
        return (
            f"upgraded dbopt's history in schema {self.schema} from layout {self.version} "
            f"to {HISTORY_VERSION}"
        )
