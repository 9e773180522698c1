"""The hot path's precomputed plans and fast paths: same results as the general code, rebuilt on reload.

No timing assertions here: what the caches buy is measured by ``bench`` (bench/results/).
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from bench.publisher import payload
from runtime.adapters.listeners.mqtt_fastpath import _BufferedSocket
from runtime.adapters.storage.writer import Checkpointer, _delete_slice
from runtime.core.devices import Device
from runtime.core.messages import InboundMessage, MessageRecord, PemStatus, new_id
from runtime.core.pipeline.typed import convert
from runtime.core.pipeline.wiring import route_inputs
from runtime.core.solution.enums import ParameterType
from runtime.core.solution.loader import load_solution_report
from runtime.services.dispatcher import Dispatcher, build_engines
from runtime.services.metrics import Counters
from tests.support.devices import Registry

BENCH_SOLUTION = Path(__file__).resolve().parents[3] / "bench" / "solution.yaml"


def _doc() -> Any:
    return load_solution_report(BENCH_SOLUTION.read_bytes(), source=str(BENCH_SOLUTION), env={}).document


class _Sink:
    def __init__(self) -> None:
        self.records: list[MessageRecord] = []

    def record_message(self, rec: MessageRecord, on_commit: Any = None) -> None:
        self.records.append(rec)

    async def writable(self) -> None:
        return None


def _dispatcher(doc: Any, registry: Registry, sink: _Sink) -> Dispatcher:
    return Dispatcher(doc, registry, sink, Counters(), build_engines(doc, {}), {})


def test_route_plan_matches_route_inputs_and_is_rebuilt_for_a_new_document() -> None:
    doc = _doc()
    d = _dispatcher(doc, Registry(), _Sink())
    route = doc.device_configuration_by_key["sensor"].routes[0]
    plan = d.route_plan(route)
    assert d.route_plan(route) is plan  # cached
    values = {"temperature": 21.5, "humidity": 40, "mode": "auto", "ts": 1.0, "unmapped": 3}
    ((module, mappings),) = plan.workflows
    assert module == "sensorwf"
    assert dict((i, values[f]) for f, i in mappings if f in values) == route_inputs(route, values, "sensorwf")
    assert [s.key for s in plan.sentinels] == ["anonymous"]
    # a reload gives new route objects (and a new document): never the old plan
    reloaded = _doc()
    d.doc = reloaded
    new_route = reloaded.device_configuration_by_key["sensor"].routes[0]
    assert d.route_plan(new_route) is not plan
    d.doc = doc  # the same route under another document is not reused either
    d.doc = reloaded
    assert d.route_plan(route) is not plan


def test_dispatcher_fast_path_gives_the_records_and_state_of_the_general_path() -> None:
    doc = _doc()
    registry = Registry([Device("d0001", "sensor", attributes={"old": 1})])
    sink = _Sink()
    d = _dispatcher(doc, registry, sink)
    before = registry.devices["d0001"]
    for i, mode in enumerate(("auto", "manual", "manual", "auto")):
        body = orjson.loads(payload("t", i, 1_700_000_000.0, 10))
        body["mode"] = mode
        d.handle(InboundMessage("mqttin", orjson.dumps(body), "bench/d0001/q0"))
    assert [r.status for r in sink.records] == [PemStatus.COMPLETED] * 4
    assert [r.message_id for r in sink.records] == [f"t-{i}" for i in range(4)]
    after = registry.devices["d0001"]
    assert before.attributes == {"old": 1}  # the stored device was copied, never changed in place
    assert after.attributes == {"old": 1, "temperature": float(body["temperature"]), "humidity": body["humidity"],
                                "sentat": float(body["ts"])}
    assert after.state_machines == {"mode": "automatic"}  # automatic -> manual -> (ignored) -> automatic
    assert registry.saved[1].state_machines == {"mode": "manualmode"}
    assert len({id(s.attributes) for s in registry.saved}) == 4  # each saved state has its own dicts


def test_convert_fast_path_keeps_the_checks() -> None:
    assert convert(1.5, ParameterType.DECIMAL) == 1.5
    assert convert(3, ParameterType.DECIMAL) == 3.0 and type(convert(3, ParameterType.DECIMAL)) is float
    assert convert(True, ParameterType.TRUE_FALSE) is True
    for bad, ptype in ((float("nan"), ParameterType.DECIMAL), (True, ParameterType.INTEGER)):
        try:
            convert(bad, ptype)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} as {ptype} should fail")


def test_new_id_is_32_hex_and_unique() -> None:
    ids = {new_id() for _ in range(10_000)}
    assert len(ids) == 10_000 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


# --------------------------------------------------------------------------- MQTT PUBLISH decoding


def _publish(topic: bytes, body: bytes, qos: int = 0, mid: int = 0) -> bytes:
    variable = len(topic).to_bytes(2, "big") + topic + (mid.to_bytes(2, "big") if qos else b"")
    rest = variable + body
    length = bytearray()
    n = len(rest)
    while True:
        byte, n = n % 128, n // 128
        length.append(byte | (128 if n else 0))
        if not n:
            break
    return bytes([0x30 | (qos << 1)]) + bytes(length) + rest


class _Sock:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def recv(self, n: int) -> bytes:
        if not self.chunks:
            raise BlockingIOError
        return self.chunks.pop(0)


def test_drain_publishes_stops_at_other_packets_and_incomplete_ones() -> None:
    big = b"x" * 300  # a two-byte remaining length
    suback = b"\x90\x03\x00\x01\x00"
    first = _publish(b"a/b", b"one") + _publish(b"c", big, qos=1, mid=513)
    tail = _publish(b"d", b"after") + _publish(b"e/f", b"cut")[:5]
    sock = _BufferedSocket(_Sock([first + suback + tail]), lambda: True)
    taken: list[tuple[bytes, bytes, int, int]] = []

    def take(topic: bytes, body: bytes, qos: int, mid: int) -> None:
        taken.append((topic, body, qos, mid))

    assert sock.drain_publishes(take) == 0  # nothing buffered yet: paho's first recv fills the buffer
    assert sock.recv(1) == first[:1]
    sock._pos = 0  # (as if paho had not read it)
    assert sock.drain_publishes(take) == 2
    assert taken == [(b"a/b", b"one", 0, 0), (b"c", big, 1, 513)]
    assert sock.drain_publishes(take) == 0  # the SUBACK is paho's
    assert sock.recv(1) + sock.recv(1) + sock.recv(3) == suback
    assert sock.drain_publishes(take) == 1 and taken[-1] == (b"d", b"after", 0, 0)
    assert sock.pending() == 5  # the incomplete packet stays for paho
    assert sock.recv(5) == _publish(b"e/f", b"cut")[:5]


def test_drain_publishes_leaves_qos2_and_malformed_packets_to_paho() -> None:
    qos2 = bytes([0x34]) + _publish(b"t", b"x", qos=1, mid=7)[1:]
    empty_topic = b"\x30\x03\x00\x00z"
    for packet in (qos2, empty_topic):
        sock = _BufferedSocket(_Sock([]), lambda: True)
        sock._buf, sock._pos = packet, 0
        assert sock.drain_publishes(lambda *a: None) == 0
        assert sock.pending() == len(packet)


_packets = st.lists(st.tuples(st.binary(min_size=1, max_size=40), st.binary(max_size=300),
                               st.integers(0, 1), st.integers(1, 65535)), max_size=20)


@given(_packets, st.binary(max_size=8))
def test_drain_publishes_decodes_any_run_of_publish_packets_exactly(
    packets: list[tuple[bytes, bytes, int, int]], tail: bytes
) -> None:
    stream = b"".join(_publish(t, b, q, m) for t, b, q, m in packets)
    sock = _BufferedSocket(_Sock([]), lambda: True)
    sock._buf, sock._pos = stream + tail, 0
    taken: list[tuple[bytes, bytes, int, int]] = []
    sock.drain_publishes(lambda t, b, q, m: taken.append((t, b, q, m)))
    assert taken[:len(packets)] == [(t, b, q, m if q else 0) for t, b, q, m in packets]
    assert sock._pos >= len(stream)
    assert sock._pos <= len(stream + tail)


@given(st.binary(max_size=2000))
def test_drain_publishes_never_raises_nor_reads_past_its_buffer(data: bytes) -> None:
    sock = _BufferedSocket(_Sock([]), lambda: True)
    sock._buf, sock._pos = data, 0
    taken: list[tuple[bytes, bytes, int, int]] = []
    n = sock.drain_publishes(lambda t, b, q, m: taken.append((t, b, q, m)))
    assert n == len(taken)
    assert 0 <= sock._pos <= len(data)
    assert sum(len(t) + len(b) for t, b, _, _ in taken) <= sock._pos
    assert all(t and q in (0, 1) for t, _, q, _ in taken)


# --------------------------------------------------------------------------- storage


def test_delete_slice_removes_the_oldest_rows_below_the_cutoff_in_slices() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE messages (seq INTEGER PRIMARY KEY, v TEXT)")
    conn.executemany("INSERT INTO messages (v) VALUES (?)", [(str(i),) for i in range(100)])
    removed = []
    while True:
        n, done = _delete_slice(conn, "messages", 50, 20)
        removed.append(n)
        if done:
            break
    assert removed == [20, 20, 10, 0] or removed == [20, 20, 10]
    assert conn.execute("SELECT min(seq), count(*) FROM messages").fetchone() == (51, 50)
    assert _delete_slice(conn, "messages", 50, 20) == (0, True)


async def test_checkpointer_runs_beside_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("CREATE TABLE t (x)")
    conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(1000)])
    cp = Checkpointer(path, commits=3, rows=10**9)
    cp.committed(1)
    cp.committed(1)
    assert cp.done == 0
    cp.committed(1)  # the third commit starts one
    await cp.close()
    assert cp.done == 1
    cp.committed(10**9)  # and it can start again after a close
    await asyncio.sleep(0)
    await cp.close()
    assert cp.done == 2
    conn.close()
