"""Rollback plans: undo a run (or the last change of some indexes) from the history.

Each change apply made is stored with the steps that undo it, composed when it was planned.
Rollback replays those steps, newest change first, as a Plan that the same executor runs with
the same safety (concurrent drops, timeouts, advisory lock, history). It drops only what dbopt
created; a replaced index gets its previous definition back; what existed before is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from dbopt.errors import InputError
from dbopt.history import History
from dbopt.planner import Action, Kind, Plan, Step
from dbopt.spec import QualifiedName

#: What undoing each recorded action does.
_INVERSE = {
    "create": Kind.DROP,
    "drop": Kind.CREATE,
    "replace": Kind.RESTORE,
    "restore": Kind.REPLACE,
}


def _changes(
    conn: psycopg.Connection[Any], history: History, where: sql.Composable, params: Sequence[Any]
) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            sql.SQL(
                "SELECT c.*, r.outcome AS run_outcome FROM {schema}.changes c "
                "JOIN {schema}.runs r ON r.id = c.run_id WHERE c.result = 'ok' AND {where} "
                "ORDER BY c.id DESC"
            ).format(schema=sql.Identifier(history.schema), where=where),
            params,
        )
        return cur.fetchall()


def _select_run(conn: psycopg.Connection[Any], history: History, run_id: int | None) -> int:
    schema = sql.Identifier(history.schema)
    if run_id is None:
        row = conn.execute(
            sql.SQL(
                "SELECT id FROM {s}.runs r WHERE command = 'apply' AND outcome <> 'running' "
                "AND NOT EXISTS (SELECT 1 FROM {s}.runs u WHERE u.undoes_run = r.id "
                "AND u.outcome = 'succeeded') ORDER BY id DESC LIMIT 1"
            ).format(s=schema)
        ).fetchone()
        if row is None:
            raise InputError("no apply run left to roll back")
        return int(row[0])
    row = conn.execute(
        sql.SQL("SELECT command FROM {}.runs WHERE id = %s").format(schema), (run_id,)
    ).fetchone()
    if row is None:
        raise InputError(f"there is no run {run_id}: see `dbopt status` for the last runs")
    undone = conn.execute(
        sql.SQL(
            "SELECT id FROM {}.runs WHERE undoes_run = %s AND outcome = 'succeeded' LIMIT 1"
        ).format(schema),
        (run_id,),
    ).fetchone()
    if undone is not None:
        raise InputError(f"run {run_id} was already rolled back by run {undone[0]}")
    return run_id


def rollback_plan(
    conn: psycopg.Connection[Any],
    history: History,
    *,
    run_id: int | None = None,
    last: bool = False,
    indexes: Sequence[QualifiedName] = (),
) -> tuple[Plan, int | None]:
    """The plan that undoes a run (``run_id`` or ``last``) or the last change of ``indexes``."""
    if sum((run_id is not None, last, bool(indexes))) != 1:
        raise InputError("choose exactly one of --last, --run ID or --index NAME")
    if not history.exists(conn):
        raise InputError(
            f"no dbopt history in schema {history.schema}: nothing was applied here yet"
        )
    undoes: int | None = None
    if indexes:
        rows = []
        for name in indexes:
            found = _changes(
                conn,
                history,
                sql.SQL("c.object_schema = %s AND c.object_name = %s"),
                (name.schema, name.name),
            )
            if not found:
                raise InputError(f"dbopt never changed index {name}: nothing to roll back")
            rows.append(found[0])
        rows.sort(key=lambda r: -int(r["id"]))
    else:
        undoes = _select_run(conn, history, run_id)
        rows = _changes(conn, history, sql.SQL("c.run_id = %s"), (undoes,))
    actions = []
    for row in rows:
        kind = _INVERSE.get(row["action"])
        steps = tuple(Step.from_json(s) for s in row["rollback_steps"] or [])
        if kind is None or not steps:
            continue  # e.g. a repair: there is no way back to an INVALID index
        if row["action"] == "create" and row["existed_before"]:
            continue  # never drop what existed before dbopt touched it
        actions.append(
            Action(
                kind=kind,
                name=QualifiedName(row["object_schema"], row["object_name"]),
                table=_qualified(row["table_name"]),
                reason=f"undo {row['action']} of run {row['run_id']}",
                forward=steps,
                rollback=(),
                current=row["definition"],
                desired=row["previous_definition"],
                # Undoing a drop recreates what dbopt had created; the rest exists already.
                existed_before=row["action"] != "drop",
                object_kind=row["object_kind"],
                phase=1 if row["object_kind"] == "view" else 0,
            )
        )
    return Plan(tuple(actions)), undoes


def _qualified(text: str) -> QualifiedName:
    schema, _, name = text.partition(".")
    return QualifiedName(schema, name)
