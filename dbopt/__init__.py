"""dbopt: PostgreSQL indexes and materialized views as declarative code."""

from __future__ import annotations

__version__ = "0.1.0"
