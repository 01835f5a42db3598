"""Queries that change nothing: what a query can call, checked before it is sent to a server.

``dbopt verify`` runs budget queries on production. A READ ONLY transaction that is rolled
back stops table writes and ``nextval``, but not what PostgreSQL does outside transactions:
``pg_stat_reset()`` resets statistics, ``pg_terminate_backend()`` ends another session, a
session advisory lock outlives the rollback, ``set_config()`` changes a setting,
``pg_switch_wal()`` or a replication slot changes the server, ``txid_current()`` assigns a
transaction ID. A user-defined function may do any of these, and so may what a query reaches
without naming a function: an operator (it runs a function), a view (it runs its query), a
row-level security policy, a domain's CHECK, a cast, an aggregate's support functions, a
foreign table (it runs a query on another server). So a query is refused unless everything
it can reach is known to change nothing:

* **Without a database** (:func:`static_refusals`, used by ``dbopt validate``): the query is
  parsed by the PostgreSQL parser and every function it calls, in any clause, CTE or subquery,
  qualified or quoted, is looked up in :data:`DENIED` by its name (case-insensitively, whatever
  its schema). That catches the built-ins and extension functions known to change something.
* **With a database** (:class:`CallGraph`, used by ``dbopt verify`` before the first query
  runs and by ``validate --dsn``): the catalog is read once, and a function is *unsafe* when
  it is denied, a VOLATILE built-in not in :data:`HARMLESS_VOLATILE`, any VOLATILE
  user-defined function, a user-defined function in a language whose body dbopt cannot read
  (anything but sql, plpgsql, and C/internal, which only superusers can create and whose
  declared volatility is trusted), or a sql/plpgsql function whose body runs dynamic SQL
  (``EXECUTE``). Unsafety then spreads along everything that runs something else: operators to
  their functions, aggregates to their support functions, views to what their query uses,
  tables with row-level security to what their policies use, inheritance parents to their
  children (a foreign table is unsafe), domains to their CHECK constraints, casts to their
  functions, SQL-standard bodies and parameter defaults to what the server recorded for them
  (pg_depend), and sql/plpgsql bodies to every function they call, every view or type they
  mention and every user-defined operator they contain (names in bodies match in any
  schema). Each name in the query is resolved against the session's search path (or the
  schema it is qualified with), including ``t.f``, which PostgreSQL reads as ``f(t)``, and
  the comparison operators sorting, grouping and IN use unnamed; if *any* object of that
  name is unsafe, overloads included, the query is refused, with the chain that makes it
  unsafe. An implicit or assignment cast through an unsafe function can apply without being
  named, so it refuses every query.

Limits, stated so nobody relies on more: bodies are read as text, so a body that builds a
function name from pieces is not seen (plpgsql's dynamic SQL is refused outright for that
reason, and so are built-ins that run SQL given as text: :data:`DENIED`); the text match is
coarse the other way too (a name in a comment counts). C functions, operator classes, type
input/output functions and foreign-data wrappers are superuser-installed and trusted as
declared; a foreign table itself is refused. Built-in views and functions are trusted as the
server declares them.

Executing a query is still observed: it counts in pg_stat_* scan counters and in
pg_stat_statements like any query, may set hint bits or prune a page as any read does, and
holds ACCESS SHARE locks until its transaction ends. That is the server watching a read, not
the read changing anything, and verify cannot measure a query without running it.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row

from dbopt.sqltext import query_tree

#: OIDs below this were assigned by initdb: built-in objects (FirstNormalObjectId).
FIRST_USER_OID = 16384

_STATISTICS = "resets the server's statistics"
_SESSIONS = "interrupts or ends another session"
_LOCKS = (
    "takes or releases an advisory lock (a session lock outlives the rolled-back transaction, "
    "and any lock can block the application)"
)
_SETTINGS = "changes a setting or the server's configuration"
_WAL = "writes to the WAL or starts/stops a backup, which no rollback undoes"
_REPLICATION = "creates, drops, advances or consumes a replication slot or origin"
_STANDBY = "promotes a standby or pauses/resumes its replay"
_SEQUENCES = "advances a sequence, which no rollback undoes"
_XID = "assigns a transaction ID"
_FILES = "writes large objects or server files"
_SQL_TEXT = "runs SQL given as text, which dbopt cannot check"
_ELSEWHERE = "runs SQL in another session, outside verify's read-only transaction"
_HYPOPG = "changes HypoPG's hypothetical indexes"
_CACHE = "changes the buffer cache or starts a background worker"
_LOG = "makes a backend write to the server log"
_INTERNALS = "changes the server's internal state"
_PLANNER = "writes planner statistics"
_PAGES = "changes data pages or their visibility map directly"


def _words(text: str) -> list[str]:
    """The names in a space-separated list (long lists of names read better as text)."""
    return text.split()


#: Functions refused by name, in any schema, with why: what no READ ONLY transaction or
#: rollback stops. Built-ins of PostgreSQL 13-18 and widespread extensions.
DENIED: Mapping[str, str] = MappingProxyType(
    {
        name: reason
        for reason, names in (
            (
                _STATISTICS,
                "pg_stat_reset pg_stat_reset_shared pg_stat_reset_single_table_counters "
                "pg_stat_reset_single_function_counters pg_stat_reset_slru "
                "pg_stat_reset_replication_slot pg_stat_reset_subscription_stats "
                "pg_stat_reset_backend_stats pg_stat_statements_reset pg_stat_kcache_reset "
                "pg_qualstats_reset pg_stat_monitor_reset pg_wait_sampling_reset_profile",
            ),
            (_SESSIONS, "pg_terminate_backend pg_cancel_backend"),
            (
                _LOCKS,
                "pg_advisory_lock pg_advisory_lock_shared pg_try_advisory_lock "
                "pg_try_advisory_lock_shared pg_advisory_xact_lock pg_advisory_xact_lock_shared "
                "pg_try_advisory_xact_lock pg_try_advisory_xact_lock_shared pg_advisory_unlock "
                "pg_advisory_unlock_shared pg_advisory_unlock_all",
            ),
            (_SETTINGS, "set_config pg_reload_conf pg_rotate_logfile pg_rotate_logfile_old"),
            (
                _WAL,
                "pg_switch_wal pg_switch_xlog pg_create_restore_point pg_logical_emit_message "
                "pg_backup_start pg_backup_stop pg_start_backup pg_stop_backup",
            ),
            (
                _REPLICATION,
                "pg_create_physical_replication_slot pg_create_logical_replication_slot "
                "pg_copy_physical_replication_slot pg_copy_logical_replication_slot "
                "pg_drop_replication_slot pg_replication_slot_advance "
                "pg_logical_slot_get_changes pg_logical_slot_get_binary_changes "
                "pg_sync_replication_slots pg_replication_origin_create "
                "pg_replication_origin_drop pg_replication_origin_advance "
                "pg_replication_origin_session_setup pg_replication_origin_session_reset "
                "pg_replication_origin_xact_setup pg_replication_origin_xact_reset",
            ),
            (
                _STANDBY,
                "pg_promote pg_wal_replay_pause pg_wal_replay_resume pg_xlog_replay_pause "
                "pg_xlog_replay_resume",
            ),
            (_SEQUENCES, "nextval setval"),
            (_XID, "txid_current pg_current_xact_id"),
            (
                _FILES,
                "lo_import lo_export lo_create lo_creat lo_unlink lo_from_bytea lo_put "
                "lo_truncate lo_truncate64 lowrite pg_file_write pg_file_rename pg_file_unlink "
                "pg_file_sync",
            ),
            (
                _SQL_TEXT,
                "query_to_xml query_to_xmlschema query_to_xml_and_xmlschema cursor_to_xml "
                "cursor_to_xmlschema table_to_xml table_to_xmlschema table_to_xml_and_xmlschema "
                "schema_to_xml schema_to_xmlschema schema_to_xml_and_xmlschema database_to_xml "
                "database_to_xmlschema database_to_xml_and_xmlschema ts_stat ts_rewrite",
            ),
            (_ELSEWHERE, "pg_background_launch pg_background_result pg_background_detach"),
            (
                _HYPOPG,
                "hypopg_create_index hypopg_drop_index hypopg_reset hypopg_reset_index "
                "hypopg_hide_index hypopg_unhide_index hypopg_unhide_all_indexes",
            ),
            (
                _CACHE,
                "pg_prewarm autoprewarm_start_worker autoprewarm_dump_now pg_buffercache_evict "
                "pg_buffercache_evict_all pg_buffercache_evict_relation",
            ),
            (_LOG, "pg_log_backend_memory_contexts"),
            (_INTERNALS, "pg_import_system_collations pg_nextoid pg_stop_making_pinned_objects"),
            (
                _PLANNER,
                "pg_restore_relation_stats pg_restore_attribute_stats pg_clear_relation_stats "
                "pg_clear_attribute_stats",
            ),
            (_PAGES, "heap_force_kill heap_force_freeze pg_truncate_visibility_map"),
        )
        for name in _words(names)
    }
)

#: Name prefixes refused the same way: whole families of functions.
DENIED_PREFIXES: tuple[tuple[str, str], ...] = (
    ("binary_upgrade_", _INTERNALS),
    ("dblink", _ELSEWHERE),
)

#: VOLATILE built-ins that change nothing: volatile because their result changes from call to
#: call, not because they write. pg_sleep ties up only verify's own backend, for at most the
#: statement_timeout every run has. Only built-ins (OID below FIRST_USER_OID) qualify: a
#: user-defined ``random()`` is judged like any user-defined function.
HARMLESS_VOLATILE: frozenset[str] = frozenset(
    _words(
        "random random_normal clock_timestamp timeofday gen_random_uuid uuidv4 uuidv7 "
        "pg_sleep pg_sleep_for pg_sleep_until currval lastval "
        "pg_relation_size pg_table_size pg_indexes_size pg_total_relation_size "
        "pg_database_size pg_tablespace_size pg_partition_tree pg_partition_ancestors "
        "pg_is_in_recovery pg_current_wal_lsn pg_current_wal_insert_lsn "
        "pg_current_wal_flush_lsn pg_last_wal_receive_lsn pg_last_wal_replay_lsn "
        "pg_last_xact_replay_timestamp pg_blocking_pids pg_lock_status txid_status "
        "pg_xact_status pg_jit_available"
    )
)

#: Languages whose function bodies dbopt reads (as text) to see what they call.
READABLE_LANGUAGES = frozenset({"sql", "plpgsql"})
#: Languages only superusers can create functions in; their declared volatility is trusted.
TRUSTED_LANGUAGES = frozenset({"c", "internal"})

#: Operators a query may use without naming them: ORDER BY, GROUP BY, DISTINCT, joins with
#: USING, IN, BETWEEN, CASE x WHEN, set operations.
IMPLICIT_OPERATORS = ("=", "<>", "<", ">", "<=", ">=")


def denied(name: str) -> str | None:
    """Why a function of this name (last part, any case) is refused, or None."""
    key = name.lower()
    if key in DENIED:
        return DENIED[key]
    return next((why for prefix, why in DENIED_PREFIXES if key.startswith(prefix)), None)


# --- what a query names --------------------------------------------------------------------

ReferenceKind = Literal["function", "attribute", "operator", "relation", "type"]


@dataclass(frozen=True, slots=True)
class Reference:
    """An object a query names that can run something when the query runs.

    ``attribute`` is a qualified column reference (``t.name``), which PostgreSQL also reads
    as a call ``name(t)`` when such a function exists.
    """

    kind: ReferenceKind
    name: str
    schema: str | None = None

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name


def _strings(items: Any) -> list[str]:
    return [i["String"]["sval"] for i in items or [] if isinstance(i, dict) and "String" in i]


def _reference(kind: ReferenceKind, parts: list[str]) -> Reference | None:
    if not parts:
        return None
    return Reference(kind, parts[-1], parts[-2] if len(parts) > 1 else None)


def _walk(node: Any) -> Iterator[Reference | None]:
    """Every Reference in a pglast JSON tree, in tree order (None for nodes naming nothing)."""
    if isinstance(node, list):
        for item in node:
            yield from _walk(item)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key == "FuncCall":
            yield _reference("function", _strings(value.get("funcname")))
        elif key == "A_Expr" and "BETWEEN" not in value.get("kind", ""):
            # BETWEEN's "name" is the keyword; its comparisons are among IMPLICIT_OPERATORS.
            yield _reference("operator", _strings(value.get("name")))
        elif key == "SubLink":
            yield _reference("operator", _strings(value.get("operName")))
        elif key == "SortBy":
            yield _reference("operator", _strings(value.get("useOp")))
        elif key == "RangeVar":
            parts = [value.get("schemaname", ""), value.get("relname", "")]
            yield _reference("relation", [p for p in parts if p])
        elif key == "ColumnRef":
            fields = value.get("fields", [])
            if len(fields) > 1:
                yield _reference("attribute", _strings(fields[-1:]))
        elif key == "A_Indirection":
            for name in _strings(value.get("indirection")):
                yield Reference("attribute", name)
        elif key in ("typeName", "TypeName") and isinstance(value, dict):
            yield _reference("type", _strings(value.get("names")))
        yield from _walk(value)


def references(text: str, *, with_placeholders: bool) -> tuple[Reference, ...]:
    """Every function, operator, relation and type a read-only query names, once each.

    The query must pass :func:`dbopt.sqltext.check_query` (SqlTextError otherwise); the
    operators every query may use implicitly (:data:`IMPLICIT_OPERATORS`) are included.
    """
    tree = query_tree(text, with_placeholders=with_placeholders)
    found = [r for r in _walk(tree) if r is not None]
    found += [Reference("operator", name) for name in IMPLICIT_OPERATORS]
    return tuple(dict.fromkeys(found))


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a query may not run under verify: something it reaches could change something."""

    subject: str
    reason: str

    @property
    def message(self) -> str:
        """``pg_stat_reset() resets the server's statistics``: for callers other than verify
        (a materialized view's query, say), which add their own consequence."""
        return f"{self.subject} {self.reason}"

    def __str__(self) -> str:
        return f"{self.message}: verify must change nothing"


