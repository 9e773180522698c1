"""Issues 4 and 5: NuvIoT's own 2018 export runs unchanged, over REST, with its JavaScript.

The fixture's particlecloud transmitter points at a public host; nothing here triggers it (the
routeone output translator sends only the acknowledge message, to the original listener).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import http
from tests.support.daemon import Daemon

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def motion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, str, str]]:
    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "nuviot-motionhandler-2018.json"
    d = Daemon(tmp_path_factory.mktemp("motion"), "--solution", str(fixture),
               "--listener-port", "rest6010=0", "--input-command-port", "0")
    with d:
        status = d.wait_state("Running")
        rest = f"http://127.0.0.1:{status['listeners'][0]['port']}"
        icp = f"http://127.0.0.1:{status['inputCommandPort']}"
        code, body = d.request("PUT", "/devices/md001", {"deviceConfiguration": "genericmd", "name": "Hall"})
        assert code == 201, body
        yield d, rest, icp


def motion_message(level: int) -> dict[str, object]:
    return {"motion": "true", "level": level, "temperature": 21.5, "itemstatus": "ison"}


def test_three_motion_messages_count_to_three_and_reply_with_the_ack(motion: tuple[Daemon, str, str]) -> None:
    d, rest, _ = motion
    replies = []
    for level in (1, 2, 3):
        code, body, _headers = http("POST", f"{rest}/sensor/md001/motion001", motion_message(level),
                                   {"Content-Type": "application/json"})
        assert code == 200, body
        replies.append(body)
    # getOutputMessage() of the acknowledge message builds the reply; Attributes.counter counts
    assert replies[-1] == {"status": "ok", "process": 3}
    assert [r["process"] for r in replies] == [1, 2, 3]
    device = d.request("GET", "/devices/md001")[1]
    assert device["attributes"]["counter"] == 3
    records = d.request("GET", "/messages?deviceId=md001&limit=3")[1]
    assert {r["status"] for r in records} == {"Completed"} and {r["messageId"] for r in records} == {"motion001"}


def test_unknown_device_and_malformed_body_are_dead_lettered(motion: tuple[Daemon, str, str]) -> None:
    d, rest, _ = motion
    code, body, _ = http("POST", f"{rest}/sensor/ghost/motion001", motion_message(1))
    assert code == 404 and body["error"]["code"] == "CouldNotFindDevice" and body["error"]["stage"] == "planner"
    code, body, _ = http("POST", f"{rest}/sensor/md001/motion001", b'{"motion": tru')
    assert code == 400 and body["error"]["stage"] == "inputtranslator"
    code, body, _ = http("POST", f"{rest}/sensor/md001/motion001", {"level": "three"})
    assert code == 400 and "level" in body["error"]["message"]
    letters = d.request("GET", "/deadletters?limit=10")[1]
    stages = {(x["deviceId"], x["stage"]) for x in letters}
    assert ("ghost", "planner") in stages and ("md001", "inputtranslator") in stages
    ghost = next(x for x in letters if x["deviceId"] == "ghost")
    full = d.request("GET", f"/deadletters/{ghost['id']}")[1]
    assert b"level" in __import__("base64").b64decode(full["payload"])
    assert full["path"] == "/sensor/ghost/motion001"

    # replay after provisioning the device: the same raw message now completes
    assert d.request("PUT", "/devices/ghost", {"deviceConfiguration": "genericmd"})[0] == 201
    code, body = d.request("POST", f"/deadletters/{ghost['id']}/replay")
    assert code == 202, body
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        recs = d.request("GET", "/messages?deviceId=ghost&limit=5")[1]
        if any(r["status"].startswith("Completed") for r in recs):
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"replayed message did not complete: {recs}")
    assert d.request("GET", "/devices/ghost")[1]["attributes"]["counter"] == 1
    assert d.request("GET", f"/deadletters/{ghost['id']}")[1]["replayedAt"] is not None


def test_input_commands_set_pump_status_also_while_paused(motion: tuple[Daemon, str, str]) -> None:
    d, _rest, icp = motion
    base = f"{icp}/genericmd/routeone/simplemotion"
    code, body, _ = http("GET", f"{base}/pumpon/md001")
    assert code == 202 and body["status"] == "accepted", body
    assert d.request("GET", "/devices/md001")[1]["attributes"]["pumpstatus"] == "Pump On Sent"

    assert d.request("POST", "/control/pause")[0] == 202
    d.wait_state("Paused")
    try:
        code, body, _ = http("GET", f"{base}/pumpoff/md001")
        assert code == 202, body
        assert d.request("GET", "/devices/md001")[1]["attributes"]["pumpstatus"] == "Pump is off"
        records = d.request("GET", "/messages?deviceId=md001&limit=1")[1]
        assert records[0]["messageId"] == "pumpoff" and records[0]["listener"] == "inputcommand"
        # bad requests are refused naming what is wrong
        assert http("POST", f"{base}/pumpoff/md001", {})[0] == 405
        assert http("GET", f"{base}/nosuch/md001")[0] == 404
        assert http("GET", f"{base}/pumpoff/nodevice")[0] == 404
        code, body, _ = http("GET", f"{base}/setstatus/md001?status=sideways")
        assert code == 400 and "status" in body["error"]["message"]
        code, body, _ = http("GET", f"{base}/pumpoff/md001", b'{"x": 1}')
        assert code == 400 and body["error"]["code"] == "body_not_allowed"
    finally:
        assert d.request("POST", "/control/start")[0] == 202
        d.wait_state("Running")


def test_stopped_instance_refuses_input_commands(motion: tuple[Daemon, str, str]) -> None:
    d, _, icp = motion
    assert d.request("POST", "/control/stop")[0] == 202
    d.wait_state("Stopped")
    try:
        with pytest.raises(OSError):
            http("GET", f"{icp}/genericmd/routeone/simplemotion/pumpon/md001", timeout=2)
    finally:
        d.request("POST", "/control/start")
        d.wait_state("Running")


def test_datastream_step_writes_the_azure_table_stream_to_builtin_storage(motion: tuple[Daemon, str, str]) -> None:
    """The hottub route's datastream step (input translator -> simpletable, temperature -> temperature)
    writes a row per message; Azure Table cannot be reached from here, so built-in storage keeps it."""
    d, _, _ = motion
    rest = f"http://127.0.0.1:{d.request('GET', '/status')[1]['listeners'][0]['port']}"  # port 0: new after restart
    assert d.request("PUT", "/devices/ht001", {"deviceConfiguration": "hottub", "name": "Tub"})[0] == 201
    for temperature in (37.5, 38.25):
        message = {"status": "ok", "setpoint": 38, "temperature": temperature, "heater": "on"}
        code, body, _ = http("POST", f"{rest}/sensor/ht001/hottubmsg01", message, {"Content-Type": "application/json"})
        assert code == 200, body
    deadline = time.monotonic() + 10
    while True:
        rows = d.request("GET", "/datastreams/simpletable/records?deviceId=ht001&limit=2")[1]
        if len(rows) == 2 and rows[0]["temperature"] == 38.25:
            break
        assert time.monotonic() < deadline, rows
        time.sleep(0.05)
    assert [r["temperature"] for r in rows] == [38.25, 37.5]  # newest first
    assert {r["deviceId"] for r in rows} == {"ht001"} and rows[0]["timeStamp"].endswith("Z")
    streams = d.request("GET", "/datastreams")[1]
    simple = next(s for s in streams if s["key"] == "simpletable")
    assert simple["type"] == "builtin" and simple["streamType"] == "azuretablestorage"
    assert simple["writtenToBuiltIn"] is True and simple["lastWriteAt"] is not None and simple["depth"] == 0
    assert any(e.get("event") == "datastream_written_to_builtin" and e.get("stream") == "simpletable"
               for e in d.json_lines())
    assert d.request("GET", "/status")[1]["dataStreams"][0]["key"] == "simpletable"
    buckets = d.request("GET", "/datastreams/simpletable/records?deviceId=ht001&bucket=1d")[1]
    assert buckets[0]["count"] >= 2 and "temperature" in buckets[0]["averages"]
    code, body = d.request("GET", "/datastreams/nosuch/records")
    assert code == 404 and body["error"]["code"] == "unknown_datastream"
    code, body = d.request("GET", "/datastreams/simpletable/records?bucket=1w")
    assert code == 400 and body["error"]["code"] == "bad_bucket"
    assert d.request("GET", "/datastreams", token=None)[0] == 401
    metrics = http("GET", f"{d.base}/metrics")[1]
    assert 'nuviot_datastream_depth{stream="simpletable",type="builtin"} 0.0' in metrics
