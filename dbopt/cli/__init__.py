"""The dbopt command line: thin Click commands over the dbopt library."""

from __future__ import annotations

import atexit
import importlib
import os
import signal
import sys
import threading
from types import FrameType

import click

from dbopt import __version__
from dbopt.cli.common import EXIT_CODES_HELP, DboptGroup

#: name -> (module, attribute, one-line summary). Commands are imported only when run (or
#: asked for help), so `dbopt --help` and every command start without importing psycopg,
#: jsonschema or pglast. tests/test_cli.py checks each summary against the command's own.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "validate": (
        "dbopt.cli.spec_cmds",
        "validate",
        "Check every spec file; with --env/--dsn also check them against a database.",
    ),
    "schema": (
        "dbopt.cli.spec_cmds",
        "schema",
        "Print the JSON Schema of spec files (or dbopt.yaml) for editors.",
    ),
    "init": (
        "dbopt.cli.init_cmd",
        "init",
        "Create dbopt's history schema (or upgrade it), then print the grants two roles need.",
    ),
    "plan": (
        "dbopt.cli.plan_cmds",
        "plan",
        "Show what apply would change: the specs diffed against the live catalog.",
    ),
    "apply": (
        "dbopt.cli.plan_cmds",
        "apply",
        "Build the planned indexes without blocking the application.",
    ),
    "verify": (
        "dbopt.cli.verify_cmd",
        "verify",
        "Measure each budgeted query with EXPLAIN ANALYZE and judge it against its budget.",
    ),
    "rollback": (
        "dbopt.cli.rollback_cmd",
        "rollback",
        "Undo a dbopt run: drop what it created, restore what it replaced.",
    ),
    "refresh-views": (
        "dbopt.cli.refresh_cmd",
        "refresh_views",
        "Refresh materialized views in dependency order (what cron runs).",
    ),
    "status": (
        "dbopt.cli.status_cmd",
        "status",
        "Show managed indexes: validity, size, scans, drift; unmanaged indexes separately.",
    ),
    "doctor": (
        "dbopt.cli.doctor_cmd",
        "doctor",
        "Find what is wrong with the indexes and materialized views, and say how to fix it.",
    ),
    "report": (
        "dbopt.cli.report_cmd",
        "report",
        "Write one self-contained HTML page: verify's budgets, doctor's findings, freshness.",
    ),
    "history": (
        "dbopt.cli.history_cmd",
        "history",
        "List dbopt's recorded runs, or one run and its changes.",
    ),
    "import": (
        "dbopt.cli.import_cmd",
        "import_specs",
        "Write spec files for the indexes and materialized views a database already has.",
    ),
    "advise": (
        "dbopt.cli.advise_cmd",
        "advise",
        "Suggest indexes for a workload, as spec YAML with the numbers behind each.",
    ),
    "stats": (
        "dbopt.cli.stats_cmd",
        "stats",
        "Dump production's planner statistics and restore them into CI (PostgreSQL 18+).",
    ),
    "sandbox": (
        "dbopt.cli.sandbox_cmd",
        "sandbox",
        "Start a throwaway PostgreSQL server and print the URL of a fresh database.",
    ),
}


def version_text() -> str:
    """dbopt's version, psycopg's (and its implementation) and the libpq it links.

    A libpq too old for a feature (e.g. ``require_auth``, PostgreSQL 16's) explains errors no
    dbopt version could, so a bug report starts with all three."""
    import psycopg

    number = psycopg.pq.version()  # e.g. 170004; before 10: 90624
    libpq = (
        f"{number // 10000}.{number % 10000}"
        if number >= 100000
        else f"{number // 10000}.{number // 100 % 100}.{number % 100}"
    )
    return (
        f"dbopt {__version__}\n"
        f"psycopg {psycopg.__version__} ({psycopg.pq.__impl__} implementation)\n"
        f"libpq {libpq}"
    )


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    # Eager, and psycopg imported only here: `dbopt --help` and completion stay fast.
    if not value or ctx.resilient_parsing:
        return
    click.echo(version_text())
    ctx.exit()


class LazyGroup(DboptGroup):
    """Import a command's module only when that command is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        command = getattr(importlib.import_module(entry[0]), entry[1])
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, summary) for name, (_m, _a, summary) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, epilog=EXIT_CODES_HELP, context_settings={"max_content_width": 100})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show dbopt's version, psycopg's and the libpq it links, and exit.",
)
def main() -> None:
    """PostgreSQL indexes and materialized views as declarative code.

    Specs live in indexes/*.yaml (one file per table) and views/*.yaml; dbopt plans them
    against the live catalog, applies them without blocking the application, verifies query
    latency budgets in CI and rolls a run back during an incident.

    \b
    Examples:
      dbopt validate
      dbopt plan --env staging
      dbopt apply --env production
      dbopt verify --dsn postgresql://ci@localhost/app --junit verify.xml
    """


def run() -> None:
    """The ``dbopt`` console script (and ``python -m dbopt``): :func:`main`, then a quick exit.

    At exit the interpreter frees every object and module one by one: ~50 ms on each run, more
    after a plan of 10,000 specs, time the operating system spends anyway when the process
    ends. So once the command is done -- its output flushed, the exit handlers run -- the
    process ends with os._exit. Only when something is left does the interpreter's own exit
    run: a non-daemon thread still running (dbopt's own threads are daemons, which neither exit
    waits for: a build connection opened ahead and still connecting is cut either way), or a
    profiler or tracer that writes its data at exit."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        # (Not where SIGINT came ignored: a background job stays deaf to Ctrl-C, as Python is.)
        signal.signal(signal.SIGINT, _ctrl_c)
    try:
        main.main()
    except SystemExit as exc:
        code = exc.code
    else:
        code = 0
    # Daemon threads (the Ctrl-C relay's, ending) would not hold the interpreter's exit either.
    others = [t for t in threading.enumerate() if t is not threading.current_thread()]
    if any(not t.daemon for t in others) or sys.getprofile() or sys.gettrace():
        sys.exit(code)
    if code is None:
        code = 0
    elif not isinstance(code, int):
        click.echo(code, err=True)
        code = 1
    # The command is over: a Ctrl-C now would only turn its exit into a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        if stream is None:  # started with that descriptor closed (some cron wrappers do)
            continue
        try:
            stream.flush()
        except (OSError, ValueError):
            # Output that could not be written (dbopt plan | head): the interpreter's own
            # exit says so with 120.
            code = code or 120
    os._exit(code)


def _ctrl_c(_signum: int, _frame: FrameType | None) -> None:
    """Ctrl-C in dbopt's own process: KeyboardInterrupt, as Python's own handler raises, until
    Ctrl-C has stopped a run (or a fleet) that took Ctrl-C over and gave it back
    (:data:`dbopt.ctrlc.interrupted`). The run is recorded then; only its report and the exit
    are left, and a Ctrl-C pressed again must not cut them short (a traceback, exit code 1 or
    a death by SIGINT instead of the run's 130)."""
    relayed = sys.modules.get("dbopt.ctrlc")  # never imported here: this is a signal handler
    if relayed is not None and relayed.interrupted:
        return
    raise KeyboardInterrupt


__all__ = ["main", "run"]
