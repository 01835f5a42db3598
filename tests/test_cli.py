"""The command line: exit codes, exact messages, JSON output, help, schema (no database)."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from helpers import Write, clean_env, cli
from jsonschema import Draft202012Validator

import dbopt.cli
from dbopt.cli import main
from dbopt.yamlload import load_file

REPO = Path(__file__).resolve().parents[1]


GOOD = {
    "indexes/users.yaml": """\
        table: users
        indexes:
          - name: users_email_lower
            columns: [{expr: "lower(email)"}]
            unique: true
          - name: users_active_created
            columns: [created_at]
            where: deleted_at IS NULL
        queries:
          - name: user_by_email
            sql: SELECT id FROM users WHERE lower(email) = lower(%(email)s)
            params: {email: a@example.com}
            budget_ms: 5
    """,
    "indexes/orders.yaml": """\
        table: orders
        indexes:
          - name: orders_customer_created
            columns: [customer_id, {name: created_at, order: desc}]
    """,
    "views/mv_daily_orders.yaml": """\
        name: mv_daily_orders
        query: SELECT date(created_at) AS day, count(*) AS n FROM orders GROUP BY 1
        indexes:
          - name: mv_daily_orders_day
            columns: [day]
            unique: true
        refresh: {schedule: "*/10 * * * *", mode: concurrent}
        queries:
          - name: orders_today
            sql: SELECT n FROM mv_daily_orders WHERE day = current_date
            budget_ms: 2
    """,
}

BAD = {
    "indexes/users.yaml": """\
        table: users
        indexes:
          - name: users_email
            colums: [email]
          - name: users_active
            columns: [id]
            where: "x = 1); DROP TABLE users; --"
    """,
    "views/mv.yaml": """\
        name: mv
        query: SELECT 1 AS x
        refresh: {mode: concurrent}
    """,
}

BAD_LINES = [
    "indexes/users.yaml:4:5: indexes[0]: unknown key 'colums'; did you mean 'columns'?",
    "indexes/users.yaml:7:12: indexes[1].where: the predicate is not valid: syntax error at or "
    "near \")\" (near '); DROP TABLE users;')",
    "views/mv.yaml:3:17: refresh.mode: REFRESH MATERIALIZED VIEW CONCURRENTLY needs a unique "
    "index on plain columns (no expression, no WHERE): add one under indexes, or use mode: auto",
]


# --- validate --------------------------------------------------------------------------


def test_validate_ok(write: Write) -> None:
    write(**GOOD)
    result = cli("validate")
    assert result.exit_code == 0, result.output
    assert result.stdout == ("ok: 3 files, 4 indexes, 1 materialized views, 2 budgeted queries\n")
    assert result.stderr == ""


def test_validate_ok_json(write: Write) -> None:
    write(**GOOD)
    result = cli("validate", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "ok": True,
        "files": 3,
        "indexes": 4,
        "views": 1,
        "queries": 2,
        "notes": [],
    }


def test_validate_bad_spec_exits_2_with_every_problem(write: Write) -> None:
    write(**BAD)
    result = cli("validate")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        *BAD_LINES,
        "error: 3 problems in the specs; nothing was run",
    ]


def test_validate_bad_spec_json(write: Write) -> None:
    write(**BAD)
    result = cli("validate", "--format", "json")
    assert result.exit_code == 2
    document = json.loads(result.stdout)
    assert document["ok"] is False
    assert document["error"] == "3 problems in the specs; nothing was run"
    assert [
        f"{p['file']}:{p['line']}:{p['column']}: {p['message']}" for p in document["problems"]
    ] == BAD_LINES
    # People still get the problems on stderr.
    assert result.stderr.splitlines()[:3] == BAD_LINES


def test_validate_specs_option(write: Write) -> None:
    write(**GOOD, **{"more/extra.yaml": "table: extra\n"})
    result = cli("validate", "--specs", "indexes", "--specs", "more")
    assert result.exit_code == 0, result.output
    assert result.stdout == "ok: 3 files, 3 indexes, 0 materialized views, 1 budgeted queries\n"


def test_validate_missing_specs_directory(write: Write) -> None:
    write(**GOOD)
    result = cli("validate", "--specs", "nope")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "nope:1:1: no such directory: check --specs",
        "error: 1 problem in the specs; nothing was run",
    ]


def test_validate_without_specs(write: Write) -> None:
    write(**{"README.md": "empty project"})
    result = cli("validate")
    assert result.exit_code == 2
    assert result.stderr == (
        "error: no spec files (*.yaml) found in indexes, views: write indexes/<table>.yaml or "
        "views/<name>.yaml, or point --specs at the directory that holds them\n"
    )


def test_validate_uses_the_spec_dirs_of_the_config(write: Write) -> None:
    write(
        **{
            "dbopt.yaml": "specs: [db/specs]\n",
            "db/specs/users.yaml": "table: users\nindexes:\n  - {name: u, columns: [a]}\n",
        }
    )
    result = cli("validate")
    assert result.exit_code == 0, result.output
    assert result.stdout == "ok: 1 files, 1 indexes, 0 materialized views, 0 budgeted queries\n"


def test_validate_bad_config(write: Write) -> None:
    write(**GOOD, **{"dbopt.yaml": "environments:\n  staging:\n    dns: x\n"})
    result = cli("validate")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "dbopt.yaml:3:5: environments.staging: unknown key 'dns'; did you mean 'dsn'?",
        "error: dbopt.yaml: invalid configuration; nothing was run",
    ]


def test_validate_bad_config_json(write: Write) -> None:
    write(**GOOD, **{"dbopt.yaml": "environments:\n  staging:\n    dns: x\n"})
    result = cli("validate", "--format", "json")
    assert result.exit_code == 2
    assert json.loads(result.stdout) == {
        "ok": False,
        "error": "dbopt.yaml: invalid configuration; nothing was run",
        "problems": [
            {
                "file": "dbopt.yaml",
                "line": 3,
                "column": 5,
                "message": "environments.staging: unknown key 'dns'; did you mean 'dsn'?",
            }
        ],
        "notes": [],
    }


def test_validate_missing_config_file(write: Write) -> None:
    write(**GOOD)
    result = cli("validate", "--config", "ci.yaml")
    assert result.exit_code == 2
    assert result.stderr == "error: ci.yaml: no such config file\n"


def test_validate_unknown_environment(write: Write) -> None:
    write(**GOOD, **{"dbopt.yaml": "environments:\n  production: {dsn: x}\n  staging: {}\n"})
    result = cli("validate", "--env", "prod")
    assert result.exit_code == 2
    assert result.stderr == (
        "error: unknown environment 'prod' (dbopt.yaml); did you mean 'production'?\n"
    )


def test_validate_environment_with_an_unset_variable(
    write: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DBOPT_CLI_TEST_URL", raising=False)
    write(**GOOD, **{"dbopt.yaml": "environments:\n  ci: {dsn: '${DBOPT_CLI_TEST_URL}'}\n"})
    result = cli("validate", "--env", "ci")
    assert result.exit_code == 2
    assert result.stderr == (
        "error: environment 'ci' in dbopt.yaml: environment variable DBOPT_CLI_TEST_URL is not "
        "set (write ${DBOPT_CLI_TEST_URL:-default} to give a default)\n"
    )


def test_validate_malformed_dsn_is_bad_input(write: Write) -> None:
    write(**GOOD)
    result = cli("validate", "--dsn", "host")
    assert result.exit_code == 2
    assert result.stderr == (
        'error: invalid connection string: missing "=" after "..." in connection info string\n'
    )


def test_validate_unreachable_database_exits_3(write: Write) -> None:
    write(**GOOD)
    # Port 1 on the loopback interface: refused at once, no server needed.
    result = cli("validate", "--dsn", "postgresql://nobody:secret@127.0.0.1:1/app")
    assert result.exit_code == 3
    assert result.stderr.startswith("error: could not connect to nobody@127.0.0.1:1/app: ")
    assert "secret" not in result.output


#: A YAML syntax error in one file, schema and SQL errors in another: one run shows them all.
BROKEN = {
    "indexes/orders.yaml": """\
        table: orders
        indexes:
          - name: orders_open
            columns: [id]
            unique: "yes"
            where: "status = 'open'; DROP TABLE orders"
        queries:
          - name: purge
            sql: DELETE FROM orders
            budget_ms: 5
    """,
    "indexes/users.yaml": """\
        table: users
        indexes:
          - name: users_email
            columns: [email]
           where: deleted_at IS NULL
    """,
}

BROKEN_LINES = [
    "indexes/orders.yaml:5:13: indexes[0].unique: expected true or false, got the string 'yes'",
    "indexes/orders.yaml:6:12: indexes[0].where: the predicate is not valid: must be a single "
    "expression, not several statements",
    "indexes/orders.yaml:9:10: queries[0].sql: the query is not valid: must be a read-only "
    "SELECT, not DELETE",
    "indexes/users.yaml:5:4: invalid YAML: this line is indented differently from the lines "
    "above it: check its indentation (the keys of one mapping line up; what belongs to a key "
    "is indented under it)",
    "error: 4 problems in the specs; nothing was run",
]


@pytest.mark.parametrize(
    "command",
    [
        ["validate"],
        ["plan", "--dsn", "postgresql://nobody@127.0.0.1:1/app"],
        ["apply", "--dsn", "postgresql://nobody@127.0.0.1:1/app", "--yes"],
        ["status", "--dsn", "postgresql://nobody@127.0.0.1:1/app"],
        ["verify", "--dsn", "postgresql://nobody@127.0.0.1:1/app"],
    ],
    ids=lambda c: c[0],
)
def test_every_command_that_reads_specs_reports_every_problem_before_connecting(
    write: Write, command: list[str]
) -> None:
    write(**BROKEN)
    result = cli(*command)
    # Exit 2 (bad input), not 3: nothing tried to reach the (unreachable) database.
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == BROKEN_LINES


# --- flags and commands ----------------------------------------------------------------


def test_unknown_flag_exits_2(write: Write) -> None:
    result = cli("validate", "--bogus")
    assert result.exit_code == 2
    assert "No such option" in result.stderr
    assert "--bogus" in result.stderr


def test_bad_choice_exits_2(write: Write) -> None:
    result = cli("validate", "--format", "yaml")
    assert result.exit_code == 2
    assert "Error: Invalid value for '--format'" in result.stderr


def test_unknown_command_exits_2(write: Write) -> None:
    result = cli("valdate")
    assert result.exit_code == 2
    assert "Error: No such command 'valdate'" in result.stderr


def test_version() -> None:
    result = cli("--version")
    assert result.exit_code == 0
    import psycopg

    dbopt_line, psycopg_line, libpq_line = result.stdout.splitlines()
    assert dbopt_line == "dbopt 0.1.0"
    assert psycopg_line == f"psycopg {psycopg.__version__} ({psycopg.pq.__impl__} implementation)"
    major, minor = divmod(psycopg.pq.version(), 10000)
    assert libpq_line == f"libpq {major}.{minor}"


def test_the_console_script_exits_quickly_with_its_output_and_exit_handlers(
    tmp_path: Path,
) -> None:
    """dbopt.cli.run ends the process with os._exit: every byte of output still arrives
    (~400 kB through a pipe), exit handlers still run, and exit codes are the commands' own."""
    big = tmp_path / "indexes"
    big.mkdir()
    (big / "t.yaml").write_text(
        "table: t\nindexes:\n"
        + "".join(f"  - {{name: t_i{i:05}, columns: [c], method: nosuch}}\n" for i in range(3000))
    )
    script = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('exit handler ran', file=sys.stderr))\n"
        "from dbopt.cli import run\n"
        "sys.argv = ['dbopt', *sys.argv[1:]]\n"
        "run()\n"
    )

    def dbopt(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", script, *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env={**os.environ, "DBOPT_NO_CACHE": "1"},
            check=False,
        )

    shown = dbopt("schema")
    assert shown.returncode == 0 and "exit handler ran" in shown.stderr
    json.loads(shown.stdout)  # all of it
    listed = dbopt("validate", "--specs", str(big))
    assert listed.returncode == 2
    problems = [line for line in listed.stderr.splitlines() if "'nosuch' is not one of" in line]
    assert len(problems) == 3000 and problems[-1].startswith("indexes/t.yaml:3002:")
    assert listed.stderr.rstrip().endswith("exit handler ran")
    unknown = dbopt("no-such-command")
    assert unknown.returncode == 2 and "No such command" in unknown.stderr
    # Started with stdout or stderr closed (as some cron wrappers do): the command's own
    # exit code, no traceback.
    for closed, args, expected in ((1, ["schema"], 0), (2, ["validate", "--specs", "nope"], 2)):
        proc = subprocess.run(
            [sys.executable, "-m", "dbopt", *args],
            stdout=subprocess.DEVNULL if closed == 2 else None,
            stderr=subprocess.PIPE if closed == 1 else None,
            cwd=tmp_path,
            preexec_fn=lambda fd=closed: os.close(fd),
            check=False,
        )
        assert proc.returncode == expected, (closed, proc.stderr)


