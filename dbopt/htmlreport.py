"""`dbopt report --html`: one self-contained HTML page from the JSON that verify and doctor
print. Inline CSS and inline SVG only (no script, no external asset), so it opens from a CI
artifact offline. Every string from the JSON goes through html.escape; numbers are formatted
here. Pure: JSON-ready data in, text out. :func:`shape_problem` checks a document has the
shape the page reads (a versioned file can still be hand-edited or truncated), so a bad one
is an input error naming the field, not a traceback."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0;width:100%}
th,td{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.pass{color:#1a7f37}.warn,.warning,.unstable{color:#9a6700}.fail,.error{color:#cf222e}
.info{color:#0969da}.muted{color:#666}svg text{font:12px system-ui,sans-serif}
code{font-size:12px;word-break:break-all}
"""

_STATUS_FILL = {"pass": "#2da44e", "warn": "#d4a72c", "unstable": "#d4a72c", "fail": "#cf222e"}
_BAR_H, _GAP, _LABEL_W, _PLOT_W, _NOTE_W = 14, 12, 220, 460, 400


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _ms(value: Any) -> str:
    return "" if value is None else f"{float(value):.3f}"


def _bytes(value: Any) -> str:
    if value is None:
        return ""
    size = float(value)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""  # pragma: no cover


