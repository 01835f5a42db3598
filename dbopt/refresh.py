"""Refreshing materialized views: order, mode, locks, history, and plans for cron and pg_cron.

`dbopt refresh-views` is what cron runs. Views are refreshed in dependency order (from the
specs' depends_on and from pg_depend), CONCURRENTLY whenever PostgreSQL allows it (populated,
with a valid unique index on plain columns and no WHERE), each under a per-view advisory lock
so that overlapping cron runs skip instead of queueing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shlex
import shutil
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import psycopg
from psycopg import errors as pgerrors
from psycopg import sql

from dbopt import ddl, locks
from dbopt.catalog import Catalog
from dbopt.config import Settings, Target
from dbopt.db import server_message
from dbopt.dsn import describe_target, portable_dsn
from dbopt.errors import InputError
from dbopt.history import History
from dbopt.model import QualifiedName, RefreshOutcome, SpecSet, ViewSpec, parse_qualified
from dbopt.spec import dependency_order


@dataclass(frozen=True, slots=True)
class RefreshItem:
    """One view to refresh, and how."""

    view: ViewSpec
    concurrently: bool
    note: str | None = None  # why not concurrently, or why refused
    refused: bool = False  # --concurrently-only and a concurrent refresh is impossible

    @property
    def statement(self) -> sql.Composed:
        """The REFRESH statement."""
        return ddl.refresh_matview(self.view.name, concurrently=self.concurrently)


@dataclass(frozen=True, slots=True)
class RefreshResult:
    """How one refresh went."""

    view: QualifiedName
    outcome: RefreshOutcome
    mode: str  # concurrent, blocking
    seconds: float = 0.0
    rows: int | None = None
    message: str | None = None


def select_views(specs: SpecSet, names: Sequence[QualifiedName | str]) -> list[ViewSpec]:
    """The views named (schema-qualified or not), or all; unknown names are an input error."""
    if not names:
        return list(specs.views)
    by_name = {v.name: v for v in specs.views}
    chosen = []
    for raw in names:
        name = raw if isinstance(raw, QualifiedName) else parse_qualified(raw)
        if name not in by_name:
            known = ", ".join(str(n) for n in sorted(by_name)) or "none"
            raise InputError(f"view {raw}: no such view in the specs (known: {known})")
        chosen.append(by_name[name])
    return chosen


def refresh_order(views: Sequence[ViewSpec], catalog: Catalog) -> list[ViewSpec]:
    """Views ordered so each comes after what it depends on (specs and pg_depend), by name.

    A view reading another through plain views (B reads V, a view over A) reads it as it is
    at that moment, so it comes after it too; a materialized view in between (not refreshed
    here) keeps what it holds: the order does not pass through it."""
    chosen = {v.name: v for v in views}
    graph: dict[QualifiedName, set[QualifiedName]] = {name: set() for name in chosen}
    for view in views:
        graph[view.name].update(d for d in view.depends_on if d in chosen)
    for source in chosen:
        seen: set[QualifiedName] = set()
        todo = list(catalog.dependents.get(source, ()))
        while todo:
            dependent = todo.pop()
            if dependent in seen or dependent == source:
                continue
            seen.add(dependent)
            if dependent in chosen:
                graph[dependent].add(source)
                continue
            relation = catalog.relations.get(dependent)
            if relation is not None and relation.relkind == "v":
                todo.extend(catalog.dependents.get(dependent, ()))
    return [chosen[n] for n in dependency_order(graph)]


def plan_refresh(
    views: Sequence[ViewSpec], catalog: Catalog, *, concurrently_only: bool = False
) -> list[RefreshItem]:
    """How each view will be refreshed, in dependency order."""
    items = []
    for view in refresh_order(views, catalog):
        relation = catalog.relations.get(view.name)
        if relation is None or relation.relkind != "m":
            items.append(
                RefreshItem(view, False, "does not exist yet: run dbopt apply", refused=True)
            )
            continue
        unique = any(i.allows_concurrent_refresh for i in catalog.indexes_on(view.name))
        if view.refresh.mode == "blocking":
            items.append(RefreshItem(view, False))  # chosen in the spec: no warning
        elif not relation.populated:
            items.append(
                RefreshItem(
                    view,
                    False,
                    "not populated: the first refresh cannot be concurrent",
                    refused=concurrently_only,
                )
            )
        elif not unique:
            items.append(
                RefreshItem(
                    view,
                    False,
                    "no valid unique index on plain columns: refreshed blocking (readers wait)",
                    refused=concurrently_only,
                )
            )
        else:
            items.append(RefreshItem(view, True))
    return items


def filter_stale(
    items: Sequence[RefreshItem],
    last_refresh: dict[QualifiedName, datetime],
    *,
    now: datetime,
    older_than: timedelta | None = None,
) -> list[RefreshItem]:
    """Keep views refreshed before their schedule's last tick (or longer ago than older_than)."""
    from dbopt.cron import previous_tick

    kept = []
    for item in items:
        last = last_refresh.get(item.view.name)
        if last is None:
            kept.append(item)
            continue
        if older_than is not None:
            if now - last >= older_than:
                kept.append(item)
            continue
        schedule = item.view.refresh.schedule
        if schedule is None:
            continue  # no schedule: never stale by --stale-only
        try:
            tick = previous_tick(schedule, now)
        except ValueError:
            kept.append(item)  # a schedule that never fires: refreshed when asked
            continue
        if last < tick:
            kept.append(item)
    return kept


