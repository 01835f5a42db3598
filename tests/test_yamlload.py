"""The bounded YAML loader: positions, and clean failures for hostile or broken files."""

from __future__ import annotations

import marshal
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import fastjsonschema
import psycopg
import pytest
import yaml
from helpers import write_file
from shop import MV

from dbopt import yamlcache
from dbopt.errors import Problem
from dbopt.yamlload import MAX_FILE_BYTES, load_file, load_text
from dbopt.yamlsyntax import syntax_problem


def messages(problems: list[Problem]) -> list[str]:
    return [str(p) for p in problems]


def test_values_and_positions() -> None:
    doc, problems = load_text(
        "table: users\nindexes:\n  - name: a\n    columns: [x, y]\n", "f.yaml"
    )
    assert problems == []
    assert doc is not None
    assert doc.data == {"table": "users", "indexes": [{"name": "a", "columns": ["x", "y"]}]}
    assert doc.where(("table",)) == (1, 8)
    assert doc.where(("indexes", 0)) == (3, 5)
    assert doc.where(("indexes", 0, "columns", 1)) == (4, 18)
    assert doc.where(("indexes", 0, "name"), key=True) == (3, 5)
    # A path that is not in the document falls back to its nearest parent.
    assert doc.where(("indexes", 0, "where")) == (3, 5)


def test_plain_yaml_scalars_keep_their_types() -> None:
    doc, problems = load_text("a: 1\nb: 1.5\nc: true\nd: null\ne: '1'\nf: =\n", "f.yaml")
    assert problems == []
    assert doc is not None
    assert doc.data == {"a": 1, "b": 1.5, "c": True, "d": None, "e": "1", "f": "="}


def test_keys_are_the_text_written() -> None:
    doc, problems = load_text("null: a\nyes: b\n1: c\n", "f.yaml")
    assert problems == []
    assert doc is not None
    assert doc.data == {"null": "a", "yes": "b", "1": "c"}


def test_duplicate_keys_are_reported_with_both_lines() -> None:
    doc, problems = load_text("table: users\nindexes: []\ntable: orders\n", "f.yaml")
    assert messages(problems) == [
        "f.yaml:3:1: duplicate key 'table' (first given at line 1); remove one of them"
    ]
    assert doc is not None
    assert doc.data["table"] == "users"


def test_duplicate_keys_nested() -> None:
    _, problems = load_text("a:\n  b: 1\n  c: 2\n  b: 3\n", "f.yaml")
    assert messages(problems) == [
        "f.yaml:4:3: duplicate key 'b' (first given at line 2); remove one of them"
    ]


def test_multiple_documents_are_refused() -> None:
    doc, problems = load_text("table: users\n---\ntable: orders\n", "f.yaml")
    assert doc is None
    assert messages(problems) == [
        "f.yaml:3:1: more than one YAML document ('---') in one file; use one file per spec"
    ]


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("a: !!python/object/apply:os.system ['echo pwned']\n", "!!python/object/apply:os.system"),
        ("a: !!python/name:os.system\n", "!!python/name:os.system"),
        ("a: !!python/tuple [1, 2]\n", "!!python/tuple"),
        ("a: !!binary aGVsbG8=\n", "!!binary"),
        ("a: !!set {x}\n", "!!set"),
        ("a: !custom value\n", "!custom"),
    ],
)
def test_tags_are_refused(text: str, shown: str) -> None:
    doc, problems = load_text(text, "f.yaml")
    assert doc is None
    assert messages(problems) == [
        f"f.yaml:1:4: the tag '{shown}' is not allowed: dbopt reads plain YAML only (strings, "
        "numbers, true/false, lists and mappings); remove the tag"
    ]


def test_a_tagged_key_is_refused() -> None:
    doc, problems = load_text("? !!python/name:os.system\n: 1\n", "f.yaml")
    assert doc is None
    assert len(problems) == 1
    assert "the tag '!!python/name:os.system' is not allowed" in problems[0].message


def test_aliases_and_merge_keys_work() -> None:
    doc, problems = load_text("base: &b {x: 1}\nc:\n  <<: *b\n  y: 2\nd: *b\n", "f.yaml")
    assert problems == []
    assert doc is not None
    assert doc.data["c"] == {"x": 1, "y": 2}
    assert doc.data["d"] == {"x": 1}


