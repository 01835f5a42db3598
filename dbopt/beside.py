"""A check run on a second connection beside the control connection's work, as if run first.

Apply lets the server build every new index on an empty temporary copy of its table before it
starts (:func:`dbopt.livecheck.check_builds`): tens of milliseconds of the server's time, with
the client only waiting. That check needs nothing the other checks and the plan make, so it
runs on the first build's connection while the control connection does them, and the run
starts no sooner and no differently than if it had run first:

- its error comes first, as it would have: a spec error, a lock it could not take, a
  connection that could not be opened all stop the run before anything is built;
- except an error of what came before it in the old order (the block up to :meth:`Beside.
  reached`: the other checks of the specs), which still comes first (the check is then
  cancelled: its outcome no longer matters);
- the block never ends before the check does (a cancelled one: within SETTLE_TIMEOUT_S, or
  it is left to end by itself): Ctrl-C cancels the check's statements and waits for it
  (Ctrl-C again stops waiting).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import AbstractContextManager
from typing import Any

import psycopg

from dbopt.db import CANCEL_EVERY_S, SETTLE_TIMEOUT_S

Check = Callable[[psycopg.Connection[Any]], None]


class Beside:
    """The check running beside a block (:func:`check_beside`)."""

    def __init__(self, check: Check, conn: psycopg.Connection[Any] | None) -> None:
        self._check = check
        #: Where the check runs in the block itself (no second connection), else None.
        self._inline = conn
        #: The block got past what came before the check in the old order.
        self.passed = False

    def reached(self) -> None:
        """The block is where the check used to run: an error from here on comes after the
        check's. Without a second connection, the check runs now."""
        self.passed = True
        if self._inline is not None:
            self._check(self._inline)


class _Running:
    """The check in its thread: its connection (to cancel it) and its outcome."""

    def __init__(self) -> None:
        self.done: Future[None] = Future()
        self.conn: psycopg.Connection[Any] | None = None
        self.stopped = False
        self.lock = threading.Lock()

    def cancel(self, timeout_s: float = SETTLE_TIMEOUT_S) -> None:
        """Stop the check: its statement now is cancelled (waiting up to ``timeout_s`` for
        the server to take the cancel), and it starts none if it has not started yet."""
        with self.lock:  # the check's thread does not give the connection back meanwhile
            self.stopped = True
            if self.conn is not None:
                with contextlib.suppress(Exception):
                    self.conn.cancel_safe(timeout=max(0.1, timeout_s))

    def outcome(self, *, cancel: bool = False) -> BaseException | None:
        """Wait for the check to end; its exception, if any. With ``cancel``, its statements
        are cancelled until it ends (again every CANCEL_EVERY_S: a cancel landing between two
        of them is lost), for up to SETTLE_TIMEOUT_S; then it is left to end by itself.
        Ctrl-C while waiting cancels it so and is raised once it ended; Ctrl-C while a
        cancelled check is waited for stops waiting."""
        interrupted = False
        deadline: float | None = None
        while True:
            if cancel:
                if deadline is None:
                    deadline = time.monotonic() + SETTLE_TIMEOUT_S
                self.cancel(deadline - time.monotonic())
            try:
                error = self.done.exception(timeout=CANCEL_EVERY_S if cancel else None)
            except TimeoutError:
                if deadline is not None and time.monotonic() < deadline:
                    continue
                error = None  # not over: left to end by itself (its connection is closed then)
            except KeyboardInterrupt:
                if cancel:
                    raise
                cancel = interrupted = True
                continue
            if interrupted:
                raise KeyboardInterrupt
            return error


@contextlib.contextmanager
def check_beside(
    check: Check,
    control: psycopg.Connection[Any],
    lend: Callable[[], AbstractContextManager[psycopg.Connection[Any]]] | None,
) -> Iterator[Beside]:
    """Run ``check`` on a connection ``lend`` gives, in a thread, while the block runs; the
    block calls :meth:`Beside.reached` where the check used to run. Without ``lend``, the
    check runs on ``control`` at that point, in the block."""
    beside = Beside(check, control if lend is None else None)
    if lend is None:
        yield beside
        return
    running = _Running()

    def run() -> None:
        try:
            if running.stopped:  # Ctrl-C as it started: no connection taken
                raise KeyboardInterrupt
            with lend() as conn:
                with running.lock:
                    if running.stopped:
                        raise KeyboardInterrupt
                    running.conn = conn
                try:
                    check(conn)
                finally:
                    with running.lock:
                        running.conn = None
        except BaseException as exc:  # handed over to the block's thread
            running.done.set_exception(exc)
        else:
            running.done.set_result(None)

    thread = threading.Thread(target=run, name="dbopt-check", daemon=True)
    try:
        thread.start()
    except BaseException:  # Ctrl-C while it started: it stops at once, or is cancelled
        running.cancel()
        raise
    try:
        yield beside
    except KeyboardInterrupt:
        running.outcome(cancel=True)
        raise
    except BaseException:
        # Before the check's place, the block's error comes first: the check is stopped.
        error = running.outcome(cancel=not beside.passed)
        if error is not None and beside.passed:
            raise error from None
        raise
    error = running.outcome()
    if error is not None:
        raise error
