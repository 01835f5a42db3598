"""`dbopt stats dump|restore`: production's planner statistics, pinned into a CI database."""

from __future__ import annotations

from pathlib import Path

import click

from dbopt.cli.common import EXIT_CODES_HELP, Options, OutputFile, common_options


@click.group(epilog=EXIT_CODES_HELP)
def stats() -> None:
    """Dump production's planner statistics and restore them into CI (PostgreSQL 18+).

    In CI the tables hold a little seeded data, so the planner estimates from that data and
    plans what production never would. `stats dump` writes production's statistics of the
    tables the specs concern to a file; `stats restore` writes them into the CI database
    (PostgreSQL 18's pg_restore_relation_stats/pg_restore_attribute_stats, as the tables'
    owner), so verify judges the plans production's statistics give. The README's
    "Production's plans in CI" has the workflow and its limits.

    \b
    Examples:
      dbopt stats dump --env production -o stats/production.json
      dbopt stats restore --env ci stats/production.json && dbopt verify --env ci
    """


@stats.command(epilog=EXIT_CODES_HELP)
@common_options
@click.option(
    "-o",
    "--output",
    type=OutputFile(allow_dash=True),
    default=Path("-"),
    show_default="standard output",
    help="Where to write the JSON file.",
)
def dump(opts: Options, output: Path) -> None:
    """Write the planner statistics of the specs' tables to a JSON file (reads only).

    Which relations: the tables of the index specs, the materialized views of the view
    specs, and every table or materialized view a budgeted query reads or an expectation
    names (through plain views, and with the partitions under a partitioned table). For
    each, pg_class's relpages, reltuples and relallvisible and pg_stats's rows of every
    column, with the server's version. Any role that may SELECT the tables can dump, on the
    primary or a standby, from PostgreSQL 12 on: pg_stats shows a column only to a role that
    may SELECT it (and no column of a table whose row-level security applies to the role),
    and dump names the columns it could not see.

    \b
    Examples:
      dbopt stats dump --env production -o stats/production.json
      dbopt stats dump --dsn postgresql://readonly@replica/app > production.json
    """
    from dbopt import stats as stats_
    from dbopt.spec import load_specs

    config = opts.load_config()
    specs = load_specs(opts.spec_dirs(config))
    target = opts.target(config)
    result = stats_.dump(target, specs)
    text = result.to_json()
    if str(output) == "-":
        click.echo(text, nl=False)
        where = "standard output"
    else:
        output.write_text(text, encoding="utf-8")
        where = str(output)
    for name in result.missing:
        click.echo(
            f"note: {name} is named in the specs but does not exist there: not dumped", err=True
        )
    for rel in result.relations:
        if rel.hidden:
            columns = ", ".join(rel.hidden)
            click.echo(
                f"warning: {rel.name}: no statistics for columns {columns}: pg_stats does not "
                f"show them to role {result.role}, which may not SELECT them (or row-level "
                f"security applies to it); dump as the table's owner, or GRANT SELECT "
                f"({columns}) ON {rel.name} TO {result.role}",
                err=True,
            )
        elif not rel.analyzed:
            click.echo(f"note: {rel.name} was never analyzed there: no column statistics", err=True)
    click.echo(
        f"wrote the statistics of {len(result.relations)} relation(s) from PostgreSQL "
        f"{result.server_version} (database {result.database}) to {where}",
        err=True,
    )


@stats.command(epilog=EXIT_CODES_HELP)
@common_options
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
def restore(opts: Options, file: Path) -> None:
    """Write a `stats dump` file's statistics into this database (PostgreSQL 18+).

    Checks the whole file first: each relation must exist here and be one the role may
    maintain (its owner may), each column must exist with the same type; else it says every
    mismatch and restores nothing. Then it replaces the statistics of every relation and
    column in the file in one transaction. Never on a standby, never before PostgreSQL 18
    (before 18 only ANALYZE or a superuser can write pg_statistic).

    ANALYZE, VACUUM, autovacuum and CREATE INDEX on a table replace its restored
    statistics: restore after `dbopt apply` and right before `dbopt verify`, and in CI turn
    autovacuum off for these tables (ALTER TABLE ... SET (autovacuum_enabled = false)) or
    for the whole CI server (autovacuum = off).

    \b
    Examples:
      dbopt stats restore --env ci stats/production.json
      dbopt apply --env ci --yes && dbopt stats restore --env ci stats/production.json \\
        && dbopt verify --env ci
    """
    from dbopt import stats as stats_

    config = opts.load_config()
    target = opts.target(config)
    dumped = stats_.load(file)
    report = stats_.restore(target, dumped, str(file))
    for rel in report.relations:
        kept = f"; kept this database's statistics of {', '.join(rel.kept)}" if rel.kept else ""
        rows = f"{rel.reltuples:.0f} rows" if rel.reltuples >= 0 else "rows never counted"
        click.echo(
            f"restored {rel.name}: {rows} in {rel.relpages} pages, {rel.columns} column(s){kept}"
        )
    click.echo(
        f"restored the statistics of {len(report.relations)} relation(s) from {report.source}"
    )
    for note in report.notes:
        click.echo(f"note: {note}", err=True)
    if report.autovacuumed:
        names = ", ".join(str(n) for n in report.autovacuumed)
        click.echo(
            f"warning: autovacuum may analyze {names} and replace what was restored (as would "
            "ANALYZE, VACUUM or CREATE INDEX): run verify right after restore, or turn it off "
            "in CI with ALTER TABLE ... SET (autovacuum_enabled = false)",
            err=True,
        )
    click.echo(
        "note: the planner takes each table's size from its file: row estimates here are "
        "production's fractions of this table's rows, so seed enough rows for a plan to matter",
        err=True,
    )
