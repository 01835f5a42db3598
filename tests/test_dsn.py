"""Unit tests of dbopt.dsn: no password ever survives masking, labelling or scrubbing."""

from __future__ import annotations

import pytest

from dbopt.dsn import describe_target, expand_env, mask_dsn, scrub, secrets_of
from dbopt.errors import ConfigError
from dbopt.progress import Blocker, mask_sql_secrets


@pytest.fixture(autouse=True)
def _pinned_libpq_env(no_libpq_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Labels fall back to the libpq environment: pin it so results do not depend on the host."""
    monkeypatch.setenv("PGUSER", "envuser")


# (dsn, the password(s) it holds, expected mask_dsn, expected describe_target)
CASES = [
    pytest.param(
        "postgresql://alice:Sup3rSecret@db.example.com:5432/shop?sslmode=require",
        ["Sup3rSecret"],
        "postgresql://alice:***@db.example.com:5432/shop?sslmode=require",
        "alice@db.example.com:5432/shop",
        id="uri",
    ),
    pytest.param(
        "postgres://alice:Sup3rSecret@db.example.com/shop",
        ["Sup3rSecret"],
        "postgres://alice:***@db.example.com/shop",
        "alice@db.example.com:5432/shop",
        id="uri-postgres-scheme",
    ),
    pytest.param(
        "postgresql://alice:p%40ss%2Fw%3Ard@db/shop",
        ["p%40ss%2Fw%3Ard", "p@ss/w:rd"],
        "postgresql://alice:***@db/shop",
        "alice@db:5432/shop",
        id="uri-url-encoded",
    ),
    pytest.param(
        "postgresql://alice:Sup3rSecret@h1:5432,h2:5433/shop?target_session_attrs=read-write",
        ["Sup3rSecret"],
        "postgresql://alice:***@h1:5432,h2:5433/shop?target_session_attrs=read-write",
        "alice@h1:5432,h2:5433/shop",
        id="uri-multi-host",
    ),
    pytest.param(
        "postgresql://alice:Sup3rSecret@[::1]:6543,h2/shop",
        ["Sup3rSecret"],
        "postgresql://alice:***@[::1]:6543,h2/shop",
        "alice@[::1]:6543,h2:5432/shop",
        id="uri-ipv6-multi-host",
    ),
    pytest.param(
        "postgresql://alice@db/shop?password=Qu3ry%26Secret&sslmode=disable",
        ["Qu3ry%26Secret", "Qu3ry&Secret"],
        "postgresql://alice@db/shop?password=***&sslmode=disable",
        "alice@db:5432/shop",
        id="uri-query-password",
    ),
    pytest.param(
        "postgresql:///shop?host=/var/run/postgresql&pass%77ord=EncodedKey99",
        ["EncodedKey99"],
        "postgresql:///shop?host=/var/run/postgresql&pass%77ord=***",
        "envuser@/var/run/postgresql:5432/shop",
        id="uri-query-encoded-key",
    ),
    pytest.param(
        "postgresql://alice:UserInfoPw@db/shop?password=QueryPw42",
        ["UserInfoPw", "QueryPw42"],
        "postgresql://alice:***@db/shop?password=***",
        "alice@db:5432/shop",
        id="uri-two-passwords",
    ),
    pytest.param(
        "postgresql://alice:we?ird#pw@db/shop",
        ["we?ird#pw"],
        "postgresql://alice:***@db/shop",
        "alice@db:5432/shop",
        id="uri-password-with-question-mark",
    ),
    pytest.param(
        "postgresql://alice:p@ssw0rd@db/shop",
        ["p@ssw0rd", "ssw0rd"],
        "postgresql://alice:***@db/shop",
        "alice@db:5432/shop",
        id="uri-unencoded-at-in-password",
    ),
    pytest.param(
        "postgresql://alice:sl/ash3d@db/shop",
        ["sl/ash3d", "ash3d"],
        "postgresql://alice:***@db/shop",
        "alice@db:5432/shop",
        id="uri-unencoded-slash-in-password",
    ),
    pytest.param(
        "postgresql://alice:NoAtSign77/shop",
        ["NoAtSign77"],
        "postgresql://alice:***/shop",
        "envuser@alice:***/shop",
        id="uri-password-without-at",
    ),
    pytest.param(
        "postgresql://alice:Sup3rSecret@db/team@prod",
        ["Sup3rSecret"],
        "postgresql://alice:***@db/team@prod",
        "alice@db:5432/team@prod",
        id="uri-dbname-with-at",
    ),
    pytest.param(
        "host=db.example.com port=5433 user=bob password=Plain55 dbname=shop",
        ["Plain55"],
        "host=db.example.com port=5433 user=bob password=*** dbname=shop",
        "bob@db.example.com:5433/shop",
        id="kv",
    ),
    pytest.param(
        "host=x password='se cret' user=y",
        ["se cret"],
        "host=x password=*** user=y",
        "y@x:5432/y",
        id="kv-quoted-space",
    ),
    pytest.param(
        r"host=x password='it\'s a \\secret' user=y",
        ["it's a \\secret", r"it\'s a \\secret"],
        "host=x password=*** user=y",
        "y@x:5432/y",
        id="kv-escaped-quotes",
    ),
    pytest.param(
        r"password=back\ slash\'d host=x",
        ["back slash'd"],
        "password=*** host=x",
        "envuser@x:5432/envuser",
        id="kv-unquoted-escapes",
    ),
    pytest.param(
        "host = x  password =  Spaced99\tuser=y",
        ["Spaced99"],
        "host = x  password =  ***\tuser=y",
        "y@x:5432/y",
        id="kv-spaces-around-equals",
    ),
    pytest.param(
        "password='Adjacent1'user=y host=x",
        ["Adjacent1"],
        "password=*** user=y host=x",
        "y@x:5432/y",
        id="kv-quoted-then-adjacent-pair",
    ),
    pytest.param(
        "host=x sslpassword=KeyPass1 password=Pw2222",
        ["KeyPass1", "Pw2222"],
        "host=x sslpassword=*** password=***",
        "envuser@x:5432/envuser",
        id="kv-sslpassword",
    ),
    pytest.param(
        "host=x dbname='postgresql://u:Nested123@inner/db'",
        ["Nested123"],
        "host=x dbname=postgresql://u:***@inner/db",
        "envuser@x:5432/postgresql://u:***@inner/db",
        id="kv-dbname-holding-a-uri",
    ),
    pytest.param(
        "service=reporting",
        [],
        "service=reporting",
        "service=reporting",
        id="service",
    ),
    pytest.param(
        "",
        [],
        "",
        "envuser@[local]:5432/envuser",
        id="empty-libpq-environment",
    ),
]


@pytest.mark.parametrize(("dsn", "passwords", "masked", "label"), CASES)
def test_mask_dsn(dsn: str, passwords: list[str], masked: str, label: str) -> None:
    result = mask_dsn(dsn)
    assert result == masked
    for password in passwords:
        assert password not in result


@pytest.mark.parametrize(("dsn", "passwords", "masked", "label"), CASES)
def test_describe_target(dsn: str, passwords: list[str], masked: str, label: str) -> None:
    result = describe_target(dsn)
    assert result == label
    for password in passwords:
        assert password not in result


@pytest.mark.parametrize(("dsn", "passwords", "masked", "label"), CASES)
def test_secrets_of_finds_every_password(
    dsn: str, passwords: list[str], masked: str, label: str
) -> None:
    found = secrets_of(dsn)
    for password in passwords:
        assert password in found
    assert "" not in found
    # Scrubbing text that quotes the DSN itself leaves no password behind.
    scrubbed = scrub(f"error near {dsn}", found)
    for password in passwords:
        assert password not in scrubbed


UNPARSEABLE = [
    pytest.param(
        "host=x password=se cret", "<unparseable DSN>", ["se cret", "cret"], id="kv-space"
    ),
    pytest.param(
        "host=x password='unterminated", "<unparseable DSN>", ["unterminated"], id="kv-quote"
    ),
    pytest.param(
        "postgresql://alice:Pw4567@db/shop?password=a&b",
        "<unparseable DSN: postgresql://db>",
        ["Pw4567", "a&b"],
        id="uri-bad-query",
    ),
    pytest.param(
        "postgresql://db/shop?password=Amp&ersand",
        "<unparseable DSN: postgresql://>",
        ["Amp&ersand"],
        id="uri-no-userinfo",
    ),
    pytest.param(
        "POSTGRESQL://alice:Upper99@db/shop",
        "<unparseable DSN: POSTGRESQL://db>",
        ["Upper99"],
        id="uri-upper-scheme",
    ),
    pytest.param("just some garbage Hunter2", "<unparseable DSN>", [], id="garbage"),
    pytest.param("password", "<unparseable DSN>", [], id="bare-word"),
    pytest.param("=", "<unparseable DSN>", [], id="bare-equals"),
]


@pytest.mark.parametrize(("dsn", "rendering", "secrets"), UNPARSEABLE)
def test_unparseable_dsn_is_never_echoed(dsn: str, rendering: str, secrets: list[str]) -> None:
    assert mask_dsn(dsn) == rendering
    assert describe_target(dsn) == rendering
    found = secrets_of(dsn)
    for secret in secrets:
        assert secret in found
        assert secret not in mask_dsn(dsn)


@pytest.mark.parametrize(
    "dsn",
    ["", " ", "'", "\\", "postgresql://", "postgresql://@", "postgresql://:@/?&=", "\x00", "é=ü"],
)
def test_garbage_never_raises(dsn: str) -> None:
    mask_dsn(dsn)
    describe_target(dsn)
    secrets_of(dsn)


def test_describe_target_uses_libpq_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHOST", "envhost")
    monkeypatch.setenv("PGPORT", "6432")
    monkeypatch.setenv("PGDATABASE", "envdb")
    assert describe_target("") == "envuser@envhost:6432/envdb"
    assert describe_target("dbname=other") == "envuser@envhost:6432/other"
    assert describe_target("postgresql://alice:Pw@db/shop") == "alice@db:6432/shop"


def test_describe_target_with_pgservice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGSERVICE", "nightly")
    assert describe_target("") == "service=nightly"
    assert describe_target("dbname=x") == "service=nightly"
    # An explicit host wins over the environment's service.
    assert describe_target("host=h dbname=x") == "envuser@h:5432/x"


def test_describe_target_keeps_a_user_named_like_the_password() -> None:
    # The label has no password field at all; hiding "postgres" would leave "***@...".
    dsn = "postgresql://postgres:postgres@localhost/postgres"
    assert describe_target(dsn) == "postgres@localhost:5432/postgres"
    assert mask_dsn(dsn) == "postgresql://postgres:***@localhost/postgres"


def test_secrets_of_gives_raw_and_decoded_forms() -> None:
    assert secrets_of("postgresql://u:a%20b@h/db") == ["a%20b", "a b"]
    assert secrets_of("password='x\\'y' host=h") == ["x'y", "'x\\'y'", "x\\'y"]
    assert secrets_of("host=h user=u") == []


# ---------------------------------------------------------------------------------------------
# scrub


def test_scrub_replaces_every_occurrence() -> None:
    text = 'FATAL: password "Hunter2" rejected; Hunter2 again'
    assert scrub(text, ["Hunter2"]) == 'FATAL: password "***" rejected; *** again'


def test_scrub_hides_overlapping_and_nested_secrets_whole() -> None:
    # "xsec" and "secret" overlap: no piece of either survives.
    assert scrub("[xsecretx]", ["secret", "xsec"]) == "[***x]"
    assert scrub("p%40ss and p@ss", ["p@ss", "p%40ss"]) == "*** and ***"
    assert scrub("aaaa", ["aa"]) == "***"


def test_scrub_ignores_empty_secrets_and_keeps_text_without_secrets() -> None:
    assert scrub("nothing to hide", ["", "absent"]) == "nothing to hide"
    assert scrub("", ["x"]) == ""
    assert scrub("abc", iter(["b"])) == "a***c"


def test_scrub_single_character_secret() -> None:
    assert scrub("a-b-a", ["a"]) == "***-b-***"


# ---------------------------------------------------------------------------------------------
# expand_env

ENV = {"DB_HOST": "db.internal", "DB_PASSWORD": "Pa$$w0rd", "EMPTY": ""}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("postgresql://app@${DB_HOST}/shop", "postgresql://app@db.internal/shop"),
        ("password=${DB_PASSWORD}", "password=Pa$$w0rd"),
        ("${MISSING:-localhost}", "localhost"),
        ("${EMPTY:-fallback}", "fallback"),
        ("${DB_HOST:-unused}", "db.internal"),
        ("${EMPTY}", ""),
        ("$$", "$"),
        ("cost$$5 and $${DB_HOST}", "cost$5 and ${DB_HOST}"),
        ("a $ b $x", "a $ b $x"),
        ("${MISSING:-${DB_HOST}:5432}", "db.internal:5432"),
        ("${DB_HOST:-${MISSING}}", "db.internal"),
        ("${MISSING:-}", ""),
        ("no variables", "no variables"),
        ("", ""),
    ],
)
def test_expand_env(value: str, expected: str) -> None:
    assert expand_env(value, ENV) == expected


def test_expand_env_missing_variable_names_it() -> None:
    with pytest.raises(ConfigError) as info:
        expand_env("postgresql://app:${DB_PASS}@${DB_HOST}/shop", ENV)
    assert str(info.value) == (
        "environment variable DB_PASS is not set (write ${DB_PASS:-default} to give a default)"
    )
    assert info.value.exit_code == 2


def test_expand_env_missing_variable_inside_a_used_default() -> None:
    with pytest.raises(ConfigError, match=r"^environment variable NOPE is not set"):
        expand_env("${MISSING:-${NOPE}}", ENV)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "${}",
            "invalid ${...} reference at character 1: expected a variable name "
            "(letters, digits, _); write $$ for a literal $",
        ),
        (
            "x${1A}",
            "invalid ${...} reference at character 2: expected a variable name "
            "(letters, digits, _); write $$ for a literal $",
        ),
        ("${DB_HOST", "invalid reference to DB_HOST at character 10: expected '}' or ':-default}'"),
        (
            "${DB_HOST-x}",
            "invalid reference to DB_HOST at character 10: expected '}' or ':-default}'",
        ),
        ("${MISSING:-x", "unterminated ${...:-default}: missing '}'"),
    ],
)
def test_expand_env_syntax_errors(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        expand_env(value, ENV)
    assert str(info.value) == message


def test_expand_env_error_never_shows_a_value() -> None:
    with pytest.raises(ConfigError) as info:
        expand_env("${DB_PASSWORD}${NOPE}", ENV)
    assert "Pa$$w0rd" not in str(info.value)


# --- what the environment supplies, and DSNs that mean the same elsewhere ---------------


def test_environment_parts_name_what_libpq_takes_from_pg_variables() -> None:
    from dbopt.dsn import environment_parts

    environ = {"PGHOST": "db-staging", "PGPORT": "5433", "PGUSER": "ops", "PGPASSWORD": "pw"}
    parts = environment_parts("dbname=app", environ)
    assert [str(p) for p in parts] == [
        "host from PGHOST (db-staging)",
        "port from PGPORT (5433)",
        "user from PGUSER (ops)",
    ]
    assert environment_parts("postgresql://u@db1:5432/app", environ) == []
    # An empty value is as good as missing, for libpq: host='' takes PGHOST.
    assert [p.keyword for p in environment_parts("host='' dbname=app user=u", environ)] == [
        "host",
        "port",
    ]
    assert environment_parts("service=prod", environ) == []
    assert environment_parts("host=x password='unterminated", environ) == []
    assert environment_parts("dbname=app", {}) == []


def test_environment_parts_never_show_a_secret() -> None:
    from dbopt.dsn import environment_parts

    parts = environment_parts("host=db1", {"PGPASSWORD": "Hunter2"}, keywords=["password"])
    assert [str(p) for p in parts] == ["password from PGPASSWORD"]


@pytest.mark.parametrize(
    ("dsn", "environ", "expected", "removed"),
    [
        pytest.param(
            "postgresql://app:Sup3rSecret@db1:5432/shop?sslmode=require",
            {},
            "user=app host=db1 port=5432 dbname=shop sslmode=require",
            True,
            id="uri-password",
        ),
        pytest.param(
            "host=db1 password='se cret' dbname=shop",
            {},
            "host=db1 dbname=shop",
            True,
            id="keyword-password",
        ),
        pytest.param(
            "dbname=shop",
            {"PGHOST": "db-prod", "PGPORT": "6432", "PGPASSFILE": "/etc/dbopt/pgpass"},
            "passfile=/etc/dbopt/pgpass dbname=shop host=db-prod port=6432",
            False,
            id="filled-from-the-environment",
        ),
        pytest.param(
            "",
            {"PGHOST": "db-prod", "PGPASSWORD": "Hunter2", "PGUSER": "ops"},
            "user=ops host=db-prod",
            True,
            id="libpq-environment-only",
        ),
        pytest.param(
            "service=prod",
            {"PGHOST": "elsewhere"},
            "service=prod",
            False,
            id="service-file-decides",
        ),
        pytest.param("", {}, "", False, id="nothing-at-all"),
    ],
)
def test_portable_dsn(dsn: str, environ: dict[str, str], expected: str, removed: bool) -> None:
    from psycopg.conninfo import conninfo_to_dict

    from dbopt.dsn import portable_dsn

    portable = portable_dsn(dsn, environ)
    assert conninfo_to_dict(portable.dsn) == conninfo_to_dict(expected)
    assert portable.password_removed is removed
    for secret in ("Sup3rSecret", "se cret", "Hunter2"):
        assert secret not in portable.dsn


def test_portable_dsn_refuses_what_libpq_cannot_read() -> None:
    from dbopt.dsn import portable_dsn

    with pytest.raises(ConfigError) as caught:
        portable_dsn("host=x password='Hunter2", {})
    assert "Hunter2" not in str(caught.value)


def test_another_sessions_query_is_shown_without_its_secrets() -> None:
    """What dbopt prints and records of a blocking session's query (pg_stat_activity, cut at
    160 characters) spells out no password, in any of the forms SQL carries one."""
    shown = {
        "BEGIN; ALTER ROLE app PASSWORD 'S3cr3t!'; SELECT pg_sleep(4)": (
            "BEGIN; ALTER ROLE app PASSWORD ***; SELECT pg_sleep(4)"
        ),
        "alter user x with encrypted password 'it''s' valid until 'infinity'": (
            "alter user x with encrypted password *** valid until 'infinity'"
        ),
        "CREATE USER MAPPING FOR a SERVER s OPTIONS (user 'u', password 'pw')": (
            "CREATE USER MAPPING FOR a SERVER s OPTIONS (user 'u', password ***)"
        ),
        "SELECT dblink_connect('host=h password=pw dbname=d')": (
            "SELECT dblink_connect('host=h password=*** dbname=d')"
        ),
        "SELECT dblink_connect('host=h password=''p w'' dbname=d')": (
            "SELECT dblink_connect('host=h password=*** dbname=d')"
        ),
        "CREATE SUBSCRIPTION s CONNECTION 'postgresql://rep:pw@h/db' PUBLICATION p": (
            "CREATE SUBSCRIPTION s CONNECTION 'postgresql://rep:***@h/db' PUBLICATION p"
        ),
        "ALTER ROLE a PASSWORD $x$pw$x$ LOGIN": "ALTER ROLE a PASSWORD *** LOGIN",
        "ALTER ROLE a PASSWORD 'cut off by the 160 charac": "ALTER ROLE a PASSWORD ***",
        "SELECT password_hash FROM users WHERE id = 1": (
            "SELECT password_hash FROM users WHERE id = 1"
        ),
        # Found in review: named arguments, JSON, a comment, U&'', a URI cut before its @.
        "SELECT f(password := 'pw')": "SELECT f(password := ***)",
        "SELECT f(password => 'pw')": "SELECT f(password => ***)",
        """SELECT '{"password": "pw"}'::json""": """SELECT '{"password": ***}'::json""",
        "ALTER ROLE a PASSWORD /* new */ 'pw'": "ALTER ROLE a PASSWORD /* new */ ***",
        "ALTER ROLE a PASSWORD U&'pw'": "ALTER ROLE a PASSWORD ***",
        "SELECT 'postgresql://rep:Sup3rS3cr": "SELECT 'postgresql://rep:***@",
        "SELECT 'http://example.com:8080/x'": "SELECT 'http://example.com:8080/x'",
    }
    for query, expected in shown.items():
        assert mask_sql_secrets(query) == expected, query
    blocker = Blocker(7, 3, "idle in transaction", "app", "ALTER ROLE app PASSWORD 'x'")
    assert str(blocker) == "pid 7 (app, idle in transaction, 3s): ALTER ROLE app PASSWORD ***"
