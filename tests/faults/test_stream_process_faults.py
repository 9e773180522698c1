"""The stream process (docs/datastreams.md "Performance"; ``runtime/adapters/streams/process.py``) under the
daemon's faults: the real daemon (``python -m runtime run``) on the benchmark solution with a PostgreSQL stream
(``bench/streams.py``, the suite's own PostgreSQL, a table per test), QoS 1 messages from a broker of the test's
own (persistent session, as tests/faults/test_kill9.py).

- SIGKILL of the daemon while rows flow: its stream process ends within seconds (it must not linger holding the
  queue file), and the next daemon on the same data dir delivers what the queue file holds: every message gets
  its row; duplicates are at-least-once's (counted and reported).
- SIGTERM (graceful stop) with rows queued: exit 0, the stream process is gone, every recorded message has its
  row, the queue file is empty.
- SIGINT to the daemon's whole process group (a terminal's Ctrl-C): the stream process ignores it and is stopped
  by the daemon after its drain; exit 0, no row lost.
- SIGTERM while the streams' PostgreSQL hangs (SIGSTOP; two streams): exit 0 within CONTRACT §3's 10 s, what
  was not written stays in the queue file and reaches the tables from the next daemon.
- SIGTERM while the stream process itself hangs (SIGSTOP): exit 0 within 10 s (it is killed); the messages whose
  rows it had not committed were not acknowledged, and the next daemon writes them.
- In process (``DataStreams(in_process=False)``): a stream process that cannot open the queue file after a crash
  leaves the streams failing with the reason and the acks waiting, and the next one that can recovers both.

Rows are counted by the payload's unique ``seq`` (a column of the stream's table), records in ``runtime.db``.
"""

from __future__ import annotations

import asyncio
import copy
import os
import signal
import sqlite3
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
import yaml

from bench.streams import streams_solution
from runtime.adapters.streams import QUEUE_FILE
from tests.faults.conftest import PublisherThread, provision, recorded, wait_until
from tests.integration.test_datastreams import FIELDS, until
from tests.integration.test_stream_process import WORKER, add, process_streams, running, stream_processes
from tests.support.daemon import Daemon
from tests.support.databases import Postgres
from tests.support.mosquitto import Mosquitto

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

STREAM = "pgtelemetry"
N = 3000
RATE = 600.0  # messages a second: ~5 s of stream, the fault falls in the middle of it


# ---------------------------------------------------------------------------------------------- helpers
def stream_daemon(data: Path, solution: Path, broker: Mosquitto, *, new_session: bool = False) -> Daemon:
    return Daemon(data, "--solution", str(solution), "--listener-port", "restin=0", "--input-command-port", "0",
                  env={"MQTT_HOST": broker.host, "MQTT_PORT": str(broker.port), "MQTT_CLIENT_ID": "faults-sproc"},
                  new_session=new_session)


