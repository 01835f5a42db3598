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
  runs and by ``validate --dsn``): the catalog is read once (of the built-in functions, only
  those that are VOLATILE or denied: any other is safe and runs nothing dbopt reads, so it
  can never be part of a refusal), and a function is *unsafe* when
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

One module per concern:

* :mod:`~dbopt.readonly.lists` — the static deny and allow lists (no database)
* :mod:`~dbopt.readonly.references` — what a query names, walked from its parse tree
* :mod:`~dbopt.readonly.callgraph` — what the database's objects can run (its catalog)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dbopt.readonly.lists import (
    DENIED,
    DENIED_PREFIXES,
    FIRST_USER_OID,
    HARMLESS_VOLATILE,
    IMPLICIT_OPERATORS,
    READABLE_LANGUAGES,
    TRUSTED_LANGUAGES,
    denied,
)
from dbopt.readonly.references import (
    Reference,
    ReferenceKind,
    Refusal,
    references,
    static_refusals,
)

if TYPE_CHECKING:
    from dbopt.readonly.callgraph import CallGraph, Kind, Node


def __getattr__(name: str) -> type:
    """The catalog-reading half (CallGraph and its types) is loaded when first named:
    checking a spec's queries without a database never needs it."""
    if name in ("CallGraph", "Kind", "Node"):
        from dbopt.readonly import callgraph

        found: type = getattr(callgraph, name)
        return found
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DENIED",
    "DENIED_PREFIXES",
    "FIRST_USER_OID",
    "HARMLESS_VOLATILE",
    "IMPLICIT_OPERATORS",
    "READABLE_LANGUAGES",
    "TRUSTED_LANGUAGES",
    "CallGraph",
    "Kind",
    "Node",
    "Reference",
    "ReferenceKind",
    "Refusal",
    "denied",
    "references",
    "static_refusals",
]
