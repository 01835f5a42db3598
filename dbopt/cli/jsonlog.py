"""``--log-format json``: one JSON object per line on stdout, for log shippers.

Cron, Kubernetes and CI logs are read by machines (Loki, Fluent Bit, CloudWatch...) that split
a stream into lines and parse each. With ``--log-format json`` every line ``apply`` and
``refresh-views`` write to stdout is one event, and nothing else is written there; the run's
error, which dbopt otherwise prints on stderr, is the ``error`` of its ``run_end`` event, so
``>> dbopt.log 2>&1`` still gives a file of JSON lines. Every event has:

- ``ts``: ISO-8601 UTC with milliseconds (``2025-01-31T02:00:00.123Z``),
- ``event``: ``run_start``, ``action_start``, ``action_finish``, ``action_failure``,
  ``action_skipped``, ``lock_wait``, ``progress``, ``message`` or ``run_end``,
- ``command``: ``apply`` or ``refresh-views``,

and the event's own fields (``object``, ``action``, ``seconds``, ``error``...; ``run_end``:
``outcome`` and ``exit_code``). Passwords never appear: the target is described as everywhere
in dbopt (``user@host:port/db``), and every text is scrubbed of the target's secrets.
"""

from __future__ import annotations

import functools
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any, TypeVar

import click

from dbopt.errors import EXIT_BAD_INPUT, EXIT_CHECK_FAILED, EXIT_CONNECT, EXIT_INTERRUPTED

if TYPE_CHECKING:
    from dbopt.cli.common import Options
    from dbopt.config import Target
    from dbopt.model import QualifiedName
    from dbopt.planner import Plan
    from dbopt.progress import Blocker
    from dbopt.refresh import RefreshResult
    from dbopt.rollback import Skipped

F = TypeVar("F", bound=Callable[..., Any])

#: The --log-format option of apply and refresh-views.
LOG_FORMAT = click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one JSON object per event on stdout (run start, each action's start and end "
    "with durations, lock waits, run end with outcome and exit code), for log shippers.",
)

#: Progress and wait events of one object: at most one every this many seconds.
_THROTTLE_S = 10.0


