"""--log-format json: apply and refresh-views write one JSON event per line, for log shippers.

The database tests run the real CLI against a real PostgreSQL, with a failure in each run;
the reporter's lock-wait and progress events are unit tests (no database).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import helpers
import psycopg
import pytest
from click.testing import CliRunner, Result
from conftest import Owner
from helpers import environments
from psycopg.conninfo import make_conninfo

from dbopt.cli import main
from dbopt.cli.jsonlog import JsonLog, JsonReporter
from dbopt.config import Settings, Target
from dbopt.model import QualifiedName
from dbopt.progress import Blocker

# Log lines: nothing of the server's major in them (harness.matrix runs them on one major).
pytestmark = pytest.mark.one_major

SECRET = "s3cret-never-logged"


def _dsn_with_secret(db_dsn: str, owner_role: Owner) -> tuple[str, str]:
    """The test database's DSN carrying a password (a trusting server ignores it)."""
    if owner_role.password:
        return db_dsn, owner_role.password
    return make_conninfo(db_dsn, password=SECRET), SECRET


def _run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def _events(result: Result, secret: str) -> list[dict[str, Any]]:
    """Every stdout line as JSON (each must parse), checked for what every event carries."""
    assert result.stderr == "", result.stderr  # the run's error is in run_end, not on stderr
    assert secret not in result.stdout
    events = [json.loads(line) for line in result.stdout.splitlines()]
    for event in events:
        assert event["ts"].endswith("Z")
        assert datetime.fromisoformat(event["ts"].replace("Z", "+00:00")).utcoffset() is not None
        assert event["command"] in ("apply", "refresh-views")
    return events


