"""The bounded YAML loader: positions, and clean failures for hostile or broken files."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dbopt.errors import Problem
from dbopt.yamlload import MAX_FILE_BYTES, load_file, load_text


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


def test_syntax_error_is_located() -> None:
    doc, problems = load_text("table: users\nindexes: [a\n", "f.yaml")
    assert doc is None
    assert messages(problems) == [
        "f.yaml:3:1: invalid YAML: expected ',' or ']', but got '<stream end>'"
    ]


def test_tab_indentation_is_located() -> None:
    _, problems = load_text("a:\n\tb: 1\n", "f.yaml")
    assert messages(problems) == [
        "f.yaml:2:1: invalid YAML: found character '\\t' that cannot start any token"
    ]


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