def refresh_sql(items: Sequence[RefreshItem], settings: Settings) -> str:
    """The ordered SQL a refresh would run (`refresh-views --plan`)."""
    from dbopt.db import session_sql

    lines = [session_sql(settings).rstrip("\n")]
    for item in items:
        comment = f"-- {item.view.name}" + (f": {item.note}" if item.note else "")
        lines.append(comment)
        if item.refused:
            lines.append("-- (refused: not run)")
        else:
            lines.append(item.statement.as_string() + ";")
    return "\n".join(lines) + "\n"


def dbopt_command() -> list[str]:
    """The command that runs this very dbopt, by absolute path (cron has none of our PATH).

    ``python -m dbopt`` stays that, with this interpreter's path (a venv's python is kept as
    is, not resolved to the system one it links to); a ``dbopt`` script is taken from
    ``sys.argv[0]``, else next to this interpreter (a venv's bin/), else from PATH.
    """
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "__main__.py":
        return [os.path.abspath(sys.executable), "-m", "dbopt"]
    if os.path.basename(argv0) == "dbopt" and os.path.isfile(argv0):
        return [os.path.abspath(argv0)]
    sibling = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "dbopt")
    if os.path.isfile(sibling) and os.access(sibling, os.X_OK):
        return [sibling]
    found = shutil.which("dbopt")
    return [os.path.abspath(found)] if found else ["dbopt"]


def _flag_name(name: QualifiedName) -> str:
    """``schema.name`` as --view reads it: a part with a dot, quote or space double-quoted."""

    def part(text: str) -> str:
        if text and not any(c in '."' or c.isspace() for c in text):
            return text
        return '"' + text.replace('"', '""') + '"'

    return f"{part(name.schema)}.{part(name.name)}"