def test_no_command_is_a_stub() -> None:
    """Every command is implemented: none answers "not implemented yet"."""
    source = Path(dbopt.cli.__file__).parent
    for path in source.glob("*.py"):
        assert "not implemented yet" not in path.read_text(), path


def all_commands() -> list[tuple[str, click.Command]]:
    assert isinstance(main, click.Group)
    ctx = click.Context(main)
    found = [(name, main.get_command(ctx, name)) for name in main.list_commands(ctx)]
    return sorted((name, command) for name, command in found if command is not None)


def test_lazy_summaries_match_each_commands_own_help() -> None:
    """`dbopt --help` lists commands without importing them; the summaries must not drift."""
    from dbopt.cli import COMMANDS

    for name, command in all_commands():
        assert COMMANDS[name][2] == command.get_short_help_str(limit=300), name


def test_help_imports_no_database_or_parser_library() -> None:
    """Start-up stays light: `dbopt --help` imports neither psycopg, jsonschema nor pglast."""
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from dbopt.cli import main\n"
        "assert CliRunner().invoke(main, ['--help']).exit_code == 0\n"
        "heavy = [m for m in ('psycopg', 'jsonschema', 'pglast', 'rich') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_expected_commands_exist() -> None:
    names = [name for name, _ in all_commands()]
    for name in [
        "validate",
        "schema",
        "plan",
        "apply",
        "verify",
        "rollback",
        "refresh-views",
        "status",
    ]:
        assert name in names


