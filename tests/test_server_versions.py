"""A server older than dbopt supports: every command exits 2 with one sentence, before any SQL.

The server is a real PostgreSQL 11 (the npm build, cached by tests/harness/builds.py), started
once for this module. It is not the session's server, so these tests are not `db` tests: the
version matrix runs them once, with the unit tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from harness import builds
from harness.servers import running_server
from helpers import Write, cli

from dbopt.db import MIN_SERVER_VERSION, connect
from dbopt.ddl import needs_newer_server
from dbopt.errors import EXIT_BAD_INPUT, UnsupportedServerError
from dbopt.sandbox import PG_BIN_ENV, probe_local
from dbopt.spec import load_specs

TOO_OLD = 11


@pytest.fixture(scope="module")
def old_bin_dir() -> Path:
    """PostgreSQL 11's server programs (fetched into the cache on first use)."""
    try:
        return builds.bin_dir_for(TOO_OLD)
    except builds.BuildError as err:
        pytest.fail(f"PostgreSQL {TOO_OLD} is needed for this test: {err}", pytrace=False)


@pytest.fixture(scope="module")
def old_dsn(old_bin_dir: Path) -> Iterator[str]:
    """A throwaway PostgreSQL 11 server's maintenance database."""
    with running_server(probes=(partial(probe_local, old_bin_dir),)) as server:
        yield server.dsn


SENTENCE = "runs PostgreSQL 11.22, and dbopt needs PostgreSQL 12 or later."


@pytest.mark.slow
def test_connect_refuses_a_server_older_than_12(old_dsn: str) -> None:
    assert MIN_SERVER_VERSION == 120000
    with pytest.raises(UnsupportedServerError) as caught:
        connect(old_dsn)
    assert caught.value.exit_code == EXIT_BAD_INPUT
    assert str(caught.value).endswith(SENTENCE)


SPECS = {
    "indexes/users.yaml": """\
        table: users
        indexes:
          - {name: users_email, columns: [email]}
        queries:
          - {name: by_email, sql: "SELECT 1 FROM users WHERE email = 'a'", budget_ms: 5}
    """,
    "views/mv_users.yaml": """\
        name: mv_users
        query: SELECT count(*) AS n FROM users
    """,
}

COMMANDS = [
    ("validate",),
    ("plan",),
    ("apply", "--yes"),
    ("verify",),
    ("rollback", "--plan", "--last"),
    ("refresh-views",),
    ("status",),
]


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_every_command_exits_2_with_one_sentence(
    old_dsn: str, write: Write, command: tuple[str, ...]
) -> None:
    write(**SPECS)
    result = cli(*command, "--dsn", old_dsn)
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert result.stdout == ""
    assert result.stderr.endswith(f"{SENTENCE}\n"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_sandbox_refuses_to_offer_a_server_older_than_12(
    old_bin_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only local binaries, and those are PostgreSQL 11.
    monkeypatch.delenv("DBOPT_TEST_DSN", raising=False)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    monkeypatch.setenv(PG_BIN_ENV, str(old_bin_dir))
    result = cli("sandbox", "--exit-after-ready")
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert result.stdout == ""
    assert SENTENCE in result.stderr
    assert "Traceback" not in result.output


# --- what an older server cannot build --------------------------------------------------------

NEWER = Path(__file__).parent / "cases" / "newer_index_features" / "specs"


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        (
            120022,
            {
                "accounts_slug_nulls": ["NULLS NOT DISTINCT needs PostgreSQL 15 or later"],
                "accounts_slug_spgist": ["INCLUDE columns on an spgist index needs PostgreSQL 14"],
                "accounts_tenant_slug_dedup": ["deduplicate_items needs PostgreSQL 13 or later"],
            },
        ),
        (140001, {"accounts_slug_nulls": ["NULLS NOT DISTINCT needs PostgreSQL 15 or later"]}),
        (150000, {}),
        (180004, {}),
    ],
)
def test_what_each_release_cannot_build_is_named_with_the_release_that_can(
    version: int, expected: dict[str, list[str]]
) -> None:
    running = f"; this server runs PostgreSQL {version // 10000}.{version % 10000}"
    found = {
        spec.name: needs
        for spec in load_specs([(NEWER, True)]).indexes
        if (needs := needs_newer_server(spec, version))
    }
    assert set(found) == set(expected)
    for name, needs in found.items():
        assert len(needs) == len(expected[name]) == 1
        assert expected[name][0] in needs[0] and needs[0].endswith(running)
