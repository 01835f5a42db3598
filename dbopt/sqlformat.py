"""SQL for people to read: dbopt's statements as a DBA would write them by hand.

pglast's prettifier (the PostgreSQL parser's own tree, printed back) quotes identifiers only
where they need it, keeps short lists on one line and breaks long ones cleanly; with its
safety belt, a printed statement parses to exactly the tree of the statement dbopt runs, or
the statement is printed as it is sent.
"""

from __future__ import annotations

from collections.abc import Iterable

from dbopt.yamlcache import kept

#: Lists shorter than this stay on one line (a wrapped list aligns under its first item).
MARGIN = 160


def pretty(statement: str) -> str:
    """One statement (without its ';'), laid out for reading; the same tree as ``statement``
    (its layout kept across commands: dbopt.yamlcache.kept). Any doubt: exactly what runs."""
    text = statement.strip().rstrip(";").strip()
    try:
        return _laid_out(text)
    except Exception:  # any doubt (never kept: it is tried again next time)
        return text


@kept("pretty", "pglast")
def _laid_out(text: str) -> str:
    from pglast import prettify

    return str(prettify(text, safety_belt=True, compact_lists_margin=MARGIN, comma_at_eoln=True))


def script(statements: Iterable[str], *, transaction: bool = False) -> str:
    """Statements, each laid out and ending with ';' (inside BEGIN/COMMIT when a swap runs
    them in one transaction)."""
    body = [pretty(s) + ";" for s in statements]
    if transaction:
        body = ["BEGIN;", *body, "COMMIT;"]
    return "\n".join(body)
