"""The CI recipes (docs/ci/) and the Kubernetes CronJob (docs/container.md) stay true.

Each file is parsed as the CI system would read it, its structure checked (a PostgreSQL
service, the JUnit report published even when verify fails, the step summary), and every
dbopt command line in it is parsed by dbopt's own Click commands: an unknown flag, a wrong
choice or a missing value fails here instead of in a user's pipeline. No database.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from dbopt.cli import main

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
    assert [a[0] for a in found] == ["validate", "apply", "verify"]
    assert any("psql" in r and "-f" in r for r in runs)  # the schema is loaded before apply
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
    assert [a[0] for a in found] == ["validate", "apply", "verify"]
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
