"""The one way dbopt connects to PostgreSQL, and how it words database errors.

Every connection pins the session settings that would otherwise let a role, a database or a
DSN change what dbopt builds, compares or measures (see :func:`session_pins`), in the same
single round trip that sets its timeouts.
"""

from __future__ import annotations

import os
import re
import selectors
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from functools import cache
from importlib import resources
from typing import Any, TypeVar

import psycopg
from psycopg import pq, sql
from psycopg.abc import PQGen
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import Row

from dbopt.config import Settings
from dbopt.dsn import SECRET_KEYWORDS, describe_target, scrub, secrets_of
from dbopt.errors import ConfigError, ConnectError, DboptError, UnsupportedServerError

DATABASE_URL = "DATABASE_URL"

#: The oldest server dbopt works with, as ``server_version_num``: PostgreSQL 12 (the catalog
#: columns, progress views and SQL dbopt relies on exist from there on).
MIN_SERVER_VERSION = 120000

#: Settings pinned to one value on every connection, and why. A role (ALTER ROLE ... SET), a
#: database (ALTER DATABASE ... SET) or a DSN (options=-c ...) may set any of them; none of
#: them may change which relation a name means, how SQL text in a spec is read or deparsed
#: (drift is a text comparison of pg_get_indexdef/pg_get_viewdef output), where an index is
#: built, what a materialized view holds, or what verify measures.
FIXED_PINS: tuple[tuple[str, str, str], ...] = (
    # How SQL text is read and deparsed.
    ("DateStyle", "ISO, MDY", "reads date literals ('01/02/2024') and prints dates"),
    ("IntervalStyle", "postgres", "prints intervals in view and index definitions"),
    ("extra_float_digits", "1", "prints float constants in view and index definitions"),
    ("bytea_output", "hex", "prints bytea constants"),
    ("standard_conforming_strings", "on", "reads backslashes in string literals"),
    ("quote_all_identifiers", "off", "quotes every name in deparsed definitions"),
    ("transform_null_equals", "off", "reads 'x = NULL' as 'x IS NULL'"),
    ("array_nulls", "on", "reads NULL in array literals"),
    ("xmloption", "content", "reads XML literals"),
    ("xmlbinary", "base64", "prints bytea in XML"),
    ("lc_monetary", "C", "reads and prints money literals"),
    ("lc_numeric", "C", "to_char/to_number in views"),
    ("lc_time", "C", "to_char day and month names in views"),
    ("timezone_abbreviations", "Default", "reads zone abbreviations in timestamp literals"),
    ("client_encoding", "UTF8", "the text dbopt reads back"),
    # Where things are built, and how.
    ("default_tablespace", "", "where an index or materialized view is built"),
    ("default_table_access_method", "heap", "how a materialized view is stored"),
    ("default_transaction_isolation", "read committed", "how dbopt's transactions see data"),
    ("default_transaction_deferrable", "off", "whether a read-only transaction waits"),
    ("session_replication_role", "origin", "whether rules and triggers fire (superuser only)"),
    # What queries see and return.
    ("row_security", "on", "row-level security applies as for the application"),
    ("gin_fuzzy_search_limit", "0", "GIN index scans return every match"),
    ("restrict_nonsystem_relation_kind", "", "views and foreign tables may be read"),
    # That the session lives through a long run.
    ("exit_on_error", "off", "an error (a lock timeout dbopt retries) ends the session"),
    ("idle_session_timeout", "0", "the control connection idles while a worker builds"),
    ("transaction_timeout", "0", "statement_timeout bounds dbopt's statements (PG 17+)"),
)


#: The pins that give printed SQL its meaning (names, literals, placement): what `plan --sql`
#: and rollback files must set before their statements, since psql runs them in a session
#: of its own. All exist since PostgreSQL 12.
REPLAY_PINS = frozenset(
    {
        "search_path",
        "TimeZone",
        "DateStyle",
        "IntervalStyle",
        "standard_conforming_strings",
        "transform_null_equals",
        "array_nulls",
        "xmloption",
        "lc_monetary",
        "lc_numeric",
        "lc_time",
        "timezone_abbreviations",
        "default_tablespace",
        "default_table_access_method",
        "row_security",
    }
)