@pytest.mark.parametrize(("name", "command"), all_commands(), ids=lambda v: getattr(v, "name", v))
def test_every_command_has_help_with_examples(name: str, command: click.Command) -> None:
    # \b keeps click from re-wrapping the examples into one paragraph.
    assert command.help is not None, f"dbopt {name} has no docstring"
    text = inspect.cleandoc(command.help)
    assert "\b\nExamples:\n" in text, f"dbopt {name}: no \\b Examples block"
    summary = text.splitlines()[0]
    assert summary.endswith("."), f"dbopt {name}: the first line should be a one-line summary"
    result = cli(name, "--help")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    start = lines.index("  Examples:")
    examples = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        examples.append(line.strip())
    assert any(e.startswith(f"dbopt {name}") for e in examples), (
        f"dbopt {name}: the examples do not show the command: {examples}"
    )


def test_main_help_lists_commands_examples_and_exit_codes() -> None:
    result = cli("--help")
    assert result.exit_code == 0
    assert "  Examples:\n    dbopt validate\n" in result.stdout
    assert "  Exit codes:\n    0  success\n" in result.stdout
    for name, _ in all_commands():
        assert f"  {name} " in result.stdout


def test_python_dash_m_dbopt_help() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dbopt", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: python -m dbopt [OPTIONS] COMMAND [ARGS]...")


