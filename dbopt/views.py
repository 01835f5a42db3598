"""Refreshing materialized views: order, mode, locks, history, and plans for cron and pg_cron.

`dbopt refresh-views` is what cron runs. Views are refreshed in dependency order (from the
specs' depends_on and from pg_depend), CONCURRENTLY whenever PostgreSQL allows it (populated,
with a valid unique index on plain columns and no WHERE), each under a per-view advisory lock
so that overlapping cron runs skip instead of queueing.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import errors as pgerrors
from psycopg import sql

from dbopt import ddl
from dbopt.catalog import Catalog
from dbopt.config import Settings
from dbopt.db import server_message
from dbopt.errors import InputError
from dbopt.history import History
from dbopt.spec import QualifiedName, SpecSet, ViewSpec, dependency_order, parse_qualified

#: Advisory lock key space of refreshes: ('dbrf' as int32, hash of the view's name).
_REFRESH_LOCK_CLASS = 0x64627266


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
    outcome: str  # ok, failed, skipped
    mode: str  # concurrent, blocking
    seconds: float = 0.0
    rows: int | None = None
    message: str | None = None


def select_views(specs: SpecSet, names: Sequence[str]) -> list[ViewSpec]:
    """The views named (schema-qualified or not), or all; unknown names are an input error."""
    if not names:
        return list(specs.views)
    by_name = {v.name: v for v in specs.views}
    chosen = []
    for raw in names:
        name = parse_qualified(raw)
        if name not in by_name:
            known = ", ".join(str(n) for n in sorted(by_name)) or "none"
            raise InputError(f"--view {raw}: no such view in the specs (known: {known})")
        chosen.append(by_name[name])
    return chosen


def refresh_order(views: Sequence[ViewSpec], catalog: Catalog) -> list[ViewSpec]:
    """Views ordered so each comes after what it depends on (specs and pg_depend), by name."""
    chosen = {v.name: v for v in views}
    graph: dict[QualifiedName, set[QualifiedName]] = {name: set() for name in chosen}
    for view in views:
        graph[view.name].update(d for d in view.depends_on if d in chosen)
    for source, dependents in catalog.dependents.items():
        for dependent in dependents:
            if dependent in chosen and source in chosen:
                graph[dependent].add(source)
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
    from croniter import croniter

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
        previous_tick = croniter(schedule, now).get_prev(datetime)
        if last < previous_tick:
            kept.append(item)
    return kept


def refresh_sql(items: Sequence[RefreshItem], settings: Settings) -> str:
    """The ordered SQL a refresh would run (`refresh-views --plan`)."""
    from dbopt.executor import session_sql

    lines = [session_sql(settings).rstrip("\n")]
    for item in items:
        comment = f"-- {item.view.name}" + (f": {item.note}" if item.note else "")
        lines.append(comment)
        if item.refused:
            lines.append("-- (refused: not run)")
        else:
            lines.append(item.statement.as_string() + ";")
    return "\n".join(lines) + "\n"


def crontab_lines(
    views: Sequence[ViewSpec], *, env: str | None, workdir: str, dbopt: str = "dbopt"
) -> str:
    """crontab(5) lines, one per scheduled view, each calling `dbopt refresh-views`."""
    lines = [
        "# dbopt refresh-views schedules (crontab runs in the machine's local time zone).",
        "# Each line takes a per-view lock: an overlapping run is skipped, never queued.",
    ]
    for view in views:
        if view.refresh.schedule is None:
            lines.append(f"# {view.name}: no refresh schedule in its spec")
            continue
        args = [dbopt, "refresh-views"]
        if env:
            args += ["--env", env]
        args += ["--view", str(view.name)]
        lines.append(f"{view.refresh.schedule} cd {shlex.quote(workdir)} && {shlex.join(args)}")
    return "\n".join(lines) + "\n"


def pg_cron_sql(items: Sequence[RefreshItem]) -> str:
    """``cron.schedule`` calls for the pg_cron extension, one job per scheduled view."""
    lines = [
        "-- pg_cron runs schedules in GMT (unless cron.timezone is set) and never on a standby;",
        "-- its jobs do not take dbopt's per-view lock nor follow dependency order.",
    ]
    for item in items:
        schedule = item.view.refresh.schedule
        if schedule is None:
            lines.append(f"-- {item.view.name}: no refresh schedule in its spec")
            continue
        lines.append(
            sql.SQL("SELECT cron.schedule({}, {}, {});")
            .format(
                sql.Literal(f"dbopt refresh {item.view.name}"),
                sql.Literal(schedule),
                sql.Literal(item.statement.as_string()),
            )
            .as_string()
        )
    return "\n".join(lines) + "\n"


def _lock_key(name: QualifiedName) -> tuple[int, str]:
    return _REFRESH_LOCK_CLASS, str(name)


def _holder(conn: psycopg.Connection[Any], name: QualifiedName) -> str:
    row = conn.execute(
        "SELECT a.pid, round(extract(epoch FROM now() - a.query_start))::int "
        "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s::oid "
        "AND l.objid = (hashtext(%s)::bigint & 4294967295)::oid",
        (_REFRESH_LOCK_CLASS, str(name)),
    ).fetchone()
    return f"pid {row[0]}, running for {row[1]}s" if row else "another session"


def run_refresh(
    conn: psycopg.Connection[Any],
    items: Sequence[RefreshItem],
    settings: Settings,
    history: History,
    environment: str | None,
) -> list[RefreshResult]:
    """Refresh each view in order on an autocommit connection; record every outcome."""
    from dbopt.executor import apply_settings

    apply_settings(conn, settings)
    history.ensure(conn)
    results: list[RefreshResult] = []
    failed: set[QualifiedName] = set()
    for item in items:
        name = item.view.name
        mode = "concurrent" if item.concurrently else "blocking"
        upstream = [d for d in item.view.depends_on if d in failed]
        if item.refused:
            result = RefreshResult(name, "failed", mode, message=f"refused: {item.note}")
        elif upstream:
            result = RefreshResult(
                name, "skipped", mode, message=f"skipped: {upstream[0]} failed to refresh"
            )
        else:
            result = _refresh_one(conn, item, mode)
        if result.outcome == "failed":
            failed.add(name)
        history.record_refresh(conn, environment, result)
        results.append(result)
    return results


def _refresh_one(conn: psycopg.Connection[Any], item: RefreshItem, mode: str) -> RefreshResult:
    name = item.view.name
    key = _lock_key(name)
    row = conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))", key).fetchone()
    if not (row and row[0]):
        return RefreshResult(
            name,
            "skipped",
            mode,
            message=f"a refresh of {name} is already running ({_holder(conn, name)})",
        )
    started = time.monotonic()
    try:
        conn.execute(item.statement)
        counted = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(name.ident())).fetchone()
        rows = int(counted[0]) if counted else None
    except psycopg.Error as exc:
        # Say which timeout stopped it, when one did (a cron log is read at 2 a.m.).
        prefix = (
            "lock_timeout: "
            if isinstance(exc, pgerrors.LockNotAvailable)
            else "statement_timeout: "
            if isinstance(exc, pgerrors.QueryCanceled)
            else ""
        )
        return RefreshResult(
            name, "failed", mode, time.monotonic() - started, message=prefix + server_message(exc)
        )
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", key)
    return RefreshResult(name, "ok", mode, time.monotonic() - started, rows=rows, message=item.note)
