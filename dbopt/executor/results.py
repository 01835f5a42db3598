"""What running a plan produced: per change, per run, and what the builds cost."""

from __future__ import annotations

from dataclasses import dataclass, field

from dbopt import ddl
from dbopt.model import ChangeOutcome, QualifiedName, RunOutcome
from dbopt.planner import Action
from dbopt.progress import Watch


@dataclass(slots=True)
class Cost:
    """What the concurrent builds and drops of one action cost, from the watcher's samples."""

    builds: int = 0  # CREATE INDEX CONCURRENTLY statements started
    worked_s: float = 0.0  # building (or dropping)
    waited_s: float = 0.0  # waiting for other transactions
    lost_s: float = 0.0  # work thrown away (a build dropped and made again)

    def add(self, watch: Watch, *, build: bool) -> None:
        """Account one watched statement."""
        self.builds += 1 if build else 0
        self.worked_s += watch.worked_s
        self.waited_s += watch.waited_s


@dataclass(slots=True)
class ChangeResult:
    """How one action went."""

    action: Action
    result: ChangeOutcome
    seconds: float
    size_bytes: int | None = None
    error: str | None = None
    cost: Cost = field(default_factory=Cost)


@dataclass(slots=True)
class RunResult:
    """How a whole apply (or rollback) went."""

    run_id: int | None
    outcome: RunOutcome
    changes: list[ChangeResult] = field(default_factory=list)
    #: Why a stopped run stopped before its next build (standbys too far behind), and what
    #: it did not start.
    stopped: str | None = None
    not_started: tuple[QualifiedName, ...] = ()


@dataclass(frozen=True, slots=True)
class _Made:
    """A relation as it is now: OID, relkind, validity (an index's); read right after the
    step that made it (``full``), also its definition and size (None: a lock stopped them);
    ``recorded``: that read also recorded it as its change's object (History.record_built)."""

    oid: int
    relkind: str
    valid: bool | None
    full: bool = False
    definition: str | None = None
    size: int | None = None
    recorded: bool = False


class Built(dict[QualifiedName, int]):
    """What the running action made, name -> OID; ``unsure`` names are INVALID indexes a
    failed build probably left (the name was free just before it started) without the server
    having shown this backend building them: cleaned up (guarded), never recorded as dbopt's."""

    def __init__(self) -> None:
        super().__init__()
        self.unsure: set[QualifiedName] = set()
        #: Left after a failed drop already reported (the action does not drop them again).
        self.reported: set[QualifiedName] = set()


def prove(built: dict[QualifiedName, int], name: QualifiedName, oid: int) -> None:
    """``name`` is the action's, OID ``oid``: shown by the server (no longer only presumed)."""
    built[name] = oid
    if isinstance(built, Built):
        built.unsure.discard(name)


def forget(built: dict[QualifiedName, int], name: QualifiedName) -> None:
    """``name`` is gone: nothing of it is the action's any more."""
    built.pop(name, None)
    if isinstance(built, Built):
        built.unsure.discard(name)
        built.reported.discard(name)


def by_hand_if_unsure(built: dict[QualifiedName, int], name: QualifiedName) -> str | None:
    """How to drop ``name`` by hand, when it is only presumed the action's: the history does
    not know it, so the next apply would not drop it (see Cleanup._drop_own's by_hand)."""
    if isinstance(built, Built) and name in built.unsure:
        return f"({ddl.drop_index(name).as_string()})"
    return None


class StepFailed(Exception):
    """A step failed after retries; the message says why and what was cleaned up."""