def replay_sql(settings: Settings | None = None) -> str:
    """``SET`` statements for :data:`REPLAY_PINS`, one per line, for SQL dbopt prints.

    dbopt deparses view and index definitions under its pins (a name in ``public`` is
    printed unqualified): a psql session with another search_path or DateStyle would read
    the printed text differently. Put these before the statements.
    """
    lines = [
        # The names are dbopt's own constants, never input: written as they are.
        sql.SQL("SET {} = {};").format(sql.SQL(name), _setting(name, value)).as_string(None)
        for name, value in session_pins(settings)
        if name in REPLAY_PINS
    ]
    return "\n".join(sorted(lines, key=lambda line: not line.startswith("SET search_path"))) + "\n"


def _setting(name: str, value: str) -> sql.Composable:
    """A SET value: search_path as the list it is (its names are quoted already)."""
    return sql.SQL(value) if name == "search_path" else sql.Literal(value)


@cache
def _pins_sql() -> sql.SQL:
    """The statement that pins the settings (a packaged file, never user input)."""
    path = resources.files("dbopt").joinpath("catalog", "sql", "session_pins.sql")
    return sql.SQL(path.read_text("utf-8"))


def search_path_value(schemas: Sequence[str]) -> str:
    """A search_path of exactly these schemas (quoted, case kept) and then pg_temp.

    pg_catalog is searched first implicitly; naming pg_temp last keeps a temporary table
    from shadowing a real one (unnamed, it would be searched first).
    """
    return ", ".join(['"' + s.replace('"', '""') + '"' for s in schemas] + ["pg_temp"])


def session_pins(
    settings: Settings | None = None,
    *,
    read_only: bool = False,
    lock_timeout_ms: int | None = None,
) -> list[tuple[str, str]]:
    """Every (setting, value) :func:`connect` pins, beyond the planner's method switches.

    From ``settings``: search_path, TimeZone, lock_timeout, statement_timeout and (when set)
    maintenance_work_mem. ``read_only`` sessions get default_transaction_read_only on, every
    other one off (a role or DSN setting it on must not make a run fail halfway).
    """
    settings = settings or Settings()
    lock_ms = settings.lock_timeout_ms if lock_timeout_ms is None else lock_timeout_ms
    pins = [(name, value) for name, value, _why in FIXED_PINS]
    pins += [
        ("search_path", search_path_value(settings.search_path)),
        ("TimeZone", settings.timezone),
        ("default_transaction_read_only", "on" if read_only else "off"),
        ("lock_timeout", str(lock_ms)),
        ("statement_timeout", str(settings.statement_timeout_ms)),
    ]
    if settings.maintenance_work_mem:
        pins.append(("maintenance_work_mem", settings.maintenance_work_mem))
    return pins


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


def unbounded(settings: Settings) -> Settings:
    """``settings`` without statement_timeout: for the sessions that plan, look up and record
    (statement_timeout is meant for a run's own statements, not for its bookkeeping)."""
    return replace(settings, statement_timeout_ms=0)


def _port(text: str) -> bool:
    """A port libpq takes: ASCII digits (a sign allowed), 1 to 65535."""
    digits = text.strip().removeprefix("+")
    return digits.isascii() and digits.isdigit() and 0 < int(digits) < 65536


