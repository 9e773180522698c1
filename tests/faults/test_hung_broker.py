"""A hung broker (SIGSTOP: its sockets stay open, it answers nothing) while the daemon runs.

TCP never reports such a broker, and paho's own keep-alive takes up to two periods. The MQTT listener probes
a quiet connection and drops it within one keep-alive period (issue 18.11: 1.5 at most): the listener goes
``disconnected``, ``/ready`` answers 503 naming it, and ``/status`` says the same (its ``ready`` and the
listener's state: it used to say "all listeners up"). When the broker answers again the listener reconnects
and both go back to ready.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.faults.conftest import bench_daemon, listener_state, wait_until
from tests.support.daemon import Daemon
from tests.support.mosquitto import Mosquitto

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

KEEPALIVE = 4  # seconds (NUVIOT_MQTT_KEEPALIVE / --mqtt-keepalive)


def ready_and_status(d: Daemon) -> tuple[int, dict, dict]:
    code, ready = d.request("GET", "/ready", token=None, timeout=3)
    _, status = d.request("GET", "/status", timeout=3)
    return code, ready, status


def test_hung_broker_is_noticed_within_one_and_a_half_keepalives_and_ready_and_status_agree(
    own_mosquitto: Mosquitto, tmp_path: Path
) -> None:
    d = bench_daemon(tmp_path / "data", own_mosquitto, "--mqtt-keepalive", str(KEEPALIVE))
    with d:
        d.wait_state("Running", timeout=30)
        wait_until(lambda: listener_state(d) == "connected", 15, "listener connected")
        code, ready, status = ready_and_status(d)
        assert code == 200 and status["ready"] == {"ok": True, "reason": "running"}, (ready, status)

        own_mosquitto.hang()
        hung_at = time.monotonic()
        try:
            wait_until(lambda: d.request("GET", "/ready", token=None, timeout=3)[0] == 503, 3 * KEEPALIVE,
                       "/ready notices the hung broker", every=0.05)
            noticed = time.monotonic() - hung_at
            code, ready, status = ready_and_status(d)
        finally:
            own_mosquitto.unhang()
        assert noticed <= 1.5 * KEEPALIVE, f"noticed after {noticed:.2f}s"
        mqttin = next(x for x in status["listeners"] if x["key"] == "mqttin")
        assert code == 503 and ready["reason"] == "listener mqttin is disconnected", ready
        assert status["ready"] == {"ok": False, "reason": ready["reason"]}  # /status agrees with /ready
        assert mqttin["state"] == "disconnected" and "did not answer" in mqttin["lastError"], mqttin
        assert status["state"] == "Running"

        wait_until(lambda: d.request("GET", "/ready", token=None, timeout=3)[0] == 200, 60,
                   "ready again once the broker answers")
        code, ready, status = ready_and_status(d)
        assert status["ready"] == {"ok": True, "reason": "running"} and listener_state(d) == "connected"
        assert d.terminate() == 0
    print(f"hung broker noticed after {noticed:.2f}s (keep-alive {KEEPALIVE}s)")
