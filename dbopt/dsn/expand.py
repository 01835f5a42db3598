"""``${VAR}`` and ``${VAR:-default}`` in dbopt.yaml's connection strings."""

from __future__ import annotations

import re
from collections.abc import Mapping

from dbopt.errors import ConfigError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _expand(
    value: str, pos: int, environ: Mapping[str, str], *, nested: bool, live: bool
) -> tuple[str, int]:
    """Expand from ``pos`` up to the end (or a closing brace when ``nested``).

    ``live`` is false inside a default that will not be used: missing variables there are
    not errors, as in the shell.
    """
    out: list[str] = []
    n = len(value)
    while pos < n:
        c = value[pos]
        if nested and c == "}":
            return "".join(out), pos
        if c != "$":
            out.append(c)
            pos += 1
            continue
        nxt = value[pos + 1 : pos + 2]
        if nxt == "$":
            out.append("$")
            pos += 2
            continue
        if nxt != "{":
            out.append("$")  # a lone '$' is literal; only ${...} expands
            pos += 1
            continue
        match = _NAME.match(value, pos + 2)
        if match is None:
            raise ConfigError(
                f"invalid ${{...}} reference at character {pos + 1}: expected a variable name "
                "(letters, digits, _); write $$ for a literal $"
            )
        name = match.group()
        pos = match.end()
        found = environ.get(name)
        if value.startswith(":-", pos):
            default, pos = _expand(value, pos + 2, environ, nested=True, live=live and not found)
            expanded = found if found else default
        elif value.startswith("}", pos):
            if found is None and live:
                raise ConfigError(
                    f"environment variable {name} is not set "
                    f"(write ${{{name}:-default}} to give a default)"
                )
            expanded = found or ""
        else:
            raise ConfigError(
                f"invalid reference to {name} at character {pos + 1}: "
                f"expected '}}' or ':-default}}'"
            )
        out.append(expanded)
        pos += 1  # past the closing brace, where both branches above stop
    if nested:
        raise ConfigError("unterminated ${...:-default}: missing '}'")
    return "".join(out), pos


def expand_env(value: str, environ: Mapping[str, str]) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in ``value``; ``$$`` is a literal ``$``.

    A default is used when the variable is unset or empty, and may itself hold references.
    A lone ``$`` not followed by ``{`` or ``$`` is kept as is. Raise ConfigError naming a
    missing variable (never a value: the expansion may be a password).
    """
    return _expand(value, 0, environ, nested=False, live=True)[0]