def static_refusals(text: str, *, with_placeholders: bool) -> list[Refusal]:
    """The calls of a query to functions of :data:`DENIED`, found without a database.

    Raises SqlTextError when the text is not one read-only query (see check_query).
    """
    return _denied_calls(references(text, with_placeholders=with_placeholders))


def _denied_calls(refs: Iterable[Reference]) -> list[Refusal]:
    out: list[Refusal] = []
    for ref in refs:
        why = denied(ref.name) if ref.kind == "function" else None
        if why is not None:
            out.append(Refusal(f"{ref}()", why))
    return out


# --- what the database's objects can do ----------------------------------------------------

#: A node of the call graph: (kind, oid). f function, o operator, r relation, t domain (its
#: CHECKs), c "a cast to this type" (the cast functions and domain checks casting to it runs).
#: Names are looked up by (kind, name), where kind "a" holds the functions callable as ``t.f``.
Node = tuple[str, int]
#: A cast the server may apply without the query naming it: its row of _CASTS, its function.
_ImplicitCast = tuple[dict[str, Any], Node]

_SEARCH_PATH = "SELECT pg_catalog.current_schemas(true) AS schemas"

# Every function: built-ins are judged by name and volatility, user-defined ones also by body.
# ``on_rows``: it can be called with one row as ``t.name`` (PostgreSQL reads ``t.name`` as
# ``name(t)`` when such a function exists): its only required argument takes a row.
_FUNCTIONS = """
SELECT p.oid::int8 AS oid, n.nspname AS schema, p.proname AS name,
       p.provolatile::text AS volatility, l.lanname AS language,
       pg_catalog.oidvectortypes(p.proargtypes) AS args,
       CASE WHEN p.oid >= %(first)s AND l.lanname <> ALL (%(trusted)s) THEN p.prosrc END AS body,
       p.pronargs >= 1 AND p.pronargs - p.pronargdefaults <= 1
         AND (t.typtype IN ('c', 'd')
              OR t.typtype = 'p' AND t.typname IN ('record', 'anyelement', 'anynonarray',
                                                    'anycompatible', 'anycompatiblenonarray',
                                                    'any')) AS on_rows
  FROM pg_catalog.pg_proc p
  JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
  JOIN pg_catalog.pg_language l ON l.oid = p.prolang
  LEFT JOIN pg_catalog.pg_type t ON t.oid = p.proargtypes[0]
 ORDER BY p.oid
"""

