"""`dbopt verify`'s output: the budgets table (rich, plain, markdown), the explanations, JSON,
JUnit and the baseline file, and the exit code a report gives (see verify_cmd for the flags)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import click

from dbopt.errors import CheckFailedError
from dbopt.verify import (
    TIMING_NOTE,
    FindingKind,
    HypotheticalReport,
    Line,
    QueryResult,
    Role,
    Status,
    VerifyReport,
    explanation,
    explanation_lines,
)

if TYPE_CHECKING:
    from dbopt.cli.common import Options


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _verdict_cell(result: QueryResult) -> str:
    v = result.verdict
    if v.status == Status.PASS:
        return v.status.value  # every budget met: no kind to single out
    kinds = sorted(
        {f.kind.value for f in v.findings if f.status == v.status and f.kind != FindingKind.NOTE}
    )
    return f"{v.status.value} ({', '.join(kinds)})" if kinds else v.status.value


def _uses_cell(result: QueryResult) -> str:
    m = result.measurement
    text = ", ".join(m.indexes_used) or ", ".join(dict.fromkeys(m.scans))
    return text if m.analyzed or not text else f"{text} (estimated)"


HEADERS = [
    "query",
    "verdict",
    "p50",
    "p95",
    "noise band",
    "max",
    "budget",
    "runs",
    "planning",
    "buffers hit/read",
    "rows examined",
    "cost",
    "rows",
    "index used / scans",
]
TITLE = "Query budgets (times in ms)"


def _limited(value: str, limit: float | None) -> str:
    """``715 (max 1,000)``: a measured number and the budget it is held to, if any."""
    if limit is None or not value:
        return value
    shown = f"{limit:,.0f}" if float(limit).is_integer() else f"{limit:,.2f}"
    return f"{value} (max {shown})"


def _rows(report: VerifyReport) -> list[list[str | int]]:
    rows = []
    for r in report.results:
        m, b, band = r.measurement, r.budget, r.verdict.p95_band
        buffers = "" if m.shared_hit is None else f"{m.shared_hit}/{m.shared_read}"
        runs = str(len(m.execution_ms))
        if m.measurements > 1:
            runs += f" ({m.measurements}x)"
        rows.append(
            [
                b.name,
                _verdict_cell(r),
                _ms(m.p50_ms),
                _ms(m.p95_ms),
                "" if band is None else f"{band[0]:.3f}-{band[1]:.3f}",
                _ms(m.max_ms),
                _ms(b.budget_ms),
                runs,
                _ms(m.planning_p50_ms),
                _limited(buffers, b.max_buffers),
                _limited(
                    "" if m.rows_examined is None else f"{m.rows_examined:,}", b.max_rows_examined
                ),
                _limited("" if m.cost is None else f"{m.cost:,.2f}", b.max_cost),
                "" if m.rows is None else m.rows,
                _uses_cell(r),
            ]
        )
    return rows


def _summary(report: VerifyReport) -> str:
    counts = {s: report.count(s) for s in Status}
    total = len(report.results)
    # "unstable" only when there is one: a quiet run reads as it always did.
    shaky = f"{counts[Status.UNSTABLE]} unstable, " if counts[Status.UNSTABLE] else ""
    return (
        f"{total} quer{'y' if total == 1 else 'ies'}: {counts[Status.PASS]} pass, "
        f"{counts[Status.WARN]} warn, {shaky}{counts[Status.FAIL]} fail"
    )


def _noise_line(report: VerifyReport) -> str | None:
    """The machine's jitter, as measured before the budgets (None when not measured)."""
    if report.noise is None:
        return None
    return "Noise: " + report.noise.describe()


def _to_explain(report: VerifyReport, verbose: int) -> list[QueryResult]:
    return [r for r in report.results if verbose or r.verdict.status != Status.PASS]


#: How a terminal shows each status.
STYLE = {
    Status.FAIL: "bold red",
    Status.UNSTABLE: "bold magenta",
    Status.WARN: "bold yellow",
    Status.PASS: "bold green",
}


def _line_style(line: Line) -> str:
    """The terminal style of one line of an explanation (the words are the same everywhere)."""
    if line.role == Role.FINDING:
        return STYLE[line.status] if line.status is not None else ""
    return {Role.HEADING: "dim", Role.CULPRIT: "bold red"}.get(line.role, "")


def _indented(text: str) -> str:
    """``text`` indented by two spaces, blank lines left blank."""
    return "\n".join(f"  {line}" if line else "" for line in text.splitlines())


def print_rich(report: VerifyReport, out: TextIO, verbose: int) -> None:
    from rich.text import Text

    from dbopt import render

    console = render.console(out)
    console.print(Text(TIMING_NOTE[0].upper() + TIMING_NOTE[1:], style="dim"))
    noise = _noise_line(report)
    if noise:
        console.print(Text(noise, style="dim"))
    render.print_rows(HEADERS, _rows(report), "table", out, title=TITLE)
    for r in _to_explain(report, verbose):
        status = r.verdict.status
        console.print()
        console.print(Text(f"{status.value.upper()} {r.budget.name}", style=STYLE[status]))
        console.print(Text(f"  {r.budget.location}", style="dim"))
        for line in explanation_lines(r):
            console.print(Text(f"  {line.text}" if line.text else "", style=_line_style(line)))
    console.print()
    console.print(Text(_summary(report), style=STYLE[report.worst]))


