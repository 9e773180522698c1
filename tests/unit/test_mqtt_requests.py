"""Reading, authenticating and de-duplicating MQTT commands (runtime/adapters/command/mqtt_requests.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from runtime.adapters.command.mqtt_requests import RecentReplies, Refused, read_request

TOKEN = b"t0ken"
NOW = 1_800_000_000.0


def read(body: object, now: float = NOW) -> tuple[dict, object]:
    return read_request(orjson.dumps(body), max_payload=4096, token=TOKEN, now=now)


ISO_NOW = datetime(2027, 1, 15, 8, 0, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(("expires", "now"), [(NOW + 5, NOW), ("2027-01-15T08:00:05Z", ISO_NOW),
                                              ("2027-01-15T09:00:05+01:00", ISO_NOW)])
def test_a_command_before_its_expiry_is_read(expires: object, now: float) -> None:
    body, rid = read({"token": "t0ken", "requestId": "r1", "expiresAt": expires}, now=now)
    assert rid == "r1" and body["expiresAt"] == expires


@pytest.mark.parametrize("expires", [NOW - 1, "2027-01-15T07:59:59Z"])
def test_an_expired_command_is_refused_with_408(expires: object) -> None:
    with pytest.raises(Refused) as refused:
        read({"token": "t0ken", "requestId": "r2", "expiresAt": expires}, now=max(NOW, ISO_NOW))
    assert (refused.value.status, refused.value.code, refused.value.request_id) == (408, "command_expired", "r2")


@pytest.mark.parametrize("expires", ["tomorrow", "2027-01-15T08:00:05", True, None, [1]])
def test_an_unreadable_expiry_is_a_bad_request(expires: object) -> None:
    with pytest.raises(Refused) as refused:
        read({"token": "t0ken", "requestId": "r3", "expiresAt": expires})
    assert (refused.value.status, refused.value.code) == (400, "bad_request")


@pytest.mark.parametrize("token", [None, "", "t0ke", "t0ken ", 42])
def test_a_missing_or_wrong_token_is_401_and_checked_before_the_expiry(token: object) -> None:
    body = {"requestId": 7, "expiresAt": NOW - 100}
    if token is not None:
        body["token"] = token
    with pytest.raises(Refused) as refused:
        read(body)
    assert (refused.value.status, refused.value.code, refused.value.request_id) == (401, "unauthorized", 7)
    assert "t0ken" not in refused.value.message


def test_recent_replies_repeat_for_a_minute_per_topic_and_request_id() -> None:
    now = [0.0]
    replies = RecentReplies(window=60.0, max_entries=3, clock=lambda: now[0])
    replies.remember("a", "r1", b"one")
    assert replies.get("a", "r1") == b"one"
    assert replies.get("b", "r1") is None  # another command's topic: not the same command
    now[0] = 59.9
    assert replies.get("a", "r1") == b"one"
    now[0] = 60.1
    assert replies.get("a", "r1") is None
    for i in range(5):  # bounded: the oldest go first
        replies.remember("a", f"x{i}", b"r")
    assert [replies.get("a", f"x{i}") for i in range(5)] == [None, None, b"r", b"r", b"r"]
