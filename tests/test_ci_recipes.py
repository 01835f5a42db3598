"""The CI recipes (docs/ci/) and the Kubernetes CronJob (docs/container.md) stay true.

Each file is parsed as the CI system would read it, its structure checked (a PostgreSQL
service, the JUnit report published even when verify fails, the step summary, the schema
loaded before any command reaches the database), and every dbopt command line in it is parsed
by dbopt's own Click commands: an unknown flag, a wrong choice or a missing value fails here
instead of in a user's pipeline. No database, except the last tests: they run each recipe's
shell lines in order, with psql and this checkout's dbopt, against a fresh test database.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from helpers import LIBPQ_VARIABLES, TARGET_VARIABLES, write_files

from dbopt.cli import main
from dbopt.sandbox import Server

# The recipes' command lines: nothing of the server's major (harness.matrix runs them on one major).
pytestmark = pytest.mark.one_major

REPO = Path(__file__).resolve().parents[1]
CI = REPO / "docs" / "ci"

#: Where a command line ends and the shell takes over.
_SHELL = {"|", "||", "&&", ";", ">", ">>", "2>&1", "<"}


def dbopt_lines(script: str) -> Iterator[list[str]]:
    """The arguments of every ``dbopt ...`` command in a shell script."""
    for line in script.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        for i, word in enumerate(words):
            if word in _SHELL or word.startswith((">", "2>")):
                words = words[:i]
                break
        if words and words[0] == "dbopt":
            yield words[1:]


def parse(argv: list[str]) -> click.Context:
    """Parse ``dbopt ARGV`` exactly as the CLI would, without running the command."""
    group = click.Context(main, info_name="dbopt")
    command = main.get_command(group, argv[0])
    assert command is not None, f"no command {argv[0]!r}"
    return command.make_context(argv[0], argv[1:], parent=group)


def commands(script_lines: list[str]) -> list[list[str]]:
    found = [argv for line in script_lines for argv in dbopt_lines(line)]
    for argv in found:
        parse(argv)
    return found


def with_flag(found: list[list[str]], command: str, flag: str) -> list[str]:
    matching = [argv for argv in found if argv[0] == command and flag in argv]
    assert matching, f"no `dbopt {command} {flag}` in {found}"
    return matching[0]


#: dbopt commands that never connect, whatever the environment holds (validate only connects
#: with --dsn or --env; every other command reads $DATABASE_URL when given neither).
_OFFLINE = {"validate", "schema"}


def uses_database(argv: list[str]) -> bool:
    """Whether ``dbopt ARGV`` connects to a database."""
    named = any(a.startswith(("--dsn", "--env")) for a in argv)
    return named or argv[0] not in _OFFLINE


def loads_schema(line: str) -> bool:
    return "psql" in shlex.split(line, comments=True) and "-f" in line


def check_schema_comes_first(lines: list[str]) -> None:
    """The schema is loaded before any dbopt command that uses the database (on an empty
    database `validate --dsn` and `apply` fail: the tables the specs name do not exist)."""
    loads = [i for i, line in enumerate(lines) if loads_schema(line)]
    assert loads, f"no `psql -f` loading the schema in {lines}"
    for i, line in enumerate(lines):
        for argv in dbopt_lines(line):
            if uses_database(argv):
                assert i > loads[0], f"`dbopt {shlex.join(argv)}` runs before the schema load"
    offline = [i for i, line in enumerate(lines) for a in dbopt_lines(line) if a == ["validate"]]
    assert offline and offline[0] < loads[0], "the specs are validated before any database"


def test_the_ordering_check_catches_a_database_command_before_the_schema() -> None:
    schema = 'psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f db/schema.sql'
    check_schema_comes_first(["dbopt validate", schema, 'dbopt apply --dsn "$U" --yes'])
    for early in ('dbopt validate --dsn "$DATABASE_URL"', "dbopt plan --env ci", "dbopt apply"):
        with pytest.raises(AssertionError, match="before the schema load"):
            check_schema_comes_first(["dbopt validate", early, schema])


def test_parse_refuses_what_the_cli_refuses() -> None:
    with pytest.raises(click.NoSuchOption):
        parse(["verify", "--junit-xml", "x.xml"])
    with pytest.raises(click.BadParameter):
        parse(["refresh-views", "--log-format", "yaml"])
    line = 'dbopt verify --junit v.xml --format markdown >> "$S"'
    assert list(dbopt_lines(line)) == [["verify", "--junit", "v.xml", "--format", "markdown"]]


def test_github_actions_workflow() -> None:
    workflow: dict[Any, Any] = yaml.safe_load((CI / "github-actions.yml").read_text("utf-8"))
    budgets = workflow["jobs"]["budgets"]
    postgres = budgets["services"]["postgres"]
    assert postgres["image"].startswith("postgres:")
    assert "--health-cmd" in postgres["options"]  # steps start once the server accepts
    steps = budgets["steps"]
    runs = [s["run"] for s in steps if "run" in s]
    found = commands(runs)
    check_schema_comes_first(runs)
    assert [a[0] for a in found] == ["validate", "validate", "apply", "verify"]
    verify = with_flag(found, "verify", "--junit")
    report = verify[verify.index("--junit") + 1]
    verify_run = next(r for r in runs if "dbopt verify" in r)
    assert '>> "$GITHUB_STEP_SUMMARY"' in verify_run and "|" not in verify_run  # exit code kept
    published = [s for s in steps if "uses" in s and "junit" in s["uses"]]
    assert published and published[0]["with"]["report_paths"] == report
    assert published[0]["if"] == "${{ !cancelled() }}"  # also when a budget failed
    drift = commands([s["run"] for s in workflow["jobs"]["drift"]["steps"] if "run" in s])
    with_flag(drift, "plan", "--exit-code")


def test_gitlab_ci_jobs() -> None:
    jobs: dict[str, Any] = yaml.safe_load((CI / "gitlab-ci.yml").read_text("utf-8"))
    budgets = jobs["dbopt-budgets"]
    assert any(str(s.get("name", s)).startswith("postgres:") for s in budgets["services"])
    assert budgets["variables"]["DATABASE_URL"].startswith("postgresql://")
    found = commands(budgets["script"])
    check_schema_comes_first([*budgets["before_script"], *budgets["script"]])
    assert [a[0] for a in found] == ["validate", "validate", "apply", "verify"]
    verify = with_flag(found, "verify", "--junit")
    assert budgets["artifacts"]["reports"]["junit"] == verify[verify.index("--junit") + 1]
    assert budgets["artifacts"]["when"] == "always"
    with_flag(commands(jobs["dbopt-drift"]["script"]), "plan", "--exit-code")


def test_kubernetes_cronjob_in_docs() -> None:
    text = (REPO / "docs" / "container.md").read_text("utf-8")
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)]
    cronjob = next(b for b in blocks if b.get("kind") == "CronJob")
    spec = cronjob["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert "command" not in container  # the image's ENTRYPOINT is dbopt
    context = parse([str(a) for a in container["args"]])
    assert context.info_name == "refresh-views"
    assert context.params["log_format"] == "json"
    secrets = [e for e in container["env"] if "valueFrom" in e]
    assert secrets and all("value" not in e for e in secrets)


# --- the recipes, run ---------------------------------------------------------------------

#: A tiny project as the recipes expect it: db/schema.sql, the specs, one budgeted query.
PROJECT = {
    "db/schema.sql": """\
        CREATE TABLE visits (id int PRIMARY KEY, barber_id int NOT NULL);
        INSERT INTO visits SELECT g, g % 50 FROM generate_series(1, 2000) g;
        ANALYZE visits;
    """,
    "indexes/visits.yaml": """\
        table: visits
        indexes:
          - {name: visits_barber, columns: [barber_id]}
        queries:
          - name: a_barbers_visits
            sql: SELECT id FROM visits WHERE barber_id = 7
            budget_ms: 2000
    """,
}


def psql_dir(server: Server) -> str:
    """The folder of a psql program (the test server's own first), or skip."""
    found = [server.bin_dir] if server.bin_dir else []
    which = shutil.which("psql")
    found += [Path(which).parent] if which else []
    found += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for folder in found:
        if os.access(folder / "psql", os.X_OK):
            return str(folder)
    pytest.skip("no psql program (PostgreSQL's client) on this machine")


def run_lines(lines: list[str], cwd: Path, env: dict[str, str]) -> None:
    """Each shell line as the CI runner runs it (bash -e -o pipefail), stopping at a failure."""
    for line in lines:
        done = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", line],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"{line}\nexit {done.returncode}\n{done.stdout}{done.stderr}"


@pytest.mark.db
@pytest.mark.parametrize("recipe", ["github-actions", "gitlab-ci"])
def test_each_recipe_runs_in_order_against_a_fresh_database(
    recipe: str, db_dsn: str, pg_server: Server, tmp_path: Path
) -> None:
    document: dict[str, Any] = yaml.safe_load((CI / f"{recipe}.yml").read_text("utf-8"))
    if recipe == "github-actions":
        steps = document["jobs"]["budgets"]["steps"]
        lines = [s["run"] for s in steps if "run" in s]
    else:
        lines = document["dbopt-budgets"]["script"]
    # dbopt is this checkout's (on PATH below), not the one `pip install dbopt` would fetch.
    lines = [line for line in lines if not line.startswith("pip install")]
    write_files(tmp_path, PROJECT)
    dropped = {*TARGET_VARIABLES, *LIBPQ_VARIABLES}
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    summary = tmp_path / "summary.md"
    env |= {
        "DATABASE_URL": db_dsn,
        "GITHUB_STEP_SUMMARY": str(summary),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), psql_dir(pg_server)])
        + os.pathsep
        + env.get("PATH", ""),
    }
    run_lines(lines, tmp_path, env)
    report = (tmp_path / "verify.xml").read_text("utf-8")
    assert "a_barbers_visits" in report and "<failure" not in report
    markdown = summary if recipe == "github-actions" else tmp_path / "verify.md"
    assert "a_barbers_visits" in markdown.read_text("utf-8")
