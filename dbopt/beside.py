"""A check run on a second connection beside the control connection's work, as if run first.

Apply lets the server build every new index on an empty temporary copy of its table before it
starts (:func:`dbopt.livecheck.check_builds`): tens of milliseconds of the server's time, with
the client only waiting. That check needs nothing the other checks and the plan make, so it
runs on the first build's connection while the control connection does them, and the run
starts no sooner and no differently than if it had run first:

- its error comes first, as it would have: a spec error, a lock it could not take, a
  connection that could not be opened all stop the run before anything is built;
- except an error of what came before it in the old order (the block up to :meth:`Beside.
  reached`: the other checks of the specs), which still comes first;
- the block never ends before the check does: Ctrl-C cancels the check's statement and waits
  for it (Ctrl-C again stops waiting).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import AbstractContextManager
from typing import Any

import psycopg

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

    def cancel(self) -> None:
        with self.lock:
            self.stopped = True
            conn = self.conn
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.cancel_safe()

    def error(self) -> BaseException | None:
        """Wait for the check; its exception, if any. Ctrl-C cancels its statement, waits on
        for it (Ctrl-C again stops waiting) and is raised."""
        try:
            return self.done.exception()
        except KeyboardInterrupt:
            self.cancel()
            self.done.exception()
            raise


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

    threading.Thread(target=run, name="dbopt-check", daemon=True).start()
    try:
        yield beside
    except KeyboardInterrupt:
        running.cancel()
        running.error()
        raise
    except BaseException:
        error = running.error()
        if error is not None and beside.passed:
            raise error from None
        raise
    error = running.error()
    if error is not None:
        raise error
