"""Issue 18, the real daemon: a damaged or unusable runtime.db gives FailedToInitialize with the reason (one
JSON log line, no traceback, admin API up); a full disk turns /ready 503 and the instance recovers by itself."""

from __future__ import annotations

import http.client as http_client
import os
import sqlite3
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import http
from tests.support.daemon import Daemon
from tests.support.tmpfs import remount, small_tmpfs

pytestmark = pytest.mark.e2e

ARGS = ("--listener-port", "restin=0", "--input-command-port", "0")


def listener_port(status: dict, key: str) -> int:
    return next(lst["port"] for lst in status["listeners"] if lst["key"] == key)


def assert_failed_cleanly(d: Daemon, reason_start: str) -> dict:
    status = d.wait_state("FailedToInitialize")
    assert status["reason"].startswith(reason_start), status["reason"]
    code, body, _ = http("GET", d.base + "/ready")
    assert code == 503 and body["reason"] != "running"
    assert http("GET", d.base + "/health")[0] == 200
    code, body = d.request("GET", "/events")
    assert code == 503 and body["error"]["code"] == "storage_unavailable"
    assert "# TYPE" in http("GET", d.base + "/metrics")[1]
    # the daemon's output is read by a thread of the harness: the line can arrive after /status answered
    unusable = wait_for(lambda: [e for e in d.json_lines() if e.get("event") == "storage_unusable"], 10,
                        "the storage_unusable log line")
    assert len(unusable) == 1 and unusable[0]["reason"] == status["reason"]
    assert not any("Traceback" in line for line in d.lines)
    assert status["storage"]["fault"] == status["reason"]
    return status