def _lock_file(lock_dir: str, view: QualifiedName, args: Sequence[str]) -> str:
    """One lock file per view and target: ``.dbopt-refresh-<view>-<hash>.lock``."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(view))[:60]
    digest = hashlib.sha256("\0".join(args).encode()).hexdigest()[:8]
    return os.path.join(lock_dir, f".dbopt-refresh-{slug}-{digest}.lock")


def _target_args(
    target: Target | None, env: str | None, environ: Mapping[str, str]
) -> tuple[list[str], list[str]]:
    """The flags that name the database under cron, and comments a reader must see."""
    if target is None:
        return (["--env", env] if env else []), []
    if target.env is not None:
        notes = [
            f"# cron's environment is minimal: if environment '{target.env}' reads ${{VARS}} in "
            "its dsn, define them in this crontab (NAME=value lines) or keep the password in "
            "~/.pgpass"
        ]
        parts = target.environment_parts(environ)
        if parts:
            notes.append(
                f"# warning: environment '{target.env}' takes "
                + ", ".join(str(p) for p in parts)
                + " from this shell; cron will not have it: write it into its dsn"
            )
        return ["--env", target.env], notes
    portable = portable_dsn(target.dsn or "", environ)
    notes = [f"# target: {describe_target(portable.dsn)} (from {target.source or '--dsn'})"]
    if portable.password_removed:
        notes.append(
            "# the password is not written here: put it in ~/.pgpass (or the file PGPASSFILE "
            "names, or a pg_service.conf service) of the user whose crontab runs these lines"
        )
    return (["--dsn", portable.dsn] if portable.dsn else []), notes


#: cron runs jobs with /bin/sh and a PATH of /usr/bin:/bin; these lines say so explicitly.
CRON_SHELL = "/bin/sh"
CRON_PATH = "/usr/local/bin:/usr/bin:/bin"


def crontab_lines(
    views: Sequence[ViewSpec],
    *,
    env: str | None,
    workdir: str,
    dbopt: str | Sequence[str] = "dbopt",
    target: Target | None = None,
    config: str | None = None,
    specs: Sequence[str] = (),
    lock_dir: str | None = None,
    log: str | None = None,
    env_file: str | None = None,
    env_file_required: bool = True,
    environ: Mapping[str, str] | None = None,
    selection: Sequence[str] = (),
) -> str:
    """crontab(5) lines, one per scheduled view, each calling `dbopt refresh-views`.

    ``selection``: flags passed on after the target's (a fleet's ``--target NAME``).

    The text starts with ``SHELL=`` and ``PATH=`` lines (cron's own: no login profile, no
    virtualenv). Each line ``cd``s to ``workdir`` (absolute) and keeps the target it was given:
    ``target`` (from resolve_target) becomes ``--env NAME``, or ``--dsn`` with what the libpq
    environment supplied here spelled out (cron has no PGHOST) and the password left out (a
    comment says where it must come from); without ``target``, ``env`` alone is passed on.
    ``config`` and ``specs`` are passed as absolute paths. ``dbopt`` is the command to run
    (pass :func:`dbopt_command`: cron's PATH does not hold a virtualenv's bin/).

    ``env_file`` is sourced with ``set -a`` first (the variables dbopt.yaml's ``${VAR}`` and
    libpq read, kept out of the crontab); with ``env_file_required=False`` only when it exists.
    ``lock_dir`` wraps each line in ``flock -n`` on a lock file there, one per view and
    target, so a run still going makes the next one exit at once (status 1) instead of
    piling up processes; dbopt's own per-view advisory lock, in the database, makes a refresh
    started from anywhere else (another host, a person) skip that view. ``log`` appends the
    whole line's output to that file, or sends it to syslog with ``logger -t dbopt`` when it
    is ``"syslog"`` (else cron mails it). Paths are quoted for sh; ``%`` is escaped as
    crontab(5) requires.
    """
    environ = os.environ if environ is None else environ
    command = [dbopt] if isinstance(dbopt, str) else list(dbopt)
    target_args, notes = _target_args(target, env, environ)
    common = [*target_args, *selection]
    if config is not None:
        common += ["--config", os.path.abspath(config)]
    for spec_dir in specs:
        common += ["--specs", os.path.abspath(spec_dir)]
    lines = [
        "# dbopt refresh-views schedules (crontab runs in the machine's local time zone).",
        "# cron runs each line with /bin/sh, this PATH and no login environment:",
        f"SHELL={CRON_SHELL}",
        f"PATH={CRON_PATH}",
        "# Each line takes a per-view lock: an overlapping run is skipped, never queued.",
        *notes,
    ]
    flock = shutil.which("flock", path=CRON_PATH) or shutil.which("flock")
    if lock_dir is not None and flock is None:
        lines.append("# warning: flock(1) is not on this machine's PATH (util-linux has it)")
    prelude = ""
    if env_file is not None:
        path = shlex.quote(os.path.abspath(env_file))
        source = f". {path}" if env_file_required else f"if [ -r {path} ]; then . {path}; fi"
        prelude = f"set -a && {source} && set +a && "
        lines.append(
            f"# {os.path.abspath(env_file)} is read first (NAME=value lines for dbopt.yaml's "
            "${VARS} and libpq; keep it readable by this crontab's user only)"
            + ("" if env_file_required else ", when it exists")
        )
    for view in views:
        if view.refresh.schedule is None:
            lines.append(f"# {view.name}: no refresh schedule in its spec")
            continue
        # A log keeps a line per refresh (-v); mailed by cron, only failures are printed.
        verbose = ["-v"] if log is not None else []
        args = [*command, "refresh-views", *common, *verbose, "--view", _flag_name(view.name)]
        if lock_dir is not None:
            lock = _lock_file(os.path.abspath(lock_dir), view.name, args)
            args = [flock or "flock", "-n", lock, *args]
        text = f"cd {shlex.quote(os.path.abspath(workdir))} && {prelude}{shlex.join(args)}"
        if log == "syslog":
            text = f"{{ {text}; }} 2>&1 | logger -t dbopt"
        elif log is not None:
            text = f"{{ {text}; }} >> {shlex.quote(os.path.abspath(log))} 2>&1"
        if "\n" in text or "\r" in text:
            raise InputError(f"{view.name}: a path or DSN holds a line break; cron cannot run it")
        # crontab(5): an unescaped % ends the command (the rest becomes its standard input).
        escaped = text.replace("%", "\\%")
        lines.append(f"{view.refresh.schedule} {escaped}")
    return "\n".join(lines) + "\n"


def _job_command(item: RefreshItem, history_schema: str) -> str:
    """A pg_cron job's command: the REFRESH, then its record in the history, on one line."""
    from dbopt.catalog import catalog_sql

    record = (
        catalog_sql("pg_cron_record")
        .format(
            schema=sql.Identifier(history_schema),
            view_schema=sql.Literal(item.view.name.schema),
            view_name=sql.Literal(item.view.name.name),
            mode=sql.Literal("concurrent" if item.concurrently else "blocking"),
        )
        .as_string()
    )
    lines = [line.strip() for line in record.splitlines()]
    statement = " ".join(line for line in lines if line and not line.startswith("--"))
    return f"{item.statement.as_string()}; {statement}"


