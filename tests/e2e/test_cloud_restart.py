"""The real daemon in cloud working storage with the cloud down: messages and events are produced, the
daemon is SIGTERMed and restarted on the same data dir, then the cloud comes up: every record arrives.

Delivery is **at least once** (docs/cloud.md): a row leaves the outbox only after a 2xx, so a batch the
cloud stored but whose answer was lost comes again. The test counts duplicates and logs the counts; in
this scenario (the cloud never answered before the restart) it expects none.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import structlog

from tests.support.daemon import Daemon
from tests.support.fake_cloud import FakeCloudThread
from tests.support.net import free_port

pytestmark = pytest.mark.e2e
log = structlog.get_logger(__name__)

ACCESS_KEY = "cloud-key-" + "x" * 12
MESSAGES = 25


def daemon(data_dir: Path, cloud_port: int) -> Daemon:
    env = {
        "NUVIOT_WORKING_STORAGE": "cloud",
        "NUVIOT_CLOUD_URL": f"http://127.0.0.1:{cloud_port}",
        "NUVIOT_ACCESS_KEY": ACCESS_KEY,
        "NUVIOT_CLOUD_RETRY_MAX": "0.5",  # keep the retries short so the test does not wait for the cap
        "NUVIOT_CLOUD_BATCH_SIZE": "10",
        "NUVIOT_CLOUD_MAX_BATCHES_PER_SECOND": "50",
    }
    return Daemon(data_dir, "--listener-port", "restin=0", "--input-command-port", "0", "--instance-id",
                  "inst-cloud", env=env)


def post_telemetry(port: int, i: int) -> None:
    body = json.dumps({"temperature": 20 + i / 10, "humidity": 40, "mode": "heat"}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/devices/thermo-001/telemetry", data=body,
                                 method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200


def wait_for(cond: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def outbox(d: Daemon) -> dict[str, Any]:
    code, status = d.request("GET", "/status")
    assert code == 200
    return dict(status["storage"]["outbox"])


def test_outbox_survives_restart_and_is_delivered_once_the_cloud_is_up(tmp_path: Path) -> None:
    cloud_port = free_port()
    data = tmp_path / "data"

    # run 1: the cloud is down
    with daemon(data, cloud_port) as d:
        status = d.wait_state("Running")
        rest_port = next(item["port"] for item in status["listeners"] if item["key"] == "restin")
        for i in range(MESSAGES):
            post_telemetry(rest_port, i)
        assert d.request("POST", "/control/pause")[0] == 202
        d.wait_state("Paused")
        assert d.request("POST", "/control/start")[0] == 202
        d.wait_state("Running")
        wait_for(lambda: len(d.request("GET", "/messages?limit=1000")[1]) == MESSAGES, "local message records")
        wait_for(lambda: outbox(d)["depth"] >= MESSAGES, "the outbox to hold the records")
        box = outbox(d)
        assert box["lastError"] and box["lastDeliveryAt"] is None and box["retrying"] is True
        with urllib.request.urlopen(d.base + "/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
        depth_line = next(line for line in metrics.splitlines() if line.startswith("nuviot_cloud_outbox_depth "))
        assert float(depth_line.split()[1]) >= MESSAGES
        message_ids = {m["id"] for m in d.request("GET", "/messages?limit=1000")[1]}
        assert d.terminate(timeout=10) == 0

    # run 2: restarted on the same data dir, the cloud still down, then up
    with daemon(data, cloud_port) as d:
        d.wait_state("Running")
        assert outbox(d)["depth"] >= MESSAGES  # the outbox survived the restart
        with FakeCloudThread(cloud_port) as cloud:
            wait_for(lambda: set(cloud.accepted_ids("message")) >= message_ids, "every message record", 60)
            wait_for(lambda: outbox(d)["depth"] == 0, "the outbox to empty")
            local_events = d.request("GET", "/events?limit=1000")[1]
            wait_for(lambda: len(cloud.accepted_ids("event")) >= len(local_events), "every event")
            box = outbox(d)
            posts = list(cloud.posts)
            accepted = list(cloud.accepted)
            assert d.terminate(timeout=10) == 0

    per_id = Counter(r["id"] for r in accepted)
    duplicates = {i: n for i, n in per_id.items() if n > 1}
    kinds = Counter(r["_kind"] for r in accepted)
    log.info("cloud_restart_counts", messages=len(message_ids), events=len(local_events), kinds=dict(kinds),
             distinct=len(per_id), duplicates=sum(n - 1 for n in duplicates.values()), posts=len(posts))
    assert set(cloud.accepted_ids("message")) == message_ids  # none lost, none invented
    assert not duplicates, f"duplicates: {duplicates}"
    cloud_transitions = Counter((r["from"], r["to"]) for r in accepted if r["_kind"] == "event")
    local_transitions = Counter((e["from"], e["to"]) for e in local_events)
    assert cloud_transitions == local_transitions
    assert ("Running", "Pausing") in cloud_transitions and ("Stopping", "Stopped") in cloud_transitions
    statuses = [r for r in accepted if r["_kind"] == "status"]
    assert len(statuses) == len(local_events)  # every state change was reported too
    assert {s["instanceId"] for s in statuses} == {"inst-cloud"}
    assert {s["state"] for s in statuses} >= {"StartingRuntime", "Running", "Paused", "Stopped"}
    assert all(p.authorization == f"Bearer {ACCESS_KEY}" for p in posts)
    assert box["depth"] == 0 and box["lastDeliveryAt"] and box["quarantined"] == 0
    assert not any(ACCESS_KEY in line for line in d.lines)  # the key is never logged