def _table(headers: Sequence[str], rows: Sequence[Sequence[tuple[str, str]]], cls: str) -> str:
    """A table; each cell is (already escaped html, css class)."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td class="{c}">{v}</td>' for v, c in row) + "</tr>" for row in rows
    )
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def budget_chart(queries: Sequence[Mapping[str, Any]], baseline: Mapping[str, float | None]) -> str:
    """An SVG bar per query: its p95 (coloured by status), the baseline's p95 beneath it when
    there is one, and a vertical mark at the budget; the numbers written beside it."""
    timed = [q for q in queries if q.get("p95_ms") is not None]
    if not timed:
        return '<p class="muted">No query has a measured p95.</p>'
    values = [float(q["p95_ms"]) for q in timed]
    values += [float(q["budget_ms"]) for q in timed if q.get("budget_ms") is not None]
    values += [v for q in timed if (v := baseline.get(str(q["name"]))) is not None]
    top = max(values) * 1.05 or 1.0
    row_h = 2 * _BAR_H + _GAP
    height = row_h * len(timed) + 20
    width = _LABEL_W + _PLOT_W + _NOTE_W
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="budgets" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        'aria-label="p95 against budget per query">'
    ]
    for n, q in enumerate(timed):
        name, status = str(q["name"]), str(q.get("status", ""))
        p95 = float(q["p95_ms"])
        budget = q.get("budget_ms")
        before = baseline.get(name)
        y = 10 + n * row_h
        w = p95 / top * _PLOT_W
        parts.append(
            f'<text x="{_LABEL_W - 6}" y="{y + _BAR_H - 3}" text-anchor="end">{_e(name)}</text>'
        )
        parts.append(
            f'<rect class="p95" data-query="{_e(name)}" data-p95="{_ms(p95)}" '
            f'data-status="{_e(status)}" x="{_LABEL_W}" y="{y}" width="{w:.1f}" '
            f'height="{_BAR_H}" fill="{_STATUS_FILL.get(status, "#888")}"/>'
        )
        if before is not None:
            bw = float(before) / top * _PLOT_W
            parts.append(
                f'<rect class="baseline" data-query="{_e(name)}" data-p95="{_ms(before)}" '
                f'x="{_LABEL_W}" y="{y + _BAR_H}" width="{bw:.1f}" height="{_BAR_H - 4}" '
                'fill="#afb8c1"/>'
            )
        if budget is not None:
            bx = _LABEL_W + float(budget) / top * _PLOT_W
            parts.append(
                f'<line class="budget" data-query="{_e(name)}" data-budget="{_ms(budget)}" '
                f'x1="{bx:.1f}" x2="{bx:.1f}" y1="{y - 2}" y2="{y + 2 * _BAR_H}" '
                'stroke="#24292f" stroke-width="2"/>'
            )
        note = f"p95 {_ms(p95)} ms"
        note += f" / budget {_ms(budget)} ms" if budget is not None else " / no time budget"
        if before is not None:
            note += f" (before {_ms(before)} ms)"
        parts.append(
            f'<text class="note" x="{_LABEL_W + _PLOT_W + 6}" y="{y + _BAR_H - 3}">'
            f"{_e(note)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _verify_section(verify: Mapping[str, Any], baseline: Mapping[str, float | None]) -> str:
    queries = list(verify.get("queries", []))
    rows = []
    for q in queries:
        before = baseline.get(str(q["name"]))
        change = ""
        if before and q.get("p95_ms") is not None:
            change = f"{(float(q['p95_ms']) - before) / before:+.0%}"
        rows.append(
            [
                (_e(q["name"]), ""),
                (_e(q.get("status", "")), _e(q.get("status", ""))),
                (_ms(q.get("p95_ms")), "num"),
                (_ms(q.get("budget_ms")), "num"),
                (_ms(before), "num"),
                (_e(change), "num"),
                (_e(_limit(q.get("buffers"), q.get("max_buffers"))), "num"),
                (_e(_limit(q.get("rows_examined"), q.get("max_rows_examined"))), "num"),
                (_e(", ".join(str(i) for i in q.get("indexes") or [])), ""),
                (_e(q.get("location", "")), "muted"),
            ]
        )
    summary = ", ".join(f"{v} {k}" for k, v in dict(verify.get("summary", {})).items() if v)
    return (
        "<h2>Query budgets (dbopt verify)</h2>"
        f'<p class="muted">{_e(summary)}; server {_e(verify.get("server_version", ""))}. '
        "Bars: p95 (colour = verdict); grey: the baseline's p95; black mark: the budget.</p>"
        + budget_chart(queries, baseline)
        + _table(
            [
                "query",
                "status",
                "p95 ms",
                "budget ms",
                "baseline p95 ms",
                "change",
                "buffers",
                "rows examined",
                "indexes used",
                "spec",
            ],
            rows,
            "verify",
        )
    )


def _limit(value: Any, limit: Any) -> str:
    if value is None:
        return ""
    return f"{value} / {limit}" if limit is not None else str(value)


def _doctor_section(doctor: Mapping[str, Any]) -> str:
    findings = [
        [
            (_e(f["severity"]), _e(f["severity"])),
            (_e(f["check"]), ""),
            (_e(f["object"]), ""),
            (_e(f["message"]) + f'<br><span class="muted">{_e(f["why"])}</span>', ""),
            (f"<code>{_e(f['fix'])}</code>", ""),
        ]
        for f in doctor.get("findings", [])
    ]
    summary = ", ".join(f"{v} {k}" for k, v in dict(doctor.get("summary", {})).items())
    notes = "".join(f'<p class="muted">note: {_e(n)}</p>' for n in doctor.get("notes", []))
    indexes = sorted(doctor.get("indexes", []), key=lambda i: -int(i.get("size_bytes") or 0))
    index_rows = [
        [
            (_e(i["index"]), ""),
            (_e(i["table"]), ""),
            (_e(i["method"]), ""),
            (_e(_bytes(i["size_bytes"])), "num"),
            (_e(i["scans"]), "num"),
            (_e("yes" if i["valid"] else "INVALID"), "" if i["valid"] else "error"),
            (_e("spec" if i["managed"] else "-"), ""),
            (_e(i["origin"]), ""),
        ]
        for i in indexes
    ]
    view_rows = [
        [
            (_e(v["view"]), ""),
            (_e({True: "yes", False: "NO DATA", None: "missing"}[v["populated"]]), ""),
            (_e(v["schedule"] or ""), ""),
            (_e(v["last_refresh"] or "never (by dbopt)"), ""),
            (_e("OVERDUE" if v["overdue"] else ""), "error" if v["overdue"] else ""),
        ]
        for v in doctor.get("views", [])
    ]
    age = doctor.get("stats_age_s")
    return (
        "<h2>Findings (dbopt doctor)</h2>"
        f'<p class="muted">{_e(summary)}; database {_e(doctor.get("database", ""))}, '
        f"statistics {_e('never reset' if age is None else f'{age / 86400:.1f} days old')}, "
        f"bloat by {_e(doctor.get('bloat_source', ''))}.</p>"
        + notes
        + _table(["severity", "check", "object", "finding", "fix"], findings, "findings")
        + "<h2>Indexes: size and scans</h2>"
        + _table(
            ["index", "table", "method", "size", "scans", "valid", "managed", "origin"],
            index_rows,
            "indexes",
        )
        + "<h2>Materialized views: freshness</h2>"
        + _table(["view", "data", "schedule", "last refresh", "overdue"], view_rows, "views")
    )


_NUMBER = "a number"
_TEXT = "text"
_FLAG = "true or false"
_ANY = "a value"

#: The fields the page reads, per item of each list: (key, what it must be, whether it may
#: be missing, whether it may be null). The page reads a field that may not be missing with
#: item[key].
_VERIFY_QUERY = (
    ("name", _ANY, False, False),
    ("status", _TEXT, True, True),
    ("p95_ms", _NUMBER, True, True),
    ("budget_ms", _NUMBER, True, True),
    ("indexes", "a list", True, True),
)
_DOCTOR_LISTS: dict[str, tuple[tuple[str, str, bool, bool], ...]] = {
    "findings": tuple(
        (k, _TEXT, False, False) for k in ("severity", "check", "object", "message", "why", "fix")
    ),
    "indexes": (
        ("index", _TEXT, False, False),
        ("table", _TEXT, False, False),
        ("method", _TEXT, False, False),
        ("size_bytes", _NUMBER, False, True),
        ("scans", _ANY, False, True),
        ("valid", _FLAG, False, False),
        ("managed", _FLAG, False, False),
        ("origin", _ANY, False, True),
    ),
    "views": (
        ("view", _TEXT, False, False),
        ("populated", _FLAG, False, True),
        ("schedule", _TEXT, False, True),
        ("last_refresh", _TEXT, False, True),
        ("overdue", _FLAG, False, False),
    ),
    "notes": (),
}


def _is(value: Any, what: str) -> bool:
    if what == _NUMBER:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if what == _TEXT:
        return isinstance(value, str)
    if what == _FLAG:
        return isinstance(value, bool)
    if what == "a list":
        return isinstance(value, list)
    return True


def _item_problem(
    item: Any, where: str, fields: Sequence[tuple[str, str, bool, bool]]
) -> str | None:
    if not fields:
        return None
    if not isinstance(item, Mapping):
        return f"{where}: expected an object, got {json_type(item)}"
    for key, what, optional, nullable in fields:
        if key not in item:
            if optional:
                continue
            return f"{where}: '{key}' is missing"
        value = item[key]
        if value is None and nullable:
            continue
        if value is None or not _is(value, what):
            return f"{where}.{key}: {value!r} is not {what}"
    return None


def json_type(value: Any) -> str:
    """What JSON calls ``value``'s type."""
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "text"
    if isinstance(value, bool):
        return str(value).lower()
    return "null" if value is None else "a number"