def utc_now() -> str:
    """Now, as ISO-8601 UTC with milliseconds and a Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonLog:
    """Writes events as JSON lines (thread-safe: apply builds tables in parallel)."""

    def __init__(self, command: str, stream: IO[str] | None = None) -> None:
        self.command = command
        self.stream = stream
        self.secrets: list[str] = []
        #: Fields of every event from now on (the target, once known).
        self.context: dict[str, Any] = {}
        #: Fields the command learnt during the run, for ``run_end`` (run_id, run_outcome...).
        self.end: dict[str, Any] = {}
        self._lock = threading.Lock()

    def bind(self, target: Target) -> None:
        """Name the target on every later event (never its password) and scrub its secrets."""
        from dbopt.dsn import describe_target, secrets_of

        self.secrets = secrets_of(target.dsn or "")
        self.context["target"] = describe_target(target.dsn or "")
        if target.env is not None:
            self.context["environment"] = target.env

    def emit(self, event: str, **fields: Any) -> None:
        """One line: ``{"ts", "event", "command", **context, **fields}``; None values are
        left out.

        Every string of the record is scrubbed before it is written as JSON: a password with
        a quote, a backslash or a newline is escaped by ``json.dumps`` and would no longer
        match afterwards. The line is then scrubbed again, of the raw and the escaped forms,
        in case a value reached it some other way (``default=str``)."""
        record = {"ts": utc_now(), "event": event, "command": self.command, **self.context}
        record.update({k: v for k, v in fields.items() if v is not None})
        if self.secrets:
            record = _scrubbed(record, self.secrets)
        line = json.dumps(record, default=str, ensure_ascii=False)
        if self.secrets:
            from dbopt.dsn import scrub

            line = scrub(line, _json_forms(self.secrets))
        with self._lock:
            click.echo(line, file=self.stream or sys.stdout)


def _scrubbed(value: Any, secrets: list[str]) -> Any:
    """``value`` with every secret replaced in each string it holds, at any depth; objects
    json.dumps cannot write become their scrubbed ``str`` (what ``default=str`` would give)."""
    from dbopt.dsn import scrub

    if isinstance(value, str):
        return scrub(value, secrets)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {_scrubbed(str(k), secrets): _scrubbed(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrubbed(v, secrets) for v in value]
    return scrub(str(value), secrets)


def _json_forms(secrets: list[str]) -> list[str]:
    """Each secret as it is, and as it reads inside a JSON string (both escapings)."""
    forms = set(secrets)
    for secret in secrets:
        forms.add(json.dumps(secret, ensure_ascii=False)[1:-1])
        forms.add(json.dumps(secret)[1:-1])
    return sorted(forms)


def _blocker(b: Blocker) -> dict[str, Any]:
    return {"pid": b.pid, "user": b.user, "state": b.state, "age_s": b.age_s, "query": b.query}


class JsonReporter:
    """The executor's Reporter (dbopt.progress) as events: each action's start and end
    (``action_start``; ``action_finish``, ``action_failure`` or ``action_skipped``) with the
    object's name, a retry after a lock_timeout and a concurrent build waiting for other
    transactions as ``lock_wait``, anything else the executor says as a ``message``.
    """

    def __init__(self, log: JsonLog) -> None:
        self.log = log
        self._last: dict[tuple[str, str], float] = {}

    def action_started(self, kind: str, name: QualifiedName) -> None:
        """``action_start``."""
        self.log.emit("action_start", object=str(name), action=kind)

    def action_ended(
        self, kind: str, name: QualifiedName, result: str, seconds: float, error: str | None
    ) -> None:
        """``action_finish`` (ok), ``action_skipped`` or ``action_failure`` (failed, aborted)."""
        event = _END_EVENTS.get(result, "action_failure")
        self.log.emit(
            event,
            object=str(name),
            action=kind,
            result=result,
            seconds=round(seconds, 3),
            error=error,
        )

    def event(self, message: str) -> None:
        """A lock wait, or a message."""
        if message.startswith("lock_timeout on "):
            self.log.emit("lock_wait", message=message)
        else:
            self.log.emit("message", message=message)

    def _due(self, index: QualifiedName, what: str) -> bool:
        now = time.monotonic()
        key = (str(index), what)
        if now - self._last.get(key, -_THROTTLE_S) < _THROTTLE_S:
            return False
        self._last[key] = now
        return True

    def progress(self, index: QualifiedName, phase: str, done: int, total: int) -> None:
        """At most one progress event per object every 10 s."""
        if self._due(index, "progress"):
            percent = round(100 * done / total, 1) if total else None
            self.log.emit(
                "progress", object=str(index), phase=phase, done=done, total=total, percent=percent
            )

    def waiting(
        self, index: QualifiedName, phase: str, seconds: float, blockers: list[Blocker]
    ) -> None:
        """A concurrent build or drop waits for other transactions: at most one event per
        object every 10 s, naming the sessions it waits for."""
        if self._due(index, "waiting"):
            self.log.emit(
                "lock_wait",
                object=str(index),
                phase=phase,
                seconds=round(seconds, 1),
                blockers=[_blocker(b) for b in blockers],
            )

    def finished(self, index: QualifiedName) -> None:
        """The end is told by the event that follows (with the result)."""
        self._last.pop((str(index), "progress"), None)
        self._last.pop((str(index), "waiting"), None)


class JsonHooks:
    """The use cases' hooks with JSON logs: the plan is an event, the prompt goes to stderr."""

    def __init__(self, reporter: JsonReporter, env: str | None) -> None:
        self.reporter = reporter
        self.env = env

    def planned(self, plan: Plan, title: str, skipped: Sequence[Skipped]) -> None:
        """One ``message`` event with the counts of what will run."""
        self.reporter.log.emit("message", message=f"{title}: {len(plan.runnable)} action(s) to run")

    def confirm(self, question: str) -> bool:
        """Ask on stderr (stdout holds only events); cron jobs pass --yes."""
        typed = click.prompt(
            f"{question}\nType the environment name ({self.env}) to go ahead",
            default="",
            err=True,
        )
        return bool(typed == self.env)


#: The event that ends an action, by its result (anything else, e.g. aborted: a failure).
_END_EVENTS = {"ok": "action_finish", "skipped": "action_skipped", "failed": "action_failure"}