def pg_cron_sql(items: Sequence[RefreshItem], database: str, history_schema: str) -> str:
    """``cron.schedule_in_database`` calls for the pg_cron extension (1.4+), one job per
    scheduled view, each run in ``database`` whichever database pg_cron lives in (managed
    services keep it in one, ``cron.database_name``). Each job records its refresh in the
    history (``history_schema``.refreshes), in the refresh's own transaction."""
    lines = [
        "-- Run these in the database pg_cron is installed in (cron.database_name); each job",
        f"-- refreshes in {database}. pg_cron runs schedules in GMT (unless cron.timezone is",
        "-- set) and never on a standby; its jobs do not take dbopt's per-view lock nor follow",
        "-- dependency order. Each job records its refresh in dbopt's history (the job's role",
        f"-- needs INSERT on {history_schema}.refreshes and USAGE on its sequence).",
    ]
    for item in items:
        schedule = item.view.refresh.schedule
        if schedule is None:
            lines.append(f"-- {item.view.name}: no refresh schedule in its spec")
            continue
        lines.append(
            sql.SQL("SELECT cron.schedule_in_database({}, {}, {}, {});")
            .format(
                sql.Literal(f"dbopt refresh {item.view.name}"),
                sql.Literal(schedule),
                sql.Literal(_job_command(item, history_schema)),
                sql.Literal(database),
            )
            .as_string()
        )
    return "\n".join(lines) + "\n"


class Interruption:
    """Ctrl-C for a refresh running in a fleet's thread (which never sees KeyboardInterrupt).

    It cancels the statement on the connection only while one that may be cancelled runs (a
    REFRESH, the catalog read before), never the bookkeeping around it (the row count, the
    history row, the advisory lock): a view that did refresh is never recorded as failed, and
    every view that ran has its record. A cancel that lands as such a statement ends finds the
    session idle, and the server ignores it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self.requested = False

    @contextmanager
    def cancellable(self, conn: psycopg.Connection[Any]) -> Iterator[None]:
        """The block's statements may be cancelled (KeyboardInterrupt at once if requested)."""
        with self._lock:
            if self.requested:
                raise KeyboardInterrupt
            self._conn = conn
        try:
            yield
        finally:
            with self._lock:
                self._conn = None

    def interrupt(self) -> None:
        """Ctrl-C: cancel what runs in a cancellable block now; start nothing more."""
        with self._lock:
            self.requested = True
            if self._conn is not None:
                with contextlib.suppress(psycopg.Error):
                    self._conn.cancel_safe()