def test_python_dash_m_dbopt_exit_code_for_a_bad_spec(write: Write, tmp_path: Path) -> None:
    write(**BAD)
    env = {k: v for k, v in os.environ.items() if k != "DBOPT_DSN"}
    proc = subprocess.run(
        [sys.executable, "-m", "dbopt", "validate"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0] == BAD_LINES[0]


# --- schema ----------------------------------------------------------------------------


def schema_output(*args: str) -> dict[str, Any]:
    result = cli("schema", *args)
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def spec_documents(root: Path) -> list[Path]:
    return sorted([*root.glob("indexes/*.yaml"), *root.glob("views/*.yaml")])


def test_schema_is_a_valid_json_schema() -> None:
    schema = schema_output()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_schema_accepts_the_example_specs(write: Write, tmp_path: Path) -> None:
    write(**GOOD)
    validator = Draft202012Validator(schema_output())
    paths = spec_documents(tmp_path)
    assert len(paths) == 3
    for path in paths:
        doc, problems = load_file(path)
        assert doc is not None and problems == []
        errors = [e.message for e in validator.iter_errors(doc.data)]
        assert errors == [], f"{path.name}: {errors}"


def test_schema_rejects_what_validate_rejects(write: Write, tmp_path: Path) -> None:
    write(**BAD)
    validator = Draft202012Validator(schema_output())
    doc, _ = load_file(tmp_path / "indexes/users.yaml")
    assert doc is not None
    assert not validator.is_valid(doc.data)


@pytest.mark.parametrize("path", spec_documents(REPO), ids=lambda p: str(p.relative_to(REPO)))
def test_schema_accepts_the_repository_specs(path: Path) -> None:
    doc, problems = load_file(path)
    assert doc is not None and problems == []
    errors = [e.message for e in Draft202012Validator(schema_output()).iter_errors(doc.data)]
    assert errors == []


def test_the_repository_specs_validate(monkeypatch: pytest.MonkeyPatch) -> None:
    if not spec_documents(REPO):
        pytest.skip("the repository holds no example specs")
    clean_env(monkeypatch)
    monkeypatch.chdir(REPO)
    result = cli("validate", "--specs", "indexes", "--specs", "views")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"ok: {len(spec_documents(REPO))} files, ")


