"""Ctrl-C turned into a request that a thread of its own carries out (:func:`relay`).

A SIGINT handler runs in the main thread between two of its bytecodes, whatever that thread
holds then. Setting an Event there takes the Event's lock, which the interrupted thread may
be holding (``Event.clear`` or ``set`` under way): the main thread would wait for itself
for ever. So the handler only puts the request on a queue (``SimpleQueue.put`` is safe in a
signal handler), and another thread acts on it.
"""

from __future__ import annotations

import queue
import signal
import threading
from collections.abc import Callable
from types import FrameType

#: Whether Ctrl-C stopped a run (or a fleet) of this process and a relay has given Ctrl-C back
#: since. dbopt's own process (:func:`dbopt.cli.run`) ignores Ctrl-C from then on: what is left
#: is the report of a run that is recorded already, and the exit.
interrupted = False


def relay(action: Callable[[], None], name: str) -> Callable[[bool], None]:
    """From now on, Ctrl-C calls ``action`` in a thread of its own (named ``name``) instead
    of raising KeyboardInterrupt wherever the main thread is. Returns what puts SIGINT's
    previous handler back and ends that thread, told whether Ctrl-C stopped what the relay was
    for (then :data:`interrupted` is set). Main thread only: ValueError elsewhere."""
    requests: queue.SimpleQueue[bool] = queue.SimpleQueue()

    def carry_out() -> None:
        while requests.get():
            action()

    threading.Thread(target=carry_out, name=name, daemon=True).start()

    def on_sigint(_signum: int, _frame: FrameType | None) -> None:
        requests.put(True)

    try:
        previous = signal.signal(signal.SIGINT, on_sigint)
    except ValueError:
        requests.put(False)
        raise

    def restore(stopped: bool) -> None:
        global interrupted
        interrupted = interrupted or stopped
        # None: the handler was not Python's; Python's own is what raises KeyboardInterrupt.
        signal.signal(signal.SIGINT, signal.default_int_handler if previous is None else previous)
        requests.put(False)

    return restore