BOMB_MESSAGE = (
    "f.yaml:1:1: the document expands to more than 100000 values (an alias bomb or a "
    "recursive alias?); write the values out or split the file"
)


def test_alias_bomb_fails_cleanly_and_fast() -> None:
    # "Billion laughs": nine levels of nine aliases would expand to 9**9 values.
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, 9):
        refs = ",".join([f"*a{level - 1}"] * 9)
        lines.append(f"a{level}: &a{level} [{refs}]")
    started = time.monotonic()
    doc, problems = load_text("\n".join(lines) + "\n", "f.yaml")
    assert time.monotonic() - started < 5
    assert doc is None
    assert messages(problems) == [BOMB_MESSAGE]


def test_recursive_alias_fails_cleanly() -> None:
    doc, problems = load_text("a: &a [*a]\n", "f.yaml")
    assert doc is None
    assert messages(problems) == [BOMB_MESSAGE]


def test_node_limit_is_a_parameter() -> None:
    text = "a: [1, 2, 3, 4, 5]\n"
    assert load_text(text, "f.yaml", max_nodes=7)[1] == []
    doc, problems = load_text(text, "f.yaml", max_nodes=6)
    assert doc is None
    assert problems[0].message.startswith("the document expands to more than 6 values")


INDENT = (
    "check its indentation (the keys of one mapping line up; what belongs to a key is "
    "indented under it)"
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "table: users\nindexes:\n  - name: a\n   columns: [a]\n",
            "4:4: invalid YAML: this line is indented differently from the lines above it: "
            + INDENT,
            id="key indented less than its neighbours",
        ),
        pytest.param(
            "a:\n  b: 1\n c: 2\n",
            "3:2: invalid YAML: this line is indented differently from the lines above it: "
            + INDENT,
            id="key between two indentation levels",
        ),
        pytest.param(
            "indexes:\n  - name: a\n    columns: [a]\n - name: b\n",
            "4:2: invalid YAML: this line is indented differently from the lines above it: "
            + INDENT,
            id="list item indented less than the one above",
        ),
        pytest.param(
            "table: users\nindexes:\n  - name: a\n     columns: [a]\n",
            "4:6: invalid YAML: this line is indented differently from the lines above it, so "
            f"'columns:' is read as more text of the value on line 3: {INDENT}",
            id="key indented more than its neighbours",
        ),
        pytest.param(
            "table: users\n  indexes: []\n",
            "2:3: invalid YAML: this line is indented differently from the lines above it, so "
            f"'indexes:' is read as more text of the value on line 1: {INDENT}",
            id="top-level key indented",
        ),
        pytest.param(
            "a:\n\tb: 1\n",
            "2:1: invalid YAML: a tab is used for indentation: YAML indents with spaces only; "
            "replace the tab with spaces",
            id="tab indentation",
        ),
        pytest.param(
            "a:\n  -\tb\n",
            "2:4: invalid YAML: a tab separates the parts of this line: YAML allows only spaces "
            "there; replace the tab with a space",
            id="tab after a dash",
        ),
        pytest.param(
            'table: users\nindexes:\n  - name: "a\n    columns: [a]\n',
            '3:11: invalid YAML: the quoted value that starts here with " is never closed: add '
            'the closing " (the file ends at line 4 without it)',
            id="unclosed double quote",
        ),
        pytest.param(
            "reason: 'it is fast\n",
            "1:9: invalid YAML: the quoted value that starts here with ' is never closed: add the "
            "closing ' (the file ends at line 1 without it)",
            id="unclosed single quote",
        ),
        pytest.param(
            'a: "x\n---\n"\n',
            '1:4: invalid YAML: the quoted value that starts here with " is not closed before '
            "the '---' on line 2: add the closing \"",
            id="quote open across a document separator",
        ),
        pytest.param(
            "table: users\nindexes: [a\n",
            "2:10: invalid YAML: the list opened here with '[' is never closed: add the missing "
            "']' (the file ends at line 2 without it)",
            id="unclosed bracket at the end",
        ),
        pytest.param(
            "table: users\ncolumns: [a, b\nqueries: []\n",
            "2:10: invalid YAML: the list opened here with '[' is not closed before line 3: add "
            "the missing ']'",
            id="unclosed bracket before the next key",
        ),
        pytest.param(
            "table: users\nwith: {fillfactor: 90\nindexes: []\n",
            "2:7: invalid YAML: the mapping opened here with '{' is not closed before line 3: "
            "add the missing '}'",
            id="unclosed brace",
        ),
        pytest.param(
            "a: {b: [1, 2}\n",
            "1:13: invalid YAML: the list opened with '[' at line 1 is closed with '}': close it "
            "with ']'",
            id="bracket closed by a brace",
        ),
        pytest.param(
            "a: [b: c: d]\n",
            "1:9: invalid YAML: ':' inside [...]: separate the items with ',', or quote the item "
            "that holds it",
            id="colon inside a flow list",
        ),
        pytest.param(
            "table: users\nindexes:\n  - name: a\n    where: status: open\n",
            "4:18: invalid YAML: the value of 'where' contains ': ', which YAML reads as the "
            "start of another key: a value containing ': ' must be quoted, e.g. "
            'where: "status: open"',
            id="colon in an unquoted value",
        ),
        pytest.param(
            "reason: 'fast': really\n",
            "1:15: invalid YAML: text follows the closing quote of the value of 'reason': put "
            "the whole value inside the quotes",
            id="colon after a quoted value",
        ),
        pytest.param(
            'reason: "fast" really\n',
            '1:16: invalid YAML: text follows the closing quote of a value: a " inside a '
            '"-quoted value is written \\", or quote the value with \' instead',
            id="text after a quoted value",
        ),
        pytest.param(
            "where: 'it's'\n",
            "1:12: invalid YAML: text follows the closing quote of a value: a ' inside a "
            "'-quoted value is written twice ('it''s'), or quote the value with \" instead",
            id="a quote inside a single-quoted value",
        ),
        pytest.param(
            "table: users\nindexes: []\n- name: a\n",
            "3:1: invalid YAML: a '- ' list item among the 'key: value' lines of the mapping "
            "that starts at line 1: indent the item under the key it belongs to, or remove the '-'",
            id="list item in a mapping",
        ),
        pytest.param(
            "- a\nb: 1\n",
            "2:1: invalid YAML: a 'key: value' line among the '- ' items of the list that starts "
            "at line 1: start it with '- ', or check its indentation",
            id="key in a list",
        ),
        pytest.param(
            "columns: - a\n",
            "1:10: invalid YAML: a '- ' list item cannot start on the same line as its key: put "
            "each '- ' item on a line of its own below the key, indented; or quote the value if "
            "the '-' is text",
            id="list item after its key",
        ),
        pytest.param(
            "table: users\nindexes:\n  - name: a\n    columns\n    where: x\n",
            "4:5: invalid YAML: 'columns' stands where a key is expected but has no ':' after it: "
            "write 'key: value', or indent it under the key it belongs to",
            id="key without a colon",
        ),
        pytest.param(
            "a: *nope\n",
            "1:4: invalid YAML: '*nope' refers to an anchor '&nope' that is not defined above it: "
            "define '&nope' first, or quote the value if the '*' is part of the text",
            id="undefined alias",
        ),
        pytest.param(
            "a: &x 1\nb: &x 2\n",
            "2:4: invalid YAML: the anchor '&x' is defined twice (first at line 1): rename one of "
            "them",
            id="anchor defined twice",
        ),
        pytest.param(
            "a: & 1\n",
            "1:4: invalid YAML: '&' at the start of a value begins an anchor (&name) in YAML: "
            "quote the value if the '&' is part of the text",
            id="ampersand at the start of a value",
        ),
        pytest.param(
            "a: @admin\n",
            "1:4: invalid YAML: a value cannot start with '@' (YAML reserves it): quote the value",
            id="reserved character",
        ),
        pytest.param(
            "where: \"name ~ '\\d'\"\n",
            "1:17: invalid YAML: '\\d' is not an escape YAML knows in a double-quoted value: "
            "write '\\\\' for a backslash, or use single quotes, where '\\' is plain text",
            id="unknown escape",
        ),
        pytest.param(
            "query: | SELECT 1\n",
            "1:10: invalid YAML: after '|' or '>' only an indentation digit, '+' or '-' may "
            "follow on the same line: put the text on the lines below, indented; or quote the "
            "value",
            id="text after a block scalar indicator",
        ),
        pytest.param(
            "a: [1, 2]]\n",
            "1:10: invalid YAML: a ']' that closes nothing: remove it, or quote the value if it "
            "is text",
            id="stray closing bracket",
        ),
        pytest.param(
            "a: }\n",
            "1:4: invalid YAML: '}' where a value was expected: quote the value if it is text",
            id="closing brace as a value",
        ),
        pytest.param(
            "a: [\n",
            "2:1: invalid YAML: the file ends where a value was expected: complete the value, or "
            "close the '[' or '{' that is still open",
            id="file ends inside a list",
        ),
        pytest.param(
            "a: 1\n...\nb: 2\n",
            "3:1: invalid YAML: text after the end of the document ('...'): remove it, or the "
            "'...'",
            id="text after the document end",
        ),
    ],
)
def test_syntax_errors_say_what_to_do(text: str, message: str) -> None:
    doc, problems = load_text(text, "f.yaml")
    assert doc is None
    assert messages(problems) == [f"f.yaml:{message}"]
    assert "<" not in problems[0].message  # never PyYAML's token names


