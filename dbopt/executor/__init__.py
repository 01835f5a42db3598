"""Run a Plan against a database without blocking the application.

Every statement runs on an autocommit connection with the environment's lock_timeout and
statement_timeout; a lock wait that times out is retried with backoff and the blocking
sessions are named; every build is checked for validity, and a failed build never leaves an
INVALID index behind. One run at a time per database (an advisory lock); every run and change
is recorded in the history schema.
"""

from __future__ import annotations

from dbopt.db import session_sql
from dbopt.executor.results import ChangeResult, Cost, RunResult, StepFailed
from dbopt.executor.runs import Executor
from dbopt.locks import long_running, take_run_lock
from dbopt.progress import Blocker, Reporter, SilentReporter

__all__ = [
    "Blocker",
    "ChangeResult",
    "Cost",
    "Executor",
    "Reporter",
    "RunResult",
    "SilentReporter",
    "StepFailed",
    "long_running",
    "session_sql",
    "take_run_lock",
]
