"""Allow ``python -m dbopt``."""

from __future__ import annotations

from dbopt.cli import run

run()
