"""Golden cases (tests/cases/<name>/): plan matches, apply, re-plan is empty, rollback restores.

Each folder holds:

``setup.sql``
    The starting database (run as the owner role; tables, data, hand-made objects).
``before/`` (optional)
    Spec files applied first (``apply``, exit 0): the history a case needs, e.g.
    an index dbopt made that the specs then drop (prune), or a view dbopt made whose query
    then drifts. "The original catalog" a rollback must restore is the catalog after this.
``specs/``
    The spec files planned and applied (``indexes/``-style and ``views/``-style files may sit
    side by side: the loader tells them apart by ``table:`` or ``name:``).
``expected_plan.txt``
    One ``action schema.object`` line per action of ``plan --format json``, in plan order
    (skips included).
``flags`` (optional)
    Extra flags for plan and apply, e.g. ``--replace-drifted``, ``--prune``, ``--cascade``.
``min_server`` (optional)
    The oldest PostgreSQL major whose server can build the specs (``15`` for NULLS NOT
    DISTINCT). On an older server the case checks instead that ``validate --dsn`` and
    ``plan`` refuse them (exit 2, saying what needs which release) and nothing changed.

Checked: the plan is exactly ``expected_plan.txt``; apply exits 0; a second plan has nothing
but skips and every index is valid; ``rollback --last`` exits 0 and the catalog (tables,
indexes, views and materialized views with their definitions and validity) is again what it
was before the apply.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import Result
from helpers import catalog_snapshot, cli

CASES = Path(__file__).parent / "cases"


def run(args: list[str], dsn: str, specs: Path) -> Result:
    return cli(*args, "--dsn", dsn, "--specs", str(specs))


@pytest.mark.parametrize("case", sorted(p.name for p in CASES.iterdir() if p.is_dir()))
def test_case(case: str, conn: psycopg.Connection[Any], db_dsn: str) -> None:
    folder = CASES / case
    conn.execute((folder / "setup.sql").read_text())  # type: ignore[call-overload]
    flags = (folder / "flags").read_text().split() if (folder / "flags").exists() else []
    specs = folder / "specs"
    if (folder / "before").is_dir():
        first = run(["apply", "--format", "plain"], db_dsn, folder / "before")
        assert first.exit_code == 0, first.output
    original = catalog_snapshot(conn)
    if (folder / "min_server").exists():
        needed = int((folder / "min_server").read_text())
        if conn.info.server_version < needed * 10000:
            _refused_on_an_older_server(db_dsn, specs, flags, needed)
            assert catalog_snapshot(conn) == original
            return

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
    assert all(valid for _kind, _name, _definition, valid in catalog_snapshot(conn))

    rolled = run(["rollback", "--last", "--yes", "--format", "plain"], db_dsn, specs)
    assert rolled.exit_code == 0, rolled.output
    assert catalog_snapshot(conn) == original


def _refused_on_an_older_server(dsn: str, specs: Path, flags: list[str], needed: int) -> None:
    """Specs this server cannot build are refused before anything runs, saying why."""
    checked = run(["validate"], dsn, specs)
    assert checked.exit_code == 2, checked.output
    assert f"needs PostgreSQL {needed} or later" in checked.output
    planned = run(["plan", "--format", "plain", *flags], dsn, specs)
    assert planned.exit_code == 2, planned.output
    assert f"needs PostgreSQL {needed} or later" in planned.output