def conninfo_problem(conninfo: str) -> str | None:
    """Why libpq cannot read ``conninfo`` (a port that is no number too), in words that show
    none of its values; None when it reads it."""
    # The message is built inside `except` but returned outside it: the psycopg exception
    # (whose text and pgconn hold unscrubbed values) must not ride along as __context__.
    problem: str | None = None
    params: dict[str, Any] = {}
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.Error as exc:
        problem = _syntax_problem(exc)
    if problem is not None:
        return problem
    ports = str(params.get("port") or "").split(",")
    if any(p.strip() and not _port(p) for p in ports):
        # Not shown: in a URI it may be a password whose '@' was left out (user:secret/db).
        return (
            "a port is not a number from 1 to 65535 (not shown: it may be a password "
            "written without the '@' after it); a port is digits, e.g. host:5432"
        )
    # Each list is the DSN's, else the environment's (PGHOST, PGHOSTADDR, PGPORT), as libpq
    # takes them; a service's file may give them too (then only the DSN's own are checked).
    service = bool(params.get("service") or os.environ.get("PGSERVICE"))

    def listed(key: str, variable: str) -> list[str]:
        value = params.get(key)
        if value is None and not service:
            value = os.environ.get(variable)
        return str(value).split(",") if value else []

    hosts, addrs = listed("host", "PGHOST"), listed("hostaddr", "PGHOSTADDR")
    ports = listed("port", "PGPORT")
    if hosts and addrs and len(hosts) != len(addrs):
        return (
            f"{len(hosts)} host{'s' if len(hosts) > 1 else ''} for {len(addrs)} host "
            f"address{'es' if len(addrs) > 1 else ''} (hostaddr): give one address for each "
            "host"
        )
    count = max(len(hosts), len(addrs), 0 if service else 1)  # else libpq's one default
    if count and len(ports) > 1 and len(ports) != count:
        return (
            f"{len(ports)} ports for {count} host{'s' if count > 1 else ''}: give one port, "
            "or one for each host"
        )
    return None


def connect(
    dsn: str | None,
    *,
    autocommit: bool = True,
    application_name: str = "dbopt",
    connect_timeout: int = 10,
    lock_timeout_ms: int | None = None,
    settings: Settings | None = None,
    read_only: bool = False,
) -> psycopg.Connection[tuple[Any, ...]]:
    """Open a connection with dbopt's session settings pinned, whatever role, database or DSN.

    ``dsn``: a connection string; ``""`` means the libpq environment only (PGHOST,
    PGDATABASE, PGSERVICE, ~/.pgpass...); ``None`` tries ``$DATABASE_URL`` first (libpq
    itself ignores it), then the libpq environment.

    The pins (:func:`session_pins`: search_path and TimeZone from ``settings``, the text and
    storage settings of :data:`FIXED_PINS`, the planner's enable_* switches at their
    defaults, default_transaction_read_only per ``read_only``) and the timeouts
    (``lock_timeout_ms``, else ``settings.lock_timeout_ms``; ``settings.statement_timeout_ms``)
    are set in one round trip. ``read_only`` is for sessions that must never write (validate,
    verify's measurements); a writing session gets read-only off even when the role or DSN
    turned it on.

    Raise ConfigError for a malformed connection string or a setting the server refuses (an
    unknown timezone), UnsupportedServerError for a server older than PostgreSQL 12, and
    ConnectError when the server cannot be reached or refuses us; no message ever holds a
    password.
    """
    source = "connection string"
    conninfo = dsn or ""
    if dsn is None and os.environ.get(DATABASE_URL):
        conninfo, source = os.environ[DATABASE_URL], DATABASE_URL
    problem = conninfo_problem(conninfo)
    if problem is not None:
        raise ConfigError(f"invalid {source}: {problem}")
    secrets = [*secrets_of(conninfo), *_env_secrets()]
    pins = session_pins(settings, read_only=read_only, lock_timeout_ms=lock_timeout_ms)
    try:
        conn = Connection.connect(
            conninfo,
            autocommit=autocommit,
            application_name=application_name,
            connect_timeout=connect_timeout,
            options=_startup_options(conninfo),
        )
    except psycopg.Error as exc:
        reason = str(exc).strip().removeprefix("connection failed: ")
        problem = scrub(reason, secrets) or type(exc).__name__
    if problem is not None:
        raise ConnectError(f"could not connect to {describe_target(conninfo)}: {problem}")
    if conn.info.server_version < MIN_SERVER_VERSION:
        # Known from the connection's startup, before dbopt sends anything.
        version = _version_text(conn)
        conn.close()
        raise UnsupportedServerError(
            f"{describe_target(conninfo)} runs PostgreSQL {version}, and dbopt needs "
            "PostgreSQL 12 or later."
        )
    error: DboptError | None = None
    try:
        pin(conn, pins)
    except psycopg.errors.InvalidParameterValue as exc:
        # An unknown timezone, say: dbopt.yaml holds it, so it is bad input (exit 2).
        error = ConfigError(f"the server refuses a session setting: {server_message(exc)}")
    except psycopg.Error as exc:
        where = describe_target(conninfo)
        error = ConnectError(f"could not set up the session on {where}: {server_message(exc)}")
    if error is not None:
        conn.close()
        raise error
    return conn


