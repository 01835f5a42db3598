"""Shell completion through Click's protocol: what bash, zsh and fish get when Tab is pressed.

Each test sets the variables the shell's completion function sets (``_DBOPT_COMPLETE``,
``COMP_WORDS``, ``COMP_CWORD``) and reads what dbopt answers, as the shell would. Half-written
files (the usual state of a file while its author presses Tab) must never make dbopt answer
with a traceback: ``complete`` asserts exit code 0 and nothing on stderr for every request.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import project, write_file

from dbopt.cli import completion, main

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
    assert result.exception is None, repr(result.exception)
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


#: Half-written spec files: values of the wrong type where names are read.
BROKEN_SPECS = [
    "table: visits\nindexes: 5\n",
    "table: visits\nindexes: [5, null, {name: 7}, {name: [a]}]\n",
    "table: {schema: x}\nindexes: {name: y}\n",
    "name: [mv]\nquery: SELECT 1\nschema: 5\n",
    "name: 5\nquery: {a: 1}\nindexes: true\n",
    "table: visits\ncreated: 2024-13-45\n",  # YAML resolves a date, which cannot be built
    "- table: visits\n",
    "42\n",
    "",
]


@pytest.mark.parametrize("text", BROKEN_SPECS)
def test_a_half_written_spec_offers_the_other_names_never_a_traceback(
    tmp_path: Path, text: str
) -> None:
    write_file(tmp_path, "indexes/broken.yaml", text)
    assert bash("dbopt plan --index visits_") == ["visits_barber", "visits_created"]
    assert bash("dbopt rollback --index mv_") == ["mv_daily", "mv_daily_x"]
    assert bash("dbopt refresh-views --view ") == ["mv_daily"]


#: Broken dbopt.yaml files: no environment, no spec folder and no target can be read from them.
BROKEN_CONFIGS = [
    "environments: 5\n",
    "environments: [staging, production]\n",
    "environments: {staging: 5, tenants: {targets: 5}}\n",
    "environments: {tenants: {targets: [5, null, {dsn: 7}, {name: [x]}, [a]]}}\n",
    "environments: {tenants: {targets: ['host=h dbname=${DBOPT_UNSET_FOR_TEST}']}}\n",
    "specs: 5\n",
    "specs: [1, {a: b}]\n",
    "environments: {staging: {dsn: 2024-13-45}}\n",
    "[unclosed\n",
    "just text\n",
]


@pytest.mark.parametrize("text", BROKEN_CONFIGS)
def test_a_broken_dbopt_yaml_offers_nothing_from_it_never_a_traceback(
    tmp_path: Path, text: str
) -> None:
    write_file(tmp_path, "dbopt.yaml", text)
    for line in ("dbopt plan --env ", "dbopt apply --env tenants --target "):
        offered = bash(line)
        assert offered in ([], ["staging"], ["tenants"], ["staging", "tenants"]), offered
    assert bash("dbopt status --env tenants --target ") == []
    assert bash("dbopt plan --index visits_") == ["visits_barber", "visits_created"]


def test_a_completer_that_raises_offers_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> list[tuple[str, str, str]]:
        raise RuntimeError("a bug while Tab is pressed")

    monkeypatch.setattr(completion, "spec_names", broken)
    monkeypatch.setattr(completion, "environment_names", broken)
    monkeypatch.setattr(completion, "target_names", broken)
    assert bash("dbopt plan --index ") == []
    assert bash("dbopt refresh-views --view ") == []
    assert bash("dbopt plan --env ") == []
    assert bash("dbopt plan --env tenants --target ") == []


def test_rollback_index_names_come_from_the_spec_files() -> None:
    assert bash("dbopt rollback --index visits_") == ["visits_barber", "visits_created"]
    assert bash("dbopt rollback --env staging --index sales.visits_c") == ["sales.visits_created"]


def test_target_names_come_from_the_fleet_environment_given_earlier(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DBOPT_TEST_REGION_HOST", "db-us.example.com")
    monkeypatch.delenv("DBOPT_UNSET_FOR_TEST", raising=False)
    write_file(
        tmp_path,
        "fleet.yaml",
        """\
        environments:
          regions:
            targets:
              - {name: eu-1, dsn: "postgresql://app:secret@db-eu.example.com/app"}
              - tenants_service
              - "postgresql://app:secret@${DBOPT_TEST_REGION_HOST}/app"
              - "host=db-ap.example.com port=5433 dbname=shop user=app password=secret"
              - "host=db-ap.example.com port=5434 dbname=shop user=app"
              - "host=${DBOPT_UNSET_FOR_TEST} dbname=app"
          single: {dsn: service=one}
        """,
    )
    regions = "dbopt plan --config fleet.yaml --env regions --target "
    assert bash(regions) == [
        "eu-1",
        "tenants_service",
        "db-us.example.com/app",
        "db-ap.example.com:5433/shop",  # two would be db-ap.example.com/shop: the port tells
        "db-ap.example.com:5434/shop",
    ]
    assert bash(regions + "db-ap") == ["db-ap.example.com:5433/shop", "db-ap.example.com:5434/shop"]
    assert bash("dbopt apply --env tenants --target ") == ["db1", "db2"]  # service names
    assert bash("dbopt plan --config fleet.yaml --env single --target ") == []
    assert bash("dbopt plan --target ") == []  # no --env: no fleet
    fish = complete("fish", "dbopt apply --config fleet.yaml --env regions --target eu", "eu")
    assert fish.splitlines() == ["plain,eu-1\tfleet target"]
    zsh = complete("zsh", regions, "7")
    assert "eu-1" in zsh and "secret" not in zsh


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
