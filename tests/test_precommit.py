"""The pre-commit hook, run the way pre-commit runs it (no database).

pre-commit reads .pre-commit-hooks.yaml, picks the changed files whose path matches the hook's
``files`` regex (``re.search``, paths relative to the repository root), skips the hook when
none does, and otherwise runs ``entry`` split like a shell would, followed by ``args`` and, when
``pass_filenames`` is true, the chosen files; at the repository root. This test does the same
with the ``dbopt`` this virtualenv installs (what ``language: python`` installs).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from helpers import write_files

REPO = Path(__file__).resolve().parents[1]

GOOD = {
    "indexes/users.yaml": """\
        table: users
        indexes:
          - {name: users_email, columns: [email]}
    """,
    "views/mv_signups.yml": """\
        name: mv_signups
        query: SELECT date(created_at) AS day, count(*) AS n FROM users GROUP BY 1
        indexes:
          - {name: mv_signups_day, columns: [day], unique: true}
    """,
}

#: The misspelt key of a changed file, and a duplicate name only the whole set shows.
BAD = {
    "indexes/users.yaml": """\
        table: users
        indexes:
          - {name: users_email, colums: [email]}
    """,
    "indexes/orders.yaml": """\
        table: orders
        indexes:
          - {name: mv_signups_day, columns: [customer_id]}
    """,
}


def hook() -> dict[str, Any]:
    hooks = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))
    assert [h["id"] for h in hooks] == ["dbopt-validate"]
    found: dict[str, Any] = hooks[0]
    assert found["language"] == "python"  # pre-commit pip-installs this repository
    return found


def run_hook(root: Path, changed: list[str]) -> subprocess.CompletedProcess[str] | None:
    """What pre-commit does with ``changed``: None when the hook is skipped."""
    spec = hook()
    chosen = [name for name in changed if re.search(spec["files"], name)]
    if not chosen:
        return None
    argv = shlex.split(spec["entry"]) + spec.get("args", [])
    if spec.get("pass_filenames", True):
        argv += chosen
    bindir = str(Path(sys.executable).parent)  # where `dbopt` is installed
    env = {k: v for k, v in os.environ.items() if k not in ("DBOPT_DSN", "DATABASE_URL")}
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    return subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=60)


def test_files_selects_spec_files_and_dbopt_yaml_only() -> None:
    pattern = hook()["files"]
    for path in ("indexes/a.yaml", "views/mv.yml", "indexes/sub/b.yaml", "dbopt.yaml"):
        assert re.search(pattern, path), path
    for path in ("README.md", "indexes/notes.md", "tests/indexes/a.yaml", "other.yaml"):
        assert not re.search(pattern, path), path


def test_the_hook_passes_good_specs_and_reports_bad_ones_at_file_line(tmp_path: Path) -> None:
    write_files(tmp_path, GOOD)
    assert run_hook(tmp_path, ["README.md"]) is None  # no spec changed: skipped
    ok = run_hook(tmp_path, ["views/mv_signups.yml"])
    assert ok is not None
    assert (ok.returncode, ok.stdout) == (
        0,
        "ok: 2 files, 2 indexes, 1 materialized views, 0 budgeted queries\n",
    ), ok.stderr
    write_files(tmp_path, BAD)
    # Only users.yaml changed, yet the duplicate with the unchanged view file is found too:
    # the hook validates the spec set as a whole (pass_filenames: false).
    bad = run_hook(tmp_path, ["indexes/users.yaml"])
    assert bad is not None
    assert bad.returncode == 2
    assert "indexes/users.yaml:3:25: indexes[0]: unknown key 'colums'" in bad.stderr
    assert (
        "views/mv_signups.yml:4:5: index name 'public.mv_signups_day' is already used at "
        "indexes/orders.yaml:3:5" in bad.stderr
    )