class RefreshWatch(Protocol):
    """Who hears of a refresh run view by view (the CLI's JSON log)."""

    def started(self, view: QualifiedName, mode: str) -> None:
        """A view's refresh starts (``mode``: concurrent or blocking)."""

    def ended(self, result: RefreshResult) -> None:
        """A view's refresh is over (recorded in the history)."""


def run_refresh(
    conn: psycopg.Connection[Any],
    items: Sequence[RefreshItem],
    settings: Settings,
    history: History,
    environment: str | None,
    watch: RefreshWatch | None = None,
    interruption: Interruption | None = None,
) -> list[RefreshResult]:
    """Refresh each view in order on an autocommit connection; record every outcome.

    ``watch`` hears of each view as it starts and as it ends (live logs of a long run).
    ``interruption``: Ctrl-C in a fleet cancels the REFRESH running (the view is recorded as
    cancelled), starts no other view, and KeyboardInterrupt ends the run."""
    history.ensure(conn)
    results: list[RefreshResult] = []
    failed: set[QualifiedName] = set()
    for item in items:
        if interruption is not None and interruption.requested:
            raise KeyboardInterrupt
        name = item.view.name
        mode = "concurrent" if item.concurrently else "blocking"
        if watch is not None:
            watch.started(name, mode)
        upstream = [d for d in item.view.depends_on if d in failed]
        if item.refused:
            result = RefreshResult(
                name, RefreshOutcome.FAILED, mode, message=f"refused: {item.note}"
            )
        elif upstream:
            result = RefreshResult(
                name,
                RefreshOutcome.SKIPPED,
                mode,
                message=f"skipped: {upstream[0]} failed to refresh",
            )
        else:
            result = _refresh_one(conn, item, mode, interruption)
        if result.outcome == RefreshOutcome.FAILED:
            failed.add(name)
        history.record_refresh(conn, environment, result)
        results.append(result)
        if watch is not None:
            watch.ended(result)
    return results


def _refresh_one(
    conn: psycopg.Connection[Any],
    item: RefreshItem,
    mode: str,
    interruption: Interruption | None = None,
) -> RefreshResult:
    name = item.view.name
    lock = locks.AdvisoryLock.refresh(name)
    if not locks.try_lock(conn, lock):
        return RefreshResult(
            name,
            RefreshOutcome.SKIPPED,
            mode,
            message=f"a refresh of {name} is already running ({locks.holder(conn, lock)})",
        )
    started = time.monotonic()
    try:
        with interruption.cancellable(conn) if interruption else contextlib.nullcontext():
            conn.execute(item.statement)
        rows = _rows(conn, name)
    except psycopg.Error as exc:
        # Say which timeout stopped it, when one did (a cron log is read at 2 a.m.).
        cancelled = isinstance(exc, pgerrors.QueryCanceled)
        if cancelled and interruption is not None and interruption.requested:
            return RefreshResult(
                name,
                RefreshOutcome.FAILED,
                mode,
                time.monotonic() - started,
                message="cancelled (Ctrl-C)",
            )
        prefix = (
            "lock_timeout: "
            if isinstance(exc, pgerrors.LockNotAvailable)
            else "statement_timeout: "
            if cancelled
            else ""
        )
        return RefreshResult(
            name,
            RefreshOutcome.FAILED,
            mode,
            time.monotonic() - started,
            message=prefix + server_message(exc),
        )
    finally:
        locks.unlock(conn, lock)
    return RefreshResult(
        name, RefreshOutcome.OK, mode, time.monotonic() - started, rows=rows, message=item.note
    )


def _rows(conn: psycopg.Connection[Any], name: QualifiedName) -> int | None:
    """How many rows the refreshed view holds (None when counting fails: the refresh itself
    succeeded and is recorded as such)."""
    try:
        counted = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(name.ident())).fetchone()
    except psycopg.Error:
        return None
    return int(counted[0]) if counted else None