def print_text(report: VerifyReport, fmt: str, out: TextIO, verbose: int) -> None:
    from dbopt import render

    markdown = fmt == "markdown"
    out.write(f"{'_' if markdown else ''}{TIMING_NOTE}{'_' if markdown else ''}\n\n")
    noise = _noise_line(report)
    if noise:
        out.write(f"{'_' if markdown else ''}{noise}{'_' if markdown else ''}\n\n")
    render.print_rows(HEADERS, _rows(report), fmt, out, title=TITLE, exact=True)
    for r in _to_explain(report, verbose):
        head = f"{r.verdict.status.value.upper()} {r.budget.name} ({r.budget.location})"
        _write_explained(out, head, explanation(r), markdown=markdown)
    out.write(f"\n{_summary(report)}\n")


def _write_explained(out: TextIO, head: str, text: str, *, markdown: bool) -> None:
    """One query's explanation under its head: in Markdown a heading and a fenced block
    (GitHub renders the plan as written), else indented text."""
    if markdown:
        out.write(f"\n#### {head}\n\n```text\n{text}\n```\n")
    else:
        out.write(f"\n{head}\n{_indented(text)}\n")


#: Why a verdict is unstable, in the warning of one database's verify and of a fleet's.
UNSTABLE_WHY = "p95 within the measured noise of budget_ms or of the baseline's regression line"


def finish(
    report: VerifyReport,
    opts: Options,
    save: Path | None,
    junit: Path | None,
    out: TextIO,
    *,
    strict: bool = False,
) -> None:
    from dbopt.verify import report_dict, save_report

    if save is not None:
        save_report(report, save)
    if junit is not None:
        from dbopt.junit import verify_cases, write_junit

        write_junit(junit, "dbopt verify", verify_cases(report, strict=strict))
    if opts.fmt == "json":
        out.write(json.dumps(report_dict(report), indent=2) + "\n")
    elif opts.fmt == "table":
        print_rich(report, out, opts.verbose)
    else:
        print_text(report, opts.fmt, out, opts.verbose)
    failed, unstable = report.failed, report.unstable
    shaky = ""
    if unstable:
        names = ", ".join(r.budget.name for r in unstable)
        shaky = (
            f"{len(unstable)} of {len(report.results)} budgeted queries are unstable "
            f"({UNSTABLE_WHY}): {names}"
        )
        if not strict:
            hint = (
                f"still so after up to {report.retries} retries"
                if report.retries
                else "--retries N measures them again"
            )
            click.echo(f"warning: {shaky}; exit 0 without --strict ({hint})", err=True)
    if failed:
        names = ", ".join(r.budget.name for r in failed)
        also = f"; {shaky}" if strict and shaky else ""
        raise CheckFailedError(
            f"{len(failed)} of {len(report.results)} budgeted queries failed: {names}{also}"
        )
    if strict and unstable:
        raise CheckFailedError(f"{shaky} (--strict)")


# --- hypothetical indexes ------------------------------------------------------------------


def finish_hypothetical(
    report: HypotheticalReport, opts: Options, junit: Path | None, out: TextIO
) -> None:
    from dbopt import render
    from dbopt.verify import hypothetical_dict

    if junit is not None:
        from dbopt.junit import hypothetical_cases, write_junit

        write_junit(junit, "dbopt verify --hypothetical", hypothetical_cases(report))
    if opts.fmt == "json":
        out.write(json.dumps(hypothetical_dict(report), indent=2) + "\n")
    else:
        note = (
            f"Estimated by the planner with HypoPG {report.hypopg_version} (EXPLAIN without "
            "ANALYZE): nothing was built or run."
        )
        # Markdown: a blank line after each paragraph, or GitHub runs it into the table.
        gap = "\n\n" if opts.fmt == "markdown" else "\n"
        out.write(note + gap)
        if not report.indexes:
            out.write("Every index in the specs exists already: nothing to simulate." + gap)
        else:
            render.print_rows(
                ["index", "table", "simulated"],
                [
                    [h.spec.name, str(h.spec.table), h.hypo_name or f"no: {h.error}"]
                    for h in report.indexes
                ],
                opts.fmt,
                out,
                title="Hypothetical indexes (in the specs, not in the database)",
            )
        rows = [
            [
                q.budget.name,
                q.status.value,
                "" if q.cost_before is None else f"{q.cost_before:,.2f}",
                "" if q.cost_after is None else f"{q.cost_after:,.2f}",
                "" if q.change is None else f"{q.change:+.0%}",
                ", ".join(q.would_use) or "none of them",
            ]
            for q in report.queries
        ]
        render.print_rows(
            ["query", "verdict", "cost before", "cost after", "change", "would use"],
            rows,
            opts.fmt,
            out,
            title="Queries",
        )
        for q in report.queries:
            if q.status == Status.PASS and not opts.verbose:
                continue
            head = f"{q.status.value.upper()} {q.budget.name} ({q.budget.location})"
            _write_explained(out, head, explanation(q), markdown=opts.fmt == "markdown")
    if report.failed:
        names = ", ".join(q.budget.name for q in report.failed)
        raise CheckFailedError(
            f"{len(report.failed)} of {len(report.queries)} queries would still miss their "
            f"expectations with every spec index built: {names}"
        )