def children(parent: int) -> list[int]:
    """The live stream processes whose parent is ``parent`` (from /proc, as ``ps`` shows them)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _stream_process(int(entry.name), parent):
            found.append(int(entry.name))
    return found


def _stream_process(pid: int, parent: int | None = None) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    state, ppid = stat.rsplit(")", 1)[1].split()[:2]
    return state != "Z" and WORKER.encode() in cmdline and (parent is None or int(ppid) == parent)


def alive(pid: int) -> bool:
    """``pid`` is still a (not yet reaped-and-dead) stream process, whoever its parent is now."""
    return _stream_process(pid)


def the_stream_process(d: Daemon) -> int:
    assert d.proc is not None
    (pid,) = wait_until(lambda: children(d.proc.pid), 15, "the daemon's stream process")  # type: ignore[union-attr]
    return int(pid)


def streams(d: Daemon) -> dict[str, dict[str, Any]]:
    code, st = d.request("GET", "/status", timeout=5)
    assert code == 200, st
    return {s["key"]: s for s in st["dataStreams"]}


def ready(d: Daemon) -> None:
    """Running, devices provisioned, the MQTT listener connected."""
    d.wait_state("Running", timeout=30)
    provision(d)

    def connected() -> bool:
        code, st = d.request("GET", "/status", timeout=3)
        return code == 200 and any(x["key"] == "mqttin" and x.get("state") == "connected" for x in st["listeners"])

    wait_until(connected, 15, "listener connected")


def table_seqs(pg: Postgres, table: str) -> Counter[str]:
    async def read() -> Counter[str]:
        conn = await asyncpg.connect(pg.dsn)
        try:
            return Counter(r["seq"] for r in await conn.fetch(f'SELECT seq FROM "{table}"'))
        finally:
            await conn.close()

    return asyncio.run(read())


def queued_seqs(data: Path, stream: str = STREAM) -> Counter[str]:
    """The rows of ``stream`` committed to the queue file and not yet deleted (written) by a drainer."""
    with sqlite3.connect(data / QUEUE_FILE, timeout=10) as db:
        bodies = db.execute("SELECT body FROM chunks WHERE stream = ?", (stream,)).fetchall()
    return Counter(item["row"]["seq"] for (body,) in bodies for item in orjson.loads(body))


def with_second_stream(solution: Path, key: str, table: str) -> Path:
    """``solution`` plus a second PostgreSQL stream ``key`` (table ``table``, same server) fed the same fields."""
    tree = yaml.safe_load(solution.read_text())
    second = copy.deepcopy(tree["dataStreams"][0])
    second["key"], second["name"], second["dbTableName"] = key, key, table
    tree["dataStreams"].append(second)
    route = tree["solution"]["deviceConfigurations"][0]["routes"][0]
    translate = next(step for step in route["steps"] if step["id"] == "translate")
    translate["secondary"].append({**translate["secondary"][0], "to": f"ds{key}"})
    route["steps"].append({"id": f"ds{key}", "type": "datastream", "module": key})
    solution.write_text(yaml.safe_dump(tree, sort_keys=False))
    return solution


def postgres_processes(pg: Postgres) -> list[int]:
    """The server's postmaster and its children (the backends the streams are connected to)."""
    master = int((pg.data / "postmaster.pid").read_text().split()[0])
    found = [master]
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == master:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def daemon_events(d: Daemon, *names: str) -> list[dict[str, Any]]:
    return [line for line in d.json_lines() if line.get("event") in names]


def unusable(queue_file: Path) -> None:
    """A directory where the queue file and its WAL were: SQLite cannot open it."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{queue_file}{suffix}").unlink(missing_ok=True)
    queue_file.mkdir()


PROCESS_TROUBLE = ("datastream_process_ended", "datastream_process_failed", "datastream_process_restarted")


def flowing(d: Daemon, broker: Mosquitto, run: str) -> tuple[int, PublisherThread]:
    """The running daemon's stream process, and a QoS 1 publisher of ``N`` messages once 600 rows are written."""
    ready(d)
    child = the_stream_process(d)
    pub = PublisherThread(broker, run=run, n=N, qos=1, rate=RATE)
    pub.start()
    wait_until(lambda: streams(d)[STREAM]["written"] >= 600, 30, "rows written", every=0.05)
    return child, pub


def publish_and_stop(d: Daemon, pg: Postgres, broker: Mosquitto, data: Path, table: str, run: str,
                     stop: Any) -> tuple[int, int, Counter[str], Counter[str]]:
    """Publish ``N`` QoS 1 messages; once rows are flowing and some are queued, ``stop(d)`` (a graceful stop)
    must return 0. Returns (the depth seen just before, the stream process's pid, records, table rows)."""
    db = data / "runtime.db"
    with d:
        child, pub = flowing(d, broker, run)
        queued = wait_until(lambda: streams(d)[STREAM]["depth"], 10, "rows queued", every=0.01)
        assert stop(d) == 0, "\n".join(d.lines[-30:])
        assert pub.is_alive(), "the stream ended before the stop: nothing was tested"
        assert not alive(child), f"the stream process {child} outlived the daemon's graceful stop"
        trouble = daemon_events(d, *PROCESS_TROUBLE)
        assert not trouble, trouble  # the stream process lived until the daemon stopped it
        pub.join(30)
        assert pub.error is None, pub.error
    return queued, child, recorded(db, run), table_seqs(pg, table)


