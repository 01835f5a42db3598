"""Local server binaries as a provider: a new cluster in a temporary directory, on a free
loopback port, run as the postgres account when dbopt runs as root, deleted on stop."""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from dbopt.errors import SandboxError
from dbopt.sandbox.server import (
    Backend,
    Provider,
    Server,
    ServerOptions,
    connect,
    server_settings,
    version_label,
)

PG_BIN_ENV = "DBOPT_PG_BIN"
TEMP_PREFIX = "dbopt-sandbox-"
_UNIX_SOCKET_MAX = 100  # sun_path holds 108 bytes on Linux, 104 on macOS; keep a margin


def probe_local(bin_dir: Path | None = None) -> Provider | str:
    """Use local server binaries (those in ``bin_dir``, else the first found), when runnable
    by this user."""
    if bin_dir is not None and not _has_server(bin_dir):
        return f"local binaries: no initdb, pg_ctl and postgres in {bin_dir}"
    found = _find_bin_dir() if bin_dir is None else bin_dir
    if isinstance(found, str):
        return f"local binaries: {found}"
    bin_dir = found
    if os.geteuid() == 0:
        # The server refuses to run as root, so it runs as the account packages create.
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "local binaries: running as root and there is no 'postgres' account"
        if _runuser() is None:
            return "local binaries: running as root and runuser (util-linux) is not installed"
    label = f"local binaries {bin_dir}"
    version = _binary_version(bin_dir)
    if version:
        label += f" ({version})"
    return Provider(label, lambda options: _start_local(bin_dir, options))


def _runuser() -> str | None:
    """Return runuser's path; PATH under sudo or cron may lack the sbin directories."""
    for candidate in (shutil.which("runuser"), "/usr/sbin/runuser", "/sbin/runuser"):
        if candidate is not None and os.access(candidate, os.X_OK):
            return candidate
    return None


def _find_bin_dir() -> Path | str:
    """Return the directory of initdb/pg_ctl, or the reason none was found."""
    explicit = os.environ.get(PG_BIN_ENV, "").strip()
    if explicit:
        # Set means "only this directory": a wrong setting is reported, never papered over.
        path = Path(explicit)
        if _has_server(path):
            return path
        return f"no initdb and pg_ctl found in {PG_BIN_ENV}={explicit}"
    tried: list[str] = [f"{PG_BIN_ENV} not set"]
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        bindir = _pg_config(pg_config, "--bindir")
        if bindir is not None and _has_server(Path(bindir)):
            return Path(bindir)
        tried.append(f"no initdb in pg_config --bindir ({bindir})")
    else:
        tried.append("no pg_config on PATH")
    debian = _newest_debian_bin_dir()
    if debian is not None:
        return debian
    tried.append("nothing in /usr/lib/postgresql/*/bin")
    initdb = shutil.which("initdb")
    if initdb is not None and _has_server(Path(initdb).parent):
        return Path(initdb).parent
    tried.append("no initdb on PATH")
    return "no initdb found (" + "; ".join(tried) + ")"


def _has_server(bin_dir: Path) -> bool:
    """Tell whether a directory holds the programs needed to run a cluster."""
    return all(os.access(bin_dir / name, os.X_OK) for name in ("initdb", "pg_ctl", "postgres"))


def _newest_debian_bin_dir() -> Path | None:
    """Return the highest-version /usr/lib/postgresql/<version>/bin holding a server."""
    candidates: list[tuple[tuple[int, ...], Path]] = []
    for bin_dir in Path("/usr/lib/postgresql").glob("*/bin"):
        version = bin_dir.parent.name
        if re.fullmatch(r"\d+(\.\d+)*", version) and _has_server(bin_dir):
            candidates.append((tuple(int(part) for part in version.split(".")), bin_dir))
    return max(candidates)[1] if candidates else None


