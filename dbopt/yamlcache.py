"""What a spec file parsed to, kept by the hash of its bytes: the YAML is read once per content.

Parsing YAML is most of what loading ten thousand specs costs (PyYAML builds an object for
every event and node, even with libyaml), and spec files rarely change between two commands.
So a file that parsed without a problem is kept — its plain values and the position of each —
under the SHA-256 of its bytes (and of everything that could change the result: dbopt's,
PyYAML's and Python's versions); the next load of the same bytes reads that instead. Every
check after parsing (the schema, the specs' semantics, the cross-file checks) runs each time.

It is a cache the user owns: ``$DBOPT_CACHE_DIR``, else ``$XDG_CACHE_HOME/dbopt``, else
``~/.cache/dbopt``, in a directory only the current user may write (a directory anyone else
could write to is not used, as ssh refuses such a key file); entries are written atomically and
checked on reading (only plain values, as the parser makes them). ``DBOPT_NO_CACHE=1`` turns it
off; any trouble (read-only home, a full disk, a damaged entry) just means parsing again.

The same directory keeps the results of pure functions of SQL text (:func:`kept`): pglast
(PostgreSQL's parser) costs a command about 35 ms to load and 20 ms to use on BookedBarber's
specs, rendering their expressions and view queries and laying out their SQL, the same text
every time. Each such function's results are kept in one file, read on its first call and
written back at exit when the command added to it, trusted as compiled code is (below): what
they return enters the SQL dbopt runs.

The same directory keeps the compiled code of the spec schemas' fast validators
(:func:`compiled`): fastjsonschema writes a schema out as Python source, and compiling that
source is most of what the first check of a run costs. Its bytecode is kept under the SHA-256
of the source, as Python keeps a module's in ``__pycache__`` -- and trusted as Python trusts
that: only in a directory no other user may write.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import marshal
import os
import stat
import sys
import tempfile
import threading
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from types import CodeType
from typing import Any, ParamSpec, TypeVar

from dbopt import __version__

#: Bump when what is kept changes shape.
_FORMAT = "yaml-1"
_CODE_FORMAT = "code-1"
_KEPT_FORMAT = "kept-1"
#: Results kept per function at most: beyond, only those the command asked for stay.
KEPT_MAX = 20_000
_PLAIN = (str, int, float, bool, type(None))

Entry = tuple[
    Any, dict[tuple[str | int, ...], tuple[int, int]], dict[tuple[str | int, ...], tuple[int, int]]
]


def _directory(kind: str = _FORMAT) -> Path | None:
    """The cache directory for ``kind``, created if missing; None when off or not safely ours."""
    if os.environ.get("DBOPT_NO_CACHE"):
        return None
    base = os.environ.get("DBOPT_CACHE_DIR")
    if base:
        root = Path(base)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = (Path(xdg) if xdg else Path.home() / ".cache") / "dbopt"
    folder = root / kind
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = folder.stat()
    except (OSError, RuntimeError):
        return None
    uid = os.getuid() if hasattr(os, "getuid") else info.st_uid
    if info.st_uid != uid or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return None  # someone else could write what dbopt would read as a spec
    return folder


@functools.cache
def _package_version(package: str, module: str) -> str:
    """An installed library's version, read from its metadata: what is kept of its work is
    read without loading the library (``module``, imported only when it has no metadata)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:  # pragma: no cover - installed without metadata
        import importlib

        return str(getattr(importlib.import_module(module), "__version__", "?"))


def _key(raw: bytes, max_nodes: int) -> str:
    digest = hashlib.sha256()
    for part in (
        _FORMAT,
        __version__,
        _package_version("PyYAML", "yaml"),
        sys.version,
        str(max_nodes),
    ):
        digest.update(part.encode() + b"\0")
    digest.update(raw)
    return digest.hexdigest()


