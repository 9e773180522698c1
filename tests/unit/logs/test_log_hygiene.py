"""Logs carry no credentials at any level, and a flood of one warning costs a few lines (issue 18 items 7, 12).

``logsetup.configure`` changes process-wide logging, so each case runs in its own interpreter and the
test reads what it printed on stdout, as an operator would.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import orjson

from runtime.logredact import RateLimiter, redact_text


def run_logging(body: str, level: str = "debug") -> list[dict]:
    code = textwrap.dedent(f"""
        import logging, structlog
        from runtime import logsetup
        logsetup.configure({level!r}, "json")
        log = structlog.get_logger("probe")
    """) + textwrap.dedent(body)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60, check=True)
    lines = [orjson.loads(line) for line in out.stdout.splitlines() if line.strip()]
    return [line for line in lines if line["event"] != "logging_configured"]


SECRET = "c2VjcmV0OnNlY3JldA"  # what must never appear


def test_credentials_are_redacted_at_debug_level_in_fields_nested_headers_and_free_text() -> None:
    lines = run_logging(f"""
        log.debug("request_seen", authorization="Basic {SECRET}", token="{SECRET}", listener="rest1",
                  headers={{"Authorization": "Bearer {SECRET}", "Cookie": "sid={SECRET}", "x-access-key": "{SECRET}",
                           "content-type": "application/json"}},
                  primary_access_key="{SECRET}", key="restin", url="mqtt://user:{SECRET}@broker:1883")
        log.info("free_text", detail="sent Authorization: Basic {SECRET} and ?password={SECRET}&x=1")
        logging.getLogger("aiohttp.client").debug("header %s", {{"Authorization": "Bearer {SECRET}"}})
        logging.getLogger("somelib").debug("connect token=%s", "{SECRET}")
        try:
            raise ValueError("bad header Basic {SECRET}")
        except ValueError:
            log.exception("crashed")
        logging.getLogger("aiosqlite").debug("executing (%r,)", "{SECRET}")
    """)
    text = "\n".join(orjson.dumps(line).decode() for line in lines)
    assert SECRET not in text
    first = lines[0]
    assert first["authorization"] == "***" and first["token"] == "***" and first["primary_access_key"] == "***"
    assert first["headers"]["Authorization"] == "***" and first["headers"]["Cookie"] == "***"
    assert first["headers"]["x-access-key"] == "***"
    assert first["headers"]["content-type"] == "application/json"  # what is not a credential stays readable
    assert first["key"] == "restin" and first["listener"] == "rest1"
    assert first["url"] == "mqtt://user:***@broker:1883"
    assert "Basic ***" in lines[1]["detail"] and "password=***" in lines[1]["detail"]
    assert [line["event"] for line in lines[2:4]] == ["header {'Authorization': 'Bearer ***'}", "connect token=***"]
    assert lines[4]["event"] == "crashed" and "Basic ***" in lines[4]["exception"]
    assert len(lines) == 5  # aiosqlite's debug lines (SQL parameters) are not printed at all


def test_a_flood_of_one_warning_is_a_few_lines_and_a_count() -> None:
    lines = run_logging("""
        for i in range(1000):
            log.warning("request_rejected", server="rest1", peer=f"127.0.0.1:{i}")
        for i in range(1000):
            logging.getLogger("aiohttp.server").warning("Error handling request from %s", f"127.0.0.{i % 250}")
        log.warning("other_event", server="rest1")
        log.info("info_is_not_limited")
        log.info("info_is_not_limited")
    """, level="info")
    events = [line["event"] for line in lines]
    assert events.count("request_rejected") == 5
    assert sum(e.startswith("Error handling request") for e in events) == 5
    assert events.count("other_event") == 1  # another key has its own budget
    assert events.count("info_is_not_limited") == 2
    assert len(lines) == 13


def test_the_count_of_what_was_suppressed_comes_with_the_next_line_that_passes() -> None:
    now = [0.0]
    limiter = RateLimiter(burst=2, interval=10.0, clock=lambda: now[0])
    key = ("l", "warning", "e", None, None)
    assert [limiter.admit(key) for _ in range(5)] == [0, 0, None, None, None]
    now[0] = 10.5
    assert limiter.admit(key) == 3  # "3 similar suppressed"
    assert limiter.admit(key) == 0
    assert limiter.admit(("l", "warning", "other", None, None)) == 0


def test_value_patterns() -> None:
    assert redact_text("Authorization: Digest abc.def") == "Authorization: Digest ***"
    assert redact_text('{"password": "hunter2", "n": 1}') == '{"password": "***", "n": 1}'
    assert redact_text("SharedAccessSignature sr=x&sig=abc") == "SharedAccessSignature ***"
    assert redact_text("nothing to see: key=restin") == "nothing to see: key=restin"