def _pg_config(pg_config: str, flag: str) -> str | None:
    """Return one value printed by pg_config, or None when it cannot run."""
    try:
        done = subprocess.run(
            [pg_config, flag], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    value = done.stdout.strip()
    return value if done.returncode == 0 and value else None


def _binary_version(bin_dir: Path) -> str | None:
    """Return e.g. ``PostgreSQL 15.18`` from ``postgres --version`` (allowed even as root)."""
    try:
        done = subprocess.run(
            [str(bin_dir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"\(PostgreSQL\)\s+(\S+)", done.stdout)
    return f"PostgreSQL {match.group(1)}" if match else None


def _pkglib_dirs(bin_dir: Path) -> list[Path]:
    """Return where the server's loadable modules (pg_stat_statements.so...) may be.

    ``pg_config --pkglibdir`` when a pg_config of this very installation is found; else the
    places a build puts them relative to its programs: ``lib/postgresql`` (a prefix without
    "postgres" in it, as in relocatable builds) and ``lib`` (Debian's own layout).
    """
    candidates = [str(bin_dir / "pg_config")]
    on_path = shutil.which("pg_config")
    if on_path is not None:
        candidates.append(on_path)
    for pg_config in candidates:
        if not os.access(pg_config, os.X_OK):
            continue
        # A pg_config of another installation would name another server's modules.
        bindir = _pg_config(pg_config, "--bindir")
        if bindir is None or Path(bindir).resolve() != bin_dir.resolve():
            continue
        pkglibdir = _pg_config(pg_config, "--pkglibdir")
        if pkglibdir is not None:
            return [Path(pkglibdir)]
    return [bin_dir.parent / "lib" / "postgresql", bin_dir.parent / "lib"]


def _conf_line(name: str, value: str) -> str:
    """Return one postgresql.conf line with the value quoted as the server parses it."""
    escaped = value.replace("\\", "\\\\").replace("'", "''")
    return f"{name} = '{escaped}'\n"


class _LocalBackend(Backend):
    """A cluster this process created in a temporary directory."""

    def __init__(self, bin_dir: Path, root: Path) -> None:
        self.bin_dir = bin_dir
        self.root = root
        self.data_dir = root / "data"

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a server program, as the postgres account when we are root."""
        runuser = _runuser() if os.geteuid() == 0 else None
        prefix = [runuser, "-u", "postgres", "--"] if runuser is not None else []
        return subprocess.run(
            [*prefix, str(self.bin_dir / argv[0]), *argv[1:]],
            # The caller's working directory may be unreadable by the postgres account.
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def log_tail(self, lines: int = 15) -> str:
        """Return the end of the server log, for error messages."""
        try:
            text = (self.root / "server.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the server (fast, then immediate, then SIGKILL) and delete its directory."""
        try:
            if (self.data_dir / "postmaster.pid").exists():
                for mode in ("fast", "immediate"):
                    argv = ("pg_ctl", "stop", "-D", str(self.data_dir), "-m", mode, "-w")
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        if self.run(*argv, "-t", "20", timeout=30).returncode == 0:
                            break
                _kill_postmaster(self.data_dir)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
        if self.root.exists():
            raise SandboxError(f"could not delete the sandbox directory {self.root}")


def _kill_postmaster(data_dir: Path) -> None:
    """SIGKILL a postmaster that survived pg_ctl, after checking the pid is really it."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return
    # A stale pid file may name a pid reused by an unrelated process.
    if str(data_dir).encode() in cmdline:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _temp_base() -> Path:
    """Return where to create the cluster directory: somewhere the server account can reach."""
    base = Path(tempfile.gettempdir())
    if os.geteuid() != 0:
        return base
    # As root, TMPDIR may sit under /root, which the postgres account cannot traverse.
    for directory in (base, *base.parents):
        if not directory.stat().st_mode & 0o001:
            return Path("/tmp")
    return base


def _reap_stale(base: Path) -> None:
    """Delete clusters left by sandbox processes that were killed without cleaning up."""
    for root in base.glob(f"{TEMP_PREFIX}*"):
        try:
            host, pid = (root / "owner").read_text().split()
            owner = int(pid)
        except (OSError, ValueError):
            continue
        # Another host (a container sharing /tmp) has pids we cannot see: leave its dirs be.
        if host != socket.gethostname() or _pid_alive(owner):
            continue
        with contextlib.suppress(OSError):
            _kill_postmaster(root / "data")
            shutil.rmtree(root, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    """Tell whether a process exists (one owned by another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _free_port() -> int:
    """Return a loopback TCP port that is free now (the server may still lose a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_local(bin_dir: Path, options: ServerOptions) -> Server:
    """initdb a new cluster in a temporary directory and start it on a free loopback port."""
    base = _temp_base()
    _reap_stale(base)
    root = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=base))
    # Lets a later start delete this directory if this process dies without cleaning up.
    (root / "owner").write_text(f"{socket.gethostname()} {os.getpid()}")
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(root, account.pw_uid, account.pw_gid)
    backend = _LocalBackend(bin_dir, root)
    try:
        return _init_and_start(backend, options)
    except BaseException:
        # Also on Ctrl-C during initdb: leave no directory and no server behind.
        with contextlib.suppress(Exception):
            backend.stop()
        raise


def _init_and_start(backend: _LocalBackend, options: ServerOptions) -> Server:
    """Run initdb, write the settings, start the server and connect once."""
    data = str(backend.data_dir)
    initdb = ("initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8")
    done = backend.run(*initdb, "--locale=C", "--no-sync", timeout=120)
    if done.returncode != 0:
        raise SandboxError(f"local binaries: initdb failed: {done.stderr.strip()[-1500:]}")
    pkglibs = _pkglib_dirs(backend.bin_dir)
    present = {
        lib
        for lib in options.optional_preload
        if any(
            (pkglib / f"{lib}{suffix}").exists()
            for pkglib in pkglibs
            for suffix in (".so", ".dylib")
        )
    }
    settings = server_settings(options, present)
    socket_dir = str(backend.root)
    if len(socket_dir) + len("/.s.PGSQL.65535") > _UNIX_SOCKET_MAX:
        socket_dir = ""  # too long for a socket path: TCP only, which is all we use
    conf = backend.data_dir / "postgresql.conf"
    for attempt in range(3):
        port = _free_port()
        lines = {
            **settings,
            "listen_addresses": "127.0.0.1",
            "port": str(port),
            "unix_socket_directories": socket_dir,
        }
        with conf.open("a", encoding="utf-8") as out:
            # Later lines win, so a retry's port simply overrides the previous one.
            out.write("".join(_conf_line(name, value) for name, value in lines.items()))
        started = time.monotonic()
        log_file = str(backend.root / "server.log")
        start = ("pg_ctl", "start", "-D", data, "-l", log_file, "-w", "-t", "60", "-s")
        done = backend.run(*start, timeout=90)
        if done.returncode == 0:
            break
        log = backend.log_tail()
        if "could not bind" in log and attempt < 2:
            continue  # another process took the port between our check and the bind
        raise SandboxError(
            f"local binaries: the server did not start after {time.monotonic() - started:.1f} s"
            f":\n{log or done.stderr.strip()}"
        )
    dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    with connect(dsn) as conn:
        version = version_label(conn)
    return Server(
        dsn=dsn,
        provider=f"local binaries {backend.bin_dir} ({version})",
        bin_dir=backend.bin_dir,
        data_dir=backend.data_dir,
        _backend=backend,
    )
