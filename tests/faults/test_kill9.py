"""kill -9 while QoS 1 messages stream in; restart on the same data dir: nothing the broker delivered is lost.

The listener's session is persistent (stable client id): the broker keeps what it delivered but had no
PUBACK for (the runtime acknowledges only after the record is committed), and queues what arrives while
the daemon is dead. After the restart every message is recorded at least once; duplicates (recorded, but
killed before the PUBACK went out) are counted and reported, never treated as a failure.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.faults.conftest import (
    PublisherThread,
    bench_daemon,
    every_message_recorded,
    recorded,
    running_and_provisioned,
    wait_until,
)
from tests.support.mosquitto import Mosquitto

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

N = 6000
RATE = 1500.0


def test_kill9_while_qos1_streams_loses_nothing(own_mosquitto: Mosquitto, tmp_path: Path,
                                                record_property: pytest.RecordProperty) -> None:
    data = tmp_path / "data"
    db = data / "runtime.db"
    run = "k9"
    first = bench_daemon(data, own_mosquitto)
    with first:
        running_and_provisioned(first)
        pub = PublisherThread(own_mosquitto, run=run, n=N, qos=1, rate=RATE)
        pub.start()
        wait_until(lambda: sum(recorded(db, run).values()) >= 1000, 30, "first records committed")
        first.kill()  # SIGKILL: no drain, no PUBACKs for what was in flight
        killed_with = sum(recorded(db, run).values())
        pub.join(60)
        assert pub.error is None, pub.error
        assert pub.result is not None and pub.result.acked == N  # the broker has all of them
    assert killed_with < N, "the stream ended before the kill: nothing was tested"

    second = bench_daemon(data, own_mosquitto)  # same data dir, same client id
    with second:
        second.wait_state("Running", timeout=30)
        started = time.monotonic()
        wait_until(lambda: len(recorded(db, run)) >= N, 60, "every message recorded after the restart", every=0.2)
        caught_up = time.monotonic() - started
        assert second.terminate() == 0
    unique, duplicates = every_message_recorded(db, run, N)
    record_property("killed_with", killed_with)
    record_property("duplicates", duplicates)
    print(f"kill -9 after {killed_with} of {N} records; caught up in {caught_up:.1f}s after restart; "
          f"{unique} unique, {duplicates} duplicates, 0 missing")