_OPERATORS = """
SELECT o.oid::int8 AS oid, n.nspname AS schema, o.oprname AS name, o.oprcode::oid::int8 AS code
  FROM pg_catalog.pg_operator o
  JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace
 WHERE o.oprcode <> 0
 ORDER BY o.oid
"""

# The relations that run or read something else when read: views, foreign tables, tables
# with row-level security, inheritance and partition parents. Built-in views are trusted.
_RELATIONS = """
SELECT c.oid::int8 AS oid, n.nspname AS schema, c.relname AS name, c.relkind::text AS relkind
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.oid >= %(first)s
   AND (c.relkind IN ('v', 'f') OR c.relrowsecurity OR c.relhassubclass)
 ORDER BY c.oid
"""

# Domains (their CHECKs run on a cast to them) and the targets of user-defined casts.
_TYPES = """
SELECT t.oid::int8 AS oid, n.nspname AS schema, t.typname AS name,
       t.typtype = 'd' AS is_domain, t.typbasetype::int8 AS base
  FROM pg_catalog.pg_type t
  JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
 WHERE (t.oid >= %(first)s AND t.typtype = 'd')
    OR t.oid IN (SELECT casttarget FROM pg_catalog.pg_cast
                  WHERE oid >= %(first)s AND castfunc <> 0)
 ORDER BY t.oid
"""

