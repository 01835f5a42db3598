"""`dbopt verify`: budgeted queries measured with EXPLAIN ANALYZE and judged against the specs.

How the numbers are made (the CLI says so above every report):

* Every time is the server's own: ``Execution Time`` and ``Planning Time`` of
  ``EXPLAIN (ANALYZE, BUFFERS, VERBOSE, FORMAT JSON)``. Network round trips and client-side
  time are not included, and EXPLAIN ANALYZE's per-node timing adds some overhead of its own.
* ``warmup`` runs are discarded, then ``runs`` runs are recorded. p50 and p95 are
  ``statistics.quantiles(times, n=100, method="inclusive")``: linear interpolation between the
  two closest ranks (numpy's default); with a single run every percentile is that run.
* Buffers, rows and the plan shown are those of the last recorded run. The deterministic
  budgets are judged on them: ``max_buffers`` on shared hit + read of the execution (the
  sum does not depend on what the cache held; planning, temp and local buffers are left
  out), ``max_rows_examined`` on :func:`~dbopt.verify.plan.rows_examined`, ``max_cost`` on
  the planner's total cost of the top node.
* Noise is measured (:mod:`~dbopt.verify.noise`): a fixed trivial query gives the machine's
  jitter, a bootstrap interval of each query's runs its p95's noise band; a budget_ms
  inside the band is ``unstable``. ``retries`` measures such queries (and time failures)
  again, pooling the runs.

Safety, so that pointing verify at production is fine: verify changes nothing. Before the
first query runs, :func:`check_budgets` refuses (exit 2, file:line, nothing run) any budget
whose query can reach something that changes data, sequences, statistics, settings, other
sessions or server state: a deny-listed built-in, a VOLATILE function, a view, policy,
operator, cast or function body that runs one (see :mod:`dbopt.readonly`, read from the
database's own catalog). Then every run is its own READ ONLY transaction, always rolled back,
under a ``statement_timeout`` of the budget's ``timeout_ms`` or else
``max(1 s, budget_ms * verify_timeout_factor)``, so a missing index cannot turn into a
ten-minute sequential scan, and a write that got past the checks is refused by the server.
The query text passes :func:`dbopt.sqltext.budget_query_sql` (the parser accepts one
read-only statement) and its parameters are sent untyped, so the server gives each the type
its context infers (see :mod:`~dbopt.verify.params`). verify never runs ANALYZE or
any other statement that writes; running a query is observed like any query (pg_stat_* scan
counters, pg_stat_statements), which is not a change. A hypothetical run adds HypoPG
hypothetical indexes to its own backend's memory and drops exactly those before it returns.

One module per concern; the library measures, judges and returns reports, the CLI renders:

* :mod:`~dbopt.verify.plan` — EXPLAIN plans as values (:class:`PlanNode`), the index scans
  in them (:func:`index_uses`)
* :mod:`~dbopt.verify.params` — budget parameters, typed by the server from their context
* :mod:`~dbopt.verify.measurement` — EXPLAIN ANALYZE runs of one budget (:func:`measure`)
* :mod:`~dbopt.verify.noise` — the machine's jitter (:func:`measure_noise`), each p95's
  noise band (:func:`p95_band`)
* :mod:`~dbopt.verify.findings` — statuses (pass, warn, unstable, fail) and findings
* :mod:`~dbopt.verify.budgets` — a measurement against time and deterministic budgets
* :mod:`~dbopt.verify.verdict` — verdicts and findings (:func:`judge`), baselines compared;
  :class:`IndexesUsed`, the one answer to "does the plan use this index" every output shows
* :mod:`~dbopt.verify.select` — which budgets run, and the checks before any does
* :mod:`~dbopt.verify.run` — a whole run (:func:`run_verify`)
* :mod:`~dbopt.verify.hypothetical` — HypoPG estimates (:func:`run_hypothetical`)
* :mod:`~dbopt.verify.text` — plan text and the one explanation every output shows
* :mod:`~dbopt.verify.report` — the JSON report, saved and read back as a baseline
"""

from __future__ import annotations

from dbopt.verify.fragility import (
    DEFAULT_PLAN_MARGIN,
    Fragility,
    Stability,
    check_fragility,
)
from dbopt.verify.hypothetical import (
    HypoIndex,
    HypoPGMissingError,
    HypotheticalReport,
    WhatIf,
    hypopg_versions,
    require_hypopg,
    run_hypothetical,
)
from dbopt.verify.measurement import (
    MIN_TIMEOUT_MS,
    TIMING_NOTE,
    Measurement,
    Outcome,
    estimated_plan,
    explain,
    measure,
    statement_timeout_ms,
)
from dbopt.verify.noise import NOISE_SQL, Noise, measure_noise, p95_band
from dbopt.verify.plan import (
    INDEX_SCANS,
    IndexUse,
    PlanNode,
    index_uses,
    parse_plan,
    plan_shape,
    rows_examined,
)
from dbopt.verify.report import (
    REPORT_VERSION,
    hypothetical_dict,
    load_baseline,
    report_dict,
    result_dict,
    save_report,
)
from dbopt.verify.run import QueryResult, VerifyReport, index_ancestors, run_verify
from dbopt.verify.select import (
    EmptySelectionError,
    Selector,
    UnknownSelectionError,
    budget_problems,
    check_budgets,
    select_budgets,
)
from dbopt.verify.text import Line, Role, explanation, explanation_lines, plan_lines, plan_text
from dbopt.verify.verdict import (
    DEFAULT_REGRESSION,
    DEFAULT_REGRESSION_FLOOR_MS,
    Baseline,
    BaselineEntry,
    BaselineError,
    BaselineProblem,
    Finding,
    FindingKind,
    IndexesUsed,
    IndexState,
    MeantIndex,
    Status,
    Verdict,
    expectation_findings,
    judge,
    query_fingerprint,
)

__all__ = [
    "DEFAULT_PLAN_MARGIN",
    "DEFAULT_REGRESSION",
    "DEFAULT_REGRESSION_FLOOR_MS",
    "INDEX_SCANS",
    "MIN_TIMEOUT_MS",
    "NOISE_SQL",
    "REPORT_VERSION",
    "TIMING_NOTE",
    "Baseline",
    "BaselineEntry",
    "BaselineError",
    "BaselineProblem",
    "EmptySelectionError",
    "Finding",
    "FindingKind",
    "Fragility",
    "HypoIndex",
    "HypoPGMissingError",
    "HypotheticalReport",
    "IndexState",
    "IndexUse",
    "IndexesUsed",
    "Line",
    "MeantIndex",
    "Measurement",
    "Noise",
    "Outcome",
    "PlanNode",
    "QueryResult",
    "Role",
    "Selector",
    "Stability",
    "Status",
    "UnknownSelectionError",
    "Verdict",
    "VerifyReport",
    "WhatIf",
    "budget_problems",
    "check_budgets",
    "check_fragility",
    "estimated_plan",
    "expectation_findings",
    "explain",
    "explanation",
    "explanation_lines",
    "hypopg_versions",
    "hypothetical_dict",
    "index_ancestors",
    "index_uses",
    "judge",
    "load_baseline",
    "measure",
    "measure_noise",
    "p95_band",
    "parse_plan",
    "plan_lines",
    "plan_shape",
    "plan_text",
    "query_fingerprint",
    "report_dict",
    "require_hypopg",
    "result_dict",
    "rows_examined",
    "run_hypothetical",
    "run_verify",
    "save_report",
    "select_budgets",
    "statement_timeout_ms",
]
