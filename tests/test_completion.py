"""Shell completion through Click's protocol: what bash, zsh and fish get when Tab is pressed.

Each test sets the variables the shell's completion function sets (``_DBOPT_COMPLETE``,
``COMP_WORDS``, ``COMP_CWORD``) and reads what dbopt answers, as the shell would.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import project

from dbopt.cli import main

FILES = {
    "dbopt.yaml": """\
        environments:
          staging: {dsn: "postgresql://app:pw@db/app"}
          production: {dsn: service=prod, confirm: true}
          tenants:
            targets: [db1, db2]
    """,
    "other.yaml": """\
        environments:
          elsewhere: {dsn: service=x}
    """,
    "indexes/visits.yaml": """\
        table: sales.visits
        indexes:
          - {name: visits_barber, columns: [barber_id]}
          - {name: visits_created, columns: [created_at]}
    """,
    "views/mv_daily.yaml": """\
        name: mv_daily
        query: SELECT 1 AS x
        indexes:
          - {name: mv_daily_x, columns: [x], unique: true}
    """,
}


@pytest.fixture(autouse=True)
def _project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return project(tmp_path, monkeypatch, FILES)


def complete(shell: str, words: str, cword: str) -> str:
    """dbopt's answer to ``shell``'s completion request for the line ``words``."""
    result = CliRunner().invoke(
        main,
        [],
        prog_name="dbopt",
        env={"_DBOPT_COMPLETE": f"{shell}_complete", "COMP_WORDS": words, "COMP_CWORD": cword},
    )
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    return result.stdout


def bash(words: str) -> list[str]:
    """The values bash is offered (``plain,VALUE`` lines); the word being typed is the last."""
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    lines = complete("bash", words, str(cword)).splitlines()
    return [line.split(",", 1)[1] for line in lines if line]  # nothing to offer: one empty line


def test_env_names_come_from_dbopt_yaml_and_from_config_given_earlier() -> None:
    assert bash("dbopt plan --env ") == ["staging", "production", "tenants"]
    assert bash("dbopt apply --env pro") == ["production"]
    assert bash("dbopt plan --config other.yaml --env ") == ["elsewhere"]


def test_index_and_view_names_come_from_the_spec_files() -> None:
    assert bash("dbopt plan --index visits_") == ["visits_barber", "visits_created"]
    assert bash("dbopt apply --index mv") == ["mv_daily", "mv_daily_x"]
    assert bash("dbopt apply --index sales.") == ["sales.visits_barber", "sales.visits_created"]
    assert bash("dbopt refresh-views --view ") == ["mv_daily"]  # views only
    assert bash("dbopt refresh-views --specs indexes --view ") == []


def test_zsh_and_fish_get_values_with_their_help() -> None:
    # zsh: type, value, help, one per line each.
    zsh = complete("zsh", "dbopt plan --env pro", "3").splitlines()
    assert zsh == ["plain", "production", "production-style: asks to confirm"]
    # fish: the partial word is COMP_CWORD itself; "value<TAB>help".
    fish = complete("fish", "dbopt refresh-views --view mv_", "mv_").splitlines()
    assert fish == ["plain,mv_daily\tmaterialized view"]
    tenants = complete("fish", "dbopt status --env ten", "ten").splitlines()
    assert tenants == ["plain,tenants\tfleet of 2 targets"]


def test_a_broken_config_offers_nothing_and_never_fails(tmp_path: Path) -> None:
    (tmp_path / "dbopt.yaml").write_text("environments: [unclosed", encoding="utf-8")
    (tmp_path / "indexes" / "visits.yaml").write_text("table: x\nindexes: {", encoding="utf-8")
    assert bash("dbopt plan --env ") == []
    assert bash("dbopt plan --index ") == ["mv_daily", "mv_daily_x"]


@pytest.mark.parametrize(
    ("shell", "marker"),
    [
        ("bash", "complete -o nosort -F _dbopt_completion dbopt"),
        ("zsh", "#compdef dbopt"),
        ("fish", "complete --no-files --command dbopt"),
    ],
)
def test_each_shell_gets_its_activation_script(shell: str, marker: str) -> None:
    result = CliRunner().invoke(
        main, [], prog_name="dbopt", env={"_DBOPT_COMPLETE": f"{shell}_source"}
    )
    assert result.exit_code == 0
    assert marker in result.stdout
    assert "_DBOPT_COMPLETE" in result.stdout
