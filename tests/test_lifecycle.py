"""plan and apply against a real PostgreSQL: golden paths and failure paths."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import cli, index_defs, poll, start_dbopt, write_specs

from dbopt import usecases
from dbopt.config import Settings, Target
from dbopt.errors import UnsafeActionError
from dbopt.executor import SilentReporter, take_run_lock
from dbopt.history import HISTORY_VERSION, History
from dbopt.planner import ActionKind
from dbopt.plans import build_plan
from dbopt.spec import load_specs

FAST = Settings(lock_timeout_ms=300, retries=1, retry_backoff_ms=10)


def plan_for(conn: psycopg.Connection[Any], specs_dir: Path, **flags: bool) -> Any:
    specs = load_specs([(specs_dir, True)])
    return build_plan(conn, specs, FAST, History(), **flags)


def apply_specs(dsn: str, specs_dir: Path, settings: Settings = FAST, **flags: bool) -> Any:
    """Apply through the library's use case, with every check the CLI gets."""
    outcome = usecases.apply(
        Target("test", dsn, settings),
        load_specs([(specs_dir, True)]),
        History(),
        usecases.ApplyOptions(**flags),
        reporter=SilentReporter(),
        hooks=usecases.Quiet(),
        sleep=lambda _s: None,
    )
    return outcome.run


APPOINTMENTS = """
    table: public.appointments
    indexes:
      - name: idx_appt_barber_status
        columns: [barber_id, status]
        where: "status IN ('confirmed', 'pending')"
      - name: idx_appt_day
        columns:
          - {expr: "date(created_at)", order: desc}
    """


# APPOINTMENTS after idx_appt_day left the specs.
WITHOUT_DAY = """
    table: public.appointments
    indexes:
      - name: idx_appt_barber_status
        columns: [barber_id, status]
        where: "status IN ('confirmed', 'pending')"
    """