def test_an_unknown_pyyaml_message_keeps_its_place_without_token_names() -> None:
    start = yaml.Mark("f.yaml", 0, 0, 0, None, None)
    found = yaml.Mark("f.yaml", 0, 2, 3, None, None)
    error = yaml.parser.ParserError(
        "while parsing a block mapping", start, "expected <block end>, but found '<anchor>'", found
    )
    assert str(syntax_problem(error, "f.yaml", "a:\n  b: 1\n   &x c\n")) == (
        "f.yaml:3:4: invalid YAML: expected the end of the indented block, but found an anchor "
        "(&name) (in a block mapping that starts at line 1): check the indentation and quoting "
        "of this line"
    )


def test_an_impossible_date_is_a_problem_not_a_crash() -> None:
    doc, problems = load_text("table: users\nreason: 2024-13-01\n", "f.yaml")
    assert messages(problems) == [
        "f.yaml:2:9: '2024-13-01' reads as a date or time in YAML, but is not a valid one "
        "(month must be in 1..12): correct it, or quote it to make it a string"
    ]
    assert doc is not None
    assert doc.data == {"table": "users", "reason": "2024-13-01"}


def test_control_character_is_located_on_one_line() -> None:
    _, problems = load_text("a: 1\nb: x\x00y\n", "f.yaml")
    assert messages(problems) == [
        "f.yaml:2:5: invalid YAML: the control character #x0000 is not allowed; remove it"
    ]


