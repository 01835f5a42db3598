"""`refresh-views --emit crontab`: lines that really run under cron, on the target given.

Each produced line is parsed as crontab(5) reads it (``NAME=value`` settings; five schedule
fields, then a command in which ``\\%`` stands for ``%``) and its command is run by ``sh -c`` in
cron's bare environment: with a stub ``dbopt`` that records how it was called, and with the
real one against a real server from a project whose path holds a space.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import psycopg
import pytest
from croniter import croniter
from helpers import clean_env, cli, environments, poll, wait_for, write_files

from dbopt.cli.common import parse_qualified_name
from dbopt.config import Config, Environment, Settings, Target, resolve_target
from dbopt.model import QualifiedName
from dbopt.refresh import crontab_lines, dbopt_command
from dbopt.spec import load_specs

#: What cron gives a job: no PGHOST, no DBOPT_DSN, no virtualenv on PATH.
CRON_ENV = {"PATH": "/usr/bin:/bin", "SHELL": "/bin/sh", "LOGNAME": "cron", "HOME": "/"}

VIEWS = {
    "mv_revenue.yaml": """\
        name: mv_revenue
        query: "SELECT 1 AS one"
        refresh: {schedule: "*/15 * * * *"}
        """,
    "daily.yaml": """\
        name: "Daily % done"
        schema: reports
        query: "SELECT 1 AS one"
        refresh: {schedule: "30 2 * * 1-5"}
        """,
    "manual.yaml": """\
        name: mv_manual
        query: "SELECT 1 AS one"
        """,
}


@pytest.fixture
def views(tmp_path: Path) -> Any:
    root = tmp_path / "project" / "views"
    root.mkdir(parents=True)
    for name, text in VIEWS.items():
        (root / name).write_text(textwrap.dedent(text))
    return load_specs([(root, True)]).views


@pytest.fixture
def stub(tmp_path: Path) -> tuple[Path, Path]:
    """A `dbopt` that writes its working directory and arguments, one per line."""
    out = tmp_path / "calls"
    out.mkdir()
    path = tmp_path / "bin" / "dbopt"
    path.parent.mkdir()
    path.write_text(
        "#!/bin/sh\n"
        f"f={shlex.quote(str(out))}/$$\n"
        'printf "%s\\n" "$PWD" "$@" > "$f"\n'
        'echo "refreshed $*"\n'
        # Slow on request: holds its lock until the test says `release` (30 s at most).
        f"if [ -e {shlex.quote(str(out))}/slow ]; then\n"
        f"  i=0; while [ ! -e {shlex.quote(str(out))}/release ] && [ $i -lt 300 ]; do\n"
        "    sleep 0.1; i=$((i + 1)); done\n"
        "fi\n"
    )
    path.chmod(0o755)
    return path, out


#: A crontab(5) environment setting: ``NAME=value``.
SETTING = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


def settings(text: str) -> dict[str, str]:
    """The ``NAME=value`` lines of a crontab, as cron sets them for every job."""
    return dict(m.groups() for line in text.splitlines() if (m := SETTING.match(line)))


def entries(text: str) -> list[tuple[str, str]]:
    """(schedule, command) of each crontab line, the command as cron hands it to sh."""
    found = []
    for line in text.splitlines():
        if not line or line.startswith("#") or SETTING.match(line):
            continue
        fields = line.split(None, 5)
        schedule, command = " ".join(fields[:5]), fields[5]
        assert croniter.is_valid(schedule), line
        # An unescaped % would end the command there (crontab(5)).
        assert not re.search(r"(?<!\\)%", command), line
        found.append((schedule, command.replace("\\%", "%")))
    return found


def run_as_cron(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    syntax = subprocess.run(["sh", "-n", "-c", command], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    return subprocess.run(
        ["sh", "-c", command], env=CRON_ENV, cwd=cwd, capture_output=True, text=True, timeout=30
    )


def calls(out: Path) -> list[list[str]]:
    return [
        p.read_text().splitlines()
        for p in sorted(out.iterdir())
        if p.name not in ("slow", "release")
    ]


def test_a_dsn_target_is_kept_without_its_password(
    views: Any, stub: tuple[Path, Path], tmp_path: Path
) -> None:
    dbopt, out = stub
    workdir = tmp_path / "project"
    environ = {"PGPORT": "6432", "PGPASSFILE": "/etc/dbopt/pgpass"}
    target = Target(None, "postgresql://deploy:Hunter2@db1/app%25prod", Settings(), source="--dsn")
    text = crontab_lines(
        views,
        env=None,
        workdir=str(workdir),
        dbopt=[str(dbopt)],
        target=target,
        config=str(workdir / "dbopt.yaml"),
        lock_dir=str(workdir),
        log=str(workdir / "refresh.log"),
        environ=environ,
    )
    assert "Hunter2" not in text
    assert "# the password is not written here: put it in ~/.pgpass" in text
    assert "# reports.Daily % done: no refresh schedule" not in text
    assert "# public.mv_manual: no refresh schedule in its spec" in text
    lines = entries(text)
    assert [s for s, _ in lines] == ["30 2 * * 1-5", "*/15 * * * *"]
    for _schedule, command in lines:
        result = run_as_cron(command, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout == result.stderr == ""  # all of it went to the log
    recorded = sorted(calls(out), key=lambda c: c[-1])
    for call in recorded:
        assert call[0] == str(workdir)  # cd'd into the absolute working directory
        assert call[1:4] == ["refresh-views", "--dsn", call[3]]
        dsn = dict(pair.split("=", 1) for pair in call[3].split())
        # What PGPORT and PGPASSFILE gave here is written out: cron has neither.
        assert dsn == {
            "user": "deploy",
            "host": "db1",
            "dbname": "app%prod",
            "port": "6432",
            "passfile": "/etc/dbopt/pgpass",
        }
        assert call[4:6] == ["--config", str(workdir / "dbopt.yaml")]
    views_named = [parse_qualified_name(call[-1]) for call in recorded]
    assert views_named == [
        QualifiedName("public", "mv_revenue"),
        QualifiedName("reports", "Daily % done"),
    ]
    log = (workdir / "refresh.log").read_text()
    assert log.count("refreshed refresh-views") == 2


def test_overlapping_runs_do_not_pile_up(
    views: Any, stub: tuple[Path, Path], tmp_path: Path
) -> None:
    if shutil.which("flock") is None:
        pytest.skip("flock(1) is not installed")
    dbopt, out = stub
    workdir = tmp_path / "project"
    text = crontab_lines(
        views, env="production", workdir=str(workdir), dbopt=[str(dbopt)], lock_dir=str(workdir)
    )
    command = entries(text)[1][1]
    (out / "slow").touch()
    first = subprocess.Popen(["sh", "-c", command], env=CRON_ENV, cwd=tmp_path)
    try:
        poll(lambda: calls(out), "the first run's call of dbopt", timeout=10)
        assert len(calls(out)) == 1
        second = run_as_cron(command, cwd=tmp_path)
        assert second.returncode == 1  # flock -n: the lock is held, nothing started
        assert len(calls(out)) == 1
    finally:
        (out / "release").touch()
        first.wait(timeout=30)
    assert first.returncode == 0
    # Another view (another lock) was never held up.
    other = run_as_cron(entries(text)[0][1], cwd=tmp_path)
    assert other.returncode == 0, other.stderr


def test_an_env_target_is_kept_with_an_absolute_config(
    views: Any, stub: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dbopt, _out = stub
    workdir = tmp_path / "project"
    monkeypatch.chdir(workdir)
    config = Config(
        path="dbopt.yaml",
        environments={"production": Environment("production", "dbname=app", Settings())},
    )
    environ = {"PGHOST": "db-staging"}
    target = resolve_target(config, "production", None, environ)
    text = crontab_lines(
        views,
        env="production",
        workdir=".",
        dbopt=[str(dbopt)],
        target=target,
        config="dbopt.yaml",
        specs=["views"],
        log="syslog",
        environ=environ,
    )
    assert (
        "# warning: environment 'production' takes host from PGHOST (db-staging) from this "
        "shell; cron will not have it: write it into its dsn"
    ) in text
    _schedule, command = entries(text)[1]
    assert command.startswith("{ ")
    assert command.endswith("; } 2>&1 | logger -t dbopt")
    words = shlex.split(command.removeprefix("{ ").removesuffix("; } 2>&1 | logger -t dbopt"))
    assert words[:3] == ["cd", str(workdir), "&&"]
    assert words[3:] == [
        str(dbopt),
        "refresh-views",
        "--env",
        "production",
        "--config",
        str(workdir / "dbopt.yaml"),
        "--specs",
        str(workdir / "views"),
        "-v",
        "--view",
        "public.mv_revenue",
    ]
    syntax = subprocess.run(["sh", "-n", "-c", command], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr


def test_without_new_arguments_the_old_call_still_works(views: Any, tmp_path: Path) -> None:
    # cli/db_cmds.py calls crontab_lines(chosen, env=opts.env, workdir=os.getcwd()).
    text = crontab_lines(views, env="production", workdir=str(tmp_path))
    commands = [shlex.split(c) for _, c in entries(text)]
    assert commands[1] == [
        "cd",
        str(tmp_path),
        "&&",
        "dbopt",
        "refresh-views",
        "--env",
        "production",
        "--view",
        "public.mv_revenue",
    ]


def test_a_line_break_cannot_reach_a_crontab(views: Any, tmp_path: Path) -> None:
    from dbopt.errors import InputError

    with pytest.raises(InputError):
        crontab_lines(views, env=None, workdir=str(tmp_path / "a\nb"))


def test_dbopt_command_is_absolute(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "argv", [str(Path("dbopt") / "__main__.py")])
    assert dbopt_command() == [os.path.abspath(sys.executable), "-m", "dbopt"]
    script = tmp_path / "dbopt"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["./dbopt", "refresh-views"])
    assert dbopt_command() == [str(script)]
    monkeypatch.setattr(sys, "argv", ["pytest"])
    assert all(os.path.isabs(part) or part == "-m" or part == "dbopt" for part in dbopt_command())


def test_the_command_keeps_the_dsn_it_was_given(
    views: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path / "project")
    clean_env(monkeypatch)
    result = cli("refresh-views", "--dsn", "postgresql://app:Hunter2@db1/app", "--emit", "crontab")
    assert result.exit_code == 0, result.output
    assert "Hunter2" not in result.output
    for _schedule, command in entries(result.stdout):
        words = shlex.split(command)
        assert words[words.index("--dsn") + 1] == "user=app dbname=app host=db1"
        assert any(os.path.basename(w) == "flock" and os.path.isabs(w) for w in words)
        assert os.path.isabs(words[words.index("refresh-views") - 1])


COUNTS = """
CREATE TABLE counts (id int PRIMARY KEY, n int NOT NULL);
INSERT INTO counts VALUES (1, 1);
CREATE MATERIALIZED VIEW mv_totals AS SELECT id, n FROM counts;
CREATE UNIQUE INDEX mv_totals_id ON mv_totals (id);
"""

MV_TOTALS = """\
    name: mv_totals
    query: SELECT id, n FROM counts
    indexes:
      - {name: mv_totals_id, columns: [id], unique: true}
    refresh: {schedule: "*/5 * * * *"}
