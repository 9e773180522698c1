"""Issue 15 (API side): the console page and its feed, the dry run, and paging 10,000 devices and dead letters,
against the real daemon."""

from __future__ import annotations

import base64
import http.client as httpc
import json
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.conftest import http
from tests.support.console import fill_data_dir
from tests.support.daemon import Daemon

pytestmark = pytest.mark.e2e

TELEMETRY = {"listener": "restin", "path": "/devices/thermo-001/telemetry",
             "payload": json.dumps({"temperature": 23.5, "humidity": 41, "mode": "heat"})}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("console") / "data"
    fill_data_dir(data, devices=10_000, deadletters=10_000)
    with Daemon(data, "--listener-port", "restin=0", "--input-command-port", "0") as d:
        d.wait_state("Running", timeout=60)
        yield d


def read_feed_events(d: Daemon, token: str | None, count: int, timeout: float = 10.0) -> tuple[int, list[dict]]:
    conn = httpc.HTTPConnection("127.0.0.1", d.admin_port, timeout=timeout)
    headers = {"Accept": "text/event-stream"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn.request("GET", "/feed", headers=headers)
    resp = conn.getresponse()
    events: list[dict] = []
    if resp.status == 200:
        assert resp.getheader("Content-Type", "").startswith("text/event-stream")
        block = b""
        while len(events) < count:
            line = resp.readline()
            assert line, "the feed ended early"
            if line == b"\n":
                kind, _, data = block.decode().partition("\ndata: ")
                assert kind == "event: status"
                events.append(json.loads(data))
                block = b""
            else:
                block += line
    conn.close()
    return resp.status, events


def test_page_is_served_open_with_a_strict_policy_and_the_api_under_it_needs_the_token(daemon: Daemon) -> None:
    code, body, headers = http("GET", daemon.base + "/ui")
    assert code == 200 and "<form id=\"sign-in-form\"" in body
    assert "script-src 'self'" in headers["Content-Security-Policy"] and headers["X-Frame-Options"] == "DENY"
    code, body, headers = http("GET", daemon.base + "/ui/static/app.js")
    assert code == 200 and headers["Content-Type"].startswith("text/javascript")
    assert http("GET", daemon.base + "/ui/static/nope.js")[0] == 404
    assert http("POST", daemon.base + "/pipeline/test", TELEMETRY)[0] == 401
    assert daemon.request("POST", "/pipeline/test", TELEMETRY, token="wrong")[0] == 401
    status, events = read_feed_events(daemon, "wrong", 0)
    assert status == 401 and not events
    assert not any("wrong" in line or daemon.token in line for line in daemon.lines)  # no token in any log line


def test_feed_sends_status_at_once_then_every_second(daemon: Daemon) -> None:
    started = time.monotonic()
    status, events = read_feed_events(daemon, daemon.token, 3)
    assert status == 200
    assert time.monotonic() - started < 8
    first = events[0]
    assert first["state"] == "Running" and first["deviceCount"] == 10_002
    assert first["deviceErrorEvents"] == 0  # the page refetches /events when device errors are raised or cleared
    assert first["solutionListeners"] == ["restin"] and "restin" in {x["key"] for x in first["listeners"]}
    assert set(first["counters"]) >= {"received", "processed", "failed", "deadLettered"}


def test_devices_and_deadletters_are_paged_on_the_server(daemon: Daemon) -> None:
    started = time.monotonic()
    code, page = daemon.request("GET", "/devices?limit=50&offset=100")
    assert code == 200 and len(page) == 50
    assert [d["deviceId"] for d in page[:2]] == ["bulk-00100", "bulk-00101"]
    assert page[0]["attributes"] == {"temperature": 20} and page[0]["stateMachines"] == {"heater": "idle"}
    code, page = daemon.request("GET", "/devices?limit=50&q=BULK-0999")
    assert code == 200 and [d["deviceId"] for d in page] == [f"bulk-0999{i}" for i in range(10)]
    code, last = daemon.request("GET", "/deadletters?limit=25&offset=9990")
    assert code == 200 and [d["id"] for d in last] == [f"old-{i:05d}" for i in range(9, -1, -1)]
    code, first = daemon.request("GET", "/deadletters?limit=25")
    assert first[0]["id"] == "old-09999" and first[0]["stage"] == "planner"
    assert time.monotonic() - started < 5  # five pages of 10,000 each
    assert daemon.request("GET", "/deadletters?offset=-1")[1]["error"]["code"] == "bad_offset"
    code, everything = daemon.request("GET", "/devices", timeout=30)  # no limit: every device, as before
    assert code == 200 and len(everything) == 10_002


def _state(d: Daemon) -> dict:
    return d.request("GET", "/status")[1]


def test_dry_run_lists_every_stage_and_changes_nothing_in_every_state(daemon: Daemon) -> None:
    before_device = daemon.request("GET", "/devices/thermo-001")[1]
    before_counters = _state(daemon)["counters"]
    before_messages = daemon.request("GET", "/messages?limit=1000")[1]
    for verb, state in ((None, "Running"), ("pause", "Paused"), ("stop", "Stopped")):
        if verb:
            assert daemon.request("POST", f"/control/{verb}")[0] == 202
            daemon.wait_state(state)
        code, answer = daemon.request("POST", "/pipeline/test", TELEMETRY)
        assert code == 200, answer
        assert answer["ok"] is True and answer["instanceState"] == state
        assert [s["stage"] for s in answer["stages"]] == ["planner", "sentinel", "inputtranslator", "workflow",
                                                          "outputtranslator", "transmitter"]
        planner, _, fields, workflow, output, transmit = (s["output"] for s in answer["stages"])
        assert planner == {"deviceId": "thermo-001", "messageId": "telemetry", "route": "telemetry",
                           "deviceConfiguration": "thermostat", "messageDefinition": "telemetry"}
        assert {f["key"]: (f["type"], f["value"]) for f in fields["fields"]} == {
            "temperature": ("decimal", 23.5), "humidity": ("integer", 41), "mode": ("string", "heat")}
        wf = workflow["workflows"][0]
        assert wf["attributes"]["temperature"] == {"from": None, "to": 23.5}
        assert wf["stateMachines"]["heater"]["to"] == "heating"
        assert wf["outputCommands"][0]["key"] == "ack"
        assert output["messages"][0]["transmitters"] == ["originallistener"]
        assert transmit["wouldSend"][0]["transmitter"] == "originallistener"
        assert json.loads(transmit["wouldSend"][0]["payload"])["counter"] == 1
    assert daemon.request("GET", "/devices/thermo-001")[1] == before_device
    assert _state(daemon)["counters"] == before_counters
    assert daemon.request("GET", "/messages?limit=1000")[1] == before_messages
    assert daemon.request("POST", "/control/start")[0] == 202
    daemon.wait_state("Running")


def test_dry_run_says_where_a_message_stops_with_nuviots_code(daemon: Daemon) -> None:
    bad = {**TELEMETRY, "payload": '{"temperature": "warm"}'}
    code, answer = daemon.request("POST", "/pipeline/test", bad)
    assert code == 200 and answer["ok"] is False and answer["status"] == "Failed"
    assert [(s["stage"], s["ok"]) for s in answer["stages"]] == [("planner", True), ("sentinel", True),
                                                               ("inputtranslator", False)]
    assert answer["stages"][-1]["error"]["code"] == "MGV1009"
    code, answer = daemon.request("POST", "/pipeline/test", {**TELEMETRY, "path": "/devices/nobody/telemetry"})
    assert answer["stages"] == [{"stage": "planner", "ok": False, "error": {
        "code": "CouldNotFindDevice", "message": "device 'nobody' is not in the device repository"}}]
    code, answer = daemon.request("POST", "/pipeline/test", {"listener": "restin", "path": "/devices/thermo-001/telemetry",
                                                            "payloadBase64": "eyJ0ZW1wZXJhdHVyZSI6IDF9"})
    assert code == 200 and answer["ok"] is True
    for body, err in (({**TELEMETRY, "listener": "nope"}, "unknown_listener"),
                      ({"listener": "restin", "payload": "{}"}, "missing_address"),
                      ({**TELEMETRY, "payloadBase64": "%%%"}, "bad_payload"),
                      ([1], "bad_body")):
        code, answer = daemon.request("POST", "/pipeline/test", body)
        assert (code, answer["error"]["code"]) == (400, err)
    assert daemon.request("GET", "/deadletters?limit=1")[1][0]["id"] == "old-09999"  # no dead letter from a dry run
    logs = [x for x in daemon.json_lines() if x.get("dry_run")]
    assert logs and all(x["event"] != "message_received" for x in logs)


def test_sigterm_ends_an_open_feed_and_exits_quickly(tmp_path: Path) -> None:
    with Daemon(tmp_path / "data", "--listener-port", "restin=0", "--input-command-port", "0") as d:
        d.wait_state("Running")
        conn = httpc.HTTPConnection("127.0.0.1", d.admin_port, timeout=10)
        conn.request("GET", "/feed", headers={"Authorization": f"Bearer {d.token}"})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.readline().startswith(b"event: status")
        started = time.monotonic()
        assert d.terminate(timeout=10) == 0
        assert time.monotonic() - started < 10
        conn.close()


TEXT = st.text(max_size=40)
DRY_BODIES = st.fixed_dictionaries(
    {"listener": st.one_of(st.just("restin"), TEXT, st.integers())},
    optional={
        "path": st.one_of(st.sampled_from(["/devices/thermo-001/telemetry", "/devices/x/telemetry?a=1&b", "/", ""]),
                          TEXT, st.none(), st.integers()),
        "topic": st.one_of(st.sampled_from(["nuviot/srvr/dvcsrvc/thermo-001/online", "nuviot/srvr/dvcsrvc/x/err/E1/raise",
                                            "a/b"]), TEXT, st.none()),
        "method": st.one_of(st.sampled_from(["GET", "POST", "FOO"]), TEXT, st.none()),
        "headers": st.one_of(st.dictionaries(TEXT, TEXT, max_size=3), st.dictionaries(TEXT, st.integers(), max_size=2),
                             st.lists(TEXT, max_size=2)),
        "payload": st.one_of(TEXT, st.sampled_from(['{"temperature": 1}', '{"humidity": 1e400}', "[1,2]", "null"]),
                             st.integers(), st.none()),
        "payloadBase64": st.one_of(st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()), TEXT),
    },
)


