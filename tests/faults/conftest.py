"""Fault tests: the real daemon (``python -m runtime run``) on ``bench/solution.yaml`` against a broker of
the test's own, then something breaks (kill -9, the broker goes away, a flood, garbage requests).

The benchmark solution's planner stores the payload's unique ``seq`` as each record's message id, so the
tests count what was recorded straight from ``runtime.db`` without trusting the publisher.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench.publisher import PublishResult, publish
from tests.support.daemon import Daemon
from tests.support.mosquitto import Mosquitto

pytestmark = pytest.mark.e2e

SOLUTION = Path(__file__).resolve().parents[2] / "bench" / "solution.yaml"
DEVICES = 20


def bench_daemon(data_dir: Path, broker: Mosquitto, *args: str, client_id: str = "faults-runtime",
                 env: dict[str, str] | None = None) -> Daemon:
    return Daemon(data_dir, "--solution", str(SOLUTION), "--listener-port", "restin=0",
                  "--input-command-port", "0", *args,
                  env={"MQTT_HOST": broker.host, "MQTT_PORT": str(broker.port), "MQTT_CLIENT_ID": client_id,
                       **(env or {})})


def provision(d: Daemon, devices: int = DEVICES) -> None:
    for i in range(devices):
        code, body = d.request("PUT", f"/devices/d{i:04d}", {"deviceConfiguration": "sensor"})
        assert code in (200, 201), body


def wait_until(check: Callable[[], Any], within: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + within
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {within}s")
        time.sleep(every)


def listener_state(d: Daemon, key: str = "mqttin") -> str | None:
    code, st = d.request("GET", "/status", timeout=3)
    if code != 200:
        return None
    return next((x.get("state") for x in st["listeners"] if x["key"] == key), None)


def running_and_provisioned(d: Daemon) -> None:
    """Waits for Running, provisions the devices, waits for the MQTT listener to connect."""
    d.wait_state("Running", timeout=30)
    provision(d)
    wait_until(lambda: listener_state(d) == "connected", 15, "listener connected")


def recorded(db: Path, run: str) -> Counter[str]:
    """Records per message id (the payload's seq) of one run, read from the database file."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        rows = conn.execute("SELECT message_id FROM messages WHERE message_id LIKE ?", (f"{run}-%",)).fetchall()
    return Counter(r[0] for r in rows)


def every_message_recorded(db: Path, run: str, n: int) -> tuple[int, int]:
    """Asserts that each of the run's ``n`` messages was recorded at least once, nothing else was, and the
    database is intact; returns (unique, duplicates): duplicates are at-least-once delivery, reported only."""
    counts = recorded(db, run)
    missing = [f"{run}-{i}" for i in range(n) if f"{run}-{i}" not in counts]
    assert not missing, f"{len(missing)} lost, e.g. {missing[:5]}"
    assert set(counts) <= {f"{run}-{i}" for i in range(n)}
    assert integrity(db) == "ok"
    return len(counts), sum(c - 1 for c in counts.values())


def integrity(db: Path) -> str:
    with sqlite3.connect(db, timeout=10) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


class PublisherThread(threading.Thread):
    """``bench.publisher.publish`` on a thread; ``result`` once joined."""

    def __init__(self, broker: Mosquitto, **kwargs: Any) -> None:
        super().__init__(daemon=True, name="faults-publisher")
        self._broker = broker
        self._kwargs = {"devices": DEVICES, **kwargs}
        self.result: PublishResult | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = publish(self._broker.host, self._broker.port, **self._kwargs)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
