"""Materialized views on a real PostgreSQL: plan/apply/rollback, refresh-views, plans for cron."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import helpers
import psycopg
import pytest
from helpers import catalog_snapshot, cli, view_def

REVENUE = """
name: mv_revenue
query: |
  SELECT day, sum(amount) AS revenue FROM sales GROUP BY day
indexes:
  - {name: mv_revenue_day, columns: [day], unique: true}
refresh:
  schedule: "0 * * * *"
  mode: concurrent
"""

TOP_DAYS = """
name: mv_top_days
query: SELECT day, revenue FROM mv_revenue WHERE revenue > 100
depends_on: [mv_revenue]
indexes:
  - {name: mv_top_days_day, columns: [day], unique: true}
refresh:
  schedule: "30 2 * * *"
"""


COUNT = """
name: mv_count
query: SELECT day, count(*) AS n FROM sales GROUP BY day
indexes:
  - {name: mv_count_day, columns: [day], unique: true}
"""


def drift_revenue(project: Path, change: str = "+ 0") -> None:
    """mv_revenue's spec with its query changed (``sum(amount) + 0``): a replace to run."""
    (project / "views" / "mv_revenue.yaml").write_text(
        REVENUE.replace("sum(amount)", f"sum(amount) {change}")
    )


@contextlib.contextmanager
def no_view_drops(admin_conn: psycopg.Connection[Any]) -> Iterator[None]:
    """DROP MATERIALIZED VIEW fails while it lasts (an event trigger): a cascade's drops of
    the old views fail after its swap landed."""
    admin_conn.execute(
        "CREATE FUNCTION no_matview_drop() RETURNS event_trigger LANGUAGE plpgsql AS $$ "
        "BEGIN RAISE EXCEPTION 'no drops today'; END $$"
    )
    admin_conn.execute(
        "CREATE EVENT TRIGGER no_matview_drop ON ddl_command_start "
        "WHEN TAG IN ('DROP MATERIALIZED VIEW') EXECUTE FUNCTION no_matview_drop()"
    )
    try:
        yield
    finally:
        admin_conn.execute("DROP EVENT TRIGGER no_matview_drop")
        admin_conn.execute("DROP FUNCTION no_matview_drop()")


