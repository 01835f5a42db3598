"""Which budgets a run measures, and the checks that must pass before any of them runs."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import TYPE_CHECKING

from dbopt.errors import ConfigError, Problem, SpecError
from dbopt.model import QueryBudget, SpecSet, parse_qualified
from dbopt.sqltext import SqlTextError, budget_query_sql
from dbopt.words import suggest

if TYPE_CHECKING:
    from dbopt.catalog import Catalog
    from dbopt.readonly import CallGraph


class Selector(StrEnum):
    """How budgets are picked: by query name, or by the table or view they are written for."""

    QUERY = "query"
    TABLE = "table"


class UnknownSelectionError(ConfigError):
    """A query name or table picks no budget (the CLI words it as its flag)."""

    def __init__(self, selector: Selector, name: str, reason: str) -> None:
        super().__init__(f"{selector} {name}: {reason}")
        self.selector = selector
        self.name = name
        #: Why nothing matches, with a suggestion when one is close.
        self.reason = reason


class EmptySelectionError(ConfigError):
    """The query names and tables given are each known but select no budget together."""

    def __init__(self) -> None:
        super().__init__("the queries and tables given together select no query")


def select_budgets(
    specs: SpecSet, queries: Sequence[str] = (), tables: Sequence[str] = ()
) -> tuple[QueryBudget, ...]:
    """The budgets named by ``queries`` and written for ``tables`` (all when neither).

    ``tables`` match the table or view of the file a query is written in. Raises ConfigError
    when the specs have no budget, UnknownSelectionError for a name that matches none,
    EmptySelectionError when the names and tables have no budget in common.
    """
    every = specs.queries
    if not every:
        raise ConfigError(
            "the specs have no budgeted queries (a queries: list in an index or view file); "
            "nothing to verify"
        )
    names = [q.name for q in every]
    for name in queries:
        if name not in names:
            raise UnknownSelectionError(
                Selector.QUERY, name, "no budgeted query has that name" + suggest(name, names)
            )
    relations = sorted({q.relation for q in every})
    wanted: set[str] = set()
    for text in tables:
        try:
            table = str(parse_qualified(text))
        except ValueError as exc:
            raise UnknownSelectionError(Selector.TABLE, text, str(exc)) from None
        if table not in relations:
            raise UnknownSelectionError(
                Selector.TABLE,
                text,
                f"no budgeted query is written for {table}"
                + (suggest(table, relations) or f"; tables with queries: {', '.join(relations)}"),
            )
        wanted.add(table)
    chosen = tuple(
        q
        for q in every
        if (not queries or q.name in queries) and (not wanted or q.relation in wanted)
    )
    if not chosen:
        raise EmptySelectionError()
    return chosen


def check_budgets(
    budgets: Sequence[QueryBudget], specs: SpecSet, catalog: Catalog, calls: CallGraph
) -> None:
    """Raise SpecError, before anything runs, for what makes a budget impossible to judge or
    unsafe to run (``calls``: the database's CallGraph, see :func:`budget_problems`)."""
    problems = budget_problems(budgets, specs, catalog, calls)
    if problems:
        count = len(problems)
        raise SpecError(
            f"{count} problem{'s' if count != 1 else ''} in the query budgets; nothing was run",
            problems,
        )


def budget_problems(
    budgets: Sequence[QueryBudget], specs: SpecSet, catalog: Catalog, calls: CallGraph
) -> list[Problem]:
    """What makes budgets impossible to judge or unsafe to run (also checked by `validate --dsn`).

    An expectation naming an index that is neither in the specs nor in the database, or a
    table that does not exist, is a mistake in the spec, not a failed check. So is a query
    the budget SQL door refuses, and one that can reach anything that changes something on
    this database (``calls``: its CallGraph, read with ``CallGraph.read(conn)``).
    """
    problems: list[Problem] = []
    index_names = {i.name for i in specs.all_indexes} | {
        n.name for n, kind in catalog.names.items() if kind in ("index", "partitioned index")
    }
    relations = set(catalog.relations) | {v.name for v in specs.views}
    for budget in budgets:
        at = budget.location
        try:
            budget_query_sql(budget.sql)
        except SqlTextError as exc:
            problems.append(at.problem(f"query {budget.name}: cannot be run: {exc}"))
        else:
            for refusal in calls.refusals(budget.sql, with_placeholders=True):
                problems.append(at.problem(f"query {budget.name}: {refusal}"))
        for name in budget.expect.uses_index:
            if name not in index_names:
                problems.append(
                    at.problem(
                        f"query {budget.name}: expect.uses_index names '{name}', which is "
                        "neither in the specs nor in the database"
                        + suggest(name, sorted(index_names)),
                    )
                )
        for table in budget.expect.no_seq_scan_on:
            if table not in relations:
                problems.append(
                    at.problem(
                        f"query {budget.name}: expect.no_seq_scan_on names {table}, which "
                        "does not exist" + suggest(str(table), sorted(str(r) for r in relations)),
                    )
                )
    return problems
