"""Pausing Python's cyclic garbage collector while dbopt builds big, long-lived graphs.

Loading ten thousand specs or inspecting ten thousand indexes allocates hundreds of thousands
of objects that all stay alive; each automatic collection traverses them again, which costs
a fifth of `dbopt plan`'s time at that size (BENCHMARKS.md) and frees nothing. Those phases
pause the collector and let it resume afterwards; reference counting still frees everything
that is not a cycle, and a long run (apply waiting on builds for hours) keeps the collector.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
#: The collector is paused by :func:`paused_until_run` and no run has started yet.
_until_run = False
#: :func:`run_starts` froze the set-up's objects (unfrozen when the command's block ends).
_frozen = False


@contextmanager
def paused_gc() -> Iterator[None]:
    """No automatic collection inside the block (nested blocks are fine)."""
    if not gc.isenabled():
        yield  # an outer block (or the caller) already paused it
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@contextmanager
def paused_until_run() -> Iterator[None]:
    """No automatic collection while a command that builds gets ready (its imports, specs,
    catalog and plan: long-lived graphs, nothing to collect) until its run starts
    (:func:`run_starts`); resumed at the end of the block if no run started. (A wait for
    another run's lock, `apply --wait`, allocates next to nothing: it waits paused too.) The
    end of the block unfreezes what run_starts froze (gc.unfreeze is all or nothing: dbopt
    freezes nothing else)."""
    global _until_run, _frozen
    if not gc.isenabled():
        yield
        return
    with _lock:
        gc.disable()
        _until_run = True
    try:
        yield
    finally:
        with _lock:
            if _until_run:
                _until_run = False
                gc.enable()
            if _frozen:  # collectable again (a process running many commands: the tests)
                _frozen = False
                gc.unfreeze()


def run_starts() -> None:
    """A run starts building (it may wait on builds for hours): the collector resumes. What
    the set-up made is frozen first (it lives to the end of the command), so collections
    during the run only look at what the run itself makes."""
    global _until_run, _frozen
    with _lock:
        if _until_run:
            _until_run = False
            _frozen = True
            gc.freeze()
            gc.enable()