def get(raw: bytes, max_nodes: int) -> Entry | None:
    """What ``raw`` parsed to last time, if kept."""
    folder = _directory()
    if folder is None:
        return None
    try:
        blob = (folder / _key(raw, max_nodes)).read_bytes()
        entry = marshal.loads(blob)
    except (OSError, EOFError, ValueError, TypeError):
        return None
    if not (isinstance(entry, tuple) and len(entry) == 3) or not _plain(entry[0]):
        return None
    data, positions, key_positions = entry
    if not (_positions(positions) and _positions(key_positions)):
        return None
    return data, positions, key_positions


def put(raw: bytes, max_nodes: int, entry: Entry) -> None:
    """Keep what ``raw`` parsed to (nothing when marshal cannot write a value, e.g. a date)."""
    folder = _directory()
    if folder is None:
        return
    try:
        _write(folder / _key(raw, max_nodes), marshal.dumps(entry))
    except (OSError, ValueError):
        return


def compiled(source: Callable[[], str], *versions: str) -> CodeType:
    """The code object of ``source()``, compiled once and kept: the text is made and
    compiled only when no entry exists for it. ``versions`` name everything the text depends
    on (the generator's version and input); the key is their hash with Python's version."""
    digest = hashlib.sha256()
    for part in (_CODE_FORMAT, sys.version, *versions):
        digest.update(part.encode() + b"\0")
    folder = _directory(_CODE_FORMAT)
    entry = None if folder is None else folder / digest.hexdigest()
    if entry is not None:
        blob = _read_trusted(entry)
        try:
            code = None if blob is None else marshal.loads(blob)
        except (EOFError, ValueError, TypeError):
            code = None
        if isinstance(code, CodeType):
            return code
    code = compile(source(), "<dbopt schema check>", "exec")
    if entry is not None:
        with contextlib.suppress(OSError, ValueError):
            _write(entry, marshal.dumps(code))
    return code


_P = ParamSpec("_P")
_R = TypeVar("_R")


@functools.cache
def _source_fingerprint() -> str:
    """dbopt's own source files, by path, size and modification time: a development checkout
    changes without a new version, and a kept result must then be computed again."""
    root = Path(__file__).parent
    digest = hashlib.sha256()
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if d != "__pycache__")
        for name in sorted(f for f in files if f.endswith(".py")):
            with contextlib.suppress(OSError):
                info = os.stat(os.path.join(folder, name))
                digest.update(f"{folder}/{name}\0{info.st_size}\0{info.st_mtime_ns}\0".encode())
    return digest.hexdigest()


class _Kept:
    """One function's kept results: read on its first call, written back at exit."""

    def __init__(self, name: str, package: str) -> None:
        self._name, self._package = name, package
        self._lock = threading.Lock()
        self._values: dict[Any, Any] | None = None
        #: The keys this process asked for: what stays when the file is full.
        self._used: set[Any] = set()
        self._file: Path | None = None
        self._added = False

    def get(self, key: Any) -> Any:
        """The kept result for ``key``, or :data:`MISSING`."""
        with self._lock:
            if self._values is None:
                self._values = self._read()
            self._used.add(key)
            return self._values.get(key, MISSING)

    def _read(self) -> dict[Any, Any]:
        folder = _directory(_KEPT_FORMAT)
        if folder is None:
            return {}
        digest = hashlib.sha256()
        parts = (_KEPT_FORMAT, __version__, _source_fingerprint(), sys.version, self._package)
        for part in (*parts, _package_version(self._package, self._package)):
            digest.update(part.encode() + b"\0")
        self._file = folder / f"{self._name}-{digest.hexdigest()}"
        atexit.register(self.save)
        blob = _read_trusted(self._file)
        try:
            values = None if blob is None else marshal.loads(blob)
        except (EOFError, ValueError, TypeError):
            values = None
        if (
            isinstance(values, dict)
            and len(values) <= KEPT_MAX
            and _plain((*values, *values.values()), tuple)
        ):
            return values
        return {}

    def add(self, key: Any, value: Any) -> None:
        """Keep ``value`` for ``key``. A full store keeps only what this process used (a
        new dict: a thread reading the old one meanwhile still finds what it held)."""
        with self._lock:
            values = self._values if self._values is not None else {}
            if len(values) >= KEPT_MAX:
                values = {k: values[k] for k in self._used if k in values}
                if len(values) >= KEPT_MAX:  # this one command asked for more than that
                    values = {}
            values[key] = value
            self._used.add(key)
            self._values, self._added = values, True

    def save(self) -> None:
        """Write the results back when this process added any (atomically: a command
        reading it meanwhile sees the old file or the new one), and remove this function's
        files of other versions (of dbopt, its sources, the library or Python)."""
        with self._lock:
            if not self._added or self._file is None or self._values is None:
                return
            with contextlib.suppress(OSError, ValueError):
                _write(self._file, marshal.dumps(self._values))
                for other in self._file.parent.glob(f"{self._name}-*"):
                    if other.name != self._file.name:
                        other.unlink(missing_ok=True)
            self._added = False