_CASTS = """
SELECT c.castsource::pg_catalog.regtype::text AS source, c.casttarget::int8 AS target,
       c.casttarget::pg_catalog.regtype::text AS target_name, c.castfunc::int8 AS func,
       c.castcontext::text AS context
  FROM pg_catalog.pg_cast c
 WHERE c.oid >= %(first)s AND c.castfunc <> 0
 ORDER BY c.oid
"""

# What runs something else, as the server recorded it: views' rules, the policies of tables
# with row-level security, functions (parameter defaults, SQL-standard bodies, their types),
# domains' constraints, user-defined aggregates' support functions, inheritance children.
_EDGES = """
WITH dep AS (
    SELECT d.classid, d.objid, d.refobjid::int8 AS ref,
           CASE d.refclassid WHEN 'pg_catalog.pg_proc'::regclass THEN 'f'
                             WHEN 'pg_catalog.pg_operator'::regclass THEN 'o'
                             WHEN 'pg_catalog.pg_class'::regclass THEN 'r'
                             WHEN 'pg_catalog.pg_type'::regclass THEN 't' END AS ref_kind
      FROM pg_catalog.pg_depend d
     WHERE d.refclassid IN ('pg_catalog.pg_proc'::regclass, 'pg_catalog.pg_operator'::regclass,
                            'pg_catalog.pg_class'::regclass, 'pg_catalog.pg_type'::regclass)
)
SELECT 'r' AS kind, r.ev_class::int8 AS oid, 'uses' AS verb, d.ref_kind, d.ref
  FROM pg_catalog.pg_rewrite r
  JOIN dep d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid
 WHERE r.ev_class >= %(first)s
UNION ALL
SELECT 'r', p.polrelid::int8, 'has a row-level security policy that uses', d.ref_kind, d.ref
  FROM pg_catalog.pg_policy p
  JOIN pg_catalog.pg_class c ON c.oid = p.polrelid AND c.relrowsecurity
  JOIN dep d ON d.classid = 'pg_catalog.pg_policy'::regclass AND d.objid = p.oid
UNION ALL
SELECT 'f', d.objid::int8, 'uses', d.ref_kind, d.ref
  FROM dep d
 WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid >= %(first)s
UNION ALL
SELECT 't', c.contypid::int8, 'has a CHECK constraint that uses', d.ref_kind, d.ref
  FROM pg_catalog.pg_constraint c
  JOIN dep d ON d.classid = 'pg_catalog.pg_constraint'::regclass AND d.objid = c.oid
 WHERE c.contypid <> 0
UNION ALL
SELECT 'f', a.aggfnoid::oid::int8, 'runs', 'f', s.fn::int8
  FROM pg_catalog.pg_aggregate a
 CROSS JOIN LATERAL pg_catalog.unnest(ARRAY[a.aggtransfn, a.aggfinalfn, a.aggcombinefn,
                                            a.aggserialfn, a.aggdeserialfn, a.aggmtransfn,
                                            a.aggminvtransfn, a.aggmfinalfn]::oid[]) AS s(fn)
 WHERE a.aggfnoid::oid >= %(first)s AND s.fn <> 0
UNION ALL
SELECT 'r', i.inhparent::int8, 'reads', 'r', i.inhrelid::int8
  FROM pg_catalog.pg_inherits i
 WHERE i.inhparent >= %(first)s
 ORDER BY 1, 2, 4, 5, 3
"""

