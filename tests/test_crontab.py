"""`refresh-views --emit crontab`: lines that really run under cron, on the target given.

Each produced line is parsed as crontab(5) reads it (five schedule fields, then a command in
which ``\\%`` stands for ``%``) and its command is run by ``sh -c`` in cron's bare
environment, with a stub ``dbopt`` that records how it was called.
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

import pytest
from croniter import croniter
from helpers import clean_env, cli, poll

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


def entries(text: str) -> list[tuple[str, str]]:
    """(schedule, command) of each crontab line, the command as cron hands it to sh."""
    found = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
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
    assert command.endswith(" 2>&1 | logger -t dbopt")
    words = shlex.split(command.removesuffix(" 2>&1 | logger -t dbopt"))
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
        assert "flock" in words
        assert os.path.isabs(words[words.index("refresh-views") - 1])
