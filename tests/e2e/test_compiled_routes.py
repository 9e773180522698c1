"""Issue 17: the daemon takes the usual MQTT message through the route compiled at solution load, and the
rest the general way; ``NUVIOT_COMPILED_ROUTES=0`` sends everything the general way, with the same outcome.

The real daemon on ``bench/solution.yaml`` and a broker of the test's own, QoS 1 (each PUBACK after the
commit): the same messages to a daemon with compiled routes and to one without must leave the same device
states, records and dead letters; ``/metrics`` counts which path each message took.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import paho.mqtt.publish as single
import pytest

from bench.publisher import publish
from tests.e2e.conftest import http
from tests.faults.conftest import bench_daemon, running_and_provisioned, wait_until
from tests.support.daemon import Daemon
from tests.support.mosquitto import Mosquitto

pytestmark = pytest.mark.e2e

GOOD = 30  # bench payloads for d0000..d0019: the compiled route takes them
BAD = [  # (topic, payload): each must take the general path and be a dead letter or a warning
    ("bench/d0001/q1", b'{"seq": "x-1", "temperature": "hot"}'),  # does not convert: inputtranslator
    ("bench/d0999/q1", b'{"seq": "x-2", "temperature": 1.5}'),  # no such device: planner
    ("bench/d0002/q1", b'{"seq": "x-3", "humidity": 4}'),  # the required temperature missing
    ("bench/d0003/q1", b"not json"),
]


def metric(d: Daemon, name: str) -> float:
    code, text, _ = http("GET", d.base + "/metrics")
    assert code == 200 and isinstance(text, str)
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    assert found, name
    return float(found.group(1))


def run_daemon(tmp_path: Path, broker: Mosquitto, compiled: str) -> dict[str, Any]:
    d = bench_daemon(tmp_path / f"data-{compiled}", broker, client_id=f"compiled-{compiled}",
                     env={"NUVIOT_COMPILED_ROUTES": compiled})
    with d:
        running_and_provisioned(d)
        sent = publish(broker.host, broker.port, run=f"c{compiled}", n=GOOD, qos=1, devices=20,
                       client_id=f"compiled-pub-{compiled}")
        assert sent.sent == GOOD
        for topic, body in BAD:  # one QoS 1 publish each
            single.single(topic, body, qos=1, hostname=broker.host, port=broker.port)
        total = GOOD + len(BAD)

        def settled() -> dict[str, Any] | None:
            counters = d.request("GET", "/status")[1]["counters"]
            return counters if counters["processed"] + counters["failed"] >= total else None

        counters = wait_until(settled, 20, "every message processed")
        devices = {f"d{i:04d}": d.request("GET", f"/devices/d{i:04d}")[1] for i in range(4)}
        letters = d.request("GET", "/deadletters")[1]
        events = [x for x in d.json_lines() if x.get("event") == "routes_compiled"]
        return {
            "counters": {k: counters[k] for k in ("processed", "failed", "deadLettered")},
            # sentat is the publisher's clock at each run: the same type, not the same value
            "state": {k: ({a: (type(x).__name__ if a == "sentat" else x) for a, x in v["attributes"].items()},
                          v["stateMachines"]) for k, v in devices.items()},
            "letters": sorted((x["deviceId"], x["stage"], x["error"].split(":")[0]) for x in letters),
            "compiled": metric(d, "nuviot_messages_compiled_total"),
            "fallback": metric(d, "nuviot_messages_compiled_fallback_total"),
            "events": events,
        }


def test_the_compiled_route_and_the_general_path_leave_the_same_records_and_state(
        own_mosquitto: Mosquitto, tmp_path: Path) -> None:
    on = run_daemon(tmp_path, own_mosquitto, "1")
    off = run_daemon(tmp_path, own_mosquitto, "0")
    assert on["counters"] == off["counters"] == {"processed": GOOD, "failed": len(BAD), "deadLettered": len(BAD)}
    assert on["state"] == off["state"]
    assert on["state"]["d0000"][0]["temperature"] == 17.0  # the last of d0000's payloads (i = 20): 15.0 + 2.0
    assert on["letters"] == off["letters"]
    assert {stage for _, stage, _ in on["letters"]} == {"planner", "inputtranslator"}
    assert (on["compiled"], on["fallback"]) == (GOOD, len(BAD))
    assert (off["compiled"], off["fallback"]) == (0, 0)
    assert [e["compiled"] for e in on["events"]] == [["sensor/telemetry"]]
    assert off["events"] == []
    assert json.dumps(on["state"])  # plain JSON, as the admin API shows it