def test_config_schema(write: Write, tmp_path: Path) -> None:
    schema = schema_output("--kind", "config")
    Draft202012Validator.check_schema(schema)
    write(
        **{
            "dbopt.yaml": """\
                defaults: {lock_timeout: 2s}
                environments:
                  staging: {dsn: "${STAGING_URL}", confirm: false, jobs: 2}
            """
        }
    )
    doc, _ = load_file(tmp_path / "dbopt.yaml")
    assert doc is not None
    assert Draft202012Validator(schema).is_valid(doc.data)
    assert not Draft202012Validator(schema).is_valid({"environments": {"x": {"dns": "y"}}})


# --- which database: --env, --dsn, DBOPT_DSN, DATABASE_URL, PG* --------------------------

PROD_ONLY = {
    "dbopt.yaml": "environments:\n  production: {dsn: 'postgresql://deploy@127.0.0.2:1/app'}\n"
}


def test_dbopt_dsn_never_overrides_an_explicit_env(
    write: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(**GOOD, **PROD_ONLY)
    monkeypatch.setenv("DBOPT_DSN", "postgresql://ci@127.0.0.3:1/scratch")
    monkeypatch.setenv("DATABASE_URL", "postgresql://heroku@127.0.0.4:1/other")
    result = cli("plan", "--env", "production")
    assert result.exit_code == 3
    assert result.stderr.startswith("error: could not connect to deploy@127.0.0.2:1/app: ")
    # Without --env and --dsn, DBOPT_DSN is the target (before DATABASE_URL).
    result = cli("plan")
    assert result.stderr.startswith("error: could not connect to ci@127.0.0.3:1/scratch: ")
    monkeypatch.delenv("DBOPT_DSN")
    result = cli("plan")
    assert result.stderr.startswith("error: could not connect to heroku@127.0.0.4:1/other: ")


def test_dbopt_dsn_does_not_turn_validate_into_a_database_check(
    write: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(**GOOD)
    monkeypatch.setenv("DBOPT_DSN", "postgresql://ci@127.0.0.3:1/scratch")
    result = cli("validate")
    assert result.exit_code == 0, result.output


def test_env_and_dsn_together_exit_2(write: Write) -> None:
    write(**GOOD, **PROD_ONLY)
    result = cli("plan", "--env", "production", "--dsn", "postgresql://x@127.0.0.5:1/y")
    assert result.exit_code == 2
    assert result.stderr == (
        "error: give --env or --dsn, not both: --env production names a database in "
        "dbopt.yaml, --dsn another; to use production's settings with another DSN, add an "
        "environment for it\n"
    )


def test_an_empty_dsn_exits_2(write: Write, monkeypatch: pytest.MonkeyPatch) -> None:
    write(**GOOD)
    monkeypatch.setenv("PGHOST", "127.0.0.6")
    result = cli("plan", "--dsn", "")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --dsn is empty (an unset variable?)")


def test_pg_variables_completing_an_env_dsn_are_named(
    write: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(**GOOD, **{"dbopt.yaml": "environments:\n  production: {dsn: 'dbname=app user=x'}\n"})
    monkeypatch.setenv("PGHOST", "127.0.0.7")
    monkeypatch.setenv("PGPORT", "1")
    result = cli("plan", "--env", "production")
    assert result.exit_code == 3
    assert result.stderr.splitlines()[0] == (
        "warning: environment 'production' does not name its host, port: libpq takes host "
        "from PGHOST (127.0.0.7), port from PGPORT (1); write them into its dsn in "
        "dbopt.yaml to make the target independent of this shell"
    )
    assert "could not connect to x@127.0.0.7:1/app" in result.stderr


def test_verbose_says_which_database_and_why(write: Write, monkeypatch: pytest.MonkeyPatch) -> None:
    write(**GOOD)
    monkeypatch.setenv("DBOPT_DSN", "postgresql://ci:Hunter2@127.0.0.3:1/scratch")
    result = cli("plan", "-v")
    assert result.stderr.splitlines()[0] == "target: ci@127.0.0.3:1/scratch (DBOPT_DSN)"
    assert "Hunter2" not in result.output


# --- bad settings exit 2 before any SQL ------------------------------------------------


@pytest.mark.parametrize("command", ["plan", "apply", "status", "verify", "refresh-views"])
def test_a_timeout_postgresql_refuses_exits_2_before_connecting(write: Write, command: str) -> None:
    # The DSN would be refused (exit 3) if dbopt got as far as connecting.
    write(**GOOD, **{"dbopt.yaml": "defaults:\n  statement_timeout: 30d\n"})
    result = cli(command, "--dsn", "postgresql://x@127.0.0.1:1/app")
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        "dbopt.yaml:2:22: defaults.statement_timeout: '30d' is longer than PostgreSQL allows "
        "for a timeout (at most 2147483647ms, about 24.8 days)\n"
        "error: dbopt.yaml: invalid configuration; nothing was run\n"
    )


# --- names in flags: QUALIFIED_NAME -----------------------------------------------------


@click.command()
@click.option("--index", "indexes", multiple=True, type=dbopt.cli.common.QUALIFIED_NAME)
def _names(indexes: tuple[Any, ...]) -> None:
    for name in indexes:
        click.echo(f"{name.schema}|{name.name}")


@pytest.mark.parametrize(
    ("given", "schema", "name"),
    [
        ("idx_day", "public", "idx_day"),
        ("app.idx_day", "app", "idx_day"),
        ("  app.idx_day ", "app", "idx_day"),
        ("MyIndex", "public", "MyIndex"),  # as written: the spec's "MyIndex"
        ('"My Index"', "public", "My Index"),
        ('public."a.b"', "public", "a.b"),
        ('"my.schema"."a.b"', "my.schema", "a.b"),
        ('"a""b"', "public", 'a"b'),
        ("é_índice", "public", "é_índice"),
    ],
)
def test_qualified_name_parses(given: str, schema: str, name: str) -> None:
    result = cli("--index", given, command=_names)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{schema}|{name}\n"


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            "a.b.c",
            "a.b.c: 3 dotted parts; write name or schema.name (double-quote a name "
            'that holds a dot: schema."a.b")',
        ),
        ("", "the name is empty: write name or schema.name"),
        ('""', '"": a quoted name cannot be empty'),
        ("a.", "a.: a part of the name is empty: write name or schema.name"),
        (".a", ".a: a part of the name is empty: write name or schema.name"),
        ("a..b", "a..b: a part of the name is empty: write name or schema.name"),
        ('"abc', '"abc: a double quote is not closed'),
        ('"a"b', '"a"b: expected a dot or the end after a quoted name'),
        ("my index", 'my index: double-quote a name holding spaces or quotes, e.g. "my index"'),
        ("x" * 64, f"{'x' * 64}: '{'x' * 64}' is longer than 63 bytes"),
    ],
)
def test_qualified_name_errors_are_usage_errors(given: str, message: str) -> None:
    result = cli("--index", given, command=_names)
    assert result.exit_code == 2
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert f"Error: Invalid value for '--index': {message}" in result.stderr
    assert "Traceback" not in result.output


