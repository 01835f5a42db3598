"""Typed errors raised by the dbopt library; the CLI maps each to an exit code."""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_CONNECT = 3
EXIT_INTERRUPTED = 130


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding in an input file, located by file, line and column (1-based)."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class LockRefusal(str):
    """Why a change is refused, when that is only a lock not granted at once (another session
    holds what an object reads, so it could not be read or tried): trying again can succeed.
    A plan refused for such reasons alone exits 3, as for any lock dbopt cannot take."""

    __slots__ = ()


class DboptError(Exception):
    """Base of every error dbopt expects; carries the process exit code."""

    exit_code: int = EXIT_BAD_INPUT


class InputError(DboptError):
    """Bad input (spec, config, flags): nothing has run against a database."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, problems: list[Problem] | None = None) -> None:
        super().__init__(message)
        self.problems: list[Problem] = list(problems or [])
        #: What the checks that refused could not try, said besides (validate's notes).
        self.notes: list[str] = []

    def __str__(self) -> str:
        head = super().__str__()
        if not self.problems:
            return head
        return "\n".join([*(str(p) for p in self.problems), head])


class SpecError(InputError):
    """One or more spec files are invalid."""


class ConfigError(InputError):
    """The dbopt.yaml configuration or a command-line flag is invalid."""


class NothingToRollBack(InputError):
    """Rollback found nothing to undo (a fleet reports it per target and goes on)."""


class UnsupportedServerError(InputError):
    """The server is a PostgreSQL release dbopt does not support (older than 12)."""


class UnsafeActionError(DboptError):
    """dbopt refused an action that could lose data or block the application."""

    exit_code = EXIT_BAD_INPUT


class OptionNeeded(UnsafeActionError):
    """An action needs an option the caller did not give (``option``: its name, e.g.
    ``cascade``); the CLI names the flag."""

    def __init__(self, message: str, option: str) -> None:
        super().__init__(message)
        self.option = option


class ConnectError(DboptError):
    """Could not connect to the database (the message never holds a password)."""

    exit_code = EXIT_CONNECT


class LockBusyError(DboptError):
    """Another dbopt run holds the lock this one needs."""

    exit_code = EXIT_CONNECT


class LockWaitError(DboptError):
    """A lock another session holds was not granted within lock_timeout before anything ran
    (as a busy run lock: try again)."""

    exit_code = EXIT_CONNECT


class CheckFailedError(DboptError):
    """A check failed: budget missed, drift found, a build failed."""

    exit_code = EXIT_CHECK_FAILED


class SandboxError(DboptError):
    """No throwaway Postgres server could be started."""

    exit_code = EXIT_CONNECT


class PrivilegeError(DboptError):
    """The role lacks a privilege the command needs (to read or write dbopt's history, to
    create it, to read what verify measures): the message names the grant or the
    ``dbopt init`` to run. Nothing was run against the database."""

    exit_code = EXIT_BAD_INPUT


class StandbyError(DboptError):
    """A command that writes was pointed at a hot standby."""

    exit_code = EXIT_BAD_INPUT