@pytest.fixture
def appointments(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    conn.execute(
        "CREATE TABLE appointments (id int PRIMARY KEY, barber_id int, status text, "
        "created_at timestamp)"
    )
    conn.execute(
        "INSERT INTO appointments SELECT g, g % 50, "
        "(ARRAY['confirmed','pending','done'])[1 + g % 3], now() - g * interval '1 hour' "
        "FROM generate_series(1, 5000) g"
    )
    return conn


def test_plan_apply_replan_is_empty(
    appointments: psycopg.Connection[Any], db_dsn: str, tmp_path: Path
) -> None:
    specs = write_specs(tmp_path, {"appointments.yaml": APPOINTMENTS})
    before = index_defs(appointments)
    plan = plan_for(appointments, specs)
    assert [(a.kind, a.name.name) for a in plan.actions] == [
        (ActionKind.CREATE, "idx_appt_barber_status"),
        (ActionKind.CREATE, "idx_appt_day"),
    ]
    result = apply_specs(db_dsn, specs)
    assert result.outcome == "succeeded"
    after = index_defs(appointments)
    assert set(after) - set(before) == {"idx_appt_barber_status", "idx_appt_day"}
    assert all(valid for _, valid in after.values())
    replan = plan_for(appointments, specs)
    assert replan.changes == ()
    assert {a.kind for a in replan.actions} == {ActionKind.SKIP}


def test_each_build_is_recorded_with_what_the_read_right_after_it_saw(
    appointments: psycopg.Connection[Any], db_dsn: str, tmp_path: Path
) -> None:
    """The read after each build records the change's object, definition and result in the
    same statement: every change row of the run says ok, with the live index's OID, the
    server's definition and a duration, and no error."""
    specs = write_specs(tmp_path, {"appointments.yaml": APPOINTMENTS})
    run = apply_specs(db_dsn, specs)
    assert run.outcome == "succeeded"
    rows = appointments.execute(
        "SELECT h.object_name, h.result, h.error, h.duration_ms IS NOT NULL, "
        "       h.object_oid = c.oid, h.built_definition = pg_get_indexdef(c.oid) "
        "  FROM dbopt.changes h JOIN pg_class c ON c.relname = h.object_name "
        "  JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = h.object_schema "
        " WHERE h.run_id = %s ORDER BY h.object_name",
        (run.run_id,),
    ).fetchall()
    assert rows == [
        ("idx_appt_barber_status", "ok", None, True, True, True),
        ("idx_appt_day", "ok", None, True, True, True),
    ]


def test_equivalent_predicate_written_differently_is_skipped(
    appointments: psycopg.Connection[Any], tmp_path: Path
) -> None:
    appointments.execute(
        "CREATE INDEX idx_appt_barber_status ON appointments (barber_id, status) "
        "WHERE status = ANY (ARRAY['confirmed'::text, 'pending'::text])"
    )
    specs = write_specs(tmp_path, {"appointments.yaml": APPOINTMENTS})
    plan = plan_for(appointments, specs)
    kinds = {a.name.name: a.kind for a in plan.actions}
    assert kinds == {"idx_appt_barber_status": ActionKind.SKIP, "idx_appt_day": ActionKind.CREATE}


def test_drift_needs_replace_drifted_and_then_replaces_without_leftovers(
    appointments: psycopg.Connection[Any], db_dsn: str, tmp_path: Path, monkeypatch: Any
) -> None:
    appointments.execute(
        "CREATE INDEX idx_appt_barber_status ON appointments (barber_id, status) "
        "WHERE status = 'confirmed'"
    )
    write_specs(tmp_path, {"appointments.yaml": APPOINTMENTS})
    monkeypatch.chdir(tmp_path)
    result = cli("apply", "--dsn", db_dsn, "--format", "plain")
    assert result.exit_code == 1, result.output
    assert "replace public.idx_appt_barber_status needs --replace-drifted" in result.output
    assert (
        "WHERE (status = 'confirmed'::text)"
        in index_defs(appointments)["idx_appt_barber_status"][0]
    )
    result = cli("apply", "--dsn", db_dsn, "--format", "plain", "--replace-drifted")
    assert result.exit_code == 0, result.output
    defs = index_defs(appointments)
    assert "ANY (ARRAY['confirmed'::text, 'pending'::text])" in defs["idx_appt_barber_status"][0]
    assert not [n for n in defs if "dbopt" in n], defs


def test_unique_index_over_duplicates_fails_cleanly(
    appointments: psycopg.Connection[Any], db_dsn: str, tmp_path: Path
) -> None:
    specs = write_specs(
        tmp_path,
        {
            "appointments.yaml": """
            table: appointments
            indexes:
              - {name: uq_appt_barber, columns: [barber_id], unique: true}
            """
        },
    )
    plan_for(appointments, specs)
    result = apply_specs(db_dsn, specs)
    assert result.outcome == "failed"
    (change,) = result.changes
    assert change.error is not None
    assert "could not create unique index" in change.error
    assert "INVALID index public.uq_appt_barber was dropped" in change.error
    assert "uq_appt_barber" not in index_defs(appointments)


def test_invalid_index_is_repaired(
    appointments: psycopg.Connection[Any], db_dsn: str, tmp_path: Path
) -> None:
    # A failed concurrent build leaves an INVALID index of the spec's name behind.
    appointments.execute("INSERT INTO appointments VALUES (999999, 1, 'x', now())")
    with pytest.raises(psycopg.errors.UniqueViolation):
        appointments.execute(
            "CREATE UNIQUE INDEX CONCURRENTLY idx_appt_day ON appointments (barber_id)"
        )
    assert index_defs(appointments)["idx_appt_day"][1] is False
    specs = write_specs(tmp_path, {"appointments.yaml": APPOINTMENTS})
    plan = plan_for(appointments, specs)
    (repair,) = [a for a in plan.actions if a.name.name == "idx_appt_day"]
    assert repair.kind == ActionKind.REPAIR
    # Not dbopt's, and not the spec's definition: someone else's failed build, left alone.
    assert repair.refusal is not None and "dbopt did not make it" in repair.refusal
    with pytest.raises(UnsafeActionError, match="apply refused before anything ran"):
        apply_specs(db_dsn, specs)
    assert index_defs(appointments)["idx_appt_day"][1] is False
    # Once it is gone, dbopt builds its own.
    appointments.execute("DROP INDEX idx_appt_day")
    assert apply_specs(db_dsn, specs).outcome == "succeeded"
    definition, valid = index_defs(appointments)["idx_appt_day"]
    assert valid
    assert "date(created_at) DESC" in definition


def test_lock_timeout_retries_names_the_blocker_and_leaves_nothing(
    appointments: psycopg.Connection[Any], db_dsn: str, tmp_path: Path
) -> None:
    specs = write_specs(tmp_path, {"appointments.yaml": APPOINTMENTS})
    plan_for(appointments, specs)
    with psycopg.connect(db_dsn) as blocker:
        # Readers pass (apply can plan), concurrent builds wait.
        blocker.execute("LOCK TABLE appointments IN SHARE MODE")
        pid = blocker.info.backend_pid
        bounded = Settings(
            lock_timeout_ms=300, retries=1, retry_backoff_ms=10, build_wait_timeout_ms=300
        )
        result = apply_specs(db_dsn, specs, bounded, wait_for_blockers=True)
        blocker.rollback()
    assert result.outcome == "failed"
    error = result.changes[0].error or ""
    assert "waited build_wait_timeout (300 ms) 2 times" in error
    assert f"pid {pid}" in error
    assert not [n for n, (_d, valid) in index_defs(appointments).items() if not valid]
    assert "idx_appt_barber_status" not in index_defs(appointments)


def test_second_apply_is_refused_with_exit_3(
    appointments: psycopg.Connection[Any], db_dsn: str, tmp_path: Path, monkeypatch: Any
) -> None:
    write_specs(tmp_path, {"appointments.yaml": APPOINTMENTS})
    monkeypatch.chdir(tmp_path)
    with psycopg.connect(db_dsn, autocommit=True) as other:
        take_run_lock(other, wait=False)
        result = cli("apply", "--dsn", db_dsn)
    assert result.exit_code == 3, result.output
    assert "another dbopt run holds this database's lock: pid" in result.output


def test_prune_drops_only_what_dbopt_created(
    appointments: psycopg.Connection[Any], db_dsn: str, tmp_path: Path
) -> None:
    appointments.execute("CREATE INDEX handmade ON appointments (status)")
    specs = write_specs(tmp_path, {"appointments.yaml": APPOINTMENTS})
    assert apply_specs(db_dsn, specs).outcome == "succeeded"
    # idx_appt_day leaves the specs; handmade was never in them.
    write_specs(tmp_path, {"appointments.yaml": WITHOUT_DAY})
    without_flag = plan_for(appointments, specs)
    (drop,) = without_flag.changes
    assert (drop.kind, drop.name.name, drop.enabled, drop.needs) == (
        ActionKind.DROP,
        "idx_appt_day",
        False,
        "prune",
    )
    plan_for(appointments, specs, prune=True)
    assert apply_specs(db_dsn, specs, prune=True).outcome == "succeeded"
    names = set(index_defs(appointments))
    assert "idx_appt_day" not in names
    assert {"handmade", "appointments_pkey", "idx_appt_barber_status"} <= names


def test_partitioned_table(conn: psycopg.Connection[Any], db_dsn: str, tmp_path: Path) -> None:
    conn.execute(
        "CREATE TABLE events (id int, day date, kind text) PARTITION BY RANGE (day);"
        "CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO "
        "('2026-01-01');"
        "CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO "
        "('2027-01-01');"
        "INSERT INTO events SELECT g, date '2025-01-01' + g % 700, 'k' "
        "FROM generate_series(1, 2000) g"
    )
    specs = write_specs(
        tmp_path,
        {"events.yaml": "table: events\nindexes:\n  - {name: idx_events_day, columns: [day]}\n"},
    )
    plan_for(conn, specs)
    assert apply_specs(db_dsn, specs).outcome == "succeeded"
    defs = index_defs(conn)
    assert defs["idx_events_day"][1] is True
    assert {n for n in defs if n.endswith("idx_events_day")} == {
        "idx_events_day",
        "events_2025_idx_events_day",
        "events_2026_idx_events_day",
    }
    assert plan_for(conn, specs).changes == ()


def test_writer_sees_no_error_during_apply(
    appointments: psycopg.Connection[Any], db_dsn: str, tmp_path: Path
) -> None:
    specs = write_specs(tmp_path, {"appointments.yaml": APPOINTMENTS})
    plan_for(appointments, specs)
    errors: list[BaseException] = []
    inserted = 0
    stop = threading.Event()

    def writer() -> None:
        nonlocal inserted
        with psycopg.connect(db_dsn, autocommit=True) as w:
            w.execute("SET lock_timeout = '2s'")
            i = 100_000
            while not stop.is_set():
                try:
                    w.execute("INSERT INTO appointments VALUES (%s, 1, 'pending', now())", (i,))
                    inserted += 1
                except BaseException as exc:  # any error fails the test
                    errors.append(exc)
                    return
                i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        # The writer is writing before the apply starts.
        poll(lambda: inserted > 0 or errors, "the writer's first insert")
        result = apply_specs(db_dsn, specs, Settings(lock_timeout_ms=5000))
    finally:
        stop.set()
        thread.join()
    assert result.outcome == "succeeded"
    assert errors == []
    assert inserted > 0


def test_status_lists_managed_and_unmanaged(
    appointments: psycopg.Connection[Any], db_dsn: str, tmp_path: Path, monkeypatch: Any
) -> None:
    appointments.execute("CREATE INDEX handmade ON appointments (status)")
    write_specs(tmp_path, {"appointments.yaml": APPOINTMENTS})
    monkeypatch.chdir(tmp_path)
    before = cli("status", "--dsn", db_dsn, "--format", "json")
    assert before.exit_code == 0, before.output
    import json

    report = json.loads(before.output)
    assert {r["index"]: r["state"] for r in report["managed"]} == {
        "public.idx_appt_barber_status": "missing",
        "public.idx_appt_day": "missing",
    }
    assert {r["index"] for r in report["unmanaged"]} == {
        "public.appointments_pkey",
        "public.handmade",
    }
    assert report["last_run"] is None
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    after = json.loads(cli("status", "--dsn", db_dsn, "--format", "json").output)
    assert {(r["state"], r["created_by"]) for r in after["managed"]} == {("ok", "dbopt")}
    assert after["last_run"]["outcome"] == "succeeded"


def test_rollback_plan_file_index_selector_and_double_rollback(
    appointments: psycopg.Connection[Any], db_dsn: str, tmp_path: Path, monkeypatch: Any
) -> None:
    write_specs(tmp_path, {"appointments.yaml": APPOINTMENTS})
    monkeypatch.chdir(tmp_path)
    none_yet = cli("rollback", "--dsn", db_dsn, "--plan", "--last")
    assert none_yet.exit_code == 2
    assert "no dbopt history in schema dbopt: nothing was applied here yet" in none_yet.output
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    no_selector = cli("rollback", "--dsn", db_dsn, "--plan")
    assert no_selector.exit_code == 2
    assert "choose exactly one of --last, --run ID or --index NAME" in no_selector.output
    written = cli("rollback", "--dsn", db_dsn, "--plan", "--run", "1", "-o", "rb.sql")
    assert written.exit_code == 0, written.output
    text = (tmp_path / "rb.sql").read_text()
    assert "DROP INDEX CONCURRENTLY IF EXISTS public.idx_appt_day;" in text
    assert "DROP INDEX CONCURRENTLY IF EXISTS public.idx_appt_barber_status;" in text
    assert "\nSET lock_timeout = 5000;\n" in text
    one = cli("rollback", "--dsn", db_dsn, "--index", "idx_appt_day", "--yes")
    assert one.exit_code == 0, one.output
    names = set(index_defs(appointments))
    assert "idx_appt_day" not in names
    assert "idx_appt_barber_status" in names
    whole = cli("rollback", "--dsn", db_dsn, "--run", "1", "--yes")
    assert whole.exit_code == 0, whole.output
    assert set(index_defs(appointments)) == {"appointments_pkey"}
    again = cli("rollback", "--dsn", db_dsn, "--run", "1", "--plan")
    assert again.exit_code == 2
    assert "run 1 was already rolled back by run 3" in again.output


def test_fast_path_text_matches_the_servers_normalisation(
    conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """Plain-column specs are compared without a server round trip; the text must be exact."""
    from dbopt.deparse import normalize_specs, simple_canonical

    conn.execute('CREATE TABLE t (a int, b text, c date, "Mixed Case" int, amount numeric)')
    specs_dir = write_specs(
        tmp_path,
        {
            "t.yaml": """
            table: t
            indexes:
              - {name: i1, columns: [a, b]}
              - {name: i2, columns: [{name: a, order: desc}, {name: c, nulls: first}]}
              - {name: i3, columns: [{name: b, order: desc, nulls: last}], include: [amount]}
              - {name: i4, columns: [a], unique: true, with: {fillfactor: 70}}
              - {name: i5, columns: ["Mixed Case"], method: hash}
              - {name: i6, columns: [c], method: brin, with: {pages_per_range: 16}}
              - {name: i7, columns: [a], unique: true, nulls_not_distinct: true}
            """
        },
    )
    specs = load_specs([(specs_dir, True)]).indexes
    if conn.info.server_version < 150000:  # NULLS NOT DISTINCT came in 15
        specs = tuple(s for s in specs if not s.nulls_not_distinct)
    server, _trips = normalize_specs(conn, specs, 1000)
    for spec in specs:
        assert simple_canonical(spec) == server[spec.qualified_name], spec.name


def _crashed_build(appointments: psycopg.Connection[Any], db_dsn: str, tmp_path: Path) -> str:
    """dbopt killed mid-build, its orphaned build cancelled: the name of the INVALID index it
    left (its OID recorded in the history the moment the server showed it)."""
    write_specs(tmp_path, {"appointments.yaml": APPOINTMENTS})
    (tmp_path / "dbopt.yaml").write_text(f'environments:\n  test:\n    dsn: "{db_dsn}"\n')
    with psycopg.connect(db_dsn) as holder:
        holder.execute("INSERT INTO appointments VALUES (999999, 1, 'x', now())")
        proc = start_dbopt(tmp_path, "apply", "--env", "test")

        def recorded_oid() -> Any:
            if not History().exists(appointments):
                return None
            return appointments.execute(
                "SELECT c.object_oid FROM dbopt.changes c WHERE c.object_oid IS NOT NULL "
                "AND c.result = 'running'"
            ).fetchone()

        (recorded,) = poll(recorded_oid, "the build's OID recorded in dbopt.changes")
        proc.kill()  # dbopt dies; its build goes on in the server, waiting for the holder
        proc.communicate(timeout=10)
        build = appointments.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'dbopt-apply'"
        ).fetchone()
        assert build is not None
        appointments.execute("SELECT pg_cancel_backend(%s)", build)
        holder.rollback()
    name = appointments.execute("SELECT %s::bigint::oid::regclass::text", (recorded,)).fetchone()
    assert name is not None and index_defs(appointments)[name[0]][1] is False  # INVALID
    return str(name[0])


def test_a_repair_whose_drop_timed_out_leaves_the_invalid_index_as_it_was(
    appointments: psycopg.Connection[Any], db_dsn: str, tmp_path: Path
) -> None:
    """The INVALID index a repair drops was INVALID before: its DROP INDEX CONCURRENTLY,
    stopped by build_wait_timeout, did not make it so. The action fails and says why; the
    drop is not taken for a broken one and retried for cleanup_wait."""
    name = _crashed_build(appointments, db_dsn, tmp_path)
    bounded = Settings(
        lock_timeout_ms=300, retries=0, build_wait_timeout_ms=300, cleanup_wait_ms=1000
    )
    with psycopg.connect(db_dsn) as reader:
        reader.execute("SELECT count(*) FROM appointments")  # holds ACCESS SHARE
        result = apply_specs(db_dsn, tmp_path / "indexes", bounded)
    (repair,) = [c for c in result.changes if c.action.kind == ActionKind.REPAIR]
    assert repair.action.name.name == name
    error = repair.error or ""
    assert "waited build_wait_timeout (300 ms)" in error, error
    assert "its stopped drop had made INVALID" not in error, error
    assert index_defs(appointments)[name][1] is False  # still there, INVALID, for the next run


def test_what_a_crash_left_is_repaired_and_stays_dbopts_own(
    appointments: psycopg.Connection[Any], db_dsn: str, tmp_path: Path
) -> None:
    """dbopt is killed mid-build: the OID of its build was recorded the moment the server
    showed it, so the INVALID index the orphaned build leaves is known as dbopt's."""
    name = _crashed_build(appointments, db_dsn, tmp_path)
    plan = plan_for(appointments, tmp_path / "indexes")
    (repair,) = [a for a in plan.actions if a.kind == ActionKind.REPAIR]
    assert (repair.name.name, repair.existed_before, repair.refusal) == (name, False, None)
    assert apply_specs(db_dsn, tmp_path / "indexes").outcome == "succeeded"
    outcomes = appointments.execute("SELECT outcome FROM dbopt.runs ORDER BY id").fetchall()
    assert outcomes == [("aborted",), ("succeeded",)]
    # Rebuilt by dbopt, so dbopt's own: --prune may drop it once it leaves the specs.
    write_specs(
        tmp_path,
        {
            "appointments.yaml": WITHOUT_DAY
            if name == "idx_appt_day"
            else APPOINTMENTS.replace("idx_appt_barber_status", "idx_other")
        },
    )
    drops = [
        a for a in plan_for(appointments, tmp_path / "indexes").changes if a.kind == ActionKind.DROP
    ]
    assert [(d.name.name, d.needs) for d in drops] == [(name, "prune")]


def test_failed_partition_build_leaves_no_invalid_parent(
    conn: psycopg.Connection[Any], db_dsn: str, tmp_path: Path
) -> None:
    conn.execute(
        "CREATE TABLE events (id int, day date, kind text) PARTITION BY RANGE (day);"
        "CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO "
        "('2026-01-01');"
        "CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO "
        "('2027-01-01');"
        "INSERT INTO events VALUES (1, '2026-03-01', 'a'), (2, '2026-03-01', 'a')"
    )
    specs = write_specs(
        tmp_path,
        {
            "events.yaml": "table: events\nindexes:\n"
            "  - {name: uq_events_day_kind, columns: [day, kind], unique: true}\n"
        },
    )
    result = apply_specs(db_dsn, specs)
    assert result.outcome == "failed"
    assert "could not create unique index" in (result.changes[0].error or "")
    assert {n for n in index_defs(conn) if "uq_events" in n} == set()


def test_a_run_reads_the_history_facts_once(
    appointments: psycopg.Connection[Any],
    db_dsn: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The history's facts (what is there, what the role may do) are read twice per run:
    once for the grant check, the ownership read and the pre-flight, and again by the run's
    own set-up (after the prompt, right before the run records itself)."""
    specs = write_specs(tmp_path, {"appointments.yaml": WITHOUT_DAY})
    assert apply_specs(db_dsn, specs).outcome == "succeeded"  # the history exists from here
    reads: list[str] = []
    read_facts = History._read_facts

    def counted(self: History, conn: psycopg.Connection[Any]) -> Any:
        reads.append(self.schema)
        return read_facts(self, conn)

    monkeypatch.setattr(History, "_read_facts", counted)
    specs = write_specs(tmp_path, {"appointments.yaml": APPOINTMENTS})
    assert apply_specs(db_dsn, specs).outcome == "succeeded"
    assert reads == ["dbopt", "dbopt"]


def test_remembered_history_facts_are_read_again_once_installed(
    conn: psycopg.Connection[Any],
) -> None:
    history = History(schema="dbopt_remembered")
    history.remember(conn)
    before = history.facts(conn)
    assert not before.exists
    history.install(conn, before)
    after = history.facts(conn)
    assert after.exists and after.version == HISTORY_VERSION
    assert history.facts(conn) is after  # remembered again
    fresh = history.facts(conn, fresh=True)
    assert fresh == after and fresh is not after and history.facts(conn) is fresh
    assert History(schema="dbopt_remembered").facts(conn) is fresh  # by schema, per session


@pytest.mark.parametrize(("result", "selection"), [("aborted", "--index"), ("failed", "--last")])
def test_a_replace_stopped_after_its_swap_is_rolled_back_as_the_replace_it_was(
    appointments: psycopg.Connection[Any],
    db_dsn: str,
    tmp_path: Path,
    monkeypatch: Any,
    result: str,
    selection: str,
) -> None:
    """Seen in an exploratory review: Ctrl-C while a replace dropped the index it had swapped
    out left the new index in place (dbopt's: status said so) but the change recorded
    'aborted'; rollback then called it 'dropped and made again by someone else' and could
    never undo the replace. The history row here is what such a run writes; a failed drop of
    the old index (lock_timeout) writes 'failed' the same way."""
    write_specs(tmp_path, {"appointments.yaml": APPOINTMENTS})
    monkeypatch.chdir(tmp_path)
    assert cli("apply", "--dsn", db_dsn, "--format", "plain").exit_code == 0
    before = index_defs(appointments)["idx_appt_barber_status"][0]
    write_specs(tmp_path, {"appointments.yaml": APPOINTMENTS.replace("'pending'", "'no_show'")})
    replaced = cli("apply", "--dsn", db_dsn, "--format", "plain", "--replace-drifted")
    assert replaced.exit_code == 0, replaced.output
    after = index_defs(appointments)["idx_appt_barber_status"][0]
    assert after != before
    appointments.execute(
        "UPDATE dbopt.changes SET result = %s, error = 'Ctrl-C' "
        "WHERE action = 'replace' AND object_name = 'idx_appt_barber_status'",
        (result,),
    )
    target = ["--index", "idx_appt_barber_status"] if selection == "--index" else ["--last"]
    rolled = cli("rollback", "--dsn", db_dsn, *target, "--yes", "--format", "plain")
    assert rolled.exit_code == 0, rolled.output
    assert "made again by someone else" not in rolled.output
    assert index_defs(appointments)["idx_appt_barber_status"][0] == before
    assert not [n for n in index_defs(appointments) if "dbopt" in n]


def test_a_failed_create_is_not_taken_for_a_landed_change(
    appointments: psycopg.Connection[Any], db_dsn: str, tmp_path: Path, monkeypatch: Any
) -> None:
    """Only a swap lands an object under its name: a create recorded failed (its build left
    something under the name) is not undone as if it had ended ok."""
    write_specs(tmp_path, {"appointments.yaml": WITHOUT_DAY})
    monkeypatch.chdir(tmp_path)
    assert cli("apply", "--dsn", db_dsn, "--format", "plain").exit_code == 0
    appointments.execute("UPDATE dbopt.changes SET result = 'failed' WHERE action = 'create'")
    rolled = cli("rollback", "--dsn", db_dsn, "--last", "--yes", "--format", "plain")
    assert rolled.exit_code == 2, rolled.output
    assert "no apply run left to roll back" in rolled.output
    assert "idx_appt_barber_status" in index_defs(appointments)


def test_what_a_landed_replace_swapped_out_is_owned_once_as_swapped_out(
    appointments: psycopg.Connection[Any], db_dsn: str, tmp_path: Path, monkeypatch: Any
) -> None:
    """The history's own SQL follows the landed rule as rollback does (one rule, in
    history_landed.sql): a replace stopped after its swap, whose final drop did not happen,
    left the old index under its temporary name. It is dbopt's as what the replace swapped
    out, not also as what the first apply made (seen in a review: listed twice). The rows
    here are what such a run writes; the old index is made again under its temporary name."""
    write_specs(tmp_path, {"appointments.yaml": WITHOUT_DAY})
    monkeypatch.chdir(tmp_path)
    assert cli("apply", "--dsn", db_dsn, "--format", "plain").exit_code == 0
    write_specs(tmp_path, {"appointments.yaml": WITHOUT_DAY.replace("'pending'", "'done'")})
    replaced = cli("apply", "--dsn", db_dsn, "--format", "plain", "--replace-drifted")
    assert replaced.exit_code == 0, replaced.output
    appointments.execute(
        "CREATE INDEX idx_appt_barber_status_dbopt_old ON appointments (barber_id, status) "
        "WHERE status IN ('confirmed', 'pending')"
    )
    row = appointments.execute(
        "SELECT 'idx_appt_barber_status_dbopt_old'::regclass::oid::bigint"
    ).fetchone()
    assert row is not None
    old = int(row[0])
    appointments.execute("UPDATE dbopt.changes SET object_oid = %s WHERE action = 'create'", (old,))
    appointments.execute(
        "UPDATE dbopt.changes SET result = 'aborted', replaced_oid = %s WHERE action = 'replace'",
        (old,),
    )
    owned = [o for o in History().owned(appointments) if o.oid == old]
    assert [(o.name.name, o.replaced) for o in owned] == [("idx_appt_barber_status", True)]
    # The same rule as rollback's: the replace is undone as the replace it was.
    change = next(c for c in History().changes(appointments) if c.action == "replace")
    assert change.landed and change.done
    # Its table out of the specs (and the new index gone), what it left is still seen and
    # pruned.
    (tmp_path / "indexes" / "appointments.yaml").unlink()
    appointments.execute("DROP INDEX idx_appt_barber_status")  # as a prune would have
    appointments.execute("CREATE TABLE other (x int)")
    write_specs(
        tmp_path, {"other.yaml": "table: other\nindexes:\n  - {name: other_x, columns: [x]}\n"}
    )
    planned = json.loads(cli("plan", "--dsn", db_dsn, "--prune", "--format", "json").stdout)
    drops = {a["object"] for a in planned["actions"] if a["action"] == "drop"}
    assert "public.idx_appt_barber_status_dbopt_old" in drops, planned


def test_status_reports_a_spec_it_cannot_apply_as_attention(
    appointments: psycopg.Connection[Any], db_dsn: str, tmp_path: Path, monkeypatch: Any
) -> None:
    """Seen in an exploratory review: status exited 2 (with nothing shown) when a spec
    index's name was taken by an index of another table. It is the state of the database:
    everything else is shown, the spec is an attention line at its file:line (exit 1 with
    --exit-code); plan and apply still refuse it."""
    appointments.execute("CREATE TABLE other (x int)")
    appointments.execute("CREATE INDEX idx_appt_day ON other (x)")
    write_specs(tmp_path, {"appointments.yaml": APPOINTMENTS})
    monkeypatch.chdir(tmp_path)
    shown = cli("status", "--dsn", db_dsn, "--format", "json")
    assert shown.exit_code == 0, shown.output
    report = json.loads(shown.stdout)
    assert [r["index"] for r in report["managed"]] == ["public.idx_appt_barber_status"]
    (line,) = [a for a in report["attention"] if a.startswith("spec ")]
    assert line.startswith("spec indexes/appointments.yaml:")
    assert line.endswith(
        "index idx_appt_day: the name public.idx_appt_day is taken by an index: rename one of them"
    ), line
    assert cli("status", "--dsn", db_dsn, "--exit-code").exit_code == 1
    planned = cli("plan", "--dsn", db_dsn)
    assert planned.exit_code == 2, planned.output


def test_rollback_last_never_reaches_past_a_failed_apply(
    appointments: psycopg.Connection[Any], db_dsn: str, tmp_path: Path, monkeypatch: Any
) -> None:
    """Seen in a review: after an apply that failed and changed nothing, rollback --last
    undid the good apply before it (with --yes, at once). It says so and names that run."""
    write_specs(tmp_path, {"appointments.yaml": WITHOUT_DAY})
    monkeypatch.chdir(tmp_path)
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    # A unique index over duplicate statuses: its build fails, dbopt cleans it up.
    write_specs(
        tmp_path,
        {
            "appointments.yaml": WITHOUT_DAY
            + "  - {name: idx_appt_status_unique, columns: [status], unique: true}\n"
        },
    )
    failed = cli("apply", "--dsn", db_dsn)
    assert failed.exit_code == 1, failed.output
    refused = cli("rollback", "--dsn", db_dsn, "--last", "--yes")
    assert refused.exit_code == 2, refused.output
    assert (
        "the last apply (run 2) failed and left nothing to undo; the newest apply with "
        "something left is run 1: to undo it, name it (dbopt rollback --run 1)"
    ) in " ".join(refused.output.split())
    assert "idx_appt_barber_status" in index_defs(appointments)
    named = cli("rollback", "--dsn", db_dsn, "--run", "1", "--yes")
    assert named.exit_code == 0, named.output
    assert "idx_appt_barber_status" not in index_defs(appointments)
    # Once a rollback came after it, the failed apply no longer stands in the way.
    done = cli("rollback", "--dsn", db_dsn, "--last", "--yes")
    assert done.exit_code == 2, done.output
    assert "no apply run left to roll back" in done.output


def test_status_reports_a_view_spec_it_cannot_apply_as_attention(
    appointments: psycopg.Connection[Any], db_dsn: str, tmp_path: Path, monkeypatch: Any
) -> None:
    """Seen in a second review: a view spec whose query reads a missing table still stopped
    status with exit 2 (its check runs before the lenient planning). It is an attention line
    at its file:line; the indexes are shown."""
    write_specs(tmp_path, {"appointments.yaml": WITHOUT_DAY})
    write_specs(
        tmp_path,
        {"mv_gone.yaml": "name: mv_gone\nquery: SELECT id FROM no_such_table\n"},
        folder="views",
    )
    monkeypatch.chdir(tmp_path)
    shown = cli("status", "--dsn", db_dsn, "--format", "json")
    assert shown.exit_code == 0, shown.output
    report = json.loads(shown.stdout)
    assert [r["index"] for r in report["managed"]] == ["public.idx_appt_barber_status"]
    assert any(a.startswith("spec views/mv_gone.yaml:") for a in report["attention"])