def test_a_non_string_key_is_refused() -> None:
    doc, problems = load_text("? [1, 2]\n: x\nb: 1\n", "f.yaml")
    assert messages(problems) == ["f.yaml:1:3: a mapping key must be a plain string"]
    assert doc is not None
    assert doc.data == {"b": 1}


@pytest.mark.parametrize("text", ["", "# only a comment\n", "\n\n"])
def test_empty_file(text: str) -> None:
    doc, problems = load_text(text, "f.yaml")
    assert doc is None
    assert messages(problems) == ["f.yaml:1:1: the file is empty; remove it or add a spec"]


def test_load_file_reads_utf8_with_display_name(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    path.write_text("table: café\n", encoding="utf-8")
    doc, problems = load_file(path, display="indexes/users.yaml")
    assert problems == []
    assert doc is not None
    assert doc.file == "indexes/users.yaml"
    assert doc.data == {"table": "café"}


def test_load_file_accepts_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    path.write_bytes(b"\xef\xbb\xbftable: users\n")
    doc, problems = load_file(path, display="u.yaml")
    assert problems == []
    assert doc is not None
    assert doc.data == {"table": "users"}


def test_non_utf8_file_is_located(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    path.write_bytes("table: users\nreason: café ".encode() + "café\n".encode("latin-1"))
    doc, problems = load_file(path, display="u.yaml")
    assert doc is None
    assert messages(problems) == [
        "u.yaml:2:17: the file is not UTF-8 (byte 0xe9: invalid continuation byte); "
        "save it as UTF-8"
    ]


def test_huge_file_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"table: users\n" + b"#" * MAX_FILE_BYTES)
    doc, problems = load_file(path, display="big.yaml")
    assert doc is None
    assert messages(problems) == [
        f"big.yaml:1:1: the file is {MAX_FILE_BYTES + 13} bytes, more than the "
        f"{MAX_FILE_BYTES} allowed; split it into several files"
    ]


def test_size_limit_is_a_parameter(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_bytes(b"a: 1\n")
    assert load_file(path, max_bytes=5)[1] == []
    assert load_file(path, max_bytes=4)[1][0].message.startswith("the file is 5 bytes")


def test_unreadable_file(tmp_path: Path) -> None:
    doc, problems = load_file(tmp_path / "missing.yaml", display="missing.yaml")
    assert doc is None
    assert messages(problems) == [
        "missing.yaml:1:1: cannot read the file: No such file or directory"
    ]


# --- the parse cache (dbopt.yamlcache) -------------------------------------------------------


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache directory of this test's own, with the cache on."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("DBOPT_CACHE_DIR", str(folder))
    monkeypatch.delenv("DBOPT_NO_CACHE", raising=False)
    return folder


def test_a_file_is_parsed_once_per_content_and_read_back_the_same(
    tmp_path: Path, cache: Path
) -> None:
    spec = tmp_path / "t.yaml"
    spec.write_text("table: t\nindexes:\n  - {name: t_a, columns: [a], unique: yes}\n")
    first, problems = load_file(spec)
    assert problems == [] and first is not None
    (entry,) = list((cache / "yaml-1").iterdir())
    second, problems = load_file(spec, display="other/t.yaml")
    assert problems == [] and second is not None
    assert (second.data, second.positions, second.key_positions) == (
        first.data,
        first.positions,
        first.key_positions,
    )
    assert second.file == "other/t.yaml"  # the caller's name, not the cached one's
    # A damaged entry is parsed again, never trusted.
    entry.write_bytes(b"\x00garbage")
    third, problems = load_file(spec)
    assert problems == [] and third is not None and third.data == first.data
    # Changed bytes are a new entry.
    spec.write_text("table: t\nindexes: []\n")
    fourth, _ = load_file(spec)
    assert fourth is not None and fourth.data == {"table": "t", "indexes": []}
    assert len(list((cache / "yaml-1").iterdir())) == 2


def test_a_kept_parse_is_read_without_loading_pyyaml(tmp_path: Path, cache: Path) -> None:
    """A second process reading the same bytes takes the kept parse: PyYAML is not even
    loaded (most of what a small command's start-up would spend on YAML); a file whose parse
    is not kept is parsed, with PyYAML."""
    spec = tmp_path / "t.yaml"
    spec.write_text("table: t\nindexes:\n  - {name: t_a, columns: [a]}\n")
    other = tmp_path / "u.yaml"
    other.write_text("table: u\nindexes: []\n")
    script = (
        "import sys; from pathlib import Path; from dbopt.yamlload import load_file; "
        "doc, problems = load_file(Path(sys.argv[1])); assert doc is not None and not problems; "
        "print(doc.data['table'], 'yaml' in sys.modules)"
    )

    def load(path: Path) -> str:
        run = subprocess.run(
            [sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True
        )
        return run.stdout.strip()

    assert load(spec) == "t True"  # parsed, and kept
    assert load(spec) == "t False"  # read back: no PyYAML
    assert load(other) == "u True"


_RENDER = (
    "import sys; from dbopt.sqltext import SqlTextError, check_query, render_expression; "
    "print(render_expression(sys.argv[1]), "
    "check_query('SELECT 1 FROM t WHERE a = %(a)s', with_placeholders=True).placeholders, "
    "'pglast' in sys.modules)"
)


def _render(expression: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _RENDER, expression], capture_output=True, text=True, check=False
    )


def test_kept_renderings_spare_the_next_command_pglast(cache: Path) -> None:
    """What pglast made of a spec's SQL text is kept: the next command gets the same text
    without loading pglast (about 35 ms to load); a text pglast refuses is never kept (it is
    refused again, with its reason); a damaged file is not trusted."""
    first = _render("LOWER( email )")
    assert first.stdout.strip() == "lower(email) ('a',) True", first.stderr
    again = _render("LOWER( email )")
    assert again.stdout.strip() == "lower(email) ('a',) False", again.stderr
    for _ in range(2):  # refused, and refused again: a refusal is never kept
        refused = _render("lower(email) FROM users")
        assert refused.returncode == 1 and "SqlTextError" in refused.stderr
        assert "must be a single expression" in refused.stderr
    kept = sorted((cache / "kept-1").iterdir())
    assert {p.name.split("-")[0] for p in kept} == {"render_expression", "check_query"}
    for entry in kept:
        entry.write_bytes(b"\x00garbage")
    damaged = _render("LOWER( email )")
    assert damaged.stdout.strip() == "lower(email) ('a',) True", damaged.stderr


def test_kept_renderings_are_not_read_where_another_user_could_write(cache: Path) -> None:
    assert _render("upper(a)").stdout.strip() == "upper(a) ('a',) True"
    assert _render("upper(a)").stdout.strip() == "upper(a) ('a',) False"
    for entry in (cache / "kept-1").iterdir():
        entry.chmod(0o666)  # anyone could have written what it holds: not read
    assert _render("upper(a)").stdout.strip() == "upper(a) ('a',) True"
    (cache / "kept-1").chmod(0o777)  # nor anything in a folder anyone may write to
    assert _render("upper(a)").stdout.strip() == "upper(a) ('a',) True"


def test_a_full_store_keeps_what_the_command_used_and_old_versions_go(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(yamlcache, "KEPT_MAX", 2)
    calls: list[str] = []

    def upper(text: str) -> str:
        calls.append(text)
        return text.upper()

    first = yamlcache.kept("test_upper", "pglast")(upper)
    assert [first("a"), first("b"), first("a")] == ["A", "B", "A"]
    assert calls == ["a", "b"]
    assert first("c") == "C"  # full: what this command used (a, b) is still two: afresh
    assert first("c") == "C" and calls == ["a", "b", "c"]
    assert first("a") == "A" and calls == ["a", "b", "c", "a"]
    stale = cache / "kept-1" / "test_upper-0123"  # another version's file
    stale.write_bytes(b"")
    first.kept.save()  # type: ignore[attr-defined]
    assert not stale.exists()
    calls.clear()
    second = yamlcache.kept("test_upper", "pglast")(upper)  # the next command
    assert [second("c"), second("a")] == ["C", "A"] and calls == []
    assert second("b") == "B" and calls == ["b"]


def test_a_kept_file_holding_anything_but_plain_values_is_not_used(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def upper(text: str) -> str:
        calls.append(text)
        return text.upper()

    first = yamlcache.kept("test_shape", "pglast")(upper)
    assert first("a") == "A"
    first.kept.save()  # type: ignore[attr-defined]
    (entry,) = (cache / "kept-1").glob("test_shape-*")
    for planted in ({("a",): ["A"]}, {("a",): {"x": "A"}}, {"a": "A"}, {("a",): b"A"}):
        entry.write_bytes(marshal.dumps(planted))
        again = yamlcache.kept("test_shape", "pglast")(upper)
        calls.clear()
        assert again("a") == "A" and calls == ["a"], planted  # computed, not read
    entry.write_bytes(marshal.dumps({("a",): "planted"}))
    trusted = yamlcache.kept("test_shape", "pglast")(upper)
    calls.clear()
    assert trusted("a") == "planted" and calls == []  # the same file, plain: read


def test_a_second_apply_loads_no_pglast(shop: Path, conn: psycopg.Connection[Any]) -> None:
    """What pglast made of the specs (the expression of a partial index, a view's query and
    the names it reads, the SQL laid out for rollback) is kept: the next apply, with the same
    specs, does not load pglast at all."""
    write_file(shop, "views/mv_customers.yaml", MV)
    env = {**os.environ, "DBOPT_CACHE_DIR": str(shop / "cache")}
    env.pop("DBOPT_NO_CACHE", None)
    script = (
        "import sys; from dbopt.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as exc:\n    code = exc.code\n"
        "print('exit', code, 'pglast' in sys.modules)"
    )

    def dbopt(*args: str) -> str:
        run = subprocess.run(
            [sys.executable, "-c", script, *args],
            cwd=shop,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        return run.stdout.strip().splitlines()[-1]

    assert dbopt("apply", "--env", "test", "--yes") == "exit 0 True"
    assert dbopt("rollback", "--env", "test", "--last", "--yes").startswith("exit 0")
    assert conn.execute("SELECT to_regclass('idx_orders_status')").fetchone() == (None,)
    assert dbopt("apply", "--env", "test", "--yes") == "exit 0 False"
    assert conn.execute("SELECT to_regclass('idx_orders_status')").fetchone() != (None,)


def test_view_names_are_read_without_their_ctes_resolved() -> None:
    from dbopt.livecheck import _names_in

    relations, ctes = _names_in(
        "WITH v AS (SELECT 1 AS a) SELECT * FROM v, s.w JOIN x USING (a) WHERE a IN "
        "(SELECT a FROM y)"
    )
    assert sorted(relations, key=str) == sorted(
        [(None, "v"), ("s", "w"), (None, "x"), (None, "y")], key=str
    )
    assert ctes == ("v",)
    assert _names_in("SELECT FROM WHERE") == ((), ())  # the query check reports it


def test_the_cache_is_not_used_where_others_could_write_or_when_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = tmp_path / "t.yaml"
    spec.write_text("table: t\n")
    shared = tmp_path / "shared"
    (shared / "yaml-1").mkdir(parents=True)
    (shared / "yaml-1").chmod(0o777)
    monkeypatch.setenv("DBOPT_CACHE_DIR", str(shared))
    monkeypatch.delenv("DBOPT_NO_CACHE", raising=False)
    assert load_file(spec)[0] is not None
    assert list((shared / "yaml-1").iterdir()) == []  # another user could have written it
    monkeypatch.setenv("DBOPT_CACHE_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("DBOPT_NO_CACHE", "1")
    assert load_file(spec)[0] is not None
    assert not (tmp_path / "mine").exists()
    # A file whose values are not plain (a date) is parsed every time, never kept.
    monkeypatch.delenv("DBOPT_NO_CACHE")
    spec.write_text("table: t\nsince: 2024-01-31\n")
    assert load_file(spec)[0] is not None
    assert list((tmp_path / "mine" / "yaml-1").iterdir()) == []


def test_the_schema_checks_are_compiled_once_and_a_damaged_entry_compiled_again(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dbopt import docvalidate
    from dbopt.schema import INDEX_FILE

    good = {"table": "t", "indexes": [{"name": "t_a", "columns": ["a"]}]}
    bad = {"table": "t", "indexes": [{"name": "t_a", "columns": "a"}]}
    check = docvalidate._fast_check(INDEX_FILE)
    (entry,) = list((cache / "code-1").iterdir())
    kept = entry.read_bytes()

    # Read back, not generated again: the same verdicts as the freshly compiled check.
    def no_source(*_args: Any, **_kwargs: Any) -> str:
        raise AssertionError("generated again: the kept code was not used")

    with monkeypatch.context() as patched:
        patched.setattr(fastjsonschema, "compile_to_code", no_source)
        again = docvalidate._fast_check(INDEX_FILE)
    assert list((cache / "code-1").iterdir()) == [entry] and entry.read_bytes() == kept
    for validate in (check, again):
        validate(good)
        with pytest.raises(Exception, match="must be array"):
            validate(bad)
    # A damaged entry is compiled again (and replaced), never run.
    entry.write_bytes(b"\x00garbage")
    repaired = docvalidate._fast_check(INDEX_FILE)
    repaired(good)
    assert entry.read_bytes() == kept
    # Kept code another user could have written is never run: an entry others may write,
    # an entry that is a link (here to a good copy), a folder under a directory others may
    # write. Each is compiled again.
    generated: list[int] = []
    real = fastjsonschema.compile_to_code

    def counted(*args: Any, **kwargs: Any) -> str:
        generated.append(1)
        return str(real(*args, **kwargs))

    copy = tmp_path / "copy"
    copy.write_bytes(kept)
    with monkeypatch.context() as patched:
        patched.setattr(fastjsonschema, "compile_to_code", counted)
        entry.chmod(0o666)
        docvalidate._fast_check(INDEX_FILE)(good)
        assert len(generated) == 1 and entry.stat().st_mode & 0o077 == 0
        entry.unlink()
        entry.symlink_to(copy)
        docvalidate._fast_check(INDEX_FILE)(good)
        assert len(generated) == 2 and not entry.is_symlink()
        open_parent = tmp_path / "open"
        open_parent.mkdir(mode=0o777)
        open_parent.chmod(0o777)
        patched.setenv("DBOPT_CACHE_DIR", str(open_parent / "cache"))
        docvalidate._fast_check(INDEX_FILE)(good)
        docvalidate._fast_check(INDEX_FILE)(good)
        assert len(generated) == 4
    # Where another user could write, nothing is read or kept.
    shared = tmp_path / "shared"
    (shared / "code-1").mkdir(parents=True)
    (shared / "code-1").chmod(0o777)
    monkeypatch.setenv("DBOPT_CACHE_DIR", str(shared))
    docvalidate._fast_check(INDEX_FILE)(good)
    assert list((shared / "code-1").iterdir()) == []
