"""Docker as a provider: a postgres container through testcontainers (imported only when
Docker is used)."""

from __future__ import annotations

import contextlib
import os
import secrets
from typing import TYPE_CHECKING

from dbopt.errors import SandboxError
from dbopt.sandbox.server import (
    IMAGE_LIBRARIES,
    Backend,
    Provider,
    Server,
    ServerOptions,
    connect,
    server_settings,
    short,
    version_label,
)

if TYPE_CHECKING:
    from testcontainers.core.container import DockerContainer

IMAGE_ENV = "DBOPT_PG_IMAGE"
DEFAULT_IMAGE = "postgres:16-alpine"


def probe_docker() -> Provider | str:
    """Use Docker when testcontainers is installed and an engine answers a ping quickly."""
    try:
        from testcontainers.core.docker_client import DockerClient
    except ImportError:
        return "Docker: the testcontainers package is not installed"
    try:
        # testcontainers' client finds the engine as it will when starting (env, context...).
        DockerClient(timeout=3).client.ping()
    except Exception as err:  # the SDK raises many kinds; any of them means "not usable"
        return f"Docker: no engine reachable ({short(err, 120)})"
    image = os.environ.get(IMAGE_ENV, DEFAULT_IMAGE)
    return Provider(f"Docker {image}", lambda options: _start_container(image, options))


class _ContainerBackend(Backend):
    """A testcontainers PostgresContainer, removed on stop."""

    def __init__(self, container: DockerContainer) -> None:
        self._container = container

    def stop(self) -> None:
        """Stop and remove the container."""
        try:
            self._container.stop()
        except Exception as err:  # the Docker SDK's errors have no common base worth naming
            raise SandboxError(f"could not remove the sandbox container: {short(err)}") from err


def _start_container(image: str, options: ServerOptions) -> Server:
    """Run a postgres container with fast, test-only settings."""
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:  # older testcontainers releases kept it at the top level
        from testcontainers.postgres import PostgresContainer

    command = ["postgres"]
    # Of the optional libraries, the image surely has only those of contrib.
    present = set(options.optional_preload) & IMAGE_LIBRARIES
    for name, value in server_settings(options, present).items():
        command += ["-c", f"{name}={value}"]
    backend: _ContainerBackend | None = None
    try:
        # The constructor already talks to the engine, so it is inside the try as well.
        container = PostgresContainer(
            image, username="postgres", password=secrets.token_hex(12), dbname="postgres"
        )
        # Trust lets the printed DSN carry no password; the container holds no data and lives
        # only as long as this process.
        container.with_env("POSTGRES_HOST_AUTH_METHOD", "trust")
        container.with_command(command)
        backend = _ContainerBackend(container)
        container.start()
        host = str(container.get_container_host_ip())
        port = int(container.get_exposed_port(5432))
        dsn = f"postgresql://postgres@{_uri_host(host)}:{port}/postgres"
        with connect(dsn) as conn:
            version = version_label(conn)
    except BaseException as err:
        if backend is not None:
            with contextlib.suppress(Exception):
                backend.stop()
        if isinstance(err, Exception):
            raise SandboxError(f"Docker: could not start {image}: {short(err)}") from err
        raise
    return Server(dsn=dsn, provider=f"Docker {image} ({version})", _backend=backend)


def _uri_host(host: str) -> str:
    """Bracket IPv6 literals, as URIs require."""
    return f"[{host}]" if ":" in host else host