def damage_a_page(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        page = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'devices'").fetchone()[0]
    with open(db, "r+b") as fh:
        fh.seek((page - 1) * page_size)
        fh.write(os.urandom(page_size))


def test_a_damaged_page_gives_failed_to_initialize_with_what_to_do(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Daemon(data, *ARGS) as d:
        status = d.wait_state("Running")
        rest = listener_port(status, "restin")
        assert http("POST", f"http://127.0.0.1:{rest}/devices/thermo-001/telemetry", {"temperature": 20.5})[0] == 200
        seeded = [e for e in d.json_lines() if e.get("event") in ("devices_seeded", "storage_checkpointed")]
        assert [e["event"] for e in seeded] == ["devices_seeded", "storage_checkpointed"]  # the WAL after seeding
        assert seeded[1]["complete"] is True
        assert d.terminate() == 0
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    modes = {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in data.iterdir()}
    assert "runtime.db" in modes and "admin-token" not in modes  # the token came from the environment here
    assert set(modes.values()) == {"0o600"}, modes
    damage_a_page(data / "runtime.db")
    with Daemon(data, *ARGS) as d:
        status = assert_failed_cleanly(d, "database damaged: ")
        assert "move runtime.db and its -wal/-shm files aside" in status["reason"]
        code, _ = d.request("POST", "/control/start")  # still damaged: FailedToInitialize again, no crash
        assert code == 202
        again = wait_for(lambda: (st := d.request("GET", "/status")[1])["state"] == "FailedToInitialize"
                         and st["since"] != status["since"] and st, 20, "a second FailedToInitialize")
        assert again["reason"] == status["reason"]
        assert d.terminate() == 0


def test_a_garbage_runtime_db_gives_failed_to_initialize(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "runtime.db").write_bytes(os.urandom(100_000))
    with Daemon(data, *ARGS) as d:
        assert_failed_cleanly(d, "database damaged: ")
        assert d.terminate() == 0


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path, "size=24m") as mnt:
        yield mnt


def test_a_read_only_data_dir_gives_failed_to_initialize_with_the_path(small_fs: Path) -> None:
    data = small_fs / "data"  # not there, and cannot be made: the token from the environment still works
    remount(small_fs, "ro")
    try:
        with Daemon(data, *ARGS) as d:
            status = assert_failed_cleanly(d, "storage unavailable: ")
            assert str(data) in status["reason"]
            assert d.terminate() == 0
    finally:
        remount(small_fs, "rw")


def fill(path: Path) -> None:
    with open(path, "wb", buffering=0) as fh:
        for size in (65536, 512):
            try:
                while True:
                    fh.write(b"\0" * size)
            except OSError:
                pass


def wait_for(check, within: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"not within {within}s: {what}")


def test_disk_full_while_running_is_named_ready_503_then_recovers_by_itself(small_fs: Path) -> None:
    data = small_fs / "data"
    with Daemon(data, *ARGS) as d:
        status = d.wait_state("Running")
        rest = listener_port(status, "restin")
        filler = small_fs / "filler"
        fill(filler)
        body = os.urandom(48_000).hex()  # a failing message: its dead letter keeps ~64 KB
        for _ in range(150):  # ~10 MB of dead letters
            http("POST", f"http://127.0.0.1:{rest}/devices/nobody/telemetry", body,
                 headers={"Content-Type": "text/plain"})
        ready = wait_for(lambda: (r := http("GET", d.base + "/ready"))[0] == 503 and r, 20, "/ready 503")
        assert "disk full" in ready[1]["reason"], ready[1]
        code, st = d.request("GET", "/status")
        assert st["state"] == "Running" and "disk full" in st["storage"]["fault"]
        assert "nuviot_store_degraded 1" in http("GET", d.base + "/metrics")[1]
        assert any(e.get("event") == "storage_unavailable" and e.get("fault") == "disk_full" for e in d.json_lines())

        filler.unlink()  # space returns
        wait_for(lambda: http("GET", d.base + "/ready")[0] == 200, 30, "/ready 200 again")
        code, st = d.request("GET", "/status")
        assert st["storage"]["fault"] is None and st["storage"]["lost"] == 0
        assert any(e.get("event") == "storage_recovered" for e in d.json_lines())
        code, dead = d.request("GET", "/deadletters?limit=1000")
        assert code == 200 and len(dead) == 150  # every dead letter committed once space returned
        assert d.terminate() == 0


BIG_ATTRIBUTE = """
solution:
  key: big
  listeners:
    - { key: restin, listenerType: rest, restServerType: http, listenOnPort: 0 }
  planner:
    key: p
    deviceIdParsers: [ { key: deviceid, searchLocation: path, pathLocator: "/devices/{deviceid}/*" } ]
    messageTypeIdParsers: [ { key: messageid, searchLocation: path, pathLocator: "/devices/*/{messageid}" } ]
  deviceConfigurations:
    - key: cfg
      routes:
        - key: r
          messageDefinition: cmd
          steps:
            - { id: s1, type: sentinel, module: anon, next: { to: s2 } }
            - { id: s2, type: inputtranslator, module: tr, next: { to: s3, mappings: { what: what } } }
            - { id: s3, type: workflow, module: wf }
messages:
  - key: cmd
    messageId: cmd
    contentType: json
    fields: [ { key: what, searchLocation: body, jsonPath: what, storageType: string } ]
sentinels: [ { key: anon } ]
inputTranslators: [ { key: tr } ]
workflows:
  - key: wf
    inputs:
      - key: what
        inputType: string
        onSetScript: |
          function onSet(value) {
              Attributes.last = value === "big" ? "x".repeat(8 * 1024 * 1024) : value;
          }
    attributes:
      - { key: last, attributeType: string }
devices:
  - { deviceId: d1, deviceConfiguration: cfg }
"""


def test_a_script_value_over_the_limit_is_a_dead_letter_not_stored(tmp_path: Path) -> None:
    solution = tmp_path / "big.yaml"
    solution.write_text(BIG_ATTRIBUTE)
    with Daemon(tmp_path / "data", "--solution", str(solution), "--input-command-port", "0") as d:
        status = d.wait_state("Running")
        url = f"http://127.0.0.1:{status['listeners'][0]['port']}/devices/d1/cmd"
        assert http("POST", url, {"what": "small"})[0] == 200
        code, body, _ = http("POST", url, {"what": "big"})
        assert 400 <= code < 500 and body["error"]["code"] == "value_too_large", body
        assert "attribute last is 8388608 bytes" in body["error"]["message"]
        assert d.request("GET", "/devices/d1")[1]["attributes"]["last"] == "small"  # not stored
        letters = d.request("GET", "/deadletters")[1]
        assert [x["error"].split(":")[0] for x in letters] == ["value_too_large"]
        assert d.terminate() == 0
    assert (tmp_path / "data" / "runtime.db").stat().st_size < 4 * 1024 * 1024


def test_a_page_damaged_while_running_gives_fatal_error_and_counts_the_loss(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Daemon(data, *ARGS) as d:
        status = d.wait_state("Running")
        rest = listener_port(status, "restin")
        url = f"http://127.0.0.1:{rest}/devices/thermo-001/telemetry"
        assert http("POST", url, {"temperature": 20.5})[0] == 200
        d.request("GET", "/messages")  # flushed: committed
        db = data / "runtime.db"
        with sqlite3.connect(db, timeout=5) as conn:
            assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
        damage_a_page(db)  # the devices table's root page, in the file itself
        with sqlite3.connect(db, timeout=5, isolation_level=None) as conn:  # another writer: caches are dropped
            conn.execute("INSERT INTO events (at, from_state, to_state, reason) VALUES (0, 'x', 'y', 'test')")
        try:  # its device save meets the damaged page: never a 2xx, as its record is never committed
            code: int | None = http("POST", url, {"temperature": 21.5})[0]
        except (ConnectionError, http_client.RemoteDisconnected):
            code = None  # the listener closed with the instance (FatalError) before it could answer
        assert code is None or code >= 500, code
        st = d.wait_state("FatalError")
        assert st["reason"].startswith("database damaged: "), st["reason"]
        assert st["storage"]["lost"] >= 1 and "damaged" in st["storage"]["fault"]
        assert http("GET", d.base + "/ready")[0] == 503
        lost = [e for e in d.json_lines() if e.get("event") == "storage_batch_lost"]
        assert lost and lost[0]["reason"] == st["reason"]
        code, _ = d.request("POST", "/control/start")  # the store stays damaged: no Running on it
        assert code == 202
        again = d.wait_state("FailedToInitialize")
        assert again["reason"] == st["reason"]
        assert d.terminate() == 0


MQTT_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mqtt-telemetry.yaml"


def test_qos1_messages_taken_while_the_disk_is_full_are_never_lost(small_fs: Path, own_mosquitto) -> None:  # type: ignore[no-untyped-def]  # fixture from tests/conftest.py
    """Nothing is acknowledged that is not committed: kill -9 while the disk is full, free space, restart:
    the broker redelivers what was never acknowledged, and every message ends up committed."""
    import paho.mqtt.client as paho

    data = small_fs / "data"
    env = {"MQTT_HOST": own_mosquitto.host, "MQTT_PORT": str(own_mosquitto.port), "MQTT_CLIENT_ID": "rt-full"}
    args = ("--solution", str(MQTT_EXAMPLE), "--input-command-port", "0")
    n = 150
    with Daemon(data, *args, env=env) as d:
        d.wait_state("Running")
        wait_for(lambda: http("GET", d.base + "/ready")[0] == 200, 20, "the MQTT listener connected")
        filler = small_fs / "filler"
        fill(filler)
        pub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="full-publisher")
        pub.connect(own_mosquitto.host, own_mosquitto.port)
        pub.loop_start()
        try:
            body = os.urandom(30_000).hex()  # unknown devices: dead letters keeping ~60 KB each
            infos = [pub.publish(f"devices/ghost-{i:03d}/telemetry", body, qos=1) for i in range(n)]
            for info in infos:
                info.wait_for_publish(10)  # the broker has them all
        finally:
            pub.loop_stop()
            pub.disconnect()
        ready = wait_for(lambda: (r := http("GET", d.base + "/ready"))[0] == 503 and r, 30, "/ready 503")
        assert "disk full" in ready[1]["reason"]
        with sqlite3.connect(data / "runtime.db") as conn:
            before = conn.execute("SELECT count(*) FROM deadletters").fetchone()[0]
        assert before < n  # most are not committed, so not acknowledged: the broker still has them
        d.kill()  # kill -9 while nothing commits
        filler.unlink()
    with Daemon(data, *args, env=env) as d:
        d.wait_state("Running")

        def committed() -> set[str]:
            code, dead = d.request("GET", "/deadletters?limit=1000")
            return {x["deviceId"] for x in dead} if code == 200 else set()

        wait_for(lambda: len(committed()) == n, 60, f"all {n} messages committed after the restart")
        assert d.terminate() == 0
