"""The schema of ``runtime.db`` (versioned migrations) and the file modes of the data files."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from importlib import resources
from pathlib import Path

import structlog

from runtime.core.errors import StorageError

log = structlog.get_logger(__name__)

# Schema version N is MIGRATIONS[N - 1]; PRAGMA user_version holds the version applied.
MIGRATIONS: tuple[str, ...] = (
    resources.files("runtime.adapters.storage").joinpath("schema.sql").read_text("utf-8"),
    # 2: no per-device index on `messages`. Every insert went to a random place in it (one leaf per device)
    # and every prune took entries out of all of them: with 1,000 devices and 100,000 records kept, the
    # SQLite thread spent ~26 us a message instead of ~10 (docs/architecture.md, "Storage"). `/messages
    # ?deviceId=` scans the kept records newest first instead (~12 ms for 100,000 when the device is rare).
    "DROP INDEX IF EXISTS messages_device_received;",
    # 3: a dead letter keeps its payload up to a cap, with the full size and sha256; `bytes` is what the row
    # weighs, for the byte bound of dead-letter retention.
    "ALTER TABLE deadletters ADD COLUMN payload_size INTEGER;\n"
    "ALTER TABLE deadletters ADD COLUMN payload_sha256 TEXT;\n"
    "ALTER TABLE deadletters ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;\n"
    "UPDATE deadletters SET payload_size = length(payload), bytes = 200 + coalesce(length(payload), 0) "
    "+ coalesce(length(headers), 0) + coalesce(length(detail), 0) + coalesce(length(error), 0);",
    # 4: `/events` also holds device errors raised and cleared (kind `deviceError`, with the device, the code and
    # the source); the rows before are instance state transitions (kind `state`).
    "ALTER TABLE events ADD COLUMN kind TEXT NOT NULL DEFAULT 'state';\n"
    "ALTER TABLE events ADD COLUMN device_id TEXT;\n"
    "ALTER TABLE events ADD COLUMN code TEXT;\n"
    "ALTER TABLE events ADD COLUMN source TEXT;",
)
FILE_MODE = 0o600
DIR_MODE = 0o700


def _statements(script: str) -> list[str]:
    """Split a SQL script into complete statements (sqlite3.complete_statement knows about triggers)."""
    out: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        if not buf and (not line.strip() or line.lstrip().startswith("--")):
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        raise ValueError(f"incomplete SQL statement: {buf.strip()[:80]}")
    return out


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to the newest version, one transaction per version; return the version.
    Runs on the writer's thread."""
    target = len(MIGRATIONS)
    while True:
        conn.execute("BEGIN IMMEDIATE")  # re-read the version under the write lock: two processes may race
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > target:
                raise StorageError(f"database schema version {version} is newer than this runtime's ({target})")
            if version == target:
                conn.execute("COMMIT")
                return int(version)
            for stmt in _statements(MIGRATIONS[version]):
                conn.execute(stmt)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        log.info("storage_migrated", version=version + 1)


def make_private(path: Path) -> None:
    """The data directory 0700 and the database files 0600 (created so when new; tightened when not)."""
    path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    with contextlib.suppress(OSError):  # a mount point we do not own: its owner decides
        os.chmod(path.parent, DIR_MODE)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE))
    for name in (path.name, f"{path.name}-wal", f"{path.name}-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(path.parent / name, FILE_MODE)


