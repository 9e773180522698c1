"""Store faults are read from SQLite's result code, not from the message text (real sqlite3 errors)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from runtime.adapters.storage.faults import Fault, classify, explain


def raised(fn: Callable[[], object]) -> BaseException:
    with pytest.raises(Exception) as caught:  # which one is what is being classified
        fn()
    return caught.value


def test_a_constraint_or_a_bad_value_is_the_rows_fault() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (x TEXT NOT NULL UNIQUE)")
    conn.execute("INSERT INTO t VALUES ('a')")
    assert classify(raised(lambda: conn.execute("INSERT INTO t VALUES ('a')"))) is Fault.ROW
    assert classify(raised(lambda: conn.execute("INSERT INTO t VALUES (NULL)"))) is Fault.ROW
    assert classify(raised(lambda: conn.execute("INSERT INTO t VALUES (?)", (object(),)))) is Fault.ROW
    assert classify(ValueError("not JSON")) is Fault.ROW


def test_a_lock_is_busy(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    other = sqlite3.connect(path, timeout=0.01, isolation_level=None)
    exc = raised(lambda: other.execute("INSERT INTO t VALUES (1)"))
    assert classify(exc) is Fault.BUSY
    assert explain(Fault.BUSY, path, exc).startswith("database busy: ")
    holder.execute("ROLLBACK")


def test_a_file_that_is_not_a_database_is_damaged(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not SQLite" * 500)
    exc = raised(lambda: sqlite3.connect(path).execute("SELECT * FROM sqlite_master").fetchall())
    assert classify(exc) is Fault.DAMAGED
    assert "move garbage.db and its -wal/-shm files aside" in explain(Fault.DAMAGED, path, exc)


def test_the_message_text_does_not_decide() -> None:
    fake = sqlite3.OperationalError("database is locked (or so the text says)")
    assert classify(fake) is Fault.ROW  # no result code: not trusted as busy
    full = sqlite3.OperationalError("whatever")
    full.sqlite_errorcode = 13  # type: ignore[attr-defined]  # SQLITE_FULL, as SQLite sets it
    assert classify(full) is Fault.DISK_FULL
    nospc = sqlite3.OperationalError("whatever")
    nospc.sqlite_errorcode = 10 | (28 << 8)  # type: ignore[attr-defined]  # SQLITE_IOERR_NOSPC
    assert classify(nospc) is Fault.DISK_FULL
