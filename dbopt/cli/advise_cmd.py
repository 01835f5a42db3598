"""`dbopt advise`: index suggestions for a workload, as spec YAML (or merged into the specs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from dbopt.cli.common import EXIT_CODES_HELP, Options, common_options

if TYPE_CHECKING:
    from dbopt.advise import Advice
    from dbopt.model import IndexSpec


def _index_dir(dirs: list[tuple[Path, bool]]) -> Path:
    """Where new index files go: the spec folder named ``indexes``, else the first that is
    not ``views``, else ``./indexes``."""
    named = [d for d, _required in dirs if d.name == "indexes"]
    others = [d for d, _required in dirs if d.name != "views"]
    return (named or others or [Path("indexes")])[0]


def _columns_text(spec: IndexSpec) -> str:
    return ", ".join(c.name or c.expr or "" for c in spec.columns)


def _as_dict(advice: Advice) -> dict[str, Any]:
    from dbopt.advise import THRESHOLD
    from dbopt.advise.specwrite import render

    served_by = {x.query.name for s in advice.suggestions for x in s.serves}
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
                "columns": [c.name or c.expr for c in s.spec.columns],
                "include": list(s.spec.include),
                "where": s.spec.where,
                "simulated": s.simulated,
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
                "writes": None
                if s.writes is None
                else {
                    "inserts": s.writes.inserts,
                    "updates": s.writes.updates,
                    "hot_updates": s.writes.hot_updates,
                    "deletes": s.writes.deletes,
                    "since": s.writes.since.isoformat(),
                    "entries": s.writes.entries,
                    "entries_per_hour": s.writes.entries_per_hour,
                },
            }
            for s in advice.suggestions
        ],
        "budgets": [
            {
                "table": str(b.table),
                "name": b.name,
                "sql": b.sql,
                "params": dict(b.params),
                "max_cost": b.max_cost,
                "budget_ms": b.budget_ms,
                "uses_index": b.uses_index,
            }
            for b in advice.budgets
        ],
        "unbudgeted": [{"query": n, "reason": why} for n, why in advice.unbudgeted],
        "not_improved": [
            {"query": c.query.name, "cost_before": c.before, "best_cost": c.best}
            for c in advice.evaluation.costs
            if not c.improved and c.query.name not in served_by
        ],
        "equivalent": [
            {
                "table": str(c.table),
                "columns": _columns_text(c),
                "include": list(c.include),
                "exists_as": n,
                "covered": covered,
            }
            for c, n, covered in advice.equivalent
        ],
        "widening": [
            {
                "table": str(w.spec.table),
                "columns": _columns_text(w.spec),
                "include": list(w.spec.include),
                "widens": n,
                "serves": [
                    {"query": x.query.name, "cost_before": x.before, "cost_after": x.after}
                    for x in w.serves
                ],
            }
            for w, n in advice.widening
        ],
        "skipped": [{"query": s.name, "reason": s.reason} for s in advice.skipped],
        "yaml": {str(t): text for t, text in render(advice.suggestions, advice.budgets).items()},
    }


def _render(advice: Advice) -> None:
    from dbopt.advise import THRESHOLD
    from dbopt.advise.specwrite import render
    from dbopt.advise.suggestions import size_text
    from dbopt.specfiles import file_names

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
    served_by = {x.query.name for s in advice.suggestions for x in s.serves}
    for s in advice.suggestions:
        unsimulated = "" if s.simulated else f", {s.spec.method.upper()}: not simulated by HypoPG"
        click.echo(f"\n{s.spec.table}: {s.spec.name} ({size_text(s.size_bytes)}{unsimulated})")
        for x in s.serves:
            budget = f" [budget {x.budgeted_as}]" if x.budgeted_as else ""
            click.echo(f"  {x.query.name}: {x.costs_text()}{budget}")
        if s.writes is not None:
            click.echo(f"  writes: {s.writes.text()}")
    if not advice.suggestions and not advice.widening:
        click.echo("\nno index would improve any query by the threshold")
    for name, why in advice.unbudgeted:
        click.echo(f"no budget for {name}: {why}")
    for c in ev.costs:
        if not c.improved and c.query.name not in served_by:
            click.echo(
                f"not improved: {c.query.name} (cost {c.before:,.0f}; best with every "
                f"candidate {c.best:,.0f})"
            )
    for spec, name, covered in advice.equivalent:
        carries = f" INCLUDE ({', '.join(spec.include)})" if spec.include else ""
        how = (
            f"{name} has its keys" + (" and carries its INCLUDE columns" if spec.include else "")
            if covered
            else f"is equivalent to {name}"
        )
        click.echo(
            f"already there: ({_columns_text(spec)}){carries} on {spec.table}"
            + (f": {how}" if covered else f" {how}")
        )
    for w, name in advice.widening:
        served = "; ".join(f"{x.query.name}: {x.costs_text()}" for x in w.serves)
        click.echo(
            f"widen {name}: with INCLUDE ({', '.join(w.spec.include)}) it would serve "
            f"{served} (not suggested as a second index with its keys, "
            f"({_columns_text(w.spec)}) on {w.spec.table}: add the columns to {name})"
        )
    counted: dict[str, int] = {}
    for skipped in advice.skipped:
        if skipped.reason.startswith(("not a read-only SELECT", "no predicate")):
            key = skipped.reason.split(":")[0]
            counted[key] = counted.get(key, 0) + 1
            continue
        click.echo(f"skipped {skipped.name}: {skipped.reason}")
    for reason, count in counted.items():
        click.echo(f"skipped {count} statement(s): {reason}")
    rendered = render(advice.suggestions, advice.budgets)
    names = file_names(rendered)
    for table, text in rendered.items():
        click.echo(f"\n# --- for indexes/{names[table]} ---")
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
    kept (GIN/GiST, which HypoPG cannot simulate, are suggested for queries nothing else
    improves, marked so). Queries are only planned (EXPLAIN, read-only), never run, and no
    index is created. No spec file is needed. Without --write the YAML is printed; --write
    merges it into the tables' spec files (new ones in indexes/), keeping comments and
    layout, with a budget for each newly served query. pg_stat_statements missing or not
    preloaded, HypoPG missing, or a bad --queries file (file:line): exit 2.

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
    # A DBA's first week starts with no specs: a missing or empty folder is no specs here.
    dirs = [(d, False) for d, _required in opts.spec_dirs(config)]
    specs = load_specs(dirs, allow_empty=True)
    if not specs.files:
        where = ", ".join(str(d) for d, _ in dirs)
        click.echo(f"note: no spec files in {where}: advising as if nothing is spec'd", err=True)
    target = opts.target(config, "dbopt advise")
    options = AdviseOptions(source, queries_file, min_calls, top, create_extension)
    with connect(target.dsn, settings=target.settings) as conn:
        advice = run_advise(conn, specs, target.settings, options)
    if opts.fmt == "json":
        click.echo(json.dumps(_as_dict(advice), default=str))
    else:
        _render(advice)
    if write:
        index_dir = _index_dir(dirs)
        for done in write_specs(
            index_dir, [d for d, _ in dirs], advice.suggestions, advice.budgets
        ):
            what = "created" if done.created else "updated"
            click.echo(
                f"{what} {done.path}: +{len(done.indexes)} index(es), +{len(done.queries)} "
                "budget(s)",
                err=opts.fmt == "json",
            )
