"""A real Citus cluster on loopback for tests/test_citus.py: a coordinator and two workers.

Each node is a throwaway server of its own (``start_server`` with the session's binaries, so
``--pg-major`` holds here too) started with ``shared_preload_libraries = citus`` (first, as
Citus insists) and the sandbox's fast settings (fsync off...). One database of the same name
is created on every node, ``CREATE EXTENSION citus`` in each, then the coordinator is told its
own address (``citus_set_coordinator_host``) and given the workers (``citus_add_node``), as
../shared/vendor/citus/README.md shows. Four shards per distributed table (``citus.shard_count``)
keep DDL quick while every worker still holds two.

Managed Citus (Azure Cosmos DB for PostgreSQL...) gives no superuser, so neither do the tests:
only what needs one (the extension, the nodes, the role itself) runs as the superuser. Then
``dbopt_owner`` (LOGIN, nothing else) is created on the coordinator, which Citus 11+ sends to
every worker (``citus.enable_create_role_propagation``), and owns the test database on every
node (``ALTER DATABASE ... OWNER`` on the coordinator, which Citus propagates too: a worker
refuses it, "operation is not allowed on this node"). It creates the tables, so Citus creates
their shards as it. The nodes trust loopback
(``initdb -A trust``): the coordinator reaches the workers as that role without a password.

Citus 13.2 is built for the machine's PostgreSQL 15 only (``make sysdeps`` runs
../shared/vendor/citus/build.sh); on a server without it the tests skip with the one reason the
test matrix allows (tests/helpers.py `skip_without_extension`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import psycopg
from helpers import has_extension, skip_without_extension
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from dbopt.sandbox import Server, probe_local, start_server

DATABASE = "dbopt_citus"
#: The role dbopt runs as on the cluster: no SUPERUSER, CREATEDB, CREATEROLE or BYPASSRLS.
OWNER = "dbopt_owner"
#: How to get Citus where it is missing (the skip reason names it).
PACKAGE = "make sysdeps builds it into PostgreSQL 15 from ../shared/vendor/citus"
SETTINGS = {
    "citus.shard_count": "4",
    # Workers and coordinator talk over loopback; no need to wait long for a dead one.
    "citus.node_connection_timeout": "10s",
    "max_connections": "60",
}


class CitusUnavailable(Exception):
    """This machine cannot start a Citus cluster (no local binaries)."""


@dataclass(frozen=True)
class Cluster:
    """The coordinator and the workers, each with the test database created."""

    coordinator: Server
    workers: tuple[Server, ...]

    @property
    def dsn(self) -> str:
        """The test database on the coordinator as ``OWNER`` (what dbopt connects to)."""
        return make_conninfo(self.admin_dsn, user=OWNER)

    @property
    def admin_dsn(self) -> str:
        """The test database on the coordinator, as the superuser."""
        return self.coordinator.dsn_for(DATABASE)

    def worker_dsns(self) -> list[str]:
        """The test database on each worker."""
        return [w.dsn_for(DATABASE) for w in self.workers]

    def ports(self) -> list[int]:
        """The workers' ports, in order."""
        return [_port(w) for w in self.workers]

    def run(
        self, statement: str, params: Any = None, *, admin: bool = False
    ) -> list[tuple[Any, ...]]:
        """Run one statement on the coordinator (autocommit) as ``OWNER`` (``admin``: as the
        superuser); its rows, if any."""
        with psycopg.connect(self.admin_dsn if admin else self.dsn, autocommit=True) as conn:
            cur = conn.execute(statement, params)  # type: ignore[call-overload]
            return cur.fetchall() if cur.description else []

    def on_workers(self, statement: str) -> list[list[tuple[Any, ...]]]:
        """Run one statement on every worker, as the superuser; the rows of each."""
        return [self.on_worker(dsn, statement) for dsn in self.worker_dsns()]

    def on_worker(self, dsn: str, statement: str) -> list[tuple[Any, ...]]:
        """Run one statement on the worker ``dsn`` (autocommit), as the superuser; its rows."""
        with psycopg.connect(dsn, autocommit=True) as conn:
            # A worker hides shards from ordinary sessions' pg_class; show them here.
            conn.execute("SET citus.show_shards_for_app_name_prefixes = '*'")
            cur = conn.execute(statement)  # type: ignore[call-overload]
            return cur.fetchall() if cur.description else []

    def worker_of(self, shard_id: int) -> str:
        """The DSN of the worker holding the (one) placement of shard ``shard_id``."""
        ((port,),) = self.run(
            "SELECT nodeport FROM pg_dist_shard_placement WHERE shardid = %s", (shard_id,)
        )
        return dict(zip(self.ports(), self.worker_dsns(), strict=True))[int(port)]


