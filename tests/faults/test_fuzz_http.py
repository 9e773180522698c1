"""Hypothesis against the real daemon's three HTTP servers: admin API, input commands, REST listener.

Whatever the method, path, query, headers, token or body: never a 5xx, never a crash, bounded memory.
(The parsers themselves are fuzzed in tests/unit/pipeline/test_properties.py.) One daemon (the packaged
demo solution: a REST listener, input commands, scripts) serves the whole module.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.harness import rss_mb
from tests.support.daemon import Daemon

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
METHODS = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "FOO"])
SEGMENT = st.one_of(
    st.sampled_from(["devices", "messages", "deadletters", "control", "pause", "start", "replay", "thermostat",
                     "telemetry", "thermostatwf", "setpoint", "thermo-001", "..", ".", "", "%00", "%2F"]),
    st.text(max_size=12).map(lambda s: quote(s, safe="")),
)
PATH = st.lists(SEGMENT, max_size=6).map(lambda parts: "/" + "/".join(parts))
QUERY = st.dictionaries(st.sampled_from(["limit", "deviceId", "value", "x", ""]),
                        st.one_of(st.integers(-10**12, 10**12).map(str), st.text(max_size=20)), max_size=3)
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=15), inner, max_size=4),
    max_leaves=15,
)
BODY = st.one_of(st.none(), st.binary(max_size=2000), JSONISH.map(lambda v: json.dumps(v).encode()))
CONTENT_TYPE = st.sampled_from(["application/json", "text/plain", "application/octet-stream",
                                "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                                "application/json; charset=latin-1", ""])


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("fuzz") / "data", "--listener-port", "restin=0", "--input-command-port", "0")
    with d:
        d.wait_state("Running", timeout=30)
        yield d
        assert d.proc is not None and d.proc.poll() is None, "the daemon died during the fuzzing"
        assert d.request("GET", "/health", token=None)[0] == 200
        assert d.terminate() == 0


def ports(d: Daemon) -> dict[str, int]:
    st_ = d.request("GET", "/status")[1]
    rest = next(x["port"] for x in st_["listeners"] if x["key"] == "restin")
    return {"admin": d.admin_port, "input": st_["inputCommandPort"], "rest": rest}


def send(port: int, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def with_query(path: str, query: dict[str, str]) -> str:
    if not query:
        return path
    return path + "?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query.items())


@pytest.fixture(scope="module")
def bound(daemon: Daemon) -> dict[str, int]:
    return ports(daemon)


@FUZZ
@given(method=METHODS, path=PATH, query=QUERY, body=BODY, ctype=CONTENT_TYPE,
       token=st.one_of(st.none(), st.just("good"), HEADER_TEXT), scheme=st.sampled_from(["Bearer", "bearer", "Basic", ""]))
def test_admin_api_never_answers_5xx(daemon: Daemon, bound: dict[str, int], method: str, path: str,
                                     query: dict[str, str], body: bytes | None, ctype: str, token: str | None,
                                     scheme: str) -> None:
    headers = {"Content-Type": ctype} if ctype else {}
    if token is not None:
        headers["Authorization"] = f"{scheme} {daemon.token if token == 'good' else token}".strip()
    status = send(bound["admin"], method, with_query(path, query), body, headers)
    assert status < 500 or (status == 503 and path == "/ready"), (method, path, status)


@FUZZ
@given(device=st.one_of(st.sampled_from(["thermo-001", "fz-1", "x" * 300]), st.text(min_size=1, max_size=20)),
       body=st.one_of(JSONISH, st.fixed_dictionaries(
           {"deviceConfiguration": st.sampled_from(["thermostat", "nope", ""])},
           optional={"name": JSONISH, "properties": JSONISH, "accessKey": JSONISH})))
def test_admin_device_put_bodies(daemon: Daemon, bound: dict[str, int], device: str, body: object) -> None:
    path = "/devices/" + quote(device, safe="")
    status = send(bound["admin"], "PUT", path, json.dumps(body).encode(),
                  {"Authorization": f"Bearer {daemon.token}", "Content-Type": "application/json"})
    assert status in (200, 201, 400, 404, 405, 409, 413), (device, body, status)
    if status in (200, 201):
        assert send(bound["admin"], "DELETE", path, None, {"Authorization": f"Bearer {daemon.token}"}) == 204


@FUZZ
@given(method=METHODS, path=st.one_of(PATH, st.builds(
    lambda dev, q: "/thermostat/telemetry/thermostatwf/setpoint/" + quote(dev, safe=""),
    st.sampled_from(["thermo-001", "thermo-002", "nobody"]), st.none())),
       query=QUERY, body=BODY, ctype=CONTENT_TYPE)
def test_input_command_server_never_answers_5xx(bound: dict[str, int], method: str, path: str,
                                                query: dict[str, str], body: bytes | None, ctype: str) -> None:
    headers = {"Content-Type": ctype} if ctype else {}
    status = send(bound["input"], method, with_query(path, query), body, headers)
    assert status < 500, (method, path, query, status)


@FUZZ
@given(method=METHODS, device=st.sampled_from(["thermo-001", "thermo-002", "nobody", ""]),
       message=st.sampled_from(["telemetry", "x", ""]), body=BODY, ctype=CONTENT_TYPE)
def test_rest_listener_bodies_get_2xx_or_4xx(bound: dict[str, int], method: str, device: str, message: str,
                                             body: bytes | None, ctype: str) -> None:
    headers = {"Content-Type": ctype} if ctype else {}
    status = send(bound["rest"], method, f"/devices/{device}/{message}", body, headers)
    assert 200 <= status < 500, (method, device, body, status)


def test_memory_stays_bounded_after_fuzzing(daemon: Daemon) -> None:
    """Runs after the fuzzers (file order): the daemon is alive, healthy and small."""
    assert daemon.proc is not None
    assert daemon.request("GET", "/health", token=None)[0] == 200
    assert rss_mb(daemon.proc.pid) < 250


