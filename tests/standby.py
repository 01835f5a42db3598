"""A primary with a real streaming hot standby, both local, for the standby and lag tests.

The primary is a throwaway server of its own (``start_server``: the binaries the rest of the
suite uses, so the matrix runs these tests on every major); the standby is ``pg_basebackup
-R`` of it (or, where a build has no pg_basebackup, a copy of its cleanly stopped data
directory), started on another port, streaming as ``replica-1`` with replies every second (so
the primary sees its lag move quickly).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from harness.servers import running_server
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from dbopt.sandbox import PROBES, Probe, Server

STANDBY_NAME = "replica-1"
PRIMARY_SETTINGS = {
    "wal_level": "replica",
    "max_wal_senders": "5",
    "fsync": "off",
    "synchronous_commit": "off",
}


class StandbyUnavailable(Exception):
    """This machine cannot start a standby (no local binaries or no pg_basebackup)."""


def _as_postgres(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    prefix: list[str] = []
    if os.geteuid() == 0:
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        prefix = [runuser, "-u", "postgres", "--"]
    return subprocess.run(
        [*prefix, *argv],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Pair:
    """The primary (superuser DSN of its maintenance database) and its standby."""

    primary: Server
    standby_port: int
    standby_dir: Path

    def standby_dsn(self, dsn_on_primary: str) -> str:
        """The same database, user and password as ``dsn_on_primary``, on the standby."""
        parts = conninfo_to_dict(dsn_on_primary)
        parts.update(host="127.0.0.1", port=str(self.standby_port))
        return make_conninfo("", **{k: str(v) for k, v in parts.items() if v is not None})

    def caught_up(self, timeout: float = 60) -> None:
        """Wait until the standby has replayed everything the primary wrote so far (up to
        the insert position: with synchronous_commit off, a commit's record may not be
        written yet, and pg_current_wal_lsn() is only the write position)."""
        with psycopg.connect(self.primary.dsn, autocommit=True) as p:
            row = p.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
            assert row is not None
            target = row[0]
        with psycopg.connect(self.standby_dsn(self.primary.dsn), autocommit=True) as s:
            deadline = time.monotonic() + timeout
            while True:
                done = s.execute(
                    "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)
                ).fetchone()
                if done and done[0]:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the standby did not replay up to {target}")
                time.sleep(0.05)

    def restart_standby(self, *, primary_port: int | None = None) -> None:
        """Restart the standby streaming from ``primary_port`` (a closed port: it stops
        receiving), or from the primary again; wait until it accepts connections."""
        port = primary_port or int(conninfo_to_dict(self.primary.dsn)["port"])
        data = self.standby_dir / "data"
        with (data / "postgresql.auto.conf").open("a") as conf:
            conf.write(f"primary_conninfo = '{_conninfo(port)}'\n")
        assert self.primary.bin_dir is not None
        pg_ctl = str(self.primary.bin_dir / "pg_ctl")
        done = _as_postgres(
            [
                pg_ctl,
                "restart",
                "-D",
                str(data),
                "-m",
                "fast",
                "-w",
                "-l",
                str(self.standby_dir / "standby.log"),
            ],
            self.standby_dir,
        )
        assert done.returncode == 0, done.stderr
        if primary_port is None:
            _wait_streaming(self.primary.dsn)

    def on_standby(self, statement: str) -> Any:
        with psycopg.connect(self.standby_dsn(self.primary.dsn), autocommit=True) as s:
            return s.execute(statement).fetchall()


@contextlib.contextmanager
def primary_with_standby(probes: Sequence[Probe] = PROBES) -> Iterator[Pair]:
    """Start a primary (from ``probes``: the session's, so ``--pg-major`` holds here too) and
    a streaming standby; stop both (and delete them) at the end."""
    with running_server(PRIMARY_SETTINGS, probes=probes) as primary:
        if primary.data_dir is None or primary.bin_dir is None:
            raise StandbyUnavailable(
                "the standby tests need local PostgreSQL binaries (this server is "
                f"{primary.provider})"
            )
        basebackup = primary.bin_dir / "pg_basebackup"
        root = Path(tempfile.mkdtemp(prefix="dbopt-standby-"))
        if os.geteuid() == 0:
            shutil.chown(root, "postgres")
        data = root / "data"
        source = conninfo_to_dict(primary.dsn)
        port = _free_port()
        try:
            if os.access(basebackup, os.X_OK):
                _base_backup(basebackup, source, data, root)
            else:
                _cold_copy(primary, data, root)
            conninfo = _conninfo(int(source["port"]))
            with (data / "postgresql.auto.conf").open("a") as conf:
                conf.write(
                    f"port = {port}\n"
                    "unix_socket_directories = ''\n"
                    "hot_standby = on\n"
                    "wal_receiver_status_interval = 1s\n"
                    "hot_standby_feedback = off\n"
                    f"primary_conninfo = '{conninfo}'\n"
                )
            log = root / "standby.log"
            pg_ctl = str(primary.bin_dir / "pg_ctl")
            started = _as_postgres([pg_ctl, "start", "-D", str(data), "-l", str(log), "-w"], root)
            if started.returncode != 0:
                text = log.read_text(errors="replace") if log.exists() else started.stderr
                raise StandbyUnavailable(f"the standby did not start: {text[-1500:]}")
            pair = Pair(primary, port, root)
            _wait_streaming(primary.dsn)
            yield pair
        finally:
            if (data / "postmaster.pid").exists():
                _as_postgres(
                    [str(primary.bin_dir / "pg_ctl"), "stop", "-D", str(data), "-m", "immediate"],
                    root,
                )
            shutil.rmtree(root, ignore_errors=True)


def _base_backup(basebackup: Path, source: dict[str, Any], data: Path, root: Path) -> None:
    """``pg_basebackup -R`` of the running primary into ``data``."""
    done = _as_postgres(
        [
            str(basebackup),
            "-h",
            str(source.get("host", "127.0.0.1")),
            "-p",
            str(source["port"]),
            "-U",
            str(source.get("user", "postgres")),
            "-D",
            str(data),
            "-R",
            "-X",
            "stream",
            "--no-sync",
        ],
        root,
    )
    if done.returncode != 0:
        raise StandbyUnavailable(f"pg_basebackup failed: {done.stderr.strip()}")


def _cold_copy(primary: Server, data: Path, root: Path) -> None:
    """A standby without pg_basebackup (the npm builds carry none): stop the primary
    cleanly, copy its data directory, start it again; the copy becomes a standby
    (standby.signal, PostgreSQL 12+) that streams from the shutdown checkpoint on."""
    assert primary.data_dir is not None and primary.bin_dir is not None
    pg_ctl = str(primary.bin_dir / "pg_ctl")
    source = primary.data_dir
    stopped = _as_postgres([pg_ctl, "stop", "-D", str(source), "-m", "fast", "-w"], root)
    if stopped.returncode != 0:
        raise StandbyUnavailable(f"the primary did not stop for a copy: {stopped.stderr}")
    try:
        shutil.copytree(
            source, data, ignore=shutil.ignore_patterns("postmaster.pid", "postmaster.opts")
        )
    finally:
        log = source.parent / "server.log"
        started = _as_postgres([pg_ctl, "start", "-D", str(source), "-l", str(log), "-w"], root)
        if started.returncode != 0:
            raise StandbyUnavailable(f"the primary did not start again: {started.stderr}")
    if os.geteuid() == 0:
        for path in (data, *data.rglob("*")):
            shutil.chown(path, "postgres", "postgres")
    (data / "standby.signal").touch()


def _conninfo(port: int) -> str:
    return f"host=127.0.0.1 port={port} user=postgres application_name={STANDBY_NAME}"


def _wait_streaming(dsn: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_replication WHERE application_name = %s "
                "AND state = 'streaming'",
                (STANDBY_NAME,),
            ).fetchone()
            if row and row[0]:
                return
            time.sleep(0.1)
    raise StandbyUnavailable("the standby never started streaming")