def _port(server: Server) -> int:
    return int(conninfo_to_dict(server.dsn)["port"])


def skip_without_citus(pg_server: Server) -> None:
    """Skip (with the matrix's allowed reason) when the session's binaries have no Citus."""
    with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
        if not has_extension(conn, "citus"):
            skip_without_extension(conn, "citus", PACKAGE)


def _start_node(probes: Sequence[Any]) -> Server:
    return start_server(SETTINGS, ["citus"], probes=probes)


def _prepare(server: Server) -> None:
    dsn = server.create_database(DATABASE)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION citus")


@contextlib.contextmanager
def citus_cluster(pg_server: Server, workers: int = 2) -> Iterator[Cluster]:
    """Start a coordinator and ``workers`` workers from ``pg_server``'s binaries, joined into
    one cluster; stop (and delete) them all at the end."""
    if pg_server.bin_dir is None:
        raise CitusUnavailable(
            f"the Citus tests start their own nodes from local binaries ({pg_server.provider})"
        )
    probes = (partial(probe_local, pg_server.bin_dir),)
    started: list[Server] = []
    try:
        # initdb and start in parallel: most of it is waiting on the disk and on fork.
        with ThreadPoolExecutor(max_workers=workers + 1) as pool:
            futures = [pool.submit(_start_node, probes) for _ in range(workers + 1)]
            for future in futures:
                started.append(future.result())
            list(pool.map(_prepare, started))
        cluster = Cluster(started[0], tuple(started[1:]))
        with psycopg.connect(cluster.admin_dsn, autocommit=True) as conn:
            conn.execute(
                "SELECT citus_set_coordinator_host('127.0.0.1', %s)", (_port(cluster.coordinator),)
            )
            for port in cluster.ports():
                conn.execute("SELECT citus_add_node('127.0.0.1', %s)", (port,))
            # Both propagated to the workers (checked by the tests), as on a managed cluster;
            # the owner of the database owns its public schema there (pg_database_owner, 15+).
            conn.execute(
                sql.SQL(
                    "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
                    "NOBYPASSRLS"
                ).format(sql.Identifier(OWNER))
            )
            conn.execute(
                sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                    sql.Identifier(conn.info.dbname), sql.Identifier(OWNER)
                )
            )
        yield cluster
    finally:
        for server in started:
            with contextlib.suppress(Exception):
                server.stop()


def drop_tables(cluster: Cluster, *names: str) -> None:
    """Drop test tables and materialized views (and what depends on them) on the coordinator:
    Citus drops the shards on the workers too."""
    with psycopg.connect(cluster.dsn, autocommit=True) as conn:  # as their owner
        for name in names:
            kind = conn.execute(
                "SELECT relkind::text FROM pg_class WHERE oid = to_regclass(%s)", (name,)
            ).fetchone()
            if kind is None:
                continue
            what = "MATERIALIZED VIEW" if kind[0] == "m" else "TABLE"
            conn.execute(sql.SQL("DROP {} {} CASCADE").format(sql.SQL(what), sql.Identifier(name)))
