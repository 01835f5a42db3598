"""Golden cases (tests/cases/<name>/): plan matches, apply, re-plan is empty, rollback restores.

Each folder holds ``setup.sql`` (the starting database), ``specs/`` (the spec files),
``expected_plan.txt`` (one ``action schema.index`` line per action, in plan order) and
optionally ``flags`` (extra flags for plan and apply, e.g. ``--replace-drifted``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from dbopt.cli import main

CASES = Path(__file__).parent / "cases"


def catalog_snapshot(conn: psycopg.Connection[Any]) -> set[tuple[str, str, bool]]:
    """Every index outside dbopt's own schema: name, definition, validity."""
    rows = conn.execute(
        "SELECT c.relname, pg_get_indexdef(c.oid), i.indisvalid FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname NOT IN ('pg_catalog', 'pg_toast', 'information_schema', 'dbopt')"
    ).fetchall()
    return {(r[0], r[1], r[2]) for r in rows}


def run(args: list[str], dsn: str, specs: Path) -> Any:
    result = CliRunner().invoke(main, [*args, "--dsn", dsn, "--specs", str(specs)])
    return result


@pytest.mark.parametrize("case", sorted(p.name for p in CASES.iterdir() if p.is_dir()))
def test_case(case: str, conn: psycopg.Connection[Any], db_dsn: str) -> None:
    folder = CASES / case
    conn.execute((folder / "setup.sql").read_text())  # type: ignore[call-overload]
    flags = (folder / "flags").read_text().split() if (folder / "flags").exists() else []
    specs = folder / "specs"
    original = catalog_snapshot(conn)

    planned = run(["plan", "--format", "json", *flags], db_dsn, specs)
    assert planned.exit_code == 0, planned.output
    actions = json.loads(planned.output)["actions"]
    got = [f"{a['action']} {a['object']}" for a in actions]
    assert got == (folder / "expected_plan.txt").read_text().split("\n")[:-1]

    applied = run(["apply", "--format", "plain", *flags], db_dsn, specs)
    assert applied.exit_code == 0, applied.output
    replanned = run(["plan", "--format", "json", "--exit-code", *flags], db_dsn, specs)
    assert replanned.exit_code == 0, replanned.output
    assert {a["action"] for a in json.loads(replanned.output)["actions"]} <= {"skip"}
    assert all(valid for _n, _d, valid in catalog_snapshot(conn))

    rolled = run(["rollback", "--last", "--yes", "--format", "plain"], db_dsn, specs)
    assert rolled.exit_code == 0, rolled.output
    assert catalog_snapshot(conn) == original
