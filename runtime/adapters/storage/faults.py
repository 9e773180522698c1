"""What a SQLite error means for the writer, read from its result code (``sqlite_errorcode``), never its text.

- ``BUSY``: another connection holds the lock; retry with backoff (``lock_attempts`` before callers hear).
- ``UNAVAILABLE``: the disk is full, an I/O error, the file or directory is read-only or cannot be opened.
  Nothing can commit until an operator (or time) fixes it: the writer keeps the batch, retries with backoff,
  and reports itself degraded (``/ready`` 503) until a commit succeeds again.
- ``DAMAGED``: the file is corrupt or not a database. Retrying cannot help: the instance leaves Running.
- ``ROW``: the record's own fault (a constraint, a value SQLite cannot bind or store): that record fails,
  the rest of its batch commits.
"""

from __future__ import annotations

import sqlite3
from enum import StrEnum
from pathlib import Path

# Primary result codes (https://sqlite.org/rescode.html); an extended code's low byte is its primary code.
SQLITE_PERM = 3
SQLITE_BUSY = 5
SQLITE_LOCKED = 6
SQLITE_NOMEM = 7
SQLITE_READONLY = 8
SQLITE_IOERR = 10
SQLITE_CORRUPT = 11
SQLITE_FULL = 13
SQLITE_CANTOPEN = 14
SQLITE_PROTOCOL = 15
SQLITE_AUTH = 23
SQLITE_NOTADB = 26


class Fault(StrEnum):
    BUSY = "busy"
    DISK_FULL = "disk_full"
    UNAVAILABLE = "unavailable"  # I/O error, read-only, cannot open
    DAMAGED = "damaged"
    ROW = "row"



_BY_CODE: dict[int, Fault] = {
    SQLITE_BUSY: Fault.BUSY,
    SQLITE_LOCKED: Fault.BUSY,
    SQLITE_NOMEM: Fault.BUSY,
    SQLITE_PROTOCOL: Fault.BUSY,
    SQLITE_FULL: Fault.DISK_FULL,
    SQLITE_IOERR: Fault.UNAVAILABLE,
    SQLITE_READONLY: Fault.UNAVAILABLE,
    SQLITE_CANTOPEN: Fault.UNAVAILABLE,
    SQLITE_PERM: Fault.UNAVAILABLE,
    SQLITE_AUTH: Fault.UNAVAILABLE,
    SQLITE_CORRUPT: Fault.DAMAGED,
    SQLITE_NOTADB: Fault.DAMAGED,
}
SQLITE_IOERR_NOSPC = SQLITE_IOERR | (28 << 8)  # an I/O error that is a full disk (ENOSPC)


def classify(exc: BaseException) -> Fault:
    """The fault an exception raised by a write stands for (anything not from SQLite is the row's)."""
    code = getattr(exc, "sqlite_errorcode", None) if isinstance(exc, sqlite3.Error) else None
    if code is None:
        return Fault.ROW
    if code == SQLITE_IOERR_NOSPC:
        return Fault.DISK_FULL
    return _BY_CODE.get(code & 0xFF, Fault.ROW)


def explain(fault: Fault, path: Path, exc: BaseException) -> str:
    """One line for an operator: what is wrong with the store, and what to do about it."""
    name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    if fault is Fault.DISK_FULL:
        return (f"disk full: {path} cannot be written ({name}: {exc}); free space on {path.parent}: "
                "writes resume by themselves")
    if fault is Fault.DAMAGED:
        return (f"database damaged: {path} ({name}: {exc}); stop the runtime, move {path.name} and its "
                "-wal/-shm files aside (or restore a backup) and start again: a new database is created")
    if fault is Fault.UNAVAILABLE:
        return (f"storage unavailable: {path} ({name}: {exc}); check that {path.parent} is mounted, "
                "writable and readable by this user")
    if fault is Fault.BUSY:
        return f"database busy: {path} is locked by another connection ({name}: {exc})"
    return f"{path}: {name}: {exc}"