@pytest.fixture
def project(conn: psycopg.Connection[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    conn.execute("CREATE TABLE sales (id int PRIMARY KEY, day date, amount int)")
    conn.execute(
        "INSERT INTO sales SELECT g, date '2026-01-01' + g % 60, g % 97 FROM "
        "generate_series(1, 3000) g"
    )
    return helpers.project(
        tmp_path,
        monkeypatch,
        {"views/mv_revenue.yaml": REVENUE, "views/mv_top_days.yaml": TOP_DAYS},
    )


class Reader:
    """A thread that keeps running one query while the block runs; collects what went wrong."""

    def __init__(self, dsn: str, query: str, *, lock_timeout: str) -> None:
        self.dsn, self.query, self.lock_timeout = dsn, query, lock_timeout
        self.errors: list[BaseException] = []
        self.reads = 0
        self.slowest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def __enter__(self) -> Reader:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as r:
            r.execute("SELECT set_config('lock_timeout', %s, false)", (self.lock_timeout,))
            while not self._stop.is_set():
                try:
                    started = time.monotonic()
                    r.execute(self.query).fetchone()
                    self.slowest = max(self.slowest, time.monotonic() - started)
                    self.reads += 1
                except BaseException as exc:  # any error fails the test
                    self.errors.append(exc)
                    return


def relations(conn: psycopg.Connection[Any]) -> dict[str, str]:
    rows = conn.execute(
        "SELECT c.relname, c.relkind::text FROM pg_class c JOIN pg_namespace n "
        "ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('m', 'i') "
        "AND c.relname <> 'sales_pkey'"
    ).fetchall()
    return {r[0]: r[1] for r in rows}


def test_create_in_dependency_order_skip_and_rollback(
    project: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    planned = cli("plan", "--dsn", db_dsn, "--format", "json")
    assert planned.exit_code == 0, planned.output
    actions = [(a["action"], a["object"]) for a in json.loads(planned.output)["actions"]]
    assert actions == [("create", "public.mv_revenue"), ("create", "public.mv_top_days")]
    applied = cli("apply", "--dsn", db_dsn)
    assert applied.exit_code == 0, applied.output
    assert relations(conn) == {
        "mv_revenue": "m",
        "mv_revenue_day": "i",
        "mv_top_days": "m",
        "mv_top_days_day": "i",
    }
    replanned = json.loads(cli("plan", "--dsn", db_dsn, "--format", "json").output)
    assert {a["action"] for a in replanned["actions"]} == {"skip"}
    rolled = cli("rollback", "--dsn", db_dsn, "--last", "--yes")
    assert rolled.exit_code == 0, rolled.output
    assert relations(conn) == {}


def test_rollback_refuses_before_anything_runs_when_a_reader_it_leaves_alone_reads_a_view(
    project: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    """Seen in an exploratory review: mv_top_days, made again by hand after the run (so not
    dbopt's to drop), still reads mv_revenue. Rollback counted it among the views it drops
    first, dropped the indexes, then failed on DROP MATERIALIZED VIEW mv_revenue half-way."""
    applied = cli("apply", "--dsn", db_dsn)
    assert applied.exit_code == 0, applied.output
    conn.execute("DROP MATERIALIZED VIEW mv_top_days")
    conn.execute(
        "CREATE MATERIALIZED VIEW mv_top_days AS SELECT day, revenue FROM mv_revenue "
        "WHERE revenue > 1000"
    )
    before = relations(conn)
    planned = cli("rollback", "--dsn", db_dsn, "--last", "--plan")
    assert "mv_top_days depends on it" in planned.output, planned.output
    rolled = cli("rollback", "--dsn", db_dsn, "--last", "--yes")
    assert rolled.exit_code == 2, rolled.output
    assert "materialized view public.mv_revenue cannot be dropped" in rolled.output
    assert relations(conn) == before  # nothing ran: mv_revenue and its index are there


def test_replace_keeps_readers_reading_and_rollback_restores(
    project: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    (project / "views" / "mv_top_days.yaml").unlink()
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    before = view_def(conn, "mv_revenue")
    (project / "views" / "mv_revenue.yaml").write_text(
        REVENUE.replace("sum(amount) AS revenue", "sum(amount) AS revenue, count(*) AS sales")
    )
    drift = cli("apply", "--dsn", db_dsn)
    assert drift.exit_code == 1
    assert "replace public.mv_revenue needs --replace-drifted" in drift.output
    plan = cli("plan", "--dsn", db_dsn, "--format", "plain")
    assert "+    count(*) AS sales" in plan.output

    with Reader(db_dsn, "SELECT count(*) FROM mv_revenue", lock_timeout="5s") as reader:
        replaced = cli("apply", "--dsn", db_dsn, "--replace-drifted")
    assert replaced.exit_code == 0, replaced.output
    assert reader.errors == []
    assert reader.reads > 0
    # Never blocked longer than its lock_timeout (it would have failed with an error).
    assert reader.slowest < 5
    assert "count(*) AS sales" in view_def(conn, "mv_revenue")
    assert relations(conn) == {"mv_revenue": "m", "mv_revenue_day": "i"}
    rolled = cli("rollback", "--dsn", db_dsn, "--last", "--yes")
    assert rolled.exit_code == 0, rolled.output
    assert view_def(conn, "mv_revenue") == before
    assert relations(conn) == {"mv_revenue": "m", "mv_revenue_day": "i"}


def test_replace_with_dependents_needs_cascade_which_rebuilds_them(
    project: Path, conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    # A plain view (with a grant that must survive) and a spec view (mv_top_days) read it.
    conn.execute("CREATE VIEW report AS SELECT day, revenue FROM mv_revenue")
    admin_conn.execute("DROP ROLE IF EXISTS dbopt_analyst")
    admin_conn.execute("CREATE ROLE dbopt_analyst")
    conn.execute("GRANT SELECT ON report TO dbopt_analyst")
    drift_revenue(project)
    # Both flags named at once (seen in an exploratory review: plan said --replace-drifted,
    # then apply with it asked for --cascade).
    drift = cli("apply", "--dsn", db_dsn)
    assert drift.exit_code == 1, drift.output
    assert "replace public.mv_revenue needs --replace-drifted --cascade" in drift.output
    refused = cli("apply", "--dsn", db_dsn, "--replace-drifted")
    assert refused.exit_code == 2, refused.output
    assert "public.report" in refused.output and "--cascade" in refused.output
    assert "(sales.amount) + 0" not in view_def(conn, "mv_revenue")

    planned = cli("plan", "--dsn", db_dsn, "--replace-drifted", "--cascade", "--format", "plain")
    assert "rebuilds what reads it: public.report, public.mv_top_days" in planned.output

    assert cli("refresh-views", "--dsn", db_dsn).exit_code == 0
    applied = cli("apply", "--dsn", db_dsn, "--replace-drifted", "--cascade")
    assert applied.exit_code == 0, applied.output
    assert "+ 0" in view_def(conn, "mv_revenue")
    # The rebuilt reader was filled during the apply: status says so (seen in a review: it
    # kept the refresh before, and would call a view just filled overdue).
    [run_start] = conn.execute("SELECT max(started_at) FROM dbopt.runs").fetchone() or [None]
    status = json.loads(cli("status", "--dsn", db_dsn, "--format", "json").output)
    last = {v["view"]: v["last_refresh"] for v in status["views"]}
    assert datetime.fromisoformat(last["public.mv_top_days"]) == run_start, last
    # The readers read the new view: the old one is gone, nothing of dbopt's is left over.
    assert conn.execute("SELECT count(*) FROM report").fetchone() == (60,)
    assert {r for r in relations(conn)} == {
        "mv_revenue",
        "mv_revenue_day",
        "mv_top_days",
        "mv_top_days_day",
    }
    grants = conn.execute(
        "SELECT has_table_privilege('dbopt_analyst', 'report', 'SELECT')"
    ).fetchone()
    assert grants == (True,)
    deps = conn.execute(
        "SELECT count(*) FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid "
        "WHERE d.refobjid = 'mv_revenue'::regclass AND r.ev_class <> 'mv_revenue'::regclass"
    ).fetchone()
    assert deps is not None and deps[0] >= 2  # report and mv_top_days read the new one

    rolled = cli("rollback", "--dsn", db_dsn, "--last", "--yes")
    assert rolled.exit_code == 0, rolled.output
    assert "+ 0" not in view_def(conn, "mv_revenue")
    assert conn.execute("SELECT count(*) FROM report").fetchone() == (60,)
    conn.execute("DROP VIEW report")
    admin_conn.execute("DROP ROLE dbopt_analyst")


def test_a_rebuilt_reader_made_by_hand_was_filled_during_the_run_too(
    project: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    """Seen in a review: a reader the cascade rebuilt kept its last refresh from before when
    dbopt had not made it (who made a view says nothing of how new its data is)."""
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    conn.execute(
        "CREATE MATERIALIZED VIEW mv_hand AS SELECT day, revenue FROM mv_revenue WHERE revenue > 0"
    )
    conn.execute("CREATE UNIQUE INDEX mv_hand_day ON mv_hand (day)")
    (project / "views" / "mv_hand.yaml").write_text(
        "name: mv_hand\n"
        "query: SELECT day, revenue FROM mv_revenue WHERE revenue > 0\n"
        "indexes:\n"
        "  - {name: mv_hand_day, columns: [day], unique: true}\n"
    )
    assert cli("refresh-views", "--dsn", db_dsn).exit_code == 0
    drift_revenue(project)
    applied = cli("apply", "--dsn", db_dsn, "--replace-drifted", "--cascade")
    assert applied.exit_code == 0, applied.output
    [run_start] = conn.execute("SELECT max(started_at) FROM dbopt.runs").fetchone() or [None]
    status = json.loads(cli("status", "--dsn", db_dsn, "--format", "json").output)
    last = {v["view"]: v["last_refresh"] for v in status["views"]}
    assert datetime.fromisoformat(last["public.mv_hand"]) == run_start, last
    # One that holds no data is rebuilt without: filled by nothing (seen in a second review:
    # "populated no" beside "last refresh 0s ago").
    conn.execute("REFRESH MATERIALIZED VIEW mv_hand WITH NO DATA")
    drift_revenue(project, "+ 1")
    again = cli("apply", "--dsn", db_dsn, "--replace-drifted", "--cascade")
    assert again.exit_code == 0, again.output
    [second] = conn.execute("SELECT max(started_at) FROM dbopt.runs").fetchone() or [None]
    status = json.loads(cli("status", "--dsn", db_dsn, "--format", "json").output)
    [hand] = [v for v in status["views"] if v["view"] == "public.mv_hand"]
    assert hand["populated"] is False and hand["last_refresh"] is not None, hand
    assert datetime.fromisoformat(hand["last_refresh"]) < second, hand


def test_a_cascade_whose_reader_cannot_be_swapped_changes_nothing(
    project: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    """Seen in an exploratory review: the view's swap committed, then its reader's swap timed
    out (a session holding the reader), leaving the reader on the old view and _dbopt_old
    objects behind. Every swap of a cascade is now one transaction: all or nothing."""
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    before = view_def(conn, "mv_revenue")
    oids = dict(
        conn.execute(
            "SELECT relname, oid::int FROM pg_class WHERE relname IN ('mv_revenue', 'mv_top_days')"
        ).fetchall()
    )
    (project / "dbopt.yaml").write_text(
        helpers.environments(
            test={"dsn": db_dsn, "lock_timeout": "200ms", "retries": 1, "retry_backoff": "10ms"}
        )
    )
    drift_revenue(project)
    with psycopg.connect(db_dsn) as holder:
        # A transaction that read the reader holds it until it ends: no rename of it can commit.
        holder.execute("SELECT count(*) FROM mv_top_days").fetchone()
        applied = cli("apply", "--env", "test", "--replace-drifted", "--cascade")
        holder.rollback()
    assert applied.exit_code == 1, applied.output
    assert "blocked by: pid" in applied.output and "FROM mv_top_days" in applied.output
    # Nothing changed: the same two views (same OIDs), the reader on the view it read.
    assert view_def(conn, "mv_revenue") == before
    assert relations(conn) == {
        "mv_revenue": "m",
        "mv_revenue_day": "i",
        "mv_top_days": "m",
        "mv_top_days_day": "i",
    }
    now = dict(
        conn.execute(
            "SELECT relname, oid::int FROM pg_class WHERE relname IN ('mv_revenue', 'mv_top_days')"
        ).fetchall()
    )
    assert now == oids
    reads = conn.execute(
        "SELECT DISTINCT d.refobjid::regclass::text FROM pg_depend d JOIN pg_rewrite r "
        "ON r.oid = d.objid WHERE r.ev_class = 'mv_top_days'::regclass "
        "AND d.refobjid <> 'mv_top_days'::regclass"
    ).fetchall()
    assert reads == [("mv_revenue",)]
    status = cli("status", "--env", "test", "--format", "json")
    assert "_dbopt_" not in status.output
    # Once the reader is free, the same command goes through.
    again = cli("apply", "--env", "test", "--replace-drifted", "--cascade")
    assert again.exit_code == 0, again.output
    assert "+ 0" in view_def(conn, "mv_revenue")
    assert set(relations(conn)) == {
        "mv_revenue",
        "mv_revenue_day",
        "mv_top_days",
        "mv_top_days_day",
    }


def test_a_type_change_a_reading_view_cannot_follow_is_refused_before_anything_runs(
    project: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    """Seen in a review: a plain view whose column would change type (or collation) with the
    new query cannot be re-bound (CREATE OR REPLACE VIEW keeps its columns' types and
    collations), so the cascade's swap failed after every build. Now each reading view is
    made again on trial over the new query and compared: refused up front only when one of
    its columns would change (a second review: a view using the column in WHERE only, or a
    reader casting it back, had been refused too)."""
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    (project / "views" / "mv_revenue.yaml").write_text(
        REVENUE.replace("sum(amount) AS revenue", "sum(amount)::numeric AS revenue")
    )
    before = catalog_snapshot(conn)
    # mv_top_days (materialized, rebuilt) reads revenue, and a plain view reads mv_top_days.
    conn.execute("CREATE VIEW top_report AS SELECT day, revenue FROM mv_top_days")
    over_reader = cli("apply", "--dsn", db_dsn, "--replace-drifted", "--cascade")
    assert over_reader.exit_code == 2, over_reader.output
    said = " ".join(over_reader.output.split())
    assert (
        "the view public.top_report (it reads public.mv_top_days, rebuilt from "
        "public.mv_revenue) would change its column revenue (bigint to numeric): a view keeps "
        "its columns' types and collations"
    ) in said, said
    conn.execute("DROP VIEW top_report")
    # A plain view reading the column itself; and one changing collation.
    conn.execute("CREATE VIEW report AS SELECT day, revenue FROM mv_revenue")
    direct = cli("apply", "--dsn", db_dsn, "--replace-drifted", "--cascade")
    assert direct.exit_code == 2, direct.output
    said = " ".join(direct.output.split())
    assert ("the view public.report would change its column revenue (bigint to numeric)") in said, (
        said
    )
    conn.execute("DROP VIEW report")
    # One that cannot be tried over the new query (seen in a second review: let through,
    # and the swap failed after the builds) is refused too.
    conn.execute(
        "CREATE VIEW locking AS SELECT s.id, r.revenue FROM sales s JOIN mv_revenue r "
        "USING (day) FOR SHARE OF s"
    )
    untried = cli("apply", "--dsn", db_dsn, "--replace-drifted", "--cascade")
    assert untried.exit_code == 2, untried.output
    said = " ".join(untried.output.split())
    assert (
        "the view public.locking reads a column whose type or collation the new query "
        "changes, and dbopt could not try it over the new query"
    ) in said, said
    conn.execute("DROP VIEW locking")
    # A materialized reader whose own query fails over the new type (seen in a third review:
    # it failed only at its rebuild, after the view's build).
    conn.execute(
        "CREATE MATERIALIZED VIEW mv_halves AS SELECT day, revenue % 2 AS odd FROM mv_revenue"
    )
    (project / "views" / "mv_revenue.yaml").write_text(
        REVENUE.replace("sum(amount) AS revenue", "sum(amount)::float8 AS revenue")
    )
    halves = cli("apply", "--dsn", db_dsn, "--replace-drifted", "--cascade")
    assert halves.exit_code == 2, halves.output
    said = " ".join(halves.output.split())
    assert "the view public.mv_halves (rebuilt from public.mv_revenue) reads a column" in said
    assert "operator does not exist: double precision %" in said, said
    conn.execute("DROP MATERIALIZED VIEW mv_halves")
    (project / "views" / "mv_revenue.yaml").write_text(
        REVENUE.replace("sum(amount) AS revenue", "sum(amount)::numeric AS revenue")
    )
    assert catalog_snapshot(conn) == before  # nothing was built or left
    # What can follow goes through: a view using the column in WHERE only, and a plain view
    # over a materialized reader that does so.
    conn.execute("CREATE VIEW days_with_revenue AS SELECT day FROM mv_revenue WHERE revenue > 0")
    conn.execute(
        "CREATE MATERIALIZED VIEW mv_days AS SELECT day FROM mv_revenue WHERE revenue > 100"
    )
    conn.execute("CREATE VIEW days_report AS SELECT day FROM mv_days")
    applied = cli("apply", "--dsn", db_dsn, "--replace-drifted", "--cascade")
    assert applied.exit_code == 0, applied.output
    assert conn.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = 'mv_revenue'::regclass AND attname = 'revenue'"
    ).fetchone() == ("numeric",)
    # A collation change a reading view cannot follow either.
    conn.execute("CREATE VIEW day_names AS SELECT day::text AS label FROM mv_revenue")
    (project / "views" / "mv_revenue.yaml").write_text(
        REVENUE.replace("SELECT day,", "SELECT day, 'x'::text COLLATE \"C\" AS tag,").replace(
            "sum(amount) AS revenue", "sum(amount)::numeric AS revenue"
        )
    )
    assert cli("apply", "--dsn", db_dsn, "--replace-drifted", "--cascade").exit_code == 0
    conn.execute("CREATE VIEW tags AS SELECT day, tag FROM mv_revenue")
    (project / "views" / "mv_revenue.yaml").write_text(
        REVENUE.replace("SELECT day,", "SELECT day, 'x'::text AS tag,").replace(
            "sum(amount) AS revenue", "sum(amount)::numeric AS revenue"
        )
    )
    collated = cli("apply", "--dsn", db_dsn, "--replace-drifted", "--cascade")
    assert collated.exit_code == 2, collated.output
    said = " ".join(collated.output.split())
    assert "the view public.tags would change its column tag (its collation)" in said, said


def test_two_replaces_that_would_rebuild_one_reader_are_run_one_at_a_time(
    project: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    """Seen in a review: replacing two views a reader reads both of, in one run, rebuilt the
    reader with the first and failed the second after its build ("mv_top_days_dbopt_old is
    not the one dbopt made ... made again by someone else": it was dbopt's own rebuild).
    Refused before anything runs, saying how: one at a time, which then goes through."""
    (project / "views" / "mv_count.yaml").write_text(COUNT)
    (project / "views" / "mv_top_days.yaml").write_text(
        TOP_DAYS.replace(
            "query: SELECT day, revenue FROM mv_revenue WHERE revenue > 100",
            "query: SELECT r.day, r.revenue, c.n FROM mv_revenue r JOIN mv_count c USING (day) "
            "WHERE r.revenue > 100",
        ).replace("depends_on: [mv_revenue]", "depends_on: [mv_revenue, mv_count]")
    )
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    drift_revenue(project)
    count = (project / "views" / "mv_count.yaml").read_text()
    (project / "views" / "mv_count.yaml").write_text(count.replace("count(*)", "count(*) + 0"))
    before = catalog_snapshot(conn)
    both = cli("apply", "--dsn", db_dsn, "--replace-drifted", "--cascade")
    assert both.exit_code == 2, both.output
    said = " ".join(both.output.split())
    assert (
        "materialized view public.mv_revenue: this run's replace of public.mv_count puts a "
        "new public.mv_top_days in place first, which this replace would rebuild again from "
        "the one there now: run them one at a time (--index public.mv_count, then --index "
        "public.mv_revenue)"
    ) in said, said
    assert catalog_snapshot(conn) == before
    for view in ("public.mv_count", "public.mv_revenue"):
        one = cli("apply", "--dsn", db_dsn, "--replace-drifted", "--cascade", "--index", view)
        assert one.exit_code == 0, one.output
    assert "+ 0" in view_def(conn, "mv_revenue") and "+ 0" in view_def(conn, "mv_count")


def test_a_rollback_whose_restores_would_rebuild_one_reader_twice_is_refused(
    project: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    """Seen in a second review: rollback --last of a run that replaced two views, once a
    view reading both had appeared, restored the first (rebuilding the reader) and failed
    the second after its builds ("made again by someone else"). Refused up front, saying
    how: one at a time (rollback --index), which goes through."""
    (project / "views" / "mv_count.yaml").write_text(COUNT)
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    drift_revenue(project)
    count = (project / "views" / "mv_count.yaml").read_text()
    (project / "views" / "mv_count.yaml").write_text(count.replace("count(*)", "count(*) + 0"))
    replaced = cli("apply", "--dsn", db_dsn, "--replace-drifted", "--cascade")
    assert replaced.exit_code == 0, replaced.output
    conn.execute(
        "CREATE MATERIALIZED VIEW mv_both AS SELECT r.day, r.revenue, c.n "
        "FROM mv_revenue r JOIN mv_count c USING (day)"
    )
    before = catalog_snapshot(conn)
    refused = cli("rollback", "--dsn", db_dsn, "--last", "--yes")
    assert refused.exit_code == 2, refused.output
    said = " ".join(refused.output.split())
    assert "puts a new public.mv_both in place first" in said, said
    assert catalog_snapshot(conn) == before
    for view in ("public.mv_count", "public.mv_revenue"):
        one = cli("rollback", "--dsn", db_dsn, "--index", view, "--yes")
        assert one.exit_code == 0, one.output
    assert "+ 0" not in view_def(conn, "mv_revenue") and "+ 0" not in view_def(conn, "mv_count")


def test_a_reader_over_a_table_another_session_holds_never_makes_a_command_wait(
    project: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    """Seen in a second review: reading the definition of a view over a spec view locks
    every table that view reads, which may be any: DDL left open on such a table made plan
    wait lock_timeout and give up (exit 3). Now read only if granted at once; a replace that
    needs it says so and refuses (exit 3, as for any lock not granted: try again); once the
    table is free, it goes through."""
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    conn.execute("CREATE TABLE other (day date)")
    conn.execute(
        "CREATE VIEW rep AS SELECT r.day, r.revenue FROM mv_revenue r JOIN other USING (day)"
    )
    drift_revenue(project)
    with helpers.held(db_dsn, "other"):
        planned = cli("plan", "--dsn", db_dsn, "--format", "json")
        status = cli("status", "--dsn", db_dsn, "--format", "json")
        refused = cli("apply", "--dsn", db_dsn, "--replace-drifted", "--cascade")
    assert planned.exit_code == 0, planned.output
    assert status.exit_code in (0, 1), status.output
    assert refused.exit_code == 3, refused.output
    said = " ".join(refused.output.split())
    assert (
        "the definition of public.rep (it reads public.mv_revenue) could not be read: a lock "
        "on what it reads was not granted at once"
    ) in said, said
    applied = cli("apply", "--dsn", db_dsn, "--replace-drifted", "--cascade")
    assert applied.exit_code == 0, applied.output
    assert "+ 0" in view_def(conn, "mv_revenue")
    # Nor a refresh of such a reader by hand, which holds the reader itself (seen in a third
    # review: its indexes' definitions and its size were still read under lock_timeout).
    conn.execute("CREATE MATERIALIZED VIEW mv_reader AS SELECT day, revenue FROM mv_revenue")
    conn.execute("CREATE INDEX mv_reader_twice ON mv_reader ((revenue * 2))")
    with psycopg.connect(db_dsn) as holder:
        holder.execute("REFRESH MATERIALIZED VIEW mv_reader")
        planned = cli("plan", "--dsn", db_dsn, "--format", "json")
        status = cli("status", "--dsn", db_dsn, "--format", "json")
        holder.rollback()
    assert planned.exit_code == 0, planned.output
    assert status.exit_code in (0, 1), status.output


def test_a_lock_only_refusal_comes_after_what_trying_again_would_not_mend(
    project: Path, conn: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    """apply refused only for a lock says "try again" (exit 3) only once its other checks
    pass: with a table in the run this role does not own, it is that (exit 2) first (seen in
    a review: exit 3, then exit 2 on the retry)."""
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    conn.execute("CREATE TABLE other (day date)")
    conn.execute(
        "CREATE VIEW rep AS SELECT r.day, r.revenue FROM mv_revenue r JOIN other USING (day)"
    )
    drift_revenue(project)
    admin_conn.execute("CREATE TABLE not_mine (id int)")  # the superuser's
    admin_conn.execute("GRANT SELECT ON not_mine TO PUBLIC")
    spec = project / "indexes" / "not_mine.yaml"
    spec.parent.mkdir(exist_ok=True)
    spec.write_text("table: not_mine\nindexes:\n  - {name: not_mine_id, columns: [id]}\n")
    with helpers.held(db_dsn, "other"):
        not_owned = cli("apply", "--dsn", db_dsn, "--replace-drifted", "--cascade")
        spec.unlink()
        locked = cli("apply", "--dsn", db_dsn, "--replace-drifted", "--cascade")
    said = " ".join(not_owned.output.split())
    assert not_owned.exit_code == 2 and "does not own public.not_mine" in said, said
    said = " ".join(locked.output.split())
    assert locked.exit_code == 3 and "could not be read: a lock" in said, said


def test_a_reader_held_between_inspection_and_its_trial_is_a_lock_refusal(
    project: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    """A reading view read at inspection, then tried over the new query while another session
    holds a table it reads: the lock is not waited for, and the refusal is a lock's (exit 3,
    try again), not a fault of the spec (seen in a review: it said "try again" with exit 2)."""
    from dbopt.catalog import inspect
    from dbopt.errors import LockRefusal
    from dbopt.livecheck import rebinding_problems
    from dbopt.model import parse_qualified
    from dbopt.spec import load_specs

    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    conn.execute("CREATE TABLE other (day date)")
    conn.execute(
        "CREATE VIEW report AS SELECT r.day, r.revenue FROM mv_revenue r JOIN other USING (day)"
    )
    (project / "views" / "mv_revenue.yaml").write_text(
        REVENUE.replace("sum(amount) AS revenue", "sum(amount)::numeric AS revenue")
    )
    views = load_specs([(project / "views", True)]).views
    name, report = parse_qualified("mv_revenue"), parse_qualified("report")
    catalog = inspect(conn, {name, parse_qualified("sales")})
    assert catalog.relations[report].view_definition  # read: nothing was held then
    with helpers.held(db_dsn, "other"):
        found = rebinding_problems(conn, views, {name: ["revenue"]}, catalog)
    (said,) = found[name]
    assert isinstance(said, LockRefusal), said
    assert "could not try it over the new query: a lock on what it reads" in said, said
    assert rebinding_problems(conn, views, {name: ["revenue"]}, catalog)[name] == [
        "the view public.report would change its column revenue (bigint to numeric): a view "
        "keeps its columns' types and collations; drop public.report and create it again "
        "after the replace, or keep them (a cast or COLLATE in the new query of "
        "public.mv_revenue)"
    ]


def test_rolling_back_a_cascade_never_waits_for_a_table_a_rebuilt_reader_reads(
    project: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    """Seen in a fourth review: the history of a cascade names the materialized reader it
    rebuilt, and rollback read that reader's definition under lock_timeout: DDL left open on
    a table it reads made rollback wait and exit 3. Now read only if granted at once: the
    restore, which would rebuild it, refuses until the table is free."""
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    conn.execute("CREATE TABLE other (day date)")
    conn.execute(
        "CREATE MATERIALIZED VIEW rep AS SELECT r.day, r.revenue FROM mv_revenue r "
        "JOIN other USING (day)"
    )
    drift_revenue(project)
    applied = cli("apply", "--dsn", db_dsn, "--replace-drifted", "--cascade")
    assert applied.exit_code == 0, applied.output
    assert "+ 0" in view_def(conn, "mv_revenue")
    with helpers.held(db_dsn, "other"):
        held = cli("rollback", "--dsn", db_dsn, "--last", "--yes")
    assert held.exit_code == 3, held.output  # a lock not granted: try again
    said = " ".join(held.output.split())
    assert (
        "the definition of public.rep (it reads public.mv_revenue) could not be read: a lock "
        "on what it reads was not granted at once"
    ) in said, said
    assert "+ 0" in view_def(conn, "mv_revenue")
    undone = cli("rollback", "--dsn", db_dsn, "--last", "--yes")
    assert undone.exit_code == 0, undone.output
    assert "+ 0" not in view_def(conn, "mv_revenue")
    assert "rep" in relations(conn)


def test_a_cascade_killed_after_a_reader_was_made_aside_leaves_it_dbopts_to_clear(
    project: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    """A reader's copy made aside is recorded the moment it exists, as the view's own copy
    is: dbopt killed while filling it (kill -9: no clean-up), the next replace drops it as
    dbopt's leftover. Before, only the end of the action recorded it: the next replace
    refused ("taken ... that dbopt has no record of making: drop it by hand"). Its row says
    what became of it (seen in a fifth review: "ok" for copies a failed cascade dropped)."""
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    conn.execute("CREATE TABLE knob (delay float, d int)")
    conn.execute("INSERT INTO knob VALUES (0, 0)")
    conn.execute(
        "CREATE MATERIALIZED VIEW rep AS SELECT r.day, r.revenue * slow.one AS revenue "
        "FROM mv_revenue r CROSS JOIN LATERAL (SELECT pg_sleep(delay), 1 / (d + 1) AS one "
        "FROM knob) AS slow"
    )
    conn.execute("UPDATE knob SET d = -1")  # the reader's fill fails: division by zero
    drift_revenue(project)
    failed = cli("apply", "--dsn", db_dsn, "--replace-drifted", "--cascade")
    assert failed.exit_code == 1, failed.output
    aside = (
        "SELECT object_name, result FROM dbopt.changes WHERE run_id = %s AND action = 'rebuild' "
        "ORDER BY id"
    )
    assert conn.execute(aside, (2,)).fetchall() == [
        ("mv_top_days_dbopt_new", "failed"),
        ("rep_dbopt_new", "failed"),
    ]
    # A rebuild that never happened swapped nothing out (seen in a fifth review: renamed to
    # a temporary name, the reader made by hand was dbopt's to prune).
    conn.execute("ALTER MATERIALIZED VIEW rep RENAME TO rep_dbopt_old")
    planned = json.loads(cli("plan", "--dsn", db_dsn, "--prune", "--format", "json").output)
    assert "public.rep_dbopt_old" not in {a["object"] for a in planned["actions"]}, planned
    conn.execute("ALTER MATERIALIZED VIEW rep_dbopt_old RENAME TO rep")
    conn.execute("UPDATE knob SET delay = 30, d = 0")  # the reader's fill, from now on
    proc = helpers.start_dbopt(
        project, "apply", "--dsn", db_dsn, "--replace-drifted", "--cascade", "--yes"
    )
    try:
        helpers.poll(
            lambda: conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE query LIKE 'REFRESH%rep_dbopt_new%'"
            ).fetchone(),
            "the reader's copy being filled",
        )
    finally:
        proc.kill()
        proc.communicate(timeout=10)
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE query LIKE 'REFRESH%rep_dbopt_new%'"
    )
    conn.execute("UPDATE knob SET delay = 0")
    assert relations(conn).get("rep_dbopt_new") == "m"
    # What the copy reads is held: nothing waits for it (seen in a fifth review: plan, status
    # and rollback read the leftover under lock_timeout and exited 3); apply refuses it.
    with helpers.held(db_dsn, "knob"):
        planned = cli("plan", "--dsn", db_dsn, "--format", "json")
        status = cli("status", "--dsn", db_dsn, "--format", "json")
        undo = cli("rollback", "--dsn", db_dsn, "--run", "3", "--plan")
        refused = cli("apply", "--dsn", db_dsn, "--replace-drifted", "--cascade")
    assert planned.exit_code == 0, planned.output
    assert status.exit_code in (0, 1), status.output
    assert undo.exit_code == 2 and "nothing to roll back" in undo.output, undo.output  # no wait
    assert refused.exit_code == 3, refused.output
    assert "what an interrupted replace left as public.rep_dbopt_new could not be read" in (
        " ".join(refused.output.split())
    )
    again = cli("apply", "--dsn", db_dsn, "--replace-drifted", "--cascade")
    assert again.exit_code == 0, again.output
    assert "+ 0" in view_def(conn, "mv_revenue")
    assert "rep_dbopt_new" not in relations(conn)
    assert "mv_revenue_dbopt_new" not in relations(conn)
    assert conn.execute(aside, (3,)).fetchall() == [
        ("mv_top_days_dbopt_new", "aborted"),
        ("rep_dbopt_new", "aborted"),
    ]


def test_a_cascade_records_each_reader_once_a_hand_made_one_not_as_dbopts(
    project: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    """Seen in a fifth review: the row of a reader's copy made aside kept its OID once the
    copy was swapped in: a reader made by hand was "already dbopt's" to import --adopt
    (never adopted), and the run listed a rebuild of rep_dbopt_new beside rep's."""
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    conn.execute("CREATE MATERIALIZED VIEW rep AS SELECT day, revenue FROM mv_revenue")
    drift_revenue(project)
    assert cli("apply", "--dsn", db_dsn, "--replace-drifted", "--cascade").exit_code == 0
    rows = conn.execute(
        "SELECT object_name, result, object_oid IS NOT NULL, existed_before FROM dbopt.changes "
        "WHERE run_id = 2 AND object_kind = 'view' ORDER BY object_name"
    ).fetchall()
    assert rows == [
        ("mv_revenue", "ok", True, True),
        ("mv_top_days", "ok", True, False),
        ("rep", "ok", False, True),
    ]
    adopted = cli("import", "--dsn", db_dsn, "--table", "public.rep", "--adopt", "--yes")
    assert adopted.exit_code == 0, adopted.output
    assert "adopted 1 object(s)" in adopted.output, adopted.output


def test_a_restore_leaves_out_only_the_indexes_the_replace_added(
    project: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    """Seen in a fourth review: rolling a view's replace back left out every index dbopt had
    made on the view, one a later run made too (lost). Now only those the replace added."""
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    spec = project / "views" / "mv_revenue.yaml"
    with_index = "unique: true}\n  - {name: mv_revenue_%s, columns: [revenue]}\n"
    drift_revenue(project)
    spec.write_text(spec.read_text().replace("unique: true}\n", with_index % "added"))
    assert cli("apply", "--dsn", db_dsn, "--replace-drifted", "--cascade").exit_code == 0
    spec.write_text(
        spec.read_text().replace(
            "columns: [revenue]}\n",
            "columns: [revenue]}\n  - {name: mv_revenue_later, columns: [day, revenue]}\n",
        )
    )
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    assert {"mv_revenue_added", "mv_revenue_later"} <= set(relations(conn))
    undone = cli("rollback", "--dsn", db_dsn, "--index", "mv_revenue", "--yes")
    assert undone.exit_code == 0, undone.output
    assert "+ 0" not in view_def(conn, "mv_revenue")
    names = set(relations(conn))
    assert "mv_revenue_added" not in names
    assert {"mv_revenue_day", "mv_revenue_later"} <= names
    # Still dbopt's: the specs want it, plan has nothing to build for it.
    planned = json.loads(cli("plan", "--dsn", db_dsn, "--format", "json").output)
    assert "public.mv_revenue_later" not in {a["object"] for a in planned["actions"]}, planned


def test_a_restore_that_could_not_keep_a_later_index_is_refused_before_anything_runs(
    project: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    """Seen in a fifth review: a restore keeping an index a later run made on a column the
    previous query lacks planned fine, then failed after building the view aside. The
    previous query's columns are known up front: refused before anything runs."""
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    spec = project / "views" / "mv_revenue.yaml"
    spec.write_text(REVENUE.replace("AS revenue", "AS revenue, count(*) AS n"))
    assert cli("apply", "--dsn", db_dsn, "--replace-drifted", "--cascade").exit_code == 0
    spec.write_text(
        spec.read_text().replace(
            "unique: true}\n", "unique: true}\n  - {name: mv_revenue_n, columns: [n]}\n"
        )
    )
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    before = catalog_snapshot(conn)
    refused = cli("rollback", "--dsn", db_dsn, "--index", "mv_revenue", "--yes")
    assert refused.exit_code == 2, refused.output
    said = " ".join(refused.output.split())
    assert "its index mv_revenue_n uses n, which the new query has no column for" in said, said
    assert catalog_snapshot(conn) == before


def test_an_index_dbopt_made_on_a_replaced_view_stays_dbopts_and_is_not_pruned_beside_it(
    project: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    """Seen in a fourth review: a replace keeps every other index of the view, one dbopt made
    that left the specs too; rebuilt, it was no longer dbopt's (plan said nothing to change,
    prune would never drop it), and pruned in the same run, the drop failed after the
    replace ('made again by someone else')."""
    (project / "views" / "mv_revenue.yaml").write_text(
        REVENUE.replace(
            "unique: true}\n", "unique: true}\n  - {name: mv_revenue_rev, columns: [revenue]}\n"
        )
    )
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    drift_revenue(project)
    both = cli("apply", "--dsn", db_dsn, "--replace-drifted", "--cascade", "--prune")
    assert both.exit_code == 2, both.output
    said = " ".join(both.output.split())
    assert (
        "this run drops public.mv_revenue_rev, and this replace would rebuild public.mv_revenue_rev"
    ) in said, said
    replaced = cli("apply", "--dsn", db_dsn, "--replace-drifted", "--cascade")
    assert replaced.exit_code == 1, replaced.output  # the drop waits for --prune
    assert "Run 2 (apply): succeeded" in replaced.output
    assert "+ 0" in view_def(conn, "mv_revenue")
    # Rebuilt with the view, still dbopt's: prune drops it.
    planned = json.loads(cli("plan", "--dsn", db_dsn, "--prune", "--format", "json").output)
    assert [a["object"] for a in planned["actions"] if a["action"] == "drop"] == [
        "public.mv_revenue_rev"
    ], planned
    assert cli("apply", "--dsn", db_dsn, "--prune").exit_code == 0
    assert "mv_revenue_rev" not in relations(conn)


def test_a_swap_never_holds_the_view_while_it_waits_for_a_reader(
    project: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    """Seen in a review: the one swap transaction held mv_revenue while it waited, up to
    lock_timeout each, for every reader in turn: the application's reads of mv_revenue
    queued behind it that long, and one holding a reader could be killed as a deadlock's
    victim. Once it holds the view, every other lock must come within 10 ms or the attempt
    ends (and is retried): a reader of mv_revenue never waits for a held mv_top_days."""
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    (project / "dbopt.yaml").write_text(
        helpers.environments(
            test={"dsn": db_dsn, "lock_timeout": "1s", "retries": 1, "retry_backoff": "10ms"}
        )
    )
    drift_revenue(project)
    planned = cli("plan", "--env", "test", "--replace-drifted", "--cascade", "--sql")
    assert planned.exit_code == 0, planned.output
    assert "RENAME TO mv_revenue_dbopt_old;\nSET LOCAL lock_timeout TO '10ms';" in planned.output
    with psycopg.connect(db_dsn) as holder:
        holder.execute("SELECT count(*) FROM mv_top_days").fetchone()
        # Each read of mv_revenue gives up after 400 ms: a swap holding it for its 1 s
        # lock_timeout (waiting for mv_top_days) would fail one.
        with Reader(db_dsn, "SELECT count(*) FROM mv_revenue", lock_timeout="400ms") as reader:
            applied = cli("apply", "--env", "test", "--replace-drifted", "--cascade")
        holder.rollback()
    assert applied.exit_code == 1, applied.output
    assert reader.errors == [] and reader.reads > 0
    assert "+ 0" not in view_def(conn, "mv_revenue")
    # What waited how long, as it was (seen in a review: "2 lock waits of 1000 ms", where
    # each attempt ended after 10 ms).
    said = " ".join(applied.output.split())
    assert (
        "after 2 attempts, each waiting up to 1000 ms (lock_timeout) for public.mv_revenue, "
        "then at most 10 ms for each other lock it needs while holding it; blocked by: pid"
    ) in said, said
    assert "lock waits of 1000 ms" not in said


def test_a_reader_that_reads_the_view_through_a_view_too_is_refused(
    project: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    """Seen in a review: a materialized view reading mv_revenue directly and through a plain
    view was filled, aside, with the new data from the one and the old from the other (the
    plain view is re-bound only at the swap). Refused before anything runs."""
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    conn.execute("CREATE VIEW v_rev AS SELECT day, revenue FROM mv_revenue")
    conn.execute(
        "CREATE MATERIALIZED VIEW mv_cmp AS SELECT r.day, r.revenue, v.revenue AS v_rev "
        "FROM mv_revenue r JOIN v_rev v USING (day)"
    )
    (project / "views" / "mv_revenue.yaml").write_text(
        REVENUE.replace("sum(amount)", "sum(amount) * 2")
    )
    before = catalog_snapshot(conn)
    refused = cli("apply", "--dsn", db_dsn, "--replace-drifted", "--cascade")
    assert refused.exit_code == 2, refused.output
    assert (
        "public.mv_cmp reads it and public.v_rev too, which is swapped or re-bound only when "
        "the views are swapped"
    ) in " ".join(refused.output.split()), refused.output
    assert catalog_snapshot(conn) == before
    conn.execute("DROP MATERIALIZED VIEW mv_cmp")
    conn.execute("DROP VIEW v_rev")
    # The same through another reader (seen in a second review): mv_mix reads mv_revenue and,
    # through the plain v_top, mv_top_days, which the cascade rebuilds too.
    conn.execute("CREATE VIEW v_top AS SELECT day, revenue FROM mv_top_days")
    conn.execute(
        "CREATE MATERIALIZED VIEW mv_mix AS SELECT r.day, t.revenue AS top "
        "FROM mv_revenue r JOIN v_top t ON t.day = r.day"
    )
    refused = cli("apply", "--dsn", db_dsn, "--replace-drifted", "--cascade")
    assert refused.exit_code == 2, refused.output
    assert "public.mv_mix reads it and public.v_top too" in " ".join(refused.output.split())
    conn.execute("DROP MATERIALIZED VIEW mv_mix")
    conn.execute("DROP VIEW v_top")


def test_a_plain_view_over_a_reader_is_re_bound_to_the_rebuilt_reader(
    project: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    """Seen in a second review: a plain view over a hand-made reader was not inspected, so
    its body was empty and every cascade failed at the swap, after all its builds."""
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    conn.execute("CREATE MATERIALIZED VIEW mv_hand AS SELECT day, revenue FROM mv_revenue")
    conn.execute("CREATE VIEW v_hand AS SELECT day, revenue FROM mv_hand")
    (project / "views" / "mv_revenue.yaml").write_text(
        REVENUE.replace("sum(amount)", "sum(amount) * 2")
    )
    applied = cli("apply", "--dsn", db_dsn, "--replace-drifted", "--cascade")
    assert applied.exit_code == 0, applied.output
    doubled = conn.execute(
        "SELECT count(*) FROM v_hand h JOIN mv_revenue r USING (day) WHERE h.revenue = r.revenue"
    ).fetchone()
    assert doubled == (60,)  # v_hand reads the rebuilt mv_hand, filled from the new view
    conn.execute("DROP VIEW v_hand")
    conn.execute("DROP MATERIALIZED VIEW mv_hand")


def test_a_populated_reader_of_a_view_without_data_is_refused(
    project: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    """Seen in a review: mv_revenue emptied (WITH NO DATA) and mv_top_days, which reads it,
    holding data: the cascade built everything aside, then failed filling mv_top_days.
    Refused before anything runs."""
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    conn.execute("REFRESH MATERIALIZED VIEW mv_revenue WITH NO DATA")
    drift_revenue(project)
    before = catalog_snapshot(conn)
    refused = cli("apply", "--dsn", db_dsn, "--replace-drifted", "--cascade")
    assert refused.exit_code == 2, refused.output
    assert (
        "public.mv_top_days holds data but reads it, which holds none (WITH NO DATA)"
    ) in " ".join(refused.output.split()), refused.output
    assert catalog_snapshot(conn) == before


def test_a_cascade_keeps_the_readers_it_rebuilds_dbopts_own(
    project: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    """Seen in a review: after a cascade, mv_top_days (dbopt's, rebuilt with a new OID) and
    its index were 'pre-existing' to status, and a rollback of the run that made them left
    them as 'made again by someone else'. The rebuild is recorded: they stay dbopt's."""
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    drift_revenue(project)
    cascade = cli("apply", "--dsn", db_dsn, "--replace-drifted", "--cascade")
    assert cascade.exit_code == 0, cascade.output
    status = json.loads(cli("status", "--dsn", db_dsn, "--format", "json").stdout)
    origins = {r["index"]: r["created_by"] for r in status["managed"]}
    assert origins == {"public.mv_revenue_day": "dbopt", "public.mv_top_days_day": "dbopt"}
    # Each index alone is what run 1 made, followed through the rebuild (seen in a fourth
    # review: the replaced view's own index was "made again by someone else").
    for index in ("mv_revenue_day", "mv_top_days_day"):
        alone = cli("rollback", "--dsn", db_dsn, "--index", index, "--plan")
        assert alone.exit_code == 0, alone.output
        assert f"DROP INDEX CONCURRENTLY IF EXISTS public.{index};" in alone.output
    first = cli("rollback", "--dsn", db_dsn, "--last", "--yes")  # the cascade
    assert first.exit_code == 0, first.output
    assert "+ 0" not in view_def(conn, "mv_revenue")
    second = cli("rollback", "--dsn", db_dsn, "--last", "--yes")  # the first apply
    assert second.exit_code == 0, second.output
    assert "made again by someone else" not in second.output, second.output
    assert relations(conn) == {}


@pytest.mark.parametrize("way_out", ["rollback", "prune", "replace again"])
def test_what_a_cascade_left_after_its_swap_is_cleaned_up(
    project: Path,
    conn: psycopg.Connection[Any],
    admin_conn: psycopg.Connection[Any],
    db_dsn: str,
    way_out: str,
) -> None:
    """Seen in a review: a cascade whose swap committed but whose drops of the old views
    failed left mv_revenue_dbopt_old and mv_top_days_dbopt_old (with their _dbopt_old
    indexes), and rollback, --prune and another replace all refused ('the name ... it needs
    is taken', 'mv_top_days_dbopt_old depends on it'): only a DBA's hand could clean it.
    Each of them now does. (An event trigger makes the drops fail.)"""
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    before = view_def(conn, "mv_revenue")
    # A reader made by hand too: what is left of it is cleared as well (a second review: it
    # was no one's, and blocked every way out). It reads a table no spec names.
    conn.execute("CREATE TABLE knob (k int)")
    conn.execute("INSERT INTO knob VALUES (1)")
    conn.execute("CREATE MATERIALIZED VIEW mv_hand AS SELECT day, k FROM mv_revenue, knob")
    with no_view_drops(admin_conn):
        drift_revenue(project)
        failed = cli("apply", "--dsn", db_dsn, "--replace-drifted", "--cascade")
    assert failed.exit_code == 1, failed.output
    assert "+ 0" in view_def(conn, "mv_revenue")  # swapped in
    left = {n for n in relations(conn) if "_dbopt_" in n}
    assert left == {
        "mv_revenue_dbopt_old",
        "mv_revenue_day_dbopt_old",
        "mv_top_days_dbopt_old",
        "mv_top_days_day_dbopt_old",
        "mv_hand_dbopt_old",
    }
    if way_out == "prune":
        # What mv_hand reads is held: nothing waits for it (seen in a fifth review: plan,
        # status and apply read mv_hand under lock_timeout, named by its swapped-out fact).
        with helpers.held(db_dsn, "knob"):
            held = [
                cli("plan", "--dsn", db_dsn, "--prune", "--format", "json"),
                cli("status", "--dsn", db_dsn, "--format", "json"),
            ]
        planned, status = held
        assert planned.exit_code == 3, planned.output  # refuses what it could not read
        assert "materialized view public.mv_hand_dbopt_old could not be read" in planned.output
        assert status.exit_code in (0, 1), status.output
    if way_out == "rollback":
        out = cli("rollback", "--dsn", db_dsn, "--last", "--yes")
        assert out.exit_code == 0, out.output
        assert view_def(conn, "mv_revenue") == before
    elif way_out == "prune":
        out = cli("apply", "--dsn", db_dsn, "--prune")
        assert out.exit_code == 0, out.output
        assert "+ 0" in view_def(conn, "mv_revenue")
        # Clearing leftovers is nothing to undo (seen in a second review: rollback --last
        # would have made them again): --last undoes the landed cascade.
        out = cli("rollback", "--dsn", db_dsn, "--last", "--yes")
        assert out.exit_code == 0, out.output
        assert view_def(conn, "mv_revenue") == before
    else:
        drift_revenue(project, "+ 1")
        out = cli("apply", "--dsn", db_dsn, "--replace-drifted", "--cascade")
        assert out.exit_code == 0, out.output
        assert "+ 1" in view_def(conn, "mv_revenue")
    assert set(relations(conn)) == {
        "mv_revenue",
        "mv_revenue_day",
        "mv_top_days",
        "mv_top_days_day",
        "mv_hand",
    }
    conn.execute("DROP MATERIALIZED VIEW mv_hand")


def test_a_landed_cascade_stays_landed_once_a_later_change_replaced_it(
    project: Path,
    conn: psycopg.Connection[Any],
    admin_conn: psycopg.Connection[Any],
    db_dsn: str,
) -> None:
    """Seen in a second review: a cascade whose swap landed (its drops failed) stopped
    counting as done once a later cascade replaced what it made: rollback --last then
    refused it ('failed and left nothing to undo'), and a rollback of the first apply dropped
    one view and called the other 'made again by someone else'. Three runs, undone one
    --last at a time, back to nothing."""
    assert cli("apply", "--dsn", db_dsn).exit_code == 0  # run 1
    original = view_def(conn, "mv_revenue")
    with no_view_drops(admin_conn):
        drift_revenue(project)
        landed = cli("apply", "--dsn", db_dsn, "--replace-drifted", "--cascade")  # run 2
    assert landed.exit_code == 1, landed.output
    second = view_def(conn, "mv_revenue")
    drift_revenue(project, "+ 1")
    again = cli("apply", "--dsn", db_dsn, "--replace-drifted", "--cascade")  # run 3
    assert again.exit_code == 0, again.output
    for expected in (second, original):
        rolled = cli("rollback", "--dsn", db_dsn, "--last", "--yes")
        assert rolled.exit_code == 0, rolled.output
        assert view_def(conn, "mv_revenue") == expected
        assert not [n for n in relations(conn) if "_dbopt_" in n]
    last = cli("rollback", "--dsn", db_dsn, "--last", "--yes")
    assert last.exit_code == 0, last.output
    assert "made again by someone else" not in last.output
    assert relations(conn) == {}


def test_a_replace_that_drops_a_column_a_reader_reads_is_refused(
    project: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    """Seen in a second review: a new query without a column a reader reads failed at the
    reader's binding, after the view was built. Refused before anything runs (pg_depend says
    which columns each reader reads)."""
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    (project / "views" / "mv_top_days.yaml").unlink()  # still there, dbopt's, reading revenue
    (project / "views" / "mv_revenue.yaml").write_text(REVENUE.replace("AS revenue", "AS revenue2"))
    before = catalog_snapshot(conn)
    refused = cli("apply", "--dsn", db_dsn, "--replace-drifted", "--cascade")
    assert refused.exit_code == 2, refused.output
    assert (
        "public.mv_top_days reads its column revenue, which the new query has none of"
    ) in " ".join(refused.output.split()), refused.output
    assert catalog_snapshot(conn) == before


def test_prune_drops_only_views_dbopt_created(
    project: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    conn.execute("CREATE MATERIALIZED VIEW handmade AS SELECT 1 AS x")
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    (project / "views" / "mv_top_days.yaml").unlink()
    needs = cli("apply", "--dsn", db_dsn)
    assert needs.exit_code == 1
    assert "drop public.mv_top_days needs --prune" in needs.output
    pruned = cli("apply", "--dsn", db_dsn, "--prune")
    assert pruned.exit_code == 0, pruned.output
    assert set(relations(conn)) == {"mv_revenue", "mv_revenue_day", "handmade"}
    rolled = cli("rollback", "--dsn", db_dsn, "--last", "--yes")
    assert rolled.exit_code == 0, rolled.output
    assert set(relations(conn)) == {
        "mv_revenue",
        "mv_revenue_day",
        "handmade",
        "mv_top_days",
        "mv_top_days_day",
    }


def test_refresh_views_in_order_quietly_and_recorded(
    project: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    plan = cli("refresh-views", "--dsn", db_dsn, "--plan")
    assert plan.exit_code == 0
    lines = [line for line in plan.output.splitlines() if line.startswith("REFRESH")]
    assert lines == [
        'REFRESH MATERIALIZED VIEW CONCURRENTLY "public"."mv_revenue";',
        'REFRESH MATERIALIZED VIEW CONCURRENTLY "public"."mv_top_days";',
    ]
    conn.execute("INSERT INTO sales VALUES (100000, '2026-01-01', 5000)")
    quiet = cli("refresh-views", "--dsn", db_dsn)
    assert quiet.exit_code == 0
    assert quiet.output == ""
    row = conn.execute("SELECT revenue FROM mv_top_days WHERE day = '2026-01-01'").fetchone()
    assert row is not None and row[0] > 5000  # mv_top_days saw mv_revenue's new data
    recorded = conn.execute(
        "SELECT view_name, mode, outcome, rows > 0 FROM dbopt.refreshes ORDER BY id"
    ).fetchall()
    assert recorded == [
        ("mv_revenue", "concurrent", "ok", True),
        ("mv_top_days", "concurrent", "ok", True),
    ]
    stale = cli("refresh-views", "--dsn", db_dsn, "--stale-only", "--plan")
    assert "REFRESH" not in stale.output  # both were just refreshed
    status = json.loads(cli("status", "--dsn", db_dsn, "--format", "json").output)
    assert {v["view"]: v["overdue"] for v in status["views"]} == {
        "public.mv_revenue": False,
        "public.mv_top_days": False,
    }


def test_refresh_order_follows_a_view_read_through_a_plain_view(
    project: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    """Seen in a review: a materialized view reading another through a plain view (no
    depends_on: the spec names the plain view) was refreshed in name order, before the view
    it reads, so it kept the old data until the next run."""
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    conn.execute("CREATE VIEW v_revenue AS SELECT day, revenue FROM mv_revenue")
    (project / "views" / "mv_a_top.yaml").write_text(
        "name: mv_a_top\n"
        "query: SELECT day, revenue FROM v_revenue WHERE revenue > 100\n"
        "indexes:\n"
        "  - {name: mv_a_top_day, columns: [day], unique: true}\n"
    )
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    plan = cli("refresh-views", "--dsn", db_dsn, "--plan")
    assert plan.exit_code == 0, plan.output
    lines = [line for line in plan.output.splitlines() if line.startswith("REFRESH")]
    assert lines == [
        'REFRESH MATERIALIZED VIEW CONCURRENTLY "public"."mv_revenue";',
        'REFRESH MATERIALIZED VIEW CONCURRENTLY "public"."mv_a_top";',
        'REFRESH MATERIALIZED VIEW CONCURRENTLY "public"."mv_top_days";',
    ]
    conn.execute("INSERT INTO sales VALUES (100000, '2026-01-01', 5000)")
    assert cli("refresh-views", "--dsn", db_dsn).exit_code == 0
    row = conn.execute("SELECT revenue FROM mv_a_top WHERE day = '2026-01-01'").fetchone()
    assert row is not None and row[0] > 5000  # it saw mv_revenue's new data


def test_concurrent_refresh_while_a_reader_keeps_reading(
    project: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    with Reader(db_dsn, "SELECT sum(revenue) FROM mv_revenue", lock_timeout="1s") as reader:
        for _ in range(5):
            assert cli("refresh-views", "--dsn", db_dsn, "--view", "mv_revenue").exit_code == 0
    # A reader blocked longer than its lock_timeout (1 s) would have failed with an error.
    assert reader.errors == []
    assert reader.reads > 0


def test_second_refresh_of_the_same_view_is_skipped(
    project: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    with psycopg.connect(db_dsn, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s, hashtext('public.mv_revenue'))", (0x64627266,))
        pid = other.info.backend_pid
        skipped = cli("refresh-views", "--dsn", db_dsn, "--view", "mv_revenue")
        strict = cli("refresh-views", "--dsn", db_dsn, "--view", "mv_revenue", "--strict")
    assert skipped.exit_code == 0
    assert "skipped: public.mv_revenue: a refresh of public.mv_revenue is already running" in (
        skipped.output
    )
    assert f"(pid {pid}" in skipped.output
    assert strict.exit_code == 1


def test_view_without_unique_index_refreshes_blocking_or_is_refused(
    project: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    (project / "views" / "mv_top_days.yaml").write_text(
        TOP_DAYS.replace("unique: true", "unique: false")
    )
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    warned = cli("refresh-views", "--dsn", db_dsn)
    assert warned.exit_code == 0
    assert (
        "warning: public.mv_top_days: no valid unique index on plain columns: refreshed "
        "blocking (readers wait)"
    ) in warned.output
    refused = cli("refresh-views", "--dsn", db_dsn, "--concurrently-only")
    assert refused.exit_code == 1
    assert "error: refresh of public.mv_top_days failed: refused:" in refused.output


def test_failed_refresh_reports_one_line_and_skips_dependents(
    project: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    # Duplicate days break the unique index: the concurrent refresh fails.
    conn.execute("ALTER TABLE sales ADD COLUMN region int DEFAULT 1")
    conn.execute("DROP MATERIALIZED VIEW mv_top_days")
    conn.execute("DROP MATERIALIZED VIEW mv_revenue")
    conn.execute(
        "CREATE MATERIALIZED VIEW mv_revenue AS SELECT day, region, sum(amount) AS revenue "
        "FROM sales GROUP BY day, region"
    )
    conn.execute("CREATE UNIQUE INDEX mv_revenue_day ON mv_revenue (day, region)")
    conn.execute("CREATE MATERIALIZED VIEW mv_top_days AS SELECT day, revenue FROM mv_revenue")
    conn.execute("CREATE UNIQUE INDEX mv_top_days_day ON mv_top_days (day)")
    conn.execute("UPDATE sales SET region = 2 WHERE id % 7 = 0")
    result = cli("refresh-views", "--dsn", db_dsn, "--format", "json")
    assert result.exit_code == 1, result.output
    outcomes = {r["view"]: r["outcome"] for r in json.loads(result.output.splitlines()[0])}
    assert outcomes == {"public.mv_revenue": "ok", "public.mv_top_days": "failed"}
    assert "error: refresh of public.mv_top_days failed:" in result.output


def test_emit_crontab_lines_parse(project: Path) -> None:
    from croniter import croniter

    out = cli("refresh-views", "--env", "production", "--emit", "crontab", "--config", "none.yaml")
    # --env needs no database for --emit crontab, but the config must exist for --env.
    assert out.exit_code == 2
    (project / "dbopt.yaml").write_text("environments:\n  production: {dsn: 'service=prod'}\n")
    out = cli("refresh-views", "--env", "production", "--emit", "crontab")
    assert out.exit_code == 0, out.output
    lines = [line for line in out.output.splitlines() if not line.startswith("#")]
    assert lines[:2] == ["SHELL=/bin/sh", "PATH=/usr/local/bin:/usr/bin:/bin"]
    entries = lines[2:]
    assert len(entries) == 2
    for line in entries:
        fields = line.split(None, 5)
        assert croniter.is_valid(" ".join(fields[:5]))
        text = fields[5].replace("\\%", "%").removeprefix("{ ").split("; } >> ")[0]
        cd, rest = text.split(" && set -a && ", 1)
        _source_env_file, run = rest.split(" && set +a && ", 1)
        assert shlex.split(cd) == ["cd", str(project)]
        command = shlex.split(run)
        assert os.path.basename(command[0]) == "flock" and command[1] == "-n"
        dbopt = command[3:].index("refresh-views")
        assert all(os.path.isabs(part) or part in ("-m", "dbopt") for part in command[3:][:dbopt])
        assert command[3 + dbopt :][:3] == ["refresh-views", "--env", "production"]
    assert entries[0].startswith("0 * * * * ")
    assert entries[1].startswith("30 2 * * * ")


def test_emit_pg_cron_sql_runs_where_pg_cron_is_installed(
    project: Path, admin_conn: psycopg.Connection[Any], db_dsn: str, pg_server: Any
) -> None:
    conn = admin_conn  # shared_preload_libraries is for superusers (pg_read_all_settings)
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    out = cli("refresh-views", "--dsn", db_dsn, "--emit", "pg_cron")
    assert out.exit_code == 0, out.output
    assert "GMT" in out.output
    calls = [
        line
        for line in out.output.splitlines()
        if line.startswith("SELECT cron.schedule_in_database(")
    ]
    assert len(calls) == 2
    if not helpers.has_extension(conn, "pg_cron"):
        helpers.skip_without_extension(conn, "pg_cron", "Debian: postgresql-NN-cron")
    preloaded = conn.execute("SHOW shared_preload_libraries").fetchone()
    cron_db = conn.execute(
        "SELECT setting FROM pg_settings WHERE name = 'cron.database_name'"
    ).fetchone()
    if "pg_cron" not in str(preloaded) or cron_db is None:
        # The harness preloads it wherever it is installed; a DBOPT_TEST_DSN server may not.
        pytest.skip("pg_cron is installed but not preloaded on this server")
    row = conn.execute("SELECT current_database()").fetchone()
    assert row is not None
    app_db = row[0]
    exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", cron_db).fetchone()
    cron_dsn = pg_server.dsn_for(cron_db[0]) if exists else pg_server.create_database(cron_db[0])
    with psycopg.connect(cron_dsn, autocommit=True) as cron:
        cron.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
        for call in calls:
            cron.execute(call)  # type: ignore[call-overload]
        jobs = cron.execute(
            "SELECT jobname, schedule, command, database FROM cron.job ORDER BY 1"
        ).fetchall()
        cron.execute("SELECT cron.unschedule(jobid) FROM cron.job")
    assert [(j[0], j[1], j[3]) for j in jobs] == [
        # pg_cron lives in its own database; the job runs in the application's.
        ("dbopt refresh public.mv_revenue", "0 * * * *", app_db),
        ("dbopt refresh public.mv_top_days", "30 2 * * *", app_db),
    ]
    revenue = jobs[0][2]
    assert revenue.startswith(
        'REFRESH MATERIALIZED VIEW CONCURRENTLY "public"."mv_revenue"; INSERT INTO "dbopt".'
    )
    # What pg_cron does with it: one query, one implicit transaction, as the job's role.
    with psycopg.connect(db_dsn, autocommit=True) as job:
        job.execute(revenue)  # type: ignore[call-overload]
        recorded = job.execute(
            "SELECT environment, mode, outcome FROM dbopt.refreshes WHERE view_name = 'mv_revenue'"
        ).fetchall()
    assert recorded == [("pg_cron", "concurrent", "ok")]
    # So status knows the view was refreshed.
    status = json.loads(cli("status", "--dsn", db_dsn, "--format", "json").output)
    (view,) = [v for v in status["views"] if v["view"] == "public.mv_revenue"]
    assert view["overdue"] is False


def test_validate_rejects_cycles_and_concurrent_without_unique_index(tmp_path: Path) -> None:
    views = tmp_path / "views"
    views.mkdir()
    (views / "a.yaml").write_text("name: a\nquery: SELECT 1 AS x\ndepends_on: [b]\n")
    (views / "b.yaml").write_text("name: b\nquery: SELECT 1 AS x\ndepends_on: [a]\n")
    (views / "c.yaml").write_text(
        textwrap.dedent(
            """
            name: c
            query: SELECT 1 AS x
            indexes:
              - {name: c_x, columns: [{expr: "x + 1"}], unique: true}
            refresh: {mode: concurrent}
            """
        )
    )
    result = cli("validate", "--specs", str(views))
    assert result.exit_code == 2
    assert "depend on each other in a cycle" in result.output
    assert "REFRESH MATERIALIZED VIEW CONCURRENTLY needs a unique index on plain columns" in (
        result.output
    )


def test_stale_only_and_older_than_pick_the_views_due(
    project: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    assert cli("refresh-views", "--dsn", db_dsn).exit_code == 0
    # mv_revenue (hourly) was last refreshed (and created) three hours ago; mv_top_days
    # (02:30) just now.
    conn.execute(
        "UPDATE dbopt.refreshes SET started_at = started_at - interval '3 hours' "
        "WHERE view_name = 'mv_revenue'"
    )
    conn.execute(
        "UPDATE dbopt.changes SET started_at = started_at - interval '3 hours' "
        "WHERE object_name = 'mv_revenue'"
    )

    def planned(*flags: str) -> list[str]:
        out = cli("refresh-views", "--dsn", db_dsn, "--plan", *flags)
        assert out.exit_code == 0, out.output
        return [line for line in out.output.splitlines() if line.startswith("REFRESH")]

    due = ['REFRESH MATERIALIZED VIEW CONCURRENTLY "public"."mv_revenue";']
    assert planned("--stale-only") == due
    assert planned("--older-than", "2h") == due
    assert planned("--older-than", "4h") == []
    both = cli("refresh-views", "--dsn", db_dsn, "--stale-only", "--older-than", "1h")
    assert both.exit_code == 2
    assert "give --stale-only or --older-than, not both" in both.output


def test_after_a_view_is_rolled_back_prune_never_drops_a_namesake(
    project: Path, conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    (project / "views" / "mv_top_days.yaml").unlink()
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    assert cli("rollback", "--dsn", db_dsn, "--last", "--yes").exit_code == 0
    # A DBA makes a view of the same name by hand; it left the specs meanwhile.
    (project / "views" / "mv_revenue.yaml").unlink()
    (project / "views" / "other.yaml").write_text("name: other\nquery: SELECT 1 AS x\n")
    conn.execute("CREATE MATERIALIZED VIEW mv_revenue AS SELECT 2 AS y")
    pruned = cli("apply", "--dsn", db_dsn, "--prune")
    assert pruned.exit_code == 0, pruned.output
    assert "mv_revenue" in relations(conn)


def test_a_leftover_is_checked_by_oid_right_before_its_drop_never_deparsed(
    conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    """Seen in a fifth review: the check right before dropping what an interrupted replace
    left read its definition, which locks all it reads (any table): DDL open on one made the
    drop wait lock_timeout, six times over. A leftover's identity is its OID and name."""
    from dbopt import guard
    from dbopt.model import QualifiedName

    conn.execute("CREATE TABLE knob (k int)")
    conn.execute("CREATE MATERIALIZED VIEW rep_dbopt_new AS SELECT k FROM knob")
    name = QualifiedName("public", "rep_dbopt_new")
    row = conn.execute("SELECT 'rep_dbopt_new'::regclass::oid::bigint").fetchone()
    assert row is not None
    with helpers.held(db_dsn, "knob"), psycopg.connect(db_dsn, autocommit=True) as own:
        own.execute("SET lock_timeout = '200ms'")
        assert guard.check(own, guard.Identity("view", name, oid=row[0])).oid == row[0]
        with pytest.raises(psycopg.errors.LockNotAvailable):  # its query: deparsed, waits
            guard.check(own, guard.Identity("view", name, oid=row[0], definition=" SELECT k"))


def test_a_cascade_killed_after_its_swap_keeps_what_it_made_dbopts(
    project: Path,
    conn: psycopg.Connection[Any],
    admin_conn: psycopg.Connection[Any],
    db_dsn: str,
) -> None:
    """Seen in a fifth review: dbopt killed after a cascade's swap (dropping the old views),
    what it had put in place was recorded only at the end of the action: the rebuilt
    mv_top_days and the indexes were no longer dbopt's. Recorded right after the swap."""
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    admin_conn.execute(
        "CREATE FUNCTION slow_drop() RETURNS event_trigger LANGUAGE plpgsql AS $$ "
        "BEGIN PERFORM pg_sleep(30); END $$"
    )
    admin_conn.execute(
        "CREATE EVENT TRIGGER slow_drop ON ddl_command_start "
        "WHEN TAG IN ('DROP MATERIALIZED VIEW') EXECUTE FUNCTION slow_drop()"
    )
    drop = "SELECT pid FROM pg_stat_activity WHERE query LIKE 'DROP MATERIALIZED VIEW%%'"
    try:
        drift_revenue(project)
        proc = helpers.start_dbopt(
            project, "apply", "--dsn", db_dsn, "--replace-drifted", "--cascade", "--yes"
        )
        try:
            helpers.poll(lambda: conn.execute(drop).fetchone(), "an old view's drop")
        finally:
            proc.kill()
            proc.communicate(timeout=10)
        conn.execute(f"SELECT pg_terminate_backend(pid) FROM ({drop}) AS d")
    finally:
        admin_conn.execute("DROP EVENT TRIGGER slow_drop")
        admin_conn.execute("DROP FUNCTION slow_drop()")
    assert "+ 0" in view_def(conn, "mv_revenue")  # swapped in
    status = json.loads(cli("status", "--dsn", db_dsn, "--format", "json").stdout)
    origins = {r["index"]: r["created_by"] for r in status["managed"]}
    assert origins == {"public.mv_revenue_day": "dbopt", "public.mv_top_days_day": "dbopt"}
    # The old views it swapped out are dbopt's to clear; what it made stays.
    assert cli("apply", "--dsn", db_dsn, "--prune").exit_code == 0
    assert set(relations(conn)) == {
        "mv_revenue",
        "mv_revenue_day",
        "mv_top_days",
        "mv_top_days_day",
    }