class RefreshEvents:
    """A refresh run's views as they go (dbopt.refresh.RefreshWatch): ``action_start``, then
    ``action_finish``, ``action_failure`` or ``action_skipped`` (a refresh already running
    elsewhere, or a view whose source failed) with the view, mode, seconds, rows and message;
    the counts go to ``run_end``."""

    def __init__(self, log: JsonLog) -> None:
        self.log = log
        self.counts = {"refreshed": 0, "failed": 0, "skipped": 0}
        self.log.end.update(self.counts)

    def started(self, view: QualifiedName, mode: str) -> None:
        """``action_start``."""
        self.log.emit("action_start", object=str(view), action="refresh", mode=mode)

    def ended(self, result: RefreshResult) -> None:
        """The view's outcome, as it is known."""
        outcome = str(result.outcome)
        failed = outcome == "failed"
        self.log.emit(
            _END_EVENTS.get(outcome, "action_failure"),
            object=str(result.view),
            action="refresh",
            result=outcome,
            mode=result.mode,
            seconds=round(result.seconds, 3),
            rows=result.rows,
            error=result.message if failed else None,
            message=None if failed else result.message,
        )
        self.counts[{"ok": "refreshed"}.get(outcome, outcome)] += 1
        self.log.end.update(self.counts)


def failure(exc: BaseException) -> tuple[int, str] | None:
    """The exit code and message of an expected failure, as dbopt's group would give them
    (dbopt.cli.common.DboptGroup); None for a bug (left to raise with its traceback)."""
    import psycopg

    from dbopt.errors import DboptError, InputError

    if isinstance(exc, InputError):
        problems = [str(p) for p in exc.problems]
        head = str(exc.args[0]) if exc.args else str(exc)
        return exc.exit_code, "; ".join([*problems, head])
    if isinstance(exc, DboptError):
        return exc.exit_code, str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted"
    if isinstance(exc, click.Abort):
        return EXIT_BAD_INPUT, "not confirmed (no answer to the prompt); nothing was run"
    if isinstance(exc, psycopg.Error):
        from dbopt.db import format_db_error

        if isinstance(exc, psycopg.errors.LockNotAvailable):
            return (
                EXIT_CONNECT,
                f"gave up waiting for a lock (lock_timeout): {format_db_error(exc)}",
            )
        return EXIT_CHECK_FAILED, f"database error: {format_db_error(exc)}"
    return None


@contextmanager
def logged_run(log: JsonLog | None, **start: Any) -> Iterator[None]:
    """``run_start`` now, ``run_end`` when the block ends: ``outcome`` (ok, failed,
    interrupted), ``exit_code``, ``seconds``, ``error``, and ``log.end`` (run_id...).

    An expected failure becomes the ``run_end`` event's ``error`` and the process exits with
    its code without the usual ``error:`` line on stderr (one stream of JSON lines for a log
    file that takes both). Without a log, does nothing."""
    if log is None:
        yield
        return
    log.emit("run_start", **start)
    began = time.monotonic()
    try:
        yield
    except (Exception, KeyboardInterrupt) as exc:
        failed = failure(exc)
        if failed is None:
            raise  # a bug: its traceback, as without the log
        code, error = failed
        log.emit(
            "run_end",
            outcome="interrupted" if code == EXIT_INTERRUPTED else "failed",
            exit_code=code,
            seconds=_since(began),
            error=error,
            **log.end,
        )
        raise click.exceptions.Exit(code) from None
    log.emit("run_end", outcome="ok", exit_code=0, seconds=_since(began), **log.end)


_KEY = "dbopt.jsonlog"


def log_format_option(command: str) -> Callable[[F], F]:
    """``--log-format text|json`` for ``command``: with json, the command runs inside
    :func:`logged_run` and finds its log with :func:`current_log`.

    Goes below ``@common_options`` (it is given ``opts`` first)."""

    def decorate(fn: F) -> F:
        @LOG_FORMAT
        @functools.wraps(fn)
        def wrapper(opts: Options, *args: Any, log_format: str, **kwargs: Any) -> Any:
            log = JsonLog(command) if log_format == "json" else None
            click.get_current_context().meta[_KEY] = log
            from dbopt import __version__

            with logged_run(log, environment=opts.env, dbopt=__version__):
                return fn(opts, *args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def current_log() -> JsonLog | None:
    """The JSON log of the running command (None: text, the default)."""
    log = click.get_current_context().meta.get(_KEY)
    return log if isinstance(log, JsonLog) else None


def _since(began: float) -> float:
    return round(time.monotonic() - began, 3)


__all__ = [
    "LOG_FORMAT",
    "JsonHooks",
    "JsonLog",
    "JsonReporter",
    "RefreshEvents",
    "current_log",
    "failure",
    "log_format_option",
    "logged_run",
    "utc_now",
]