_RV = TypeVar("_RV")

#: How long a connection Ctrl-C left busy gets to end its statement before it is closed.
SETTLE_TIMEOUT_S = 5.0


class Connection(psycopg.Connection[Row]):
    """A psycopg connection that Ctrl-C never leaves busy (what :func:`connect` opens).

    psycopg cancels the statement a KeyboardInterrupt stops, and reads what it answers; but
    when the interrupt lands while psycopg is handling a result rather than waiting for one,
    the statement's results stay unread and every later statement on the connection fails
    with "another command is already in progress": the clean-up after Ctrl-C (dropping what
    the run built, recording the run as aborted) could then not run. Here the statement is
    then cancelled and its results read (:func:`settle`) before the interrupt goes on.
    """

    def wait(self, gen: PQGen[_RV], *args: Any, **kwargs: Any) -> _RV:
        try:
            return super().wait(gen, *args, **kwargs)
        except (KeyboardInterrupt, SystemExit):
            settle(self)
            raise


def settle(conn: psycopg.Connection[Any], timeout_s: float = SETTLE_TIMEOUT_S) -> bool:
    """Make ``conn`` ready for its next statement after an interrupt: a statement still in
    progress is cancelled and its results read and dropped, for up to ``timeout_s``
    seconds; a connection that does not settle in time (or fails meanwhile) is closed.
    Return whether the connection is usable. Interrupted again meanwhile (a second Ctrl-C),
    the connection is closed and the new interrupt goes on."""
    if conn.closed:
        return False
    pgconn = conn.pgconn
    if pgconn.transaction_status != pq.TransactionStatus.ACTIVE:
        return not conn.broken
    deadline = time.monotonic() + timeout_s
    try:
        if pgconn.pipeline_status != pq.PipelineStatus.OFF:
            raise _Unsettled  # its answers are not read one statement at a time
        _drain(conn, deadline)
    except BaseException as exc:
        conn.close()
        if isinstance(exc, (psycopg.Error, OSError, _Unsettled)):
            return False
        raise
    return True


class _Unsettled(Exception):
    """The statement in progress did not end in time, or is not read this way (a COPY, a
    pipeline)."""


#: While the statement settle waits for still runs, its cancel request is sent again this
#: often: a request that reached the server before the statement did was ignored.
CANCEL_EVERY_S = 0.5


def _drain(conn: psycopg.Connection[Any], deadline: float) -> None:
    """Send what is left of the statement in progress on ``conn`` (non-blocking, as psycopg
    keeps it), cancel it (again every :data:`CANCEL_EVERY_S` while it runs), and read its
    results and drop them, until ``deadline``."""
    pgconn = conn.pgconn
    # At once once all of it is sent; if the server stops reading it (its first part waits
    # for a lock), after CANCEL_EVERY_S anyway.
    cancel_at = time.monotonic()
    unsent_since: float | None = None
    with selectors.DefaultSelector() as selector:
        while True:
            unsent = pgconn.flush() == 1
            pgconn.consume_input()
            if not unsent and not pgconn.is_busy():
                result = pgconn.get_result()
                if result is None:
                    return
                if result.status in (pq.ExecStatus.COPY_IN, pq.ExecStatus.COPY_OUT):
                    raise _Unsettled
                continue
            now = time.monotonic()
            if now >= deadline:
                raise _Unsettled
            if not unsent:
                unsent_since = None
            elif unsent_since is None:
                unsent_since = now
            stuck = unsent_since is not None and now - unsent_since >= CANCEL_EVERY_S
            if now >= cancel_at and (not unsent or stuck):
                # Only the statement being drained can be running: nothing else was sent.
                conn.cancel_safe(timeout=deadline - now)
                cancel_at = time.monotonic() + CANCEL_EVERY_S
                continue
            wake = min(deadline, cancel_at if not unsent else now + CANCEL_EVERY_S)
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if unsent else 0)
            selector.register(pgconn.socket, events)
            selector.select(max(0.0, wake - now))
            selector.unregister(pgconn.socket)


