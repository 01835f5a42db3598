"""`dbopt advise`: index suggestions for a workload, as spec YAML (or merged into the specs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from dbopt.cli.common import EXIT_CODES_HELP, Options, common_options

if TYPE_CHECKING:
    from dbopt.advise import Advice


def _index_dir(dirs: list[tuple[Path, bool]]) -> Path:
    return next((d for d, _required in dirs if d.name == "indexes"), Path("indexes"))


def _as_dict(advice: Advice) -> dict[str, Any]:
    from dbopt.advise import THRESHOLD

    return {
        "source": str(advice.workload.source),
        "queries": len(advice.workload.queries),
        "generic_plan": advice.generic,
        "generic_queries": advice.generic_count,
        "threshold": THRESHOLD,
        "hypopg": advice.hypopg_version,
        "hidden_statements": advice.workload.hidden,
        "suggestions": [
            {
                "table": str(s.spec.table),
                "name": s.spec.name,
                "method": s.spec.method,
                "columns": [c.name for c in s.spec.columns],
                "include": list(s.spec.include),
                "where": s.spec.where,
                "size_bytes": s.size_bytes,
                "reason": s.spec.reason,
                "serves": [
                    {
                        "query": x.query.name,
                        "cost_before": x.before,
                        "cost_after": x.after,
                        "budgeted_as": x.budgeted_as,
                    }
                    for x in s.serves
                ],
                "writes_per_hour": s.writes.entries_per_hour if s.writes else None,
            }
            for s in advice.suggestions
        ],
        "budgets": [
            {
                "table": str(b.table),
                "name": b.name,
                "max_cost": b.max_cost,
                "budget_ms": b.budget_ms,
            }
            for b in advice.budgets
        ],
        "not_improved": [
            {"query": c.query.name, "cost_before": c.before, "best_cost": c.best}
            for c in advice.evaluation.costs
            if not c.improved
        ],
        "equivalent": [{"candidate": str(c.columns), "exists_as": n} for c, n in advice.equivalent],
        "skipped": [{"query": s.name, "reason": s.reason} for s in advice.skipped],
    }


def _render(advice: Advice) -> None:
    from dbopt.advise import THRESHOLD
    from dbopt.advise.specwrite import render
    from dbopt.advise.suggestions import size_text

    ev = advice.evaluation
    click.echo(
        f"workload: {len(advice.workload.queries)} queries from {advice.workload.source}; "
        f"{advice.generic_count} with $n parameters planned generically with {advice.generic}"
    )
    if advice.workload.hidden:
        click.echo(
            f"note: {advice.workload.hidden} statement(s) of other roles were hidden (grant "
            "pg_read_all_stats to see them)"
        )
    click.echo(
        f"evaluated {ev.tried} candidate(s) with HypoPG {advice.hypopg_version} in {ev.plans} "
        f"plans; a query counts as improved when its estimated cost falls by at least "
        f"{THRESHOLD:.0%} (Dexter's threshold); greedy selection, then pruning"
    )
    for s in advice.suggestions:
        click.echo(f"\n{s.spec.table}: {s.spec.name} ({size_text(s.size_bytes)})")
        for x in s.serves:
            budget = f" [budget {x.budgeted_as}]" if x.budgeted_as else ""
            costs = f"cost {x.before:,.0f} -> {x.after:,.0f} ({x.change:+.0%})"
            click.echo(f"  {x.query.name}: {costs}{budget}")
        if s.writes is not None:
            click.echo(f"  writes: {s.writes.text()}")
    if not advice.suggestions:
        click.echo("\nno index would improve any query by the threshold")
    for c in ev.costs:
        if not c.improved:
            click.echo(
                f"not improved: {c.query.name} (cost {c.before:,.0f}; best with every "
                f"candidate {c.best:,.0f})"
            )
    for spec, name in advice.equivalent:
        cols = ", ".join(c.name or c.expr or "" for c in spec.columns)
        click.echo(f"already there: ({cols}) on {spec.table} is equivalent to {name}")
    counted: dict[str, int] = {}
    for skipped in advice.skipped:
        if skipped.reason.startswith(("not a read-only SELECT", "no predicate")):
            key = skipped.reason.split(":")[0]
            counted[key] = counted.get(key, 0) + 1
            continue
        click.echo(f"skipped {skipped.name}: {skipped.reason}")
    for reason, count in counted.items():
        click.echo(f"skipped {count} statement(s): {reason}")
    for table, text in render(advice.suggestions, advice.budgets).items():
        click.echo(f"\n# --- for indexes/{table.name}.yaml ---")
        click.echo(text, nl=False)


@click.command("advise", epilog=EXIT_CODES_HELP)
@common_options
@click.option(
    "--queries",
    "queries_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A file of queries (separated by ;) instead of pg_stat_statements.",
)
@click.option(
    "--from-specs", is_flag=True, help="The budgeted queries of the specs as the workload."
)
@click.option(
    "--min-calls",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="pg_stat_statements: only statements called at least this often.",
)
@click.option(
    "--top",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="pg_stat_statements: the statements with the most total execution time.",
)
@click.option("--write", is_flag=True, help="Merge the suggestions into the spec files.")
@click.option(
    "--create-extension",
    is_flag=True,
    help="CREATE EXTENSION hypopg when the server has it but the database does not.",
)
def advise(
    opts: Options,
    queries_file: Path | None,
    from_specs: bool,
    min_calls: int,
    top: int,
    write: bool,
    create_extension: bool,
) -> None:
    """Suggest indexes for a workload, as spec YAML with the numbers behind each.

    The workload is the top statements of pg_stat_statements by total time (default), a
    file of queries (--queries) or the specs' budgeted queries (--from-specs). Candidates
    come from each query's predicates, joins, ORDER BY and columns; HypoPG estimates them
    all at once and the smallest set that cuts a query's estimated cost by at least 50 % is
    kept. Queries are only planned (EXPLAIN, read-only), never run, and no index is
    created. Without --write the YAML is printed; --write merges it into indexes/*.yaml,
    keeping comments and layout, with a budget for each newly served query.

    \b
    Examples:
      dbopt advise --env staging
      dbopt advise --dsn postgresql://app@localhost/app --min-calls 10 --top 20
      dbopt advise --env staging --queries slow.sql --write
      dbopt advise --env ci --from-specs
    """
    from dbopt.advise import AdviseOptions, Source
    from dbopt.advise import advise as run_advise
    from dbopt.advise.specwrite import write as write_specs
    from dbopt.db import connect
    from dbopt.spec import load_specs

    if queries_file is not None and from_specs:
        raise click.UsageError("give --queries or --from-specs, not both")
    source = Source.FILE if queries_file else Source.SPECS if from_specs else Source.STATEMENTS
    config = opts.load_config()
    dirs = opts.spec_dirs(config)
    specs = load_specs(dirs)
    target = opts.target(config, "dbopt advise")
    options = AdviseOptions(source, queries_file, min_calls, top, create_extension)
    with connect(target.dsn, settings=target.settings) as conn:
        advice = run_advise(conn, specs, target.settings, options)
    if opts.fmt == "json":
        click.echo(json.dumps(_as_dict(advice), default=str))
    else:
        _render(advice)
    if write:
        for done in write_specs(_index_dir(dirs), advice.suggestions, advice.budgets):
            what = "created" if done.created else "updated"
            click.echo(
                f"{what} {done.path}: +{len(done.indexes)} index(es), +{len(done.queries)} "
                "budget(s)",
                err=opts.fmt == "json",
            )