_RELKINDS = {"v": "view", "f": "foreign table", "p": "partitioned table", "r": "table"}

_IDENT = r'"((?:[^"]|"")+)"|([A-Za-z_\x80-\uffff][A-Za-z0-9_$\x80-\uffff]*)'
_CALL = re.compile(rf"(?:{_IDENT})\s*\(")
_ATTRIBUTE = re.compile(rf"\.\s*(?:{_IDENT})")
_WORD = re.compile(_IDENT)
_COMMENT = re.compile(r"/\*.*?\*/|--[^\n]*", re.S)


def _idents(pattern: re.Pattern[str], text: str) -> set[str]:
    """Identifiers matched by ``pattern`` in ``text``, lower-cased (a quoted one unescaped)."""
    found = set()
    for match in pattern.finditer(text):
        quoted, bare = match.group(1), match.group(2)
        found.add((quoted.replace('""', '"') if quoted is not None else bare).lower())
    return found


@dataclass(slots=True)
class _Graph:
    """Nodes with labels and lookup names, edges, and base reasons; built by CallGraph.read."""

    labels: dict[Node, str] = field(default_factory=dict)
    names: dict[tuple[str, str], list[tuple[str, Node]]] = field(default_factory=dict)
    edges: dict[Node, list[tuple[str, Node]]] = field(default_factory=dict)
    reasons: dict[Node, str] = field(default_factory=dict)

    def node(self, node: Node, label: str, kind: str, schema: str, name: str) -> None:
        self.labels[node] = label
        self.names.setdefault((kind, name.lower()), []).append((schema.lower(), node))

    def edge(self, parent: Node, verb: str, child: Node) -> None:
        if parent != child:
            self.edges.setdefault(parent, []).append((verb, child))

    def named(self, kind: str, name: str) -> list[Node]:
        return [node for _, node in self.names.get((kind, name.lower()), [])]