def shape_problem(doc: Mapping[str, Any], kind: str) -> str | None:
    """What is wrong with the shape of verify's (``kind`` "verify") or doctor's ("doctor")
    JSON for this page, as "field: problem"; None when the page can be built from it."""
    lists = {"queries": _VERIFY_QUERY} if kind == "verify" else _DOCTOR_LISTS
    for key, fields in lists.items():
        items = doc.get(key, [])
        if not isinstance(items, list):
            return f"{key}: expected a list, got {json_type(items)}"
        for n, item in enumerate(items):
            problem = _item_problem(item, f"{key}[{n}]", fields)
            if problem:
                return problem
    summary = doc.get("summary", {})
    if not isinstance(summary, Mapping):
        return f"summary: expected an object, got {json_type(summary)}"
    age = doc.get("stats_age_s")
    if kind == "doctor" and age is not None and not _is(age, _NUMBER):
        return f"stats_age_s: {age!r} is not a number"
    return None


def build_html(
    *,
    verify: Mapping[str, Any] | None,
    baseline: Mapping[str, float | None],
    doctor: Mapping[str, Any] | None,
    title: str,
    generated: str,
) -> str:
    """The whole page: the budgets (chart and table) when ``verify`` is given, the findings,
    index inventory and view freshness when ``doctor`` is."""
    body = f'<h1>{_e(title)}</h1><p class="muted">generated {_e(generated)}</p>'
    if verify is not None:
        body += _verify_section(verify, baseline)
    if doctor is not None:
        body += _doctor_section(doctor)
    if verify is None and doctor is None:
        body += "<p>Nothing to report: give verify's or doctor's JSON.</p>"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>{body}</body></html>\n"
    )