def _version_text(conn: psycopg.Connection[Any]) -> str:
    """``14.22``: the server's version as people write it (reported at connection start)."""
    reported = conn.info.parameter_status("server_version")
    if reported:
        return reported.split()[0]
    number = conn.info.server_version
    return f"{number // 10000}.{number % 10000}"


def _startup_options(conninfo: str) -> str:
    """The connection's startup options with ``statement_timeout=0`` last: a client startup
    option outranks role and database settings, so a role's tiny statement_timeout cannot
    cancel the statement that pins the session (the DSN's and PGOPTIONS's options are kept)."""
    given = conninfo_to_dict(conninfo).get("options") or os.environ.get("PGOPTIONS", "")
    return f"{given} -c statement_timeout=0".strip()


def pin(conn: psycopg.Connection[Any], pins: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Set ``pins`` (and the planner switches) for the session, in one round trip.

    Return each setting pinned and its value. On a connection that is not in autocommit
    mode the change is committed, or a later rollback would undo it.
    """
    statement = _pins_sql().format(
        names=sql.Literal([name for name, _ in pins]),
        values=sql.Literal([value for _, value in pins]),
    )
    rows: list[tuple[Any, ...]] = []
    with conn.cursor() as cur:
        cur.execute(statement)  # no parameters: the simple protocol, both statements at once
        while True:
            if cur.description is not None:
                rows = cur.fetchall()
            if not cur.nextset():
                break
    if not conn.autocommit:
        conn.commit()
    return {str(name): str(value) for name, value in rows}


def server_version(conn: psycopg.Connection[Any]) -> int:
    """The server's version as ``server_version_num`` (e.g. 160002 for 16.2)."""
    return conn.info.server_version


_Row = TypeVar("_Row")


@contextmanager
def read_only_transaction(
    conn: psycopg.Connection[_Row],
    *,
    timeout_ms: int | None = None,
    search_path: Sequence[str] | None = None,
    past_lock_timeout: bool = False,
) -> Iterator[psycopg.Cursor[_Row]]:
    """A READ ONLY transaction that is always rolled back, and a cursor in it.

    For every statement dbopt runs only to read or to measure (verify's runs, validate's
    checks, the catalog reads behind them): the server refuses a write that got past the
    checks, and nothing survives the rollback. ``timeout_ms`` sets a statement_timeout and
    ``search_path`` (schema names, quoted here) a search path, both for this transaction
    only; with ``past_lock_timeout``, that long after the session's lock_timeout (a check that
    waits for a held table then ends by lock_timeout, which says so, not by its own timeout).
    ``conn`` should be idle (dbopt.db.connect gives autocommit connections).
    """
    settings: list[sql.Composable] = [sql.SQL("SET TRANSACTION READ ONLY")]
    if timeout_ms is not None and past_lock_timeout:
        settings.append(
            sql.SQL(
                "SELECT set_config('statement_timeout', ({} + extract(epoch FROM "
                "current_setting('lock_timeout')::interval) * 1000)::bigint::text, true)"
            ).format(sql.Literal(timeout_ms))
        )
    elif timeout_ms is not None:
        settings.append(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(timeout_ms)))
    if search_path is not None:
        schemas = sql.SQL(", ").join(sql.Identifier(s) for s in search_path)
        settings.append(sql.SQL("SET LOCAL search_path = {}").format(schemas))
    with conn.transaction(force_rollback=True), conn.cursor() as cur:
        # No parameters, never prepared: the simple protocol, every SET in one round trip
        # (READ ONLY first).
        cur.execute(sql.SQL("; ").join(settings), prepare=False)
        yield cur


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


def session_sql(settings: Settings) -> str:
    """The SET statements apply runs before its steps (also printed with plan --sql): the
    pins that decide how the printed SQL reads (search_path, DateStyle...), then the waits."""
    lines = [
        replay_sql(settings).rstrip("\n"),
        f"SET lock_timeout = {settings.lock_timeout_ms};",
        f"SET statement_timeout = {settings.statement_timeout_ms};",
    ]
    if settings.maintenance_work_mem:
        lines.append(
            sql.SQL("SET maintenance_work_mem = {};")
            .format(sql.Literal(settings.maintenance_work_mem))
            .as_string()
        )
    return "\n".join(lines) + "\n"
