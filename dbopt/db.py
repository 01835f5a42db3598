"""The one way dbopt connects to PostgreSQL, and how it words database errors."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from dbopt.dsn import SECRET_KEYWORDS, describe_target, scrub, secrets_of
from dbopt.errors import ConfigError, ConnectError

DATABASE_URL = "DATABASE_URL"


def _env_secrets() -> list[str]:
    """Passwords the libpq environment holds (libpq reads PGPASSWORD on its own)."""
    password = os.environ.get("PGPASSWORD")
    return [password] if password else []


def _first_line(text: str) -> str:
    """The first line of ``text`` once stripped ("" for blank text)."""
    lines = text.strip().splitlines()
    return lines[0].strip() if lines else ""


_QUOTED = re.compile(r'"([^"]*)"')


def _syntax_problem(exc: psycopg.Error) -> str:
    """libpq's complaint about a malformed connection string, without its quoted excerpts.

    libpq quotes the text around the fault (``missing "=" after "cret"``), which may be a
    piece of a password the malformed string failed to delimit; keep only the wording.
    """
    line = _first_line(str(exc))
    return _QUOTED.sub(lambda m: m.group() if m.group(1) == "=" else '"..."', line)


def connect(
    dsn: str | None,
    *,
    autocommit: bool = True,
    application_name: str = "dbopt",
    connect_timeout: int = 10,
    lock_timeout_ms: int | None = None,
) -> psycopg.Connection[tuple[Any, ...]]:
    """Open a connection: to ``dsn``, else to ``$DATABASE_URL``, else per the libpq environment.

    With ``lock_timeout_ms`` the session never waits longer than that for a lock (even the
    catalog queries of plan and status take share locks, and must not queue DDL behind them).

    An empty or missing ``dsn`` falls back to DATABASE_URL (which libpq itself ignores) and
    then to libpq's own defaults (PGHOST, PGDATABASE, PGSERVICE, ~/.pgpass...). Raise
    ConfigError for a malformed connection string and ConnectError when the server cannot be
    reached or refuses us; neither message ever holds a password.
    """
    source = "connection string"
    conninfo = dsn or ""
    if not conninfo and os.environ.get(DATABASE_URL):
        conninfo, source = os.environ[DATABASE_URL], DATABASE_URL
    # Each message is built inside `except` but raised outside it: the psycopg exception
    # (whose text and pgconn hold unscrubbed values) must not ride along as __context__.
    problem: str | None = None
    try:
        conninfo_to_dict(conninfo)
    except psycopg.Error as exc:
        problem = f"invalid {source}: {_syntax_problem(exc)}"
    if problem is not None:
        raise ConfigError(problem)
    secrets = [*secrets_of(conninfo), *_env_secrets()]
    try:
        conn = psycopg.connect(
            conninfo,
            autocommit=autocommit,
            application_name=application_name,
            connect_timeout=connect_timeout,
        )
        if lock_timeout_ms is not None:
            conn.execute("SELECT set_config('lock_timeout', %s, false)", (str(lock_timeout_ms),))
            if not autocommit:
                conn.commit()
        return conn
    except psycopg.Error as exc:
        reason = str(exc).strip().removeprefix("connection failed: ")
        problem = scrub(reason, secrets) or type(exc).__name__
    raise ConnectError(f"could not connect to {describe_target(conninfo)}: {problem}")


def server_version(conn: psycopg.Connection[Any]) -> int:
    """The server's version as ``server_version_num`` (e.g. 160002 for 16.2)."""
    return conn.info.server_version


def _pgconn_secrets(exc: psycopg.Error) -> list[str]:
    """The password of the connection attempt an error came from, if psycopg kept it."""
    pgconn = exc.pgconn
    if pgconn is None:
        return []
    try:
        options = pgconn.info
    except psycopg.Error:
        return []
    return [
        o.val.decode(errors="replace")
        for o in options
        if o.keyword.decode() in SECRET_KEYWORDS and o.val
    ]


def server_message(exc: psycopg.Error) -> str:
    """One line for a database error: the primary message, its detail and hint, scrubbed."""
    diag = exc.diag
    text = diag.message_primary or _first_line(str(exc)) or type(exc).__name__
    if diag.message_detail:
        text += f" ({diag.message_detail})"
    if diag.message_hint:
        text += f" (hint: {diag.message_hint})"
    return scrub(text, [*_env_secrets(), *_pgconn_secrets(exc)])


def format_db_error(exc: psycopg.Error, verbose: bool = False, secrets: Iterable[str] = ()) -> str:
    """Word a database error from its diagnostics: the primary message, and more if verbose.

    Verbose adds, as psql and pgcli do, the detail, hint, context, SQLSTATE and the objects
    involved. Known secrets are scrubbed: ``secrets``, PGPASSWORD and the password of the
    connection attempt the error came from.
    """
    diag = exc.diag
    primary = diag.message_primary or _first_line(str(exc)) or type(exc).__name__
    lines = [primary]
    if verbose:
        fields = [
            ("DETAIL", diag.message_detail),
            ("HINT", diag.message_hint),
            ("CONTEXT", diag.context),
            ("SQLSTATE", diag.sqlstate or exc.sqlstate),
            ("SEVERITY", diag.severity_nonlocalized or diag.severity),
            ("POSITION", diag.statement_position),
            ("INTERNAL QUERY", diag.internal_query),
            ("SCHEMA", diag.schema_name),
            ("TABLE", diag.table_name),
            ("COLUMN", diag.column_name),
            ("DATATYPE", diag.datatype_name),
            ("CONSTRAINT", diag.constraint_name),
        ]
        lines += [f"{label}: {value}" for label, value in fields if value]
    known = [*secrets, *_env_secrets(), *_pgconn_secrets(exc)]
    return scrub("\n".join(lines), known)