def test_every_public_name_of_every_module_resolves() -> None:
    """``__all__`` names only what a module has at run time (lazy imports must not leave a
    name behind there)."""
    import importlib
    import pkgutil

    import dbopt

    missing = []
    for info in pkgutil.walk_packages(dbopt.__path__, "dbopt."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        missing += [
            f"{info.name}.{n}" for n in getattr(module, "__all__", ()) if not hasattr(module, n)
        ]
    assert missing == []


def test_a_building_command_pauses_the_collector_only_until_its_run_starts() -> None:
    """apply and rollback get ready without cyclic collections (long-lived graphs); the run
    resumes it (what the set-up made frozen), and the command's end undoes both."""
    import gc

    from dbopt.gcpause import paused_until_run, run_starts

    frozen = gc.get_freeze_count()
    with paused_until_run():
        assert not gc.isenabled()
        run_starts()
        assert gc.isenabled() and gc.get_freeze_count() > frozen
        run_starts()  # a second run (a fleet's next target) changes nothing
    assert gc.isenabled() and gc.get_freeze_count() == frozen
    with paused_until_run():  # no run: nothing to build
        assert not gc.isenabled()
    assert gc.isenabled() and gc.get_freeze_count() == frozen


@pytest.mark.parametrize(
    "args",
    [
        ("verify", "--save", "{bad}/base.json"),
        ("verify", "--junit", "{bad}/v.xml"),
        ("apply", "--plans-dir", "{file}/plans"),
        ("rollback", "--last", "-o", "{bad}/undo.sql"),
        ("doctor", "--sarif", "{bad}/d.sarif"),
        ("doctor", "-o", "{bad}/d.txt"),
        ("init", "-o", "{bad}/grants.sql"),
        ("stats", "dump", "-o", "{bad}/stats.json"),
        ("report", "--html", "{bad}/r.html"),
    ],
)
def test_a_file_that_cannot_be_written_stops_the_command_before_it_runs(
    write: Write, tmp_path: Path, args: tuple[str, ...]
) -> None:
    """Seen: verify ran every query, then a traceback and exit 1 (as a missed budget) for a
    --save path in a folder that did not exist, the report lost. Now exit 2 before anything
    runs: the DSN names a closed port, so reaching it would exit 3."""
    (tmp_path / "plain.txt").write_text("")
    filled = [a.format(bad=tmp_path / "missing", file=tmp_path / "plain.txt") for a in args]
    result = cli(*filled, "--dsn", "postgresql://nobody@127.0.0.1:1/none")
    assert result.exit_code == 2, result.output
    assert "no such directory" in result.output or "not a directory" in result.output
    assert "could not connect" not in result.output


def test_a_table_written_to_a_pipe_is_not_folded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seen in an exploratory review: `--format table` into a CI log folded at 80 columns,
    numbers split over two lines ("19." / "212")."""
    import io

    from dbopt import render

    monkeypatch.delenv("COLUMNS", raising=False)

    def no_terminal(*_args: object) -> os.terminal_size:
        raise OSError("not a terminal")  # rich asks the process's terminal even for a file

    monkeypatch.setattr(os, "get_terminal_size", no_terminal)
    name = "barber_schedule_for_the_next_fourteen_days_by_location_and_service"
    out = io.StringIO()
    rows = [[name, "confirmed, pending, completed", "19.212", "20.118", "pass"]]
    render.print_rows(["query", "statuses", "p50 ms", "p95 ms", "verdict"], rows, "table", out)
    text = out.getvalue()
    assert name in text and "19.212" in text and "20.118" in text, text
    monkeypatch.setenv("COLUMNS", "60")  # asked for: as wide as that
    narrow = io.StringIO()
    render.print_rows(["query", "statuses", "p50 ms", "p95 ms", "verdict"], rows, "table", narrow)
    assert name not in narrow.getvalue()


def test_options_are_named_as_their_flags() -> None:
    from dbopt.render import flag

    assert flag("replace_drifted") == "--replace-drifted"
    assert flag("replace_drifted cascade") == "--replace-drifted --cascade"
