"""What a verdict is made of: statuses and findings (shared by judging, reports, JUnit)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    """A query's verdict; warn still passes (exit 0), unstable too unless --strict."""

    PASS = "pass"
    WARN = "warn"
    #: A time verdict inside the measured noise of its budget: neither pass nor fail.
    UNSTABLE = "unstable"
    FAIL = "fail"

    @property
    def rank(self) -> int:
        """0 pass, 1 warn, 2 unstable, 3 fail: the worst finding decides a verdict."""
        return _RANK[self]


_RANK = {Status.PASS: 0, Status.WARN: 1, Status.UNSTABLE: 2, Status.FAIL: 3}


class FindingKind(StrEnum):
    """What a finding is about."""

    #: p95 over budget_ms.
    BUDGET = "budget"
    #: p95 over warn_ms.
    WARN = "warn"
    #: Stopped by statement_timeout.
    TIMEOUT = "timeout"
    #: The query failed on the server.
    ERROR = "error"
    #: An index of expect.uses_index is not used.
    USES_INDEX = "uses_index"
    #: A table of expect.no_seq_scan_on is scanned sequentially.
    NO_SEQ_SCAN_ON = "no_seq_scan_on"
    #: p95 grew past the threshold against the baseline.
    REGRESSION = "regression"
    #: The plan's shape differs from the baseline's.
    PLAN_CHANGED = "plan_changed"
    #: A plan without an index of expect.uses_index costs within the plan margin.
    FRAGILE = "fragile"
    #: Information that does not change the verdict.
    NOTE = "note"
    #: Shared buffers (hit + read) against max_buffers.
    MAX_BUFFERS = "max_buffers"
    #: Rows read by scan nodes against max_rows_examined.
    MAX_ROWS_EXAMINED = "max_rows_examined"
    #: The planner's total cost against max_cost.
    MAX_COST = "max_cost"

    @property
    def timed(self) -> bool:
        """True for findings about measured time: re-measuring may change them."""
        return self in _TIMED

    @property
    def judges(self) -> bool:
        """True for the kinds that judge a budget (time or deterministic)."""
        return self in _TIMED or self in _DETERMINISTIC

    @property
    def deterministic(self) -> bool:
        """True for the budgets that do not depend on the machine's speed."""
        return self in _DETERMINISTIC


_TIMED = {FindingKind.BUDGET, FindingKind.WARN, FindingKind.REGRESSION}
_DETERMINISTIC = {FindingKind.MAX_BUFFERS, FindingKind.MAX_ROWS_EXAMINED, FindingKind.MAX_COST}


@dataclass(frozen=True, slots=True)
class Finding:
    """One reason behind a verdict."""

    status: Status
    kind: FindingKind
    message: str
