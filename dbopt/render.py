"""Render rows for people (rich, on a terminal) and for machines (plain, json, markdown)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TextIO

FORMATS = ("table", "plain", "json", "markdown")


def rows_text(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    fmt: str,
    *,
    title: str | None = None,
) -> str:
    """Rows as text in one of the non-rich formats (plain, markdown, json)."""
    if fmt == "json":
        return json.dumps([dict(zip(headers, row, strict=True)) for row in rows], default=str)
    from tabulate import tabulate

    tablefmt = "github" if fmt == "markdown" else "plain"
    body = tabulate([[_cell(c) for c in row] for row in rows], headers=headers, tablefmt=tablefmt)
    if title and fmt == "markdown":
        return f"### {title}\n\n{body}"
    return f"{title}\n{body}" if title else body


def print_rows(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    fmt: str,
    out: TextIO,
    *,
    title: str | None = None,
) -> None:
    """Print rows to ``out``: a rich table for ``table``, else :func:`rows_text`."""
    if fmt != "table":
        out.write(rows_text(headers, rows, fmt, title=title) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for header in headers:
        table.add_column(header)
    for row in rows:
        table.add_row(*(_cell(c) for c in row))
    Console(file=out).print(table)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)
