#!/bin/sh
# HypoPG 1.4 for the machine's PostgreSQL, from tests/vendor/hypopg-1.4.0.tar.xz (the public
# tag 1.4.0 of github.com/HypoPG/hypopg, PostgreSQL License, its LICENSE inside): verify's plan
# fragility report hides an index with hypopg_hide_index, which 1.4 added, and Debian bookworm
# ships 1.3.1. Built and installed over Debian's package when it is older; idempotent and
# quiet when 1.4 is there. A test dependency only: dbopt works with any HypoPG, or none.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
major=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sed 's#.*/postgresql/\([0-9]*\)/bin#\1#' | sort -n | tail -1)
[ -n "$major" ] || exit 0
pg_config=/usr/lib/postgresql/$major/bin/pg_config
control=/usr/share/postgresql/$major/extension/hypopg.control
if grep -q "default_version = '1.4" "$control" 2>/dev/null; then exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "hypopg: HypoPG 1.4 not installed here; the fragility tests that need it will skip" >&2
  exit 0
fi
# pg_config comes with the server; the headers (postgres.h) only with the server-dev package.
if [ ! -x "$pg_config" ] || [ ! -f "$("$pg_config" --includedir-server 2>/dev/null)/postgres.h" ] ||
  ! command -v gcc >/dev/null 2>&1 || ! command -v make >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq "postgresql-server-dev-$major" gcc make >/dev/null
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -xJf "$root/tests/vendor/hypopg-1.4.0.tar.xz" -C "$work"
make -s -C "$work/hypopg-1.4.0" PG_CONFIG="$pg_config" USE_PGXS=1 >/dev/null
make -s -C "$work/hypopg-1.4.0" PG_CONFIG="$pg_config" USE_PGXS=1 install >/dev/null
echo "hypopg: HypoPG 1.4.0 built and installed for PostgreSQL $major"