def _function_reason(row: Mapping[str, Any]) -> str | None:
    """Why a function is unsafe by itself, or None (what it calls is judged separately)."""
    why = denied(row["name"])
    if why is not None:
        return why
    builtin = row["oid"] < FIRST_USER_OID
    if row["volatility"] == "v":
        if builtin:
            if row["name"] in HARMLESS_VOLATILE:
                return None
            return "is a VOLATILE built-in that dbopt does not know to be harmless"
        return (
            "is VOLATILE, so it may write or change state (declare it STABLE or IMMUTABLE "
            "if it only reads)"
        )
    if builtin or row["language"] in TRUSTED_LANGUAGES:
        return None
    if row["language"] not in READABLE_LANGUAGES:
        return f"is written in {row['language']}, whose body dbopt cannot check"
    if "execute" in _idents(_WORD, row["body"] or ""):
        return "runs dynamic SQL (EXECUTE), which dbopt cannot check"
    return None


class CallGraph:
    """What every function, operator, view, policy, domain and cast of a database can run.

    Read once with :meth:`read` (a constant number of catalog queries, nothing else), then
    asked about any number of queries with :meth:`refusals`.
    """

    def __init__(
        self,
        search_path: tuple[str, ...],
        graph: _Graph,
        unsafe: Mapping[Node, tuple[str, Node | None]],
        everywhere: tuple[Refusal, ...],
    ) -> None:
        self.search_path = search_path
        self._graph = graph
        self._unsafe = unsafe
        #: Refusals that apply to every query (an implicit cast through an unsafe function).
        self.everywhere = everywhere

    @classmethod
    def read(cls, conn: psycopg.Connection[Any]) -> CallGraph:
        """Read the catalog of ``conn``'s database (an autocommit connection).

        Plain SELECTs on pg_catalog, in a READ ONLY transaction that is rolled back, with the
        search path pinned to pg_catalog: no user-defined object can stand in for a function,
        operator or type these queries use.
        """
        with conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(_SEARCH_PATH).fetchone()
            search_path = tuple(s.lower() for s in (row or {}).get("schemas", []))
            with conn.transaction(force_rollback=True):
                cur.execute("SET TRANSACTION READ ONLY")
                cur.execute("SET LOCAL search_path = pg_catalog, pg_temp")
                g, implicit = _load(cur)
        unsafe = _spread(g)
        everywhere = tuple(
            Refusal(
                f"the {'implicit' if row['context'] == 'i' else 'assignment'} cast from "
                f"{row['source']} to {row['target_name']}",
                f"runs {g.labels.get(func, str(func))}, which "
                f"{_chain(g, unsafe, func, first=False)}; PostgreSQL applies it without the "
                "query naming it, so dbopt cannot rule it out for any query",
            )
            for row, func in implicit
            if func in unsafe
        )
        return cls(search_path, g, unsafe, everywhere)

    def refusals(self, text: str, *, with_placeholders: bool) -> list[Refusal]:
        """Why ``text`` may not run under verify (empty: it may), statically and on this server.

        Raises SqlTextError when the text is not one read-only query (see check_query).
        """
        refs = references(text, with_placeholders=with_placeholders)
        found = _denied_calls(refs)
        seen = {r.subject for r in found}
        for ref in refs:
            if ref.kind == "function" and denied(ref.name) is not None:
                continue  # refused by name above
            # One refusal per name: the first unsafe object it may mean (overloads included).
            node = next((n for n in self._candidates(ref) if n in self._unsafe), None)
            if node is None:
                continue
            chain = _chain(self._graph, self._unsafe, node, first=False)
            refusal = Refusal(self._graph.labels[node], chain)
            if refusal.subject not in seen:
                seen.add(refusal.subject)
                found.append(refusal)
        found.extend(self.everywhere)
        return found

    def _candidates(self, ref: Reference) -> list[Node]:
        """Every object the reference may mean on this server (all overloads)."""
        kinds = {
            "function": ("f", "c"),
            "attribute": ("a",),
            "operator": ("o",),
            "relation": ("r",),
            "type": ("c",),
        }[ref.kind]
        wanted = ref.schema.lower() if ref.schema else None
        return [
            node
            for kind in kinds
            for schema, node in self._graph.names.get((kind, ref.name.lower()), [])
            if (schema in self.search_path if wanted is None else _same_schema(schema, wanted))
        ]