@settings(max_examples=120, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=DRY_BODIES)
def test_dry_run_answers_any_body_with_an_answer_or_a_4xx(daemon: Daemon, body: dict) -> None:
    code, answer = daemon.request("POST", "/pipeline/test", body)
    assert code in (200, 400), (body, code, answer)
    if code == 200:
        assert isinstance(answer["ok"], bool) and answer["stages"]
        assert all(s["ok"] for s in answer["stages"][:-1])
    else:
        assert answer["error"]["code"] in {"missing_listener", "unknown_listener", "missing_address", "bad_payload",
                                           "bad_field", "bad_body"}


def test_without_a_loaded_solution_the_dry_run_points_at_the_cli_and_the_page_still_serves(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("solution: {key: x}\n")
    with Daemon(tmp_path / "data", "--solution", str(bad)) as d:
        d.wait_state("FailedToInitialize")
        assert http("GET", d.base + "/ui")[0] == 200
        code, answer = d.request("POST", "/pipeline/test", TELEMETRY)
        assert code == 409 and answer["error"]["code"] == "no_solution"
        assert "nuviot-runtime test-message" in answer["error"]["message"]
        status, events = read_feed_events(d, d.token, 1)
        assert status == 200 and events[0]["state"] == "FailedToInitialize" and events[0]["solutionListeners"] == []


def test_at_most_sixteen_feeds_at_once(tmp_path: Path) -> None:
    with Daemon(tmp_path / "data", "--listener-port", "restin=0", "--input-command-port", "0") as d:
        d.wait_state("Running")
        conns = []
        try:
            for _ in range(16):
                conn = httpc.HTTPConnection("127.0.0.1", d.admin_port, timeout=10)
                conn.request("GET", "/feed", headers={"Authorization": f"Bearer {d.token}"})
                resp = conn.getresponse()
                assert resp.status == 200 and resp.readline().startswith(b"event: status")
                conns.append(conn)
            code, answer = d.request("GET", "/feed")
            assert code == 503 and answer["error"]["code"] == "too_many_feeds"
        finally:
            for conn in conns:
                conn.close()
