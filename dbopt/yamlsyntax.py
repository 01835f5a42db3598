"""PyYAML's syntax errors in words a person understands, located at file:line:column.

PyYAML says what its parser expected ("expected <block end>, but found '<block mapping
start>'"); a DBA needs to hear what is wrong with the text and what to do about it. Each
explainer below recognises one family of PyYAML messages and says where the trouble started
(an unclosed quote: where the quote opened, and the line where the file ran out). Anything
unrecognised still gets its position and a sentence without PyYAML's token names.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from dbopt.errors import Problem

#: PyYAML's token names, as a person would call what was found there.
_TOKENS = {
    "<stream end>": "the end of the file",
    "<stream start>": "the start of the file",
    "<document start>": "'---'",
    "<document end>": "'...'",
    "<block end>": "the end of the indented block",
    "<block mapping start>": "a new indented 'key: value' block",
    "<block sequence start>": "a new indented '- ' list",
    "<block entry>": "a '- ' list item",
    "<flow sequence start>": "'['",
    "<flow sequence end>": "']'",
    "<flow mapping start>": "'{'",
    "<flow mapping end>": "'}'",
    "<flow entry>": "','",
    "<key>": "a key",
    "<value>": "':'",
    "<scalar>": "a value",
    "<alias>": "an alias (*name)",
    "<anchor>": "an anchor (&name)",
    "<tag>": "a tag (!name)",
    "<directive>": "a directive (%...)",
}
_TOKEN = re.compile(r"'?(<[a-z ]+>)'?")
_INDENT = (
    "check its indentation (the keys of one mapping line up; what belongs to a key is "
    "indented under it)"
)

#: 0-based line and column of the place to show, and the sentence.
Explained = tuple[int, int, str]


@dataclass(frozen=True, slots=True)
class _Failure:
    """One PyYAML error, taken apart: its messages, its marks (0-based) and the text."""

    problem: str
    context: str
    line: int
    column: int
    start: Any  # yaml.Mark of the construct being read (PyYAML has no type hints), or None
    text: str

    def source(self, line: int | None = None) -> str:
        """The text of ``line`` (default: the problem's line); '' past the end of the file."""
        lines = self.text.splitlines()
        index = self.line if line is None else line
        return lines[index] if 0 <= index < len(lines) else ""

    def here(self, sentence: str) -> Explained:
        return self.line, self.column, sentence

    def at_start(self, sentence: str) -> Explained:
        return self.start.line, self.start.column, sentence


def _words(message: str) -> str:
    """A PyYAML message with its <token> names replaced by words."""
    return _TOKEN.sub(lambda m: _TOKENS.get(m[1], "something unexpected"), message)


def _shown(token: str) -> str:
    """A token found by the parser, as words: <scalar> as 'a value', ']' as "']'"."""
    return _words(token) if token.startswith("<") else f"'{token}'"


def _quote(value: str) -> str:
    """``value`` as a YAML quoted scalar, to show in a hint."""
    if '"' not in value and "\\" not in value:
        return f'"{value}"'
    return "'" + value.replace("'", "''") + "'"


def _short(value: str, limit: int = 40) -> str:
    return value if len(value) <= limit else value[: limit - 3] + "..."


def _previous_content_line(text: str, line: int) -> int | None:
    """0-based index of the nearest line above ``line`` that holds more than a comment."""
    lines = text.splitlines()
    for i in range(min(line, len(lines)) - 1, -1, -1):
        stripped = lines[i].strip()
        if stripped and not stripped.startswith("#"):
            return i
    return None


# --- the explainers: each returns None for a message that is not its own ------------------


def _tab_or_character(f: _Failure) -> Explained | None:
    found = re.match(r"found character '(.*)' that cannot start any token$", f.problem)
    if found is None:
        return None
    char = found[1]
    if char == "\\t" and not f.source()[: f.column].strip():
        return f.here(
            "a tab is used for indentation: YAML indents with spaces only; "
            "replace the tab with spaces"
        )
    if char == "\\t":
        return f.here(
            "a tab separates the parts of this line: YAML allows only spaces there; "
            "replace the tab with a space"
        )
    return f.here(f"a value cannot start with '{char}' (YAML reserves it): quote the value")


def _colon_in_value(f: _Failure) -> Explained | None:
    if f.problem != "mapping values are not allowed here":
        return None
    source = f.source()
    before = source[: f.column]
    colon = re.search(r":(\s|$)", before)
    if colon is not None:
        # key: some: text -- the value holds ': '.
        key = before[: colon.start()].strip().removeprefix("- ").strip()
        value = source[colon.end() :].strip()
        if value[:1] in ("'", '"'):
            return f.here(
                f"text follows the closing quote of the value of '{key}': put the whole "
                "value inside the quotes"
            )
        return f.here(
            f"the value of '{key}' contains ': ', which YAML reads as the start of another "
            f"key: a value containing ': ' must be quoted, e.g. {key}: {_quote(_short(value, 60))}"
        )
    above = _previous_content_line(f.text, f.line)
    if above is None:
        return f.here("a ':' is not allowed here: quote the value that holds it")
    # A key indented deeper than its neighbours continues the plain value above it.
    return (
        f.line,
        len(source) - len(source.lstrip()),
        f"this line is indented differently from the lines above it, so "
        f"'{_short(before.strip())}:' is read as more text of the value on line {above + 1}: "
        + _INDENT,
    )


def _sequence_here(f: _Failure) -> Explained | None:
    if f.problem != "sequence entries are not allowed here":
        return None
    return f.here(
        "a '- ' list item cannot start on the same line as its key: put each '- ' item on a "
        "line of its own below the key, indented; or quote the value if the '-' is text"
    )


def _last_line(f: _Failure) -> int:
    """The number of the file's last line (PyYAML's end mark is past the final newline)."""
    return max(1, len(f.text.splitlines()))


def _quoted(f: _Failure) -> Explained | None:
    if not f.context.endswith("quoted scalar") or f.start is None:
        return None
    quote = f.source(f.start.line)[f.start.column : f.start.column + 1] or '"'
    if f.problem == "found unexpected end of stream":
        return f.at_start(
            f"the quoted value that starts here with {quote} is never closed: add the closing "
            f"{quote} (the file ends at line {_last_line(f)} without it)"
        )
    if f.problem == "found unexpected document separator":
        return f.at_start(
            f"the quoted value that starts here with {quote} is not closed before the '---' "
            f"on line {f.line + 1}: add the closing {quote}"
        )
    escape = re.match(r"found unknown escape character '(.*)'$", f.problem)
    if escape is not None:
        return (
            f.line,
            max(f.column - 1, 0),  # the backslash
            f"'\\{escape[1]}' is not an escape YAML knows in a double-quoted value: write "
            "'\\\\' for a backslash, or use single quotes, where '\\' is plain text",
        )
    digits = re.match(r"expected escape sequence of (\d+) hexadecimal numbers", f.problem)
    if digits is not None:
        return f.here(
            f"this escape needs {digits[1]} hexadecimal digits in a double-quoted value: "
            "complete it, or use single quotes, where '\\' is plain text"
        )
    return None


def _key_without_colon(f: _Failure) -> Explained | None:
    if f.context != "while scanning a simple key" or f.start is None:
        return None
    word = f.source(f.start.line)[f.start.column :].strip()
    return f.at_start(
        f"'{_short(word)}' stands where a key is expected but has no ':' after it: write "
        "'key: value', or indent it under the key it belongs to"
    )


_INDICATORS = {
    "while scanning an anchor": ("&", "an anchor (&name)"),
    "while scanning an alias": ("*", "an alias (*name)"),
    "while scanning a tag": ("!", "a tag (!name)"),
    "while parsing a tag": ("!", "a tag (!name)"),
    "while scanning a directive": ("%", "a directive (%NAME)"),
}


def _indicator(f: _Failure) -> Explained | None:
    if f.context == "while scanning a block scalar":
        return f.here(
            "after '|' or '>' only an indentation digit, '+' or '-' may follow on the same "
            "line: put the text on the lines below, indented; or quote the value"
        )
    found = _INDICATORS.get(f.context)
    if found is None or f.start is None:
        return None
    char, meaning = found
    return f.at_start(
        f"'{char}' at the start of a value begins {meaning} in YAML: quote the value if "
        f"the '{char}' is part of the text"
    )


def _flow(f: _Failure) -> Explained | None:
    found = re.match(r"expected ',' or '([\]}])', but got '(.*)'$", f.problem)
    if found is None or f.start is None:
        return None
    closer, got = found[1], found[2]
    opener, what = ("[", "list") if closer == "]" else ("{", "mapping")
    if got == "<stream end>":
        return f.at_start(
            f"the {what} opened here with '{opener}' is never closed: add the missing "
            f"'{closer}' (the file ends at line {_last_line(f)} without it)"
        )
    if got in ("]", "}"):
        return f.here(
            f"the {what} opened with '{opener}' at line {f.start.line + 1} is closed with "
            f"'{got}': close it with '{closer}'"
        )
    if f.line != f.start.line:
        return f.at_start(
            f"the {what} opened here with '{opener}' is not closed before line {f.line + 1}: "
            f"add the missing '{closer}'"
        )
    return f.here(
        f"{_shown(got)} inside {opener}...{closer}: separate the items with ',', or quote the "
        "item that holds it"
    )


def _block_end(f: _Failure) -> Explained | None:
    found = re.match(r"expected <block end>, but found '(.*)'$", f.problem)
    if found is None:
        return None
    token = found[1]
    began = f" that starts at line {f.start.line + 1}" if f.start is not None else ""
    in_mapping = f.context == "while parsing a block mapping"
    if token in ("<block mapping start>", "<block sequence start>"):
        return f.here(f"this line is indented differently from the lines above it: {_INDENT}")
    if token == "-" and in_mapping:
        return f.here(
            f"a '- ' list item among the 'key: value' lines of the mapping{began}: indent the "
            "item under the key it belongs to, or remove the '-'"
        )
    if token in ("?", "<scalar>") and not in_mapping:
        return f.here(
            f"a 'key: value' line among the '- ' items of the list{began}: start it with '- ', "
            "or check its indentation"
        )
    if token == "<scalar>":
        closing = f.source()[: f.column].rstrip()[-1:]
        if closing == "'":
            return f.here(
                "text follows the closing quote of a value: a ' inside a '-quoted value is "
                "written twice ('it''s'), or quote the value with \" instead"
            )
        if closing == '"':
            return f.here(
                'text follows the closing quote of a value: a " inside a "-quoted value is '
                "written \\\", or quote the value with ' instead"
            )
        return f.here(f"unexpected text after the value on this line: {_INDENT}")
    if token in ("]", "}"):
        return f.here(
            f"a '{token}' that closes nothing: remove it, or quote the value if it is text"
        )
    if token == ":":
        return f.here("a ':' with no key before it: write 'key: value'")
    return None


def _node_expected(f: _Failure) -> Explained | None:
    found = re.match(r"expected the node content, but found '(.*)'$", f.problem)
    if found is None:
        return None
    if found[1] == "<stream end>":
        return f.here(
            "the file ends where a value was expected: complete the value, or close the '[' "
            "or '{' that is still open"
        )
    return f.here(f"{_shown(found[1])} where a value was expected: quote the value if it is text")


def _alias_or_anchor(f: _Failure) -> Explained | None:
    undefined = re.match(r"found undefined alias '(.*)'$", f.problem)
    if undefined is not None:
        name = undefined[1]
        return f.here(
            f"'*{name}' refers to an anchor '&{name}' that is not defined above it: define "
            f"'&{name}' first, or quote the value if the '*' is part of the text"
        )
    twice = re.match(r"found duplicate anchor '(.*)'", f.context)
    if twice is not None and f.start is not None:
        return f.here(
            f"the anchor '&{twice[1]}' is defined twice (first at line {f.start.line + 1}): "
            "rename one of them"
        )
    return None


def _document(f: _Failure) -> Explained | None:
    if f.problem.startswith("expected '<document start>'"):
        return f.here("text after the end of the document ('...'): remove it, or the '...'")
    if "YAML directive" in f.problem or "incompatible YAML document" in f.problem:
        return f.here(f"{_words(f.problem)}: remove the '%YAML' line")
    tag = re.match(r"found undefined tag handle '(.*)'$", f.problem)
    if tag is not None:
        return f.here(
            f"'{tag[1]}' is not a tag YAML knows: quote the value if the '!' is part of the text"
        )
    return None


def _fallback(f: _Failure) -> Explained:
    """A message no explainer knows: PyYAML's words without its token names."""
    sentence = _words(f.problem or f.context or "the text cannot be read as YAML")
    if f.start is not None and f.start.line != f.line and f.context.startswith("while "):
        what = _words(f.context.removeprefix("while ").split(" ", 1)[-1])
        sentence += f" (in {what} that starts at line {f.start.line + 1})"
    return f.here(f"{sentence}: check the indentation and quoting of this line")


_EXPLAINERS: tuple[Callable[[_Failure], Explained | None], ...] = (
    _tab_or_character,
    _colon_in_value,
    _sequence_here,
    _quoted,
    _key_without_colon,
    _indicator,
    _flow,
    _block_end,
    _node_expected,
    _alias_or_anchor,
    _document,
)


def syntax_problem(exc: yaml.MarkedYAMLError, file: str, text: str) -> Problem:
    """A YAML syntax error as a Problem that says what is wrong and what to do."""
    mark = exc.problem_mark or exc.context_mark
    failure = _Failure(
        problem=str(exc.problem or ""),
        context=str(exc.context or ""),
        line=mark.line if mark else 0,
        column=mark.column if mark else 0,
        start=exc.context_mark,
        text=text,
    )
    for explain in _EXPLAINERS:
        found = explain(failure)
        if found is not None:
            break
    else:
        found = _fallback(failure)
    line, column, sentence = found
    return Problem(file, line + 1, column + 1, f"invalid YAML: {sentence}")