def _same_schema(schema: str, written: str) -> bool:
    """``pg_temp`` in a query means this session's pg_temp_N; conservatively, any of them."""
    return schema == written or (written == "pg_temp" and schema.startswith("pg_temp_"))


def _load(cur: psycopg.Cursor[dict[str, Any]]) -> tuple[_Graph, list[_ImplicitCast]]:
    """The call graph of the database, with body edges; and its implicit/assignment casts."""
    params = {"first": FIRST_USER_OID, "trusted": sorted(TRUSTED_LANGUAGES)}
    g = _Graph()
    bodies: dict[Node, str] = {}
    for row in cur.execute(_FUNCTIONS, params).fetchall():
        node: Node = ("f", row["oid"])
        g.node(
            node,
            f"{row['schema']}.{row['name']}({row['args']})",
            "f",
            row["schema"],
            row["name"],
        )
        if row["on_rows"]:
            g.names.setdefault(("a", row["name"].lower()), []).append((row["schema"].lower(), node))
        reason = _function_reason(row)
        if reason is not None:
            g.reasons[node] = reason
        elif row["body"]:
            bodies[node] = row["body"]
    user_operators: list[tuple[str, Node]] = []
    for row in cur.execute(_OPERATORS).fetchall():
        node = ("o", row["oid"])
        g.node(node, f"operator {row['schema']}.{row['name']}", "o", row["schema"], row["name"])
        g.edge(node, "runs", ("f", row["code"]))
        if row["oid"] >= FIRST_USER_OID:
            user_operators.append((row["name"], node))
    for row in cur.execute(_RELATIONS, params).fetchall():
        node = ("r", row["oid"])
        what = _RELKINDS.get(row["relkind"], "relation")
        g.node(node, f"{what} {row['schema']}.{row['name']}", "r", row["schema"], row["name"])
        if row["relkind"] == "f":
            g.reasons[node] = (
                "is read through a foreign-data wrapper: another server (or a program) "
                "runs a query dbopt cannot check"
            )
    for row in cur.execute(_TYPES, params).fetchall():
        cast: Node = ("c", row["oid"])
        g.node(
            cast,
            f"a cast to {row['schema']}.{row['name']}",
            "c",
            row["schema"],
            row["name"],
        )
        if row["is_domain"]:
            domain: Node = ("t", row["oid"])
            g.labels[domain] = f"domain {row['schema']}.{row['name']}"
            g.edge(cast, "checks", domain)
            g.edge(cast, "includes", ("c", row["base"]))
            g.edge(domain, "is based on", ("t", row["base"]))
    implicit: list[_ImplicitCast] = []
    for row in cur.execute(_CASTS, params).fetchall():
        func: Node = ("f", row["func"])
        g.edge(("c", row["target"]), "runs", func)
        if row["context"] in ("i", "a"):
            implicit.append((row, func))
    for row in cur.execute(_EDGES, params).fetchall():
        g.edge((row["kind"], row["oid"]), row["verb"], (row["ref_kind"], row["ref"]))
    for node, body in bodies.items():
        _body_edges(g, node, body, user_operators)
    return g, implicit


