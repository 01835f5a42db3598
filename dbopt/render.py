"""Render rows for people (rich, on a terminal) and for machines (plain, json, markdown)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from rich.console import Console

    from dbopt.planner import Plan

FORMATS = ("table", "plain", "json", "markdown")


def rows_text(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    fmt: str,
    *,
    title: str | None = None,
    exact: bool = False,
) -> str:
    """Rows as text in one of the non-rich formats (plain, markdown, json); with ``exact``,
    cells are printed as given (tabulate would otherwise rewrite "0.010" as "0.01")."""
    if fmt == "json":
        keys = [snake(h) for h in headers]
        return json.dumps([dict(zip(keys, row, strict=True)) for row in rows], default=json_value)
    from tabulate import tabulate

    tablefmt = "github" if fmt == "markdown" else "plain"
    body = tabulate(
        [[_cell(c) for c in row] for row in rows],
        headers=headers,
        tablefmt=tablefmt,
        disable_numparse=exact,
    )
    if title and fmt == "markdown":
        return f"### {title}\n\n{body}"
    return f"{title}\n{body}" if title else body


#: The width of a table written to a file or a pipe (a CI log): wide enough that rich never
#: folds a number or a name over two lines, as it does at the 80 columns it assumes there.
PIPE_WIDTH = 1000


def console(out: TextIO) -> Console:
    """A rich console for ``out``: its terminal's width, or :data:`PIPE_WIDTH` when it is not
    a terminal and COLUMNS does not say otherwise."""
    from rich.console import Console

    if os.environ.get("COLUMNS") or (hasattr(out, "isatty") and out.isatty()):
        return Console(file=out)
    return Console(file=out, width=PIPE_WIDTH)


def print_rows(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    fmt: str,
    out: TextIO,
    *,
    title: str | None = None,
    exact: bool = False,
) -> None:
    """Print rows to ``out``: a rich table for ``table``, else :func:`rows_text`."""
    if fmt != "table":
        # Markdown: a blank line after the table, or GitHub reads the next line as a row.
        out.write(
            rows_text(headers, rows, fmt, title=title, exact=exact)
            + ("\n\n" if fmt == "markdown" else "\n")
        )
        return
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for header in headers:
        # Wrapped, never cut with an ellipsis: a name shown must be the whole name.
        table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(c) for c in row))
    console(out).print(table)


def _cell(value: Any) -> str:
    """A value as a table shows it: yes/no for booleans, one format for times."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, datetime):
        return when(value)
    return str(value)


def when(moment: datetime) -> str:
    """A point in time, the one way dbopt prints it: ``2026-11-29 17:37:17 UTC``."""
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def flag(option: str) -> str:
    """The command-line flags of library options ("replace_drifted" -> --replace-drifted;
    "replace_drifted cascade" -> --replace-drifted --cascade)."""
    return " ".join("--" + o.replace("_", "-") for o in option.split())


def plan_rows(plan: Plan, *, unchanged: bool = False) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of a plan: one row per change (and per unchanged object too with
    ``unchanged``; otherwise :func:`plan_counts` says how many there are)."""
    rows = []
    shown = (
        plan.actions
        if unchanged
        else [a for a in plan.actions if a in plan.changes or not a.compared]
    )
    for action in shown:
        note = (
            action.reason
            if action.enabled
            else f"{action.reason} (needs {flag(action.needs or '')})"
        )
        rows.append([action.kind.value, str(action.name), str(action.table), note])
    return ["action", "object", "on", "why"], rows


def plan_counts(plan: Plan) -> str:
    """``2 to change, 1 needs a flag, 40 unchanged``."""
    blocked = len(plan.blocked)
    unknown = sum(1 for a in plan.actions if not a.compared)
    counts = (
        f"{len(plan.runnable)} to change, {blocked} need{'s' if blocked == 1 else ''} a flag, "
        f"{len(plan.actions) - len(plan.changes) - unknown} unchanged"
    )
    return f"{counts}, {unknown} not compared" if unknown else counts


def plan_sql(plan: Plan, *, rollback: bool = False) -> str:
    """The exact SQL apply (or rollback) would run, in order, laid out for reading (the same
    statements: see :mod:`dbopt.sqlformat`), one blank line between actions."""
    from dbopt.planner import StepMode
    from dbopt.sqlformat import script

    actions = plan.runnable
    if rollback:
        actions = tuple(reversed(actions))
    out: list[str] = []
    for action in actions:
        steps = [
            script(
                [s.as_string() for s in (*step.statements, *step.then)],
                transaction=step.mode == StepMode.SWAP,
            )
            for step in (action.rollback if rollback else action.forward)
        ]
        out.append(f"-- {action.kind.value} {action.name}: {action.reason}")
        out.append("\n\n".join(steps))
        out.append("")
    if not out:
        return "-- nothing to do\n"
    return "\n".join(out)


def snake(header: str) -> str:
    """A column header as a JSON key: ``last refresh`` -> ``last_refresh``."""
    return re.sub(r"[^a-z0-9]+", "_", header.lower()).strip("_")


def json_value(value: object) -> object:
    """``json.dumps`` default: times as ISO 8601 with their offset, anything else as text."""
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def plan_json(plan: Plan) -> str:
    """The plan as JSON, for CI and scripts."""
    return json.dumps(
        {
            "where": plan.where,
            "changes": len(plan.changes),
            "runnable": len(plan.runnable),
            "catalog_queries": plan.catalog_queries,
            # What the plan could not check or says besides (printed as note: lines too).
            "notes": list(plan.notes),
            "actions": [
                {
                    "action": a.kind.value,
                    "kind": a.object_type,
                    "object": str(a.name),
                    "table": str(a.table),
                    "reason": a.reason,
                    "enabled": a.enabled,
                    "compared": a.compared,
                    "needs": flag(a.needs) if a.needs else None,
                    "current": a.current,
                    "desired": a.desired,
                    "sql": [s.text() for s in a.forward],
                    "rollback_sql": [s.text() for s in a.rollback],
                }
                for a in plan.actions
            ],
        },
        separators=(",", ":"),  # compact: plans of 10,000 specs are for machines,
    )
