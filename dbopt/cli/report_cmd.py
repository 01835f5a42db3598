"""`dbopt report --html`: one self-contained page from verify's and doctor's JSON.

(Not dbopt/cli/report.py, which is the executor's progress reporter.)"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from dbopt.cli.common import EXIT_CODES_HELP, Options, OutputFile, common_options
from dbopt.errors import InputError

_FILE = click.Path(path_type=Path, dir_okay=False, exists=True)


def _read_json(path: Path, key: str, version: int, what: str, kind: str) -> dict[str, Any]:
    """A JSON document dbopt wrote (``key`` holding its format ``version``) with the shape the
    page reads (htmlreport.shape_problem), or InputError naming the file and the field."""
    from dbopt.htmlreport import shape_problem

    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not {what}: {exc}") from None
    if not isinstance(data, dict) or data.get(key) != version:
        raise InputError(f"{path}: not {what} (version {version}); write it with {what}")
    problem = shape_problem(data, kind)
    if problem is not None:
        raise InputError(f"{path}: malformed {what}: {problem}; write it again with {what}")
    return data


@click.command(epilog=EXIT_CODES_HELP)
@common_options
@click.option(
    "--html",
    "html_path",
    required=True,
    type=OutputFile(),
    help="Write the page to this file.",
)
@click.option(
    "--verify-json",
    type=_FILE,
    help="What `dbopt verify --format json` printed: the p95-against-budget chart and table.",
)
@click.option(
    "--baseline",
    type=_FILE,
    help="An earlier verify report (`verify --save`): its p95s drawn as 'before'.",
)
@click.option(
    "--doctor-json",
    type=_FILE,
    help="What `dbopt doctor --format json` printed; without it, doctor runs on --env/--dsn "
    "when one is given.",
)
@click.option("--title", default="dbopt report", show_default=True, help="The page's title.")
def report(
    opts: Options,
    html_path: Path,
    verify_json: Path | None,
    baseline: Path | None,
    doctor_json: Path | None,
    title: str,
) -> None:
    """Write one self-contained HTML page: verify's budgets, doctor's findings, freshness.

    The page has no external asset and no script (inline CSS and SVG): a CI artifact that
    opens offline. Verify is never run here (it measures, which takes its own time and
    flags): give its JSON. Doctor's findings, the index sizes and scans and the views'
    freshness come from --doctor-json, or from running doctor on --env/--dsn.

    \b
    Examples:
      dbopt verify --env ci --format json > verify.json
      dbopt report --html report.html --verify-json verify.json --env ci
      dbopt report --html report.html --verify-json verify.json --baseline main.json \\
          --doctor-json doctor.json
    """
    from dbopt.doctor import DOCTOR_JSON_VERSION
    from dbopt.htmlreport import build_html
    from dbopt.verify.report import REPORT_VERSION, load_baseline

    verify = (
        None
        if verify_json is None
        else _read_json(
            verify_json, "dbopt_verify", REPORT_VERSION, "dbopt verify's JSON", "verify"
        )
    )
    before: dict[str, float | None] = {}
    if baseline is not None:
        before = {name: e.p95_ms for name, e in load_baseline(baseline).entries.items()}
    doctor: dict[str, Any] | None = None
    if doctor_json is not None:
        doctor = _read_json(
            doctor_json, "dbopt_doctor", DOCTOR_JSON_VERSION, "dbopt doctor's JSON", "doctor"
        )
    elif opts.env is not None or opts.dsn is not None:
        from dbopt.doctor import diagnose, report_dict
        from dbopt.history import History
        from dbopt.spec import load_specs

        config = opts.load_config()
        specs = load_specs(opts.spec_dirs(config))
        found = diagnose(opts.target(config), specs, History(config.history_schema))
        doctor = json.loads(json.dumps(report_dict(found)))
    if verify is None and doctor is None:
        raise InputError("nothing to report: give --verify-json, --doctor-json or --env/--dsn")
    page = build_html(
        verify=verify,
        baseline=before,
        doctor=doctor,
        title=title,
        generated=datetime.now().astimezone().isoformat(timespec="seconds"),
    )
    html_path.write_text(page, encoding="utf-8")
    click.echo(f"wrote {html_path}", err=True)
