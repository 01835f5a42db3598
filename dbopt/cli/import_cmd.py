"""`dbopt import`: spec files for the indexes and materialized views a database already has."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from dbopt.cli.common import EXIT_CODES_HELP, QUALIFIED_NAME, Options, common_options
from dbopt.cli.run_output import WAIT, WAIT_TIMEOUT, Terminal, locking

if TYPE_CHECKING:
    from dbopt.importer import ImportOutcome
    from dbopt.model import QualifiedName


def _spec_dir(dirs: list[tuple[Path, bool]], name: str) -> Path:
    """The spec directory called ``name`` (indexes, views) among --specs or dbopt.yaml's."""
    return next((d for d, _required in dirs if d.name == name), Path(name))


def _render(outcome: ImportOutcome, fmt: str) -> None:
    if fmt == "json":
        click.echo(
            json.dumps(
                {
                    "where": outcome.where,
                    "files": [
                        {
                            "path": str(f.path),
                            "relation": str(f.relation),
                            "kind": f.kind,
                            "indexes": [str(i) for i in f.indexes],
                        }
                        for f in outcome.files
                    ],
                    "left_out": [{"object": str(x.name), "reason": x.reason} for x in outcome.left],
                    "not_imported": dict(outcome.unmanaged),
                    "compared": outcome.compared,
                    "adopted": [str(n) for n in outcome.adopted],
                    "already_owned": [str(n) for n in outcome.already_owned],
                    "run": outcome.run_id,
                    "notes": list(outcome.notes),
                }
            )
        )
        return
    for item in outcome.files:
        count = len(item.indexes)
        what = f"{count} index{'es' if count != 1 else ''}"
        if item.kind == "view":
            what = f"materialized view {item.relation} and {what}"
        else:
            what += f" of {item.relation}"
        if item.kept:
            what += f" (kept from the file it replaced: {', '.join(item.kept)})"
        click.echo(f"wrote {item.path}: {what}")
    if not outcome.files:
        click.echo(f"nothing to import from {outcome.where}")
    for left in outcome.left:
        click.echo(f"left out {left}")
    for kind, count in outcome.unmanaged.items():
        click.echo(f"not imported: {count} {kind} (dbopt does not manage them)")
    if not outcome.compared:
        click.echo(
            "note: this is a standby: the specs were not planned against it; run "
            "`dbopt plan` against the primary to see that nothing changes"
        )
    if outcome.run_id is not None:
        click.echo(
            f"adopted {len(outcome.adopted)} object(s) in run {outcome.run_id}: apply --prune "
            "drops them once they leave the specs; rollback never does"
        )
    if outcome.already_owned:
        click.echo(f"already dbopt's: {', '.join(str(n) for n in outcome.already_owned)}")
    for note in outcome.notes:
        click.echo(f"note: {note}")


@click.command("import", epilog=EXIT_CODES_HELP)
@common_options
@click.option(
    "--table",
    "tables",
    multiple=True,
    type=QUALIFIED_NAME,
    metavar="[SCHEMA.]NAME",
    help="Only this table or materialized view (repeatable).",
)
@click.option(
    "--adopt",
    is_flag=True,
    help="Also record the imported objects as dbopt's (apply --prune may then drop them).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Overwrite spec files that exist (keeping their queries, refresh and reasons).",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (confirm: true envs).")
@WAIT
@WAIT_TIMEOUT
def import_specs(
    opts: Options,
    tables: tuple[QualifiedName, ...],
    adopt: bool,
    force: bool,
    yes: bool,
    wait: bool,
    wait_timeout: str | None,
) -> None:
    """Write spec files for the indexes and materialized views a database already has.

    One file per table under indexes/ (<table>.yaml; <schema>.<table>.yaml outside public)
    and one per materialized view under views/, each definition exactly as the server
    reports it, so `dbopt plan` right after has nothing to change. An index the spec format
    cannot express (a tablespace, say) is left out, with the reason printed and written in
    its file; constraint indexes and INVALID indexes are never imported. Existing files are
    not overwritten without --force (which keeps their budgets and reasons). Without --adopt
    the database is only read and what was imported stays "pre-existing" (never dropped by
    dbopt); --adopt records it in dbopt's history as dbopt's, with apply's checks (run lock,
    not a standby, history writable).

    \b
    Examples:
      dbopt import --env staging
      dbopt import --env production --table orders --table billing.invoices
      dbopt import --env production --adopt
    """
    from dbopt import usecases
    from dbopt.history import History
    from dbopt.importer import ImportOptions

    config = opts.load_config()
    dirs = opts.spec_dirs(config)
    target = opts.target(config)
    options = ImportOptions(
        tables=tables,
        adopt=adopt,
        force=force,
        index_dir=_spec_dir(dirs, "indexes"),
        view_dir=_spec_dir(dirs, "views"),
        locking=locking(wait, wait_timeout),
        yes=yes,
    )
    hooks = Terminal(opts.fmt, target.env)
    outcome = usecases.import_specs(
        target,
        History(config.history_schema),
        options,
        confirm=hooks.confirm,
        created=lambda text: click.echo(text, err=True),
    )
    _render(outcome, opts.fmt)