def every_recorded_row(data: Path, records: Counter[str], rows: Counter[str]) -> None:
    """After a graceful stop: each recorded message has its row once, no row without a record, nothing queued."""
    assert records, "nothing recorded"
    missing = set(records) - set(rows)
    assert not missing, f"{len(missing)} recorded messages without their row, e.g. {sorted(missing)[:5]}"
    assert set(rows) <= set(records), sorted(set(rows) - set(records))[:5]
    assert max(rows.values()) == 1, [s for s, c in rows.items() if c > 1][:5]
    assert sum(queued_seqs(data).values()) == 0


def the_next_daemon_writes_every_row(data: Path, solution: Path, broker: Mosquitto, pg: Postgres, table: str) -> None:
    """A new daemon on the same data dir and MQTT session: every message's row ends up in the table."""
    second = stream_daemon(data, solution, broker)
    with second:
        second.wait_state("Running", timeout=30)
        wait_until(lambda: len(table_seqs(pg, table)) >= N and streams(second)[STREAM]["depth"] == 0, 60,
                   "every row in the table after the restart", every=0.25)
        assert second.terminate() == 0


# ---------------------------------------------------------------------------------------------- the tests
def test_sigkill_of_the_daemon_ends_its_stream_process_and_the_next_daemon_delivers_the_queue(
    own_mosquitto: Mosquitto, postgres: Postgres, tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    data, table, run = tmp_path / "data", f"sk_{uuid.uuid4().hex[:10]}", "sk"
    solution = streams_solution(tmp_path / "solution.yaml", postgres=(postgres.host, postgres.port), table=table)
    first = stream_daemon(data, solution, own_mosquitto)
    with first:
        child, pub = flowing(first, own_mosquitto, run)
        first.kill()  # SIGKILL: the stream process is told nothing but the end of its socket
        killed = time.monotonic()
        records_at_kill = recorded(data / "runtime.db", run)
        wait_until(lambda: not alive(child), 10, "the stream process ended after the daemon's SIGKILL", every=0.05)
        outlived = time.monotonic() - killed
        queued = queued_seqs(data)  # what the queue file holds for the next daemon
        in_table = table_seqs(postgres, table)
        pub.join(30)
        assert pub.error is None, pub.error
        assert pub.result is not None and pub.result.acked == N  # the broker has every message
    assert len(records_at_kill) < N, "the stream ended before the kill: nothing was tested"
    assert queued or in_table

    the_next_daemon_writes_every_row(data, solution, own_mosquitto, postgres, table)
    rows = table_seqs(postgres, table)
    records = recorded(data / "runtime.db", run)
    assert set(rows) == {f"{run}-{i}" for i in range(N)}  # each message's row, nothing else
    lost = (set(queued) | set(in_table) | set(records_at_kill)) - set(rows)
    assert not lost, sorted(lost)[:5]  # what the first daemon had queued or recorded: all there
    assert sum(queued_seqs(data).values()) == 0
    duplicates = sum(rows.values()) - N
    overlap = len(set(queued) & set(in_table))  # written by the first drainer, not yet deleted from the queue
    # At least once: a row comes again when its batch was written but not deleted from the queue file
    # (``overlap``), or when the broker redelivers a message whose row was queued before its PUBACK went out
    # (each redelivered message also has a second record). Both at once is the most: 3 copies.
    assert max(rows.values()) <= 3, rows.most_common(3)
    record_duplicates = sum(records.values()) - len(records)
    record_property("duplicates", duplicates)
    print(f"\nSIGKILL after {len(records_at_kill)} of {N} records; stream process gone {outlived:.2f}s later; "
          f"at the kill: {sum(in_table.values())} rows in the table, {sum(queued.values())} in the queue file "
          f"({overlap} in both); after the restart: {sum(rows.values())} rows, {duplicates} duplicates "
          f"(records: {record_duplicates} duplicates), 0 missing")


def test_sigterm_with_rows_queued_delivers_every_row_and_ends_the_stream_process(
    own_mosquitto: Mosquitto, postgres: Postgres, tmp_path: Path
) -> None:
    data, table = tmp_path / "data", f"st_{uuid.uuid4().hex[:10]}"
    solution = streams_solution(tmp_path / "solution.yaml", postgres=(postgres.host, postgres.port), table=table)
    d = stream_daemon(data, solution, own_mosquitto)
    queued, _, records, rows = publish_and_stop(d, postgres, own_mosquitto, data, table, "st", Daemon.terminate)
    every_recorded_row(data, records, rows)
    print(f"\nSIGTERM with {queued} rows queued: {len(records)} messages recorded, {sum(rows.values())} rows")


def test_sigint_to_the_process_group_is_ignored_by_the_stream_process_and_no_row_is_lost(
    own_mosquitto: Mosquitto, postgres: Postgres, tmp_path: Path
) -> None:
    """A terminal's Ctrl-C signals the whole foreground process group: the daemon and its stream process. The
    stream process must not die of it (it would take the rows the daemon is still draining with it); the
    daemon stops it after its own drain."""
    data, table = tmp_path / "data", f"si_{uuid.uuid4().hex[:10]}"
    solution = streams_solution(tmp_path / "solution.yaml", postgres=(postgres.host, postgres.port), table=table)
    d = stream_daemon(data, solution, own_mosquitto, new_session=True)

    def ctrl_c(d: Daemon) -> int:
        assert d.proc is not None
        assert os.getpgid(d.proc.pid) == d.proc.pid != os.getpgrp()  # its own group, not this test's
        child = the_stream_process(d)
        assert os.getpgid(child) == d.proc.pid  # the stream process is in it: it gets the SIGINT too
        os.killpg(d.proc.pid, signal.SIGINT)
        return d.proc.wait(timeout=15)

    queued, _, records, rows = publish_and_stop(d, postgres, own_mosquitto, data, table, "si", ctrl_c)
    assert [e["signal"] for e in daemon_events(d, "signal_received")] == ["SIGINT"]
    every_recorded_row(data, records, rows)
    print(f"\nSIGINT to the group with {queued} rows queued: {len(records)} messages recorded, "
          f"{sum(rows.values())} rows")


def test_sigterm_while_the_database_hangs_exits_in_time_and_keeps_the_rows(
    own_mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """The streams' PostgreSQL stops answering (SIGSTOP: connections stay open, nothing comes back) while rows
    flow; SIGTERM: the daemon gives the drainers the drain timeout, closes every stream's connection at once (a
    close waits up to 2 s for the server; once a stream, in the stream process and then again in the daemon, two
    streams took 13 s) and exits 0 within 10 s; the rows not written are in the queue file and the next daemon,
    the server answering again, writes them."""
    data, run = tmp_path / "data", "hg"
    with Postgres(tmp_path / "pg") as pg:  # its own: it is frozen
        solution = streams_solution(tmp_path / "solution.yaml", postgres=(pg.host, pg.port), table="one")
        with_second_stream(solution, "pgtwo", "two")
        first = stream_daemon(data, solution, own_mosquitto)
        frozen: list[int] = []
        try:
            with first:
                child, pub = flowing(first, own_mosquitto, run)
                frozen = postgres_processes(pg)
                for pid in frozen:
                    os.kill(pid, signal.SIGSTOP)
                wait_until(lambda: all(s["depth"] > 300 for s in streams(first).values()), 30, "rows queued",
                           every=0.05)
                stopping = time.monotonic()
                assert first.terminate(timeout=10) == 0  # CONTRACT §3: exit 0 within 10 s
                took = time.monotonic() - stopping
                assert not alive(child)
                pub.join(30)
                assert pub.error is None, pub.error
        finally:
            for pid in frozen:
                os.kill(pid, signal.SIGCONT)
        left = {key: sum(queued_seqs(data, key).values()) for key in (STREAM, "pgtwo")}
        assert all(left.values()), left
        records = recorded(data / "runtime.db", run)

        second = stream_daemon(data, solution, own_mosquitto)
        with second:
            second.wait_state("Running", timeout=30)
            wait_until(lambda: all(s["depth"] == 0 for s in streams(second).values()), 30, "the queue drained",
                       every=0.25)
            assert second.terminate() == 0
        for table in ("one", "two"):
            rows = table_seqs(pg, table)
            missing = set(records) - set(rows)
            assert not missing, f"{table}: {len(missing)} recorded messages without their row"
        print(f"\nSIGTERM with PostgreSQL frozen: exit 0 after {took:.1f}s; {left} rows left in the queue file, "
              f"all written by the next daemon")


def test_sigterm_while_the_stream_process_hangs_exits_in_time(
    own_mosquitto: Mosquitto, postgres: Postgres, tmp_path: Path
) -> None:
    """The stream process stops answering (SIGSTOP) while rows flow; SIGTERM: the daemon waits for its commit no
    longer than the drain timeout, does not wait for its drainers then, kills it when it does not end and exits 0
    within CONTRACT §3's 10 s (each wait in turn took 37 s). The QoS 1 messages whose rows it had not committed
    were never acknowledged: the broker keeps them, and the next daemon writes their rows."""
    data, table, run = tmp_path / "data", f"hp_{uuid.uuid4().hex[:10]}", "hp"
    solution = streams_solution(tmp_path / "solution.yaml", postgres=(postgres.host, postgres.port), table=table)
    first = stream_daemon(data, solution, own_mosquitto)
    with first:
        child, pub = flowing(first, own_mosquitto, run)
        os.kill(child, signal.SIGSTOP)
        try:
            wait_until(lambda: streams(first)[STREAM]["depth"] > 300, 30, "rows waiting for it", every=0.05)
            stopping = time.monotonic()
            assert first.terminate(timeout=10) == 0  # CONTRACT §3: exit 0 within 10 s
            took = time.monotonic() - stopping
        finally:
            if alive(child):
                os.kill(child, signal.SIGCONT)
        wait_until(lambda: not alive(child), 5, "the stuck stream process ended", every=0.05)
        assert daemon_events(first, "datastream_process_killed")
        pub.join(30)
        assert pub.error is None, pub.error

    the_next_daemon_writes_every_row(data, solution, own_mosquitto, postgres, table)
    assert set(table_seqs(postgres, table)) == {f"{run}-{i}" for i in range(N)}
    print(f"\nSIGTERM with the stream process stopped: exit 0 after {took:.1f}s; every row there after the restart")


@pytest.mark.integration
async def test_a_new_stream_process_that_cannot_open_the_queue_holds_the_acks_until_one_can(tmp_path: Path) -> None:
    """The stream process dies (SIGKILL) and the queue file has become unusable (here: a directory where it
    was): each new stream process refuses to run the streams; the status names the queue, the acks of rows put
    meanwhile wait (nothing could make those rows durable); once the path is usable again the next stream
    process takes the waiting rows, the acks run in order and the rows arrive."""
    data = tmp_path / "data"
    queue_file = data / QUEUE_FILE
    async with process_streams(data) as ds, running(ds, {"key": "hist", "name": "History", "fields": FIELDS}) as svc:
        acks: list[int] = []
        add(svc, "hist", 100)
        svc.after_commit(lambda: acks.append(1))
        await until(lambda: acks == [1] and (lambda s: s["written"] == 100 and s["depth"] == 0)(ds.status()[0]))
        (pid,) = stream_processes()
        unusable(queue_file)  # everything was drained: nothing in the file is lost with it
        restarts = ds.queue.restarts
        os.kill(pid, signal.SIGKILL)
        add(svc, "hist", 50, first=100)
        svc.after_commit(lambda: acks.append(2))

        def refused() -> dict[str, Any] | None:
            (st,) = ds.status()
            return st if st["failing"] and "the data-stream queue cannot be opened" in (st["lastError"] or "") else None

        failing = await until(refused, within=30)
        assert str(queue_file) in failing["lastError"], failing
        await until(lambda: ds.queue.restarts >= restarts + 3, within=30)  # new stream processes, each refused
        failing = refused()
        assert failing is not None and failing["depth"] == 50, failing
        assert acks == [1]  # the rows are nowhere durable: their ack waits
        queue_file.rmdir()
        await until(lambda: acks == [1, 2], within=30)
        await until(lambda: (lambda s: s["written"] == 150 and s["depth"] == 0 and not s["failing"])(ds.status()[0]))
        rows = await svc.read("hist", None, None, None, 1000)
        assert sorted(r["humidity"] for r in rows) == list(range(150))