#: What :meth:`_Kept.get` returns when nothing is kept for a key.
MISSING: Any = object()


def kept(name: str, package: str) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Keep the results of a pure function of plain values (strings, mostly) across
    commands, under ``name`` and the installed version of ``package`` (the library that
    computes them), dbopt's version and source files, and Python's version. Arguments and
    results must be plain values (str, int, float, bool, None, and tuples of them: never
    lists, which every caller would share); a call that raises is not kept (it runs again,
    and raises again, next time)."""

    def wrap(function: Callable[_P, _R]) -> Callable[_P, _R]:
        store = _Kept(name, package)

        @functools.wraps(function)
        def call(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            key = args if not kwargs else (args, tuple(sorted(kwargs.items())))
            found = store.get(key)
            if found is not MISSING:
                result: _R = found
                return result
            result = function(*args, **kwargs)
            store.add(key, result)
            return result

        call.kept = store  # type: ignore[attr-defined]
        return call

    return wrap


_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH


def _read_trusted(entry: Path) -> bytes | None:
    """The bytes of a code entry, only when no other user could have written them (code
    is run, not just read): every directory above its folder belongs to this user or root and
    no one else may write it unless it is sticky (as /tmp is); the folder and the entry belong
    to this user, are not writable by others, and are opened without following links, the
    checks made on what was opened. None otherwise (it is compiled again)."""
    if not hasattr(os, "O_NOFOLLOW") or not hasattr(os, "getuid"):
        return None  # no way to check ownership here: never run kept code
    uid = os.getuid()
    try:
        folder = Path(os.path.realpath(entry.parent))
        for parent in folder.parents:
            info = os.stat(parent)
            if info.st_uid not in (uid, 0):
                return None
            if info.st_mode & _OTHERS_WRITE and not info.st_mode & stat.S_ISVTX:
                return None
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            if not _mine(os.fstat(dir_fd), uid):
                return None
            fd = os.open(entry.name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
        with os.fdopen(fd, "rb") as kept:
            info = os.fstat(kept.fileno())
            if not (stat.S_ISREG(info.st_mode) and _mine(info, uid)):
                return None
            return kept.read()
    except OSError:
        return None


def _mine(info: os.stat_result, uid: int) -> bool:
    return info.st_uid == uid and not info.st_mode & _OTHERS_WRITE


def _write(path: Path, blob: bytes) -> None:
    """Write ``blob`` to ``path`` atomically (a reader sees all of it or nothing)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(blob)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _plain(value: Any, sequence: type = list) -> bool:
    """Only plain scalars in ``sequence``s and in mappings of str: what the YAML parser makes
    of a spec (lists); with ``sequence=tuple`` and no mapping, what kept functions take and
    return."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict and sequence is list:
            if not all(type(k) is str for k in item):
                return False
            stack.extend(item.values())
        elif kind is sequence:
            stack.extend(item)
        elif kind not in _PLAIN:
            return False
    return True


def _positions(table: Any) -> bool:
    """A table of positions (only read to word messages: its shape is enough to check)."""
    return type(table) is dict
