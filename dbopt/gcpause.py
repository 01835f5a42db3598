"""Pausing Python's cyclic garbage collector while dbopt builds big, long-lived graphs.

Loading ten thousand specs or inspecting ten thousand indexes allocates hundreds of thousands
of objects that all stay alive; each automatic collection traverses them again, which costs
a fifth of `dbopt plan`'s time at that size (BENCHMARKS.md) and frees nothing. Those phases
pause the collector and let it resume afterwards; reference counting still frees everything
that is not a cycle, and a long run (apply waiting on builds for hours) keeps the collector.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


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