"""


def cron_run(
    line: str, crontab: str, home: Path, *, wait: bool = True
) -> subprocess.Popen[str] | subprocess.CompletedProcess[str]:
    """Run one crontab command as cron does: sh -c, only the crontab's settings, LOGNAME and
    HOME (env -i: nothing of this shell), from the home directory."""
    env = ["LOGNAME=cron", f"HOME={home}", *(f"{k}={v}" for k, v in settings(crontab).items())]
    argv = ["/usr/bin/env", "-i", *env, "/bin/sh", "-c", line]
    if not wait:
        return subprocess.Popen(argv, cwd=home, text=True)
    return subprocess.run(argv, cwd=home, capture_output=True, text=True, timeout=60)


def total(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT n FROM mv_totals WHERE id = 1").fetchone()
    assert row is not None
    return int(row[0])


def test_the_emitted_crontab_refreshes_a_real_view_under_cron(
    conn: psycopg.Connection[Any],
    admin_conn: psycopg.Connection[Any],
    db_dsn: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if shutil.which("flock") is None:
        pytest.skip("flock(1) is not installed")
    conn.execute(COUNTS)
    root = tmp_path / "my project"
    home = tmp_path / "home"
    home.mkdir()
    write_files(
        root,
        {
            "views/mv_totals.yaml": MV_TOTALS,
            # The DSN comes from the environment: ${VAR} here, its value in the env file.
            "dbopt.yaml": environments(
                test={"dsn": "${DBOPT_CRON_TEST_DSN}", "lock_timeout": "30s"}
            ),
            "secrets dir/cron.env": f"DBOPT_CRON_TEST_DSN={shlex.quote(db_dsn)}\n",
        },
    )
    monkeypatch.chdir(root)
    clean_env(monkeypatch)
    monkeypatch.setenv("DBOPT_CRON_TEST_DSN", db_dsn)  # the DBA's shell, not cron's
    result = cli(
        "refresh-views", "--env", "test", "--emit", "crontab", "--env-file", "secrets dir/cron.env"
    )
    assert result.exit_code == 0, result.output
    crontab = result.stdout
    assert settings(crontab) == {"SHELL": "/bin/sh", "PATH": "/usr/local/bin:/usr/bin:/bin"}
    assert db_dsn not in crontab  # the DSN stays in the env file
    [(schedule, line)] = entries(crontab)
    assert schedule == "*/5 * * * *"
    words = shlex.split(line)
    assert words[:3] == ["{", "cd", str(root)]
    flock = words.index("-n") - 1
    assert os.path.basename(words[flock]) == "flock" and os.path.isabs(words[flock])
    dbopt = words[flock + 3]
    assert os.path.isabs(dbopt) and os.access(dbopt, os.X_OK), line
    log = root / "dbopt-refresh.log"  # the default log, in the project

    # Cron's run: nothing of this shell, not even the DSN's variable.
    conn.execute("UPDATE counts SET n = 2")
    first = cron_run(line, crontab, home)
    assert isinstance(first, subprocess.CompletedProcess)
    assert first.returncode == 0, (first.stdout, first.stderr, log.read_text())
    assert first.stdout == first.stderr == ""  # all of it went to the log
    assert total(conn) == 2
    assert "refreshed public.mv_totals (concurrent)" in log.read_text()

    # A run still going (it waits for the table's lock) holds the flock: the next one exits
    # at once without starting dbopt, and never queues behind it.
    conn.execute("UPDATE counts SET n = 3")
    with admin_conn.transaction():
        admin_conn.execute("LOCK TABLE counts IN ACCESS EXCLUSIVE MODE")
        slow = cron_run(line, crontab, home, wait=False)
        assert isinstance(slow, subprocess.Popen)
        try:
            wait_for(  # on conn: in admin_conn's transaction pg_stat_activity stands still
                conn,
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'dbopt-refresh' "
                "AND wait_event_type = 'Lock'",
            )
            before = log.read_text()
            second = cron_run(line, crontab, home)
            assert isinstance(second, subprocess.CompletedProcess)
            assert second.returncode == 1  # flock -n: the lock is held, dbopt never started
            assert log.read_text() == before
        except BaseException:
            slow.kill()
            raise
    assert slow.wait(timeout=60) == 0
    assert total(conn) == 3
    assert log.read_text().count("refreshed public.mv_totals") == 2


def test_a_relative_dbopt_command_is_made_absolute(
    views: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path / "project")
    clean_env(monkeypatch)
    result = cli(
        "refresh-views",
        "--dsn",
        "postgresql://app@db1/app",
        "--emit",
        "crontab",
        "--dbopt-command",
        "bin/dbopt --quiet-flag",
        "--no-env-file",
        "--log",
        "syslog",
    )
    assert result.exit_code == 0, result.output
    for _schedule, command in entries(result.stdout):
        assert ". " not in command  # no env file sourced
        assert command.endswith("| logger -t dbopt")
        words = shlex.split(command)
        at = words.index("refresh-views")
        assert words[at - 2 : at] == [str(tmp_path / "project" / "bin" / "dbopt"), "--quiet-flag"]


def test_the_default_env_file_is_read_when_present(
    views: Any, stub: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dbopt, out = stub
    project_dir = tmp_path / "project"
    monkeypatch.chdir(project_dir)
    clean_env(monkeypatch)
    args = ["refresh-views", "--dsn", "postgresql://app@db1/app", "--emit", "crontab"]
    result = cli(*args, "--env-file", "nowhere.env")
    assert result.exit_code == 2
    assert "--env-file nowhere.env: no such file" in result.stderr
    # Without --env-file, .env in the project is read when it exists (and only then).
    default = cli(*args, "--dbopt-command", str(dbopt))
    assert default.exit_code == 0, default.output
    env_file = shlex.quote(str(project_dir / ".env"))
    _schedule, command = entries(default.stdout)[0]
    assert f"&& set -a && if [ -r {env_file} ]; then . {env_file}; fi && set +a && " in command
    # No .env: the line goes on to dbopt all the same.
    first = run_as_cron(command, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    # A .env that fails (here: a command not found) stops the line before dbopt.
    (project_dir / ".env").write_text("DBOPT_X=1\nno-such-command-here\n")
    second = run_as_cron(command, cwd=tmp_path)
    assert second.returncode != 0
    assert len(calls(out)) == 1
    log = (project_dir / "dbopt-refresh.log").read_text()
    assert log.count("refreshed refresh-views") == 1
    assert "no-such-command-here" in log