def _of(events: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {e["object"]: e for e in events if e["event"] == kind}


def test_apply_logs_each_action_and_a_failed_build_as_json_lines(
    conn: psycopg.Connection[Any],
    db_dsn: str,
    owner_role: Owner,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conn.execute("CREATE TABLE visits (id int PRIMARY KEY, barber_id int)")
    conn.execute("INSERT INTO visits SELECT g, g % 10 FROM generate_series(1, 500) g")
    dsn, secret = _dsn_with_secret(db_dsn, owner_role)
    helpers.project(
        tmp_path,
        monkeypatch,
        {
            "indexes/visits.yaml": """\
                table: visits
                indexes:
                  - {name: visits_barber, columns: [barber_id]}
                  - {name: visits_barber_unique, columns: [barber_id], unique: true}
            """,
            "dbopt.yaml": environments(test={"dsn": dsn}),
        },
    )
    result = _run("apply", "--env", "test", "--yes", "--log-format", "json")
    assert result.exit_code == 1, result.output
    events = _events(result, secret)
    assert events[0]["event"] == "run_start"
    assert events[0]["environment"] == "test"
    end = events[-1]
    assert end["event"] == "run_end"
    assert (end["outcome"], end["exit_code"], end["run_outcome"]) == ("failed", 1, "failed")
    assert "visits_barber_unique" in end["error"]
    assert isinstance(end["run_id"], int)
    assert all(e["target"] == end["target"] for e in events[1:])  # the target, once known
    started = _of(events, "action_start")
    assert set(started) == {"public.visits_barber", "public.visits_barber_unique"}
    assert started["public.visits_barber"]["action"] == "create"
    ok = _of(events, "action_finish")["public.visits_barber"]
    assert ok["result"] == "ok" and ok["seconds"] >= 0
    failed = _of(events, "action_failure")["public.visits_barber_unique"]
    assert failed["result"] == "failed"
    assert "could not create unique index" in failed["error"]
    assert set(_of(events, "action_finish")) == {"public.visits_barber"}
    # The failed build left nothing behind; the other one is built.
    assert helpers.invalid_indexes(conn) == []
    assert helpers.oid(conn, "visits_barber") is not None


def test_refresh_views_logs_each_view_and_a_refused_one_as_json_lines(
    conn: psycopg.Connection[Any],
    db_dsn: str,
    owner_role: Owner,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conn.execute("CREATE TABLE sales (day date, amount int)")
    conn.execute("INSERT INTO sales VALUES ('2024-01-01', 5), ('2024-01-02', 7)")
    conn.execute(
        "CREATE MATERIALIZED VIEW mv_sales AS SELECT day, sum(amount) AS total FROM sales "
        "GROUP BY day"
    )
    conn.execute("CREATE UNIQUE INDEX mv_sales_day ON mv_sales (day)")
    dsn, secret = _dsn_with_secret(db_dsn, owner_role)
    helpers.project(
        tmp_path,
        monkeypatch,
        {
            "views/mv_sales.yaml": """\
                name: mv_sales
                query: SELECT day, sum(amount) AS total FROM sales GROUP BY day
                indexes:
                  - {name: mv_sales_day, columns: [day], unique: true}
                refresh: {mode: concurrent}
            """,
            "views/mv_missing.yaml": """\
                name: mv_missing
                query: SELECT count(*) AS n FROM sales
                refresh: {mode: blocking}
            """,
            "dbopt.yaml": environments(test={"dsn": dsn}),
        },
    )
    result = _run("refresh-views", "--env", "test", "--log-format", "json")
    assert result.exit_code == 1, result.output
    events = _events(result, secret)
    assert (events[0]["event"], events[-1]["event"]) == ("run_start", "run_end")
    # Live, view by view: each start is logged before its end, in the run's order.
    assert [(e["event"], e["object"]) for e in events[1:-1]] == [
        ("action_start", "public.mv_missing"),
        ("action_failure", "public.mv_missing"),
        ("action_start", "public.mv_sales"),
        ("action_finish", "public.mv_sales"),
    ]
    done = _of(events, "action_finish")["public.mv_sales"]
    assert (done["action"], done["mode"], done["rows"]) == ("refresh", "concurrent", 2)
    refused = _of(events, "action_failure")["public.mv_missing"]
    assert "does not exist yet" in refused["error"]
    end = events[-1]
    assert (end["outcome"], end["exit_code"], end["refreshed"], end["failed"]) == (
        "failed",
        1,
        1,
        1,
    )
    # Quiet on success stays the default: text mode prints nothing on stdout.
    text = _run("refresh-views", "--env", "test", "--view", "mv_sales")
    assert (text.exit_code, text.stdout) == (0, "")


def test_lock_waits_and_progress_are_events_at_most_every_ten_seconds() -> None:
    lines: list[str] = []

    class Sink:
        def write(self, text: str) -> int:
            lines.extend(t for t in text.splitlines() if t)
            return len(text)

        def flush(self) -> None:
            pass

    log = JsonLog("apply", Sink())  # type: ignore[arg-type]
    log.secrets = ["hunter2"]
    reporter = JsonReporter(log)
    index = QualifiedName("public", "visits_barber")
    blocker = Blocker(4242, 31, "idle in transaction", "app", "UPDATE visits SET x = 'hunter2'")
    reporter.waiting(index, "waiting for old snapshots", 2.04, [blocker])
    reporter.waiting(index, "waiting for old snapshots", 2.5, [blocker])  # throttled
    reporter.progress(index, "building index", 50, 200)
    reporter.event("lock_timeout on public.visits (attempt 1/6), retrying in 2s; blocked by: x")
    reporter.event("public.visits_barber: ok in 1.0s")  # not a planned action: a message
    events = [json.loads(line) for line in lines]
    assert [e["event"] for e in events] == ["lock_wait", "progress", "lock_wait", "message"]
    wait = events[0]
    assert (wait["object"], wait["phase"], wait["seconds"]) == (
        "public.visits_barber",
        "waiting for old snapshots",
        2.0,
    )
    assert wait["blockers"][0]["pid"] == 4242
    assert "hunter2" not in lines[0]  # scrubbed, like every message dbopt writes
    assert events[1]["percent"] == 25.0


class Lines:
    """A stream that keeps each line written to it."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, text: str) -> int:
        self.lines.extend(t for t in text.splitlines() if t)
        return len(text)

    def flush(self) -> None:
        pass


class Shown:
    """An object json.dumps cannot write (its ``default=str`` gives its text)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text


QUOTED = 'pa"ss\\wörd'
NEWLINE = "line1\nline2"


@pytest.mark.parametrize(
    ("secret", "dsn"),
    [
        (QUOTED, make_conninfo("host=db.example.com dbname=app user=app", password=QUOTED)),
        (QUOTED, "postgresql://app:pa%22ss%5Cw%C3%B6rd@db.example.com/app"),
        (NEWLINE, make_conninfo("host=db.example.com dbname=app user=app", password=NEWLINE)),
    ],
    ids=["quote-backslash-umlaut", "uri-encoded", "newline"],
)
def test_a_password_json_would_escape_is_scrubbed_from_every_field(secret: str, dsn: str) -> None:
    stream = Lines()
    log = JsonLog("apply", stream)  # type: ignore[arg-type]
    log.bind(Target("production", dsn, Settings()))
    # An error message carrying the DSN (and the password on its own), nested fields, and an
    # object only default=str can write.
    log.emit(
        "run_end",
        error=f"could not connect to {dsn}: password {secret} refused",
        blockers=[{"query": f"ALTER ROLE app PASSWORD '{secret}'", "pid": 7}],
        detail=Shown(f"dsn={dsn}"),
    )
    (line,) = stream.lines
    escaped = (json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1])
    for form in (secret, *escaped):
        assert form not in line, form
    event = json.loads(line)
    for text in (event["error"], event["blockers"][0]["query"], event["detail"]):
        assert secret not in text and "***" in text, text
    assert event["target"] == "app@db.example.com:5432/app"
    assert event["blockers"][0]["pid"] == 7
