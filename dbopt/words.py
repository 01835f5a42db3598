"""Words for people: suggestions for a misspelt name."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence


def suggest(word: str, choices: Iterable[str]) -> str:
    """A "; did you mean 'x'?" suffix, or an empty string when nothing is close.

    Close means similar spelling, or an abbreviation of exactly one choice ('prod' for
    'production'), which difflib alone rates too low.
    """
    options = list(choices)
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if not close and len(word) >= 2:
        close = [c for c in options if c.startswith(word)]
    return f"; did you mean '{close[0]}'?" if len(close) == 1 else ""


def a(noun: str) -> str:
    """The noun with its indefinite article ("an index", "a table")."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def they(names: Sequence[object]) -> tuple[str, str, str]:
    """The names joined, and the verb and pronoun that agree with them:
    ("public.v", "depends", "it") or ("public.v, public.w", "depend", "them")."""
    joined = ", ".join(str(n) for n in names)
    return (joined, "depends", "it") if len(names) == 1 else (joined, "depend", "them")
