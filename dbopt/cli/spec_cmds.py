"""Commands about the spec files themselves: validate and schema."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from dbopt.cli.common import EXIT_CODES_HELP, Options, common_options

if TYPE_CHECKING:
    from dbopt.errors import DboptError


@click.command(epilog=EXIT_CODES_HELP)
@common_options
def validate(opts: Options) -> None:
    """Check every spec file; with --env/--dsn also check them against a database.

    Without a database this parses every predicate, expression and query with the real
    PostgreSQL parser, checks names, cron schedules and view dependencies, refuses budget
    queries that call a function known to change something (pg_stat_reset, advisory locks,
    set_config...), and reports every problem at once as file:line:column. With --env or --dsn
    it also checks that every table, column and referenced index exists, and refuses budget
    queries that can reach anything that changes something in that database (as verify does).
    It changes nothing: view queries and expressions are only parsed and analysed by the
    server, a budget query is planned (EXPLAIN, no ANALYZE) only once it passed that check, and
    the indexes apply would build are built on empty temporary copies of their tables in a
    read-write transaction rolled back (what the server refuses -- a fillfactor out of range,
    a type without an operator class -- is refused here, as apply would; nothing persists,
    but it takes a transaction id). What it cannot try (a standby, a role without TEMPORARY
    or SELECT) is said in a note.

    \b
    Examples:
      dbopt validate
      dbopt validate --specs indexes --format json
      dbopt validate --dsn postgresql://app@localhost/app
    """
    from dbopt.errors import InputError, LockWaitError
    from dbopt.spec import load_specs

    notes: list[str] = []
    try:
        config = opts.load_config()
        specs = load_specs(opts.spec_dirs(config))
        if opts.env or opts.dsn:
            import functools

            from dbopt.db import connect
            from dbopt.livecheck import check_against_database, new_builds, trial_builds
            from dbopt.readonly import CallGraph

            target = opts.target(config)
            with connect(target.dsn, settings=target.settings, read_only=True) as conn:
                # The call graph, read once for the budgets' checks and the trial builds.
                calls = functools.cache(functools.partial(CallGraph.read, conn))
                catalog = check_against_database(specs, conn, calls=calls)
                new = new_builds(specs, catalog)
                lock_timeout_ms = target.settings.lock_timeout_ms
                notes += trial_builds(
                    new, catalog, conn, lock_timeout_ms, writable=True, calls=calls
                )
    except (InputError, LockWaitError) as err:
        # Bad specs or config (or a held table: what could not be checked): machines get the
        # problems on stdout, people on stderr.
        notes += err.notes if isinstance(err, InputError) else []
        if opts.fmt == "json":
            click.echo(json.dumps(_failure(err, notes)))
        else:
            for note in notes:
                click.echo(f"note: {note}", err=True)
        raise
    summary = {
        "ok": True,
        "files": len(specs.files),
        "indexes": len(specs.all_indexes),
        "views": len(specs.views),
        "queries": len(specs.queries),
        "notes": notes,
    }
    if opts.fmt == "json":
        click.echo(json.dumps(summary))
    else:
        for note in notes:
            click.echo(f"note: {note}", err=True)
        click.echo(
            f"ok: {summary['files']} files, {summary['indexes']} indexes, "
            f"{summary['views']} materialized views, {summary['queries']} budgeted queries"
        )


def _failure(err: DboptError, notes: list[str]) -> dict[str, object]:
    """The JSON document of a failed validation (the same keys as a passed one's)."""
    from dbopt.errors import InputError

    problems = err.problems if isinstance(err, InputError) else []
    return {
        "ok": False,
        "error": err.args[0] if err.args else str(err),
        "problems": [
            {"file": p.file, "line": p.line, "column": p.column, "message": p.message}
            for p in problems
        ],
        "notes": notes,
    }


@click.command()
@click.option(
    "--kind",
    type=click.Choice(["spec", "config"]),
    default="spec",
    show_default=True,
    help="Schema of spec files (indexes/, views/) or of dbopt.yaml.",
)
def schema(kind: str) -> None:
    """Print the JSON Schema of spec files (or dbopt.yaml) for editors.

    \b
    Examples:
      dbopt schema > .dbopt-schema.json
      # VS Code (YAML extension), settings.json:
      #   "yaml.schemas": {".dbopt-schema.json": ["indexes/*.yaml", "views/*.yaml"]}
      dbopt schema --kind config
    """
    from dbopt.schema import config_schema, spec_schema

    click.echo(json.dumps(spec_schema() if kind == "spec" else config_schema(), indent=2))
