"""The tests' side of the sandbox: which server a run would use, and a server for a block.

Without ``--pg-major`` the tests take what ``dbopt sandbox`` would (`dbopt.sandbox.PROBES`:
``DBOPT_TEST_DSN``, Docker, local binaries). With ``--pg-major N`` (tests/conftest.py) they
use local binaries of that major and nothing else (`harness.builds.bin_dir_for`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

from dbopt.sandbox import DSN_ENV, PROBES, Probe, Server, start_server


def describe_provider(probes: Sequence[Probe] = PROBES) -> str:
    """Say which provider `start_server` would use, without starting anything.

    It connects to ``DBOPT_TEST_DSN`` (when set) and pings Docker, each with a timeout of a
    few seconds, so that the answer is true; nothing is created or started.
    """
    reasons: list[str] = []
    for probe in probes:
        found = probe()
        if isinstance(found, str):
            reasons.append(found)
            continue
        if reasons and os.environ.get(DSN_ENV, "").strip():
            # Why the DBOPT_TEST_DSN the user did set was passed over.
            return f"{found.label}; {reasons[0]}"
        return found.label
    return "none (" + "; ".join(reasons) + ")"


@contextlib.contextmanager
def running_server(
    settings: dict[str, str] | None = None,
    preload: list[str] | None = None,
    optional_preload: list[str] | None = None,
    *,
    probes: Sequence[Probe] = PROBES,
) -> Iterator[Server]:
    """Start a server for the duration of a with-block, and stop it however the block ends."""
    server = start_server(settings, preload, optional_preload, probes=probes)
    try:
        yield server
    finally:
        server.stop()
