"""Cron expressions as crontab(5) and pg_cron read them: five fields or an ``@`` shorthand.

:func:`parse` says which field is wrong and what its range is, and expands the shorthands
(``@hourly``...) to the five fields every scheduler reads the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from dbopt.errors import InputError

#: The shorthands crontab(5) and pg_cron accept, as five fields.
SHORTHANDS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # names for low, low + 1, ...

    def value(self, text: str) -> int | None:
        if text.isascii() and text.isdigit():
            return int(text)
        if text.lower() in self.names:
            return self.names.index(text.lower()) + self.low
        return None


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day-of-month", 1, 31),
    _Field("month", 1, 12, _MONTHS),
    _Field("day-of-week", 0, 7, _DAYS),  # 0 and 7 are both Sunday
)

_ITEM = re.compile(r"^(?P<range>\*|[^/-]+(?:-[^/-]+)?)(?:/(?P<step>[^/]+))?$")


def _check(field: _Field, text: str) -> str | None:
    """What is wrong with one field, or None."""
    span = f"{field.low}-{field.high}"
    for item in text.split(","):
        match = _ITEM.match(item)
        if match is None:
            return f"the {field.name} field '{text}' is not a value, range or step ({span})"
        step = match["step"]
        if step is not None and (not (step.isascii() and step.isdigit()) or int(step) == 0):
            return f"the {field.name} field '{text}' has step '{step}': a positive number"
        if match["range"] == "*":
            continue
        ends = match["range"].split("-")
        if step is not None and len(ends) == 1:
            # pg_cron refuses it, Vixie cron reads one value, croniter every step from it.
            return (
                f"the {field.name} field '{text}' steps from a single value, which cron "
                f"implementations read differently: write {ends[0]}-{field.high}/{step}"
            )
        values = [field.value(e) for e in ends]
        for end, value in zip(ends, values, strict=True):
            if value is None:
                return f"the {field.name} field '{text}': '{end}' is not a number ({span})"
            if not field.low <= value <= field.high:
                return f"the {field.name} field '{text}': {value} is out of range {span}"
        if len(values) == 2 and values[0] > values[1]:  # type: ignore[operator]
            return f"the {field.name} field '{text}': the range {match['range']} runs backwards"
    return None


def parse(schedule: str) -> str:
    """The five fields of ``schedule`` (shorthands expanded); InputError says which field is
    wrong and why."""
    text = " ".join(schedule.split())
    if text.startswith("@"):
        fields = SHORTHANDS.get(text.lower())
        if fields is None:
            known = ", ".join(SHORTHANDS)
            raise InputError(f"'{schedule}' is not a cron shorthand dbopt can run (one of {known})")
        return fields
    parts = text.split()
    if len(parts) != 5:
        raise InputError(
            f"'{schedule}' has {len(parts)} field{'s' if len(parts) != 1 else ''}; a cron "
            "expression has 5 (minute hour day-of-month month day-of-week), e.g. '0 * * * *', "
            "or is @hourly, @daily, @weekly, @monthly or @yearly"
        )
    for field, part in zip(_FIELDS, parts, strict=True):
        problem = _check(field, part)
        if problem:
            raise InputError(f"'{schedule}' {problem}")
    if parts[2].startswith("*"):
        # Day-of-month '*' or '*/n' holds the 1st: every month has one, on every weekday
        # over the years, so the schedule fires (and croniter need not be loaded to say so).
        return text
    try:
        previous_tick(text, datetime(2000, 1, 1, tzinfo=UTC))
    except ValueError:
        raise InputError(f"'{schedule}' never fires (no such day in any year)") from None
    return text


def previous_tick(schedule: str, now: datetime) -> datetime:
    """The last time ``schedule`` (five fields) fired at or before ``now``, read as cron and
    pg_cron read it: day-of-month and day-of-week are ORed only when both are restricted (a
    field that starts with '*' makes them ANDed). ValueError when it never fires."""
    return _tick(schedule, now, forward=False)


def next_tick(schedule: str, after: datetime) -> datetime:
    """The first time ``schedule`` fires after ``after`` (read as :func:`previous_tick`)."""
    return _tick(schedule, after, forward=True)


def _tick(schedule: str, start: datetime, *, forward: bool) -> datetime:
    from croniter import CroniterBadDateError, croniter

    fields = schedule.split()
    day_or = not (fields[2].startswith("*") or fields[4].startswith("*"))
    try:
        it = croniter(schedule, start, day_or=day_or)
        tick: datetime = it.get_next(datetime) if forward else it.get_prev(datetime)
    except (CroniterBadDateError, ValueError, KeyError) as exc:
        raise ValueError(f"{schedule!r} never fires: {exc}") from None
    return tick
