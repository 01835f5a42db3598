"""`dbopt report --html` rendered by a real browser: the page is built from JSON fixtures (no
database), opened by headless Chromium, and the DOM it rendered is checked for the chart's bars
and the tables' cells carrying the JSON's numbers; and every string is escaped."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from helpers import cli

from dbopt.htmlreport import build_html

EVIL = "<script>alert('x')</script>"

VERIFY: dict[str, Any] = {
    "dbopt_verify": 1,
    "server_version": "16.4",
    "summary": {"pass": 1, "warn": 0, "unstable": 0, "fail": 1},
    "queries": [
        {
            "name": "login_by_email",
            "status": "pass",
            "p95_ms": 2.5,
            "budget_ms": 5.0,
            "buffers": 4,
            "max_buffers": 50,
            "rows_examined": 1,
            "max_rows_examined": None,
            "indexes": ["idx_users_email"],
            "location": "indexes/users.yaml:12:5",
        },
        {
            "name": EVIL,
            "status": "fail",
            "p95_ms": 12.5,
            "budget_ms": 10.0,
            "buffers": 900,
            "max_buffers": None,
            "rows_examined": 5000,
            "max_rows_examined": 200,
            "indexes": [],
            "location": "indexes/appointments.yaml:30:5",
        },
    ],
}
BASELINE = {"login_by_email": 2.0, EVIL: 20.0}
DOCTOR: dict[str, Any] = {
    "dbopt_doctor": 1,
    "database": "app",
    "stats_age_s": 864000,
    "bloat_source": "estimate",
    "summary": {"error": 1, "warning": 1, "info": 0},
    "notes": [],
    "findings": [
        {
            "check": "invalid-index",
            "severity": "error",
            "object": "public.orders_bad",
            "table": "public.orders",
            "message": "public.orders_bad is INVALID (not made by dbopt)",
            "why": "no query can use it",
            "fix": 'DROP INDEX CONCURRENTLY "public"."orders_bad";',
        },
        {
            "check": "duplicate-index",
            "severity": "warning",
            "object": "public.a_copy",
            "table": "public.a",
            "message": "public.a_copy has the same definition as public.a_idx & <b>",
            "why": "both maintained",
            "fix": 'DROP INDEX CONCURRENTLY "public"."a_copy";',
        },
    ],
    "indexes": [
        {
            "index": "public.orders_bad",
            "table": "public.orders",
            "method": "btree",
            "size_bytes": 2048,
            "scans": 0,
            "valid": False,
            "managed": False,
            "origin": "-",
        },
        {
            "index": "public.a_idx",
            "table": "public.a",
            "method": "btree",
            "size_bytes": 5 * 1024 * 1024,
            "scans": 1234,
            "valid": True,
            "managed": True,
            "origin": "dbopt",
        },
    ],
    "views": [
        {
            "view": "public.mv_daily",
            "populated": True,
            "schedule": "0 * * * *",
            "last_refresh": None,
            "overdue": True,
        }
    ],
}


class Dom(HTMLParser):
    """The rendered DOM as Chromium serialised it: SVG shapes and table cells by table."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[str, dict[str, str]]] = []
        self.cells: dict[str, list[list[str]]] = {}
        self.texts: list[str] = []
        self.tags: set[str] = set()
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._in_svg_text = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.add(tag)
        if tag in ("rect", "line"):
            self.shapes.append((tag, a))
        elif tag == "table":
            self._table = a.get("class", "")
            self.cells[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.cells[self._table].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "text":
            self._in_svg_text = True
            self.texts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.cells[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == "text":
            self._in_svg_text = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._in_svg_text:
            self.texts[-1] += data


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("the chromium browser is missing: `make sysdeps` installs it (Debian: chromium)")


def rendered(page: Path, tmp_path: Path) -> tuple[Dom, float]:
    """The DOM headless Chromium built from ``page``, and the seconds it took."""
    started = time.monotonic()
    proc = subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",  # as root (CI containers) Chromium refuses to start without it
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'chromium'}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = Dom()
    dom.feed(proc.stdout)
    return dom, took


def test_report_html_renders_the_json_in_a_browser(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(
        build_html(
            verify=VERIFY, baseline=BASELINE, doctor=DOCTOR, title="CI report", generated="now"
        ),
        encoding="utf-8",
    )
    assert "http" not in page.read_text().replace('xmlns="http://www.w3.org/2000/svg"', "")
    dom, took = rendered(page, tmp_path)
    assert took < 30, f"chromium took {took:.1f}s"

    # Nothing from the JSON became markup: the evil name is text, no script element exists.
    assert "script" not in dom.tags and "b" not in dom.tags
    bars = {a["data-query"]: a for tag, a in dom.shapes if a.get("class") == "p95"}
    assert {q: a["data-p95"] for q, a in bars.items()} == {
        "login_by_email": "2.500",
        EVIL: "12.500",
    }
    assert bars[EVIL]["data-status"] == "fail" and bars[EVIL]["fill"] == "#cf222e"
    # Bar lengths are proportional to the p95s.
    ratio = float(bars[EVIL]["width"]) / float(bars["login_by_email"]["width"])
    assert ratio == pytest.approx(12.5 / 2.5, rel=0.01)
    before = {
        a["data-query"]: a["data-p95"] for _t, a in dom.shapes if a.get("class") == "baseline"
    }
    assert before == {"login_by_email": "2.000", EVIL: "20.000"}
    budgets = {a["data-query"]: a["data-budget"] for t, a in dom.shapes if t == "line"}
    assert budgets == {"login_by_email": "5.000", EVIL: "10.000"}
    assert f"{EVIL}" in dom.texts
    assert "p95 12.500 ms / budget 10.000 ms (before 20.000 ms)" in dom.texts

    header, *rows = dom.cells["verify"]
    assert header[:6] == ["query", "status", "p95 ms", "budget ms", "baseline p95 ms", "change"]
    assert rows[1][:6] == [EVIL, "fail", "12.500", "10.000", "20.000", "-38%"]
    assert rows[1][7] == "5000 / 200"

    findings = dom.cells["findings"][1:]
    assert [r[:3] for r in findings] == [
        ["error", "invalid-index", "public.orders_bad"],
        ["warning", "duplicate-index", "public.a_copy"],
    ]
    assert "public.a_idx & <b>" in findings[1][3]
    assert findings[0][4] == 'DROP INDEX CONCURRENTLY "public"."orders_bad";'
    indexes = dom.cells["indexes"][1:]
    assert indexes[0][:5] == ["public.a_idx", "public.a", "btree", "5.0 MB", "1234"]
    assert indexes[1][5] == "INVALID"
    assert dom.cells["views"][1] == [
        "public.mv_daily",
        "yes",
        "0 * * * *",
        "never (by dbopt)",
        "OVERDUE",
    ]


def test_report_command_reads_the_files_and_refuses_foreign_json(tmp_path: Path) -> None:
    verify, doctor, base = tmp_path / "v.json", tmp_path / "d.json", tmp_path / "b.json"
    verify.write_text(json.dumps(VERIFY))
    doctor.write_text(json.dumps(DOCTOR))
    saved = {"dbopt_verify": 1, "queries": [{"name": "login_by_email", "p95_ms": 3.0}]}
    base.write_text(json.dumps(saved))
    out = tmp_path / "r.html"
    args = ["report", "--html", str(out), "--verify-json", str(verify)]
    done = cli(*args, "--doctor-json", str(doctor), "--baseline", str(base))
    assert done.exit_code == 0, done.output
    text = out.read_text()
    assert 'data-query="login_by_email" data-p95="3.000"' in text  # the baseline's p95
    assert "&lt;script&gt;" in text and EVIL not in text
    wrong = cli(*args, "--doctor-json", str(verify))
    assert wrong.exit_code == 2
    assert "not dbopt doctor's JSON" in wrong.output
    nothing = cli("report", "--html", str(out))
    assert nothing.exit_code == 2 and "nothing to report" in nothing.output


def test_report_refuses_malformed_json_naming_the_file_and_field(tmp_path: Path) -> None:
    """Versioned but hand-edited or truncated JSON is an input error (exit 2) that names the
    file and the field, never a traceback."""
    out = tmp_path / "r.html"
    no_check = json.loads(json.dumps(DOCTOR))
    del no_check["findings"][0]["check"]
    slow = json.loads(json.dumps(VERIFY))
    slow["queries"][0]["p95_ms"] = "fast"
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("--doctor-json", no_check, "findings[0]: 'check' is missing"),
        ("--verify-json", slow, "queries[0].p95_ms: 'fast' is not a number"),
        ("--doctor-json", {**DOCTOR, "findings": {"a": 1}}, "findings: expected a list"),
        ("--doctor-json", {**DOCTOR, "stats_age_s": "old"}, "stats_age_s: 'old' is not a number"),
        ("--doctor-json", {**DOCTOR, "views": [{"view": "v"}]}, "views[0]: 'populated' is"),
        ("--doctor-json", {**DOCTOR, "indexes": [1]}, "indexes[0]: expected an object"),
        ("--verify-json", {**VERIFY, "queries": [{"p95_ms": 1}]}, "queries[0]: 'name' is"),
    ]
    for option, doc, problem in cases:
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(doc))
        done = cli("report", "--html", str(out), option, str(path))
        assert done.exit_code == 2, (problem, done.output)
        assert f"{path}: malformed" in done.output and problem in done.output, done.output
        assert "Traceback" not in done.output