def _body_edges(g: _Graph, node: Node, body: str, operators: list[tuple[str, Node]]) -> None:
    """Edges from a sql/plpgsql function to what its body text may run (in any schema)."""
    # Read with and without what looks like comments: ``f/* x */()`` is a call too, and a
    # ``--`` inside a string literal must not hide the rest of its line.
    uncommented = _COMMENT.sub(" ", body)
    for name in sorted(_idents(_CALL, body) | _idents(_CALL, uncommented)):
        for child in g.named("f", name) + g.named("c", name):
            g.edge(node, "calls", child)
    for name in sorted(_idents(_ATTRIBUTE, body)):
        for child in g.named("a", name):
            g.edge(node, "calls", child)
    for name in sorted(_idents(_WORD, body)):
        for child in g.named("r", name) + g.named("c", name):
            g.edge(node, "mentions", child)
    for name, operator in operators:
        if name in body or name in IMPLICIT_OPERATORS:
            g.edge(node, "may use", operator)


def _spread(g: _Graph) -> dict[Node, tuple[str, Node | None]]:
    """Every unsafe node: its own reason, or the unsafe node it runs (breadth first)."""
    parents: dict[Node, list[Node]] = {}
    for parent, children in g.edges.items():
        for _, child in children:
            parents.setdefault(child, []).append(parent)
    unsafe: dict[Node, tuple[str, Node | None]] = {n: (r, None) for n, r in g.reasons.items()}
    queue = deque(sorted(unsafe))
    while queue:
        child = queue.popleft()
        for parent in parents.get(child, []):
            if parent not in unsafe:
                verb = next(v for v, c in g.edges[parent] if c == child)
                unsafe[parent] = (verb, child)
                queue.append(parent)
    return unsafe


def _chain(
    g: _Graph, unsafe: Mapping[Node, tuple[str, Node | None]], node: Node, *, first: bool = True
) -> str:
    """``public.f() calls public.g(), which resets statistics``; without its first label
    (``calls public.g(), which resets statistics``) when ``first`` is False."""
    pieces: list[str] = []
    current: Node | None = node
    while current is not None:
        text, via = unsafe[current]
        pieces.append(text if via is None else f"{text} {g.labels.get(via, str(via))}")
        current = via
    chain = ", which ".join(pieces)
    return f"{g.labels.get(node, str(node))} {chain}" if first else chain
