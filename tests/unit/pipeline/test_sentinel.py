"""Sentinel: anonymous, access key, basic, SAS, script; details never carry secrets."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from runtime.core.devices import Device
from runtime.core.errors import StageError
from runtime.core.parsing.view import MessageView
from runtime.core.pipeline.sentinel import (
    UNAUTHORIZED_DEVICE,
    UNSUPPORTED_SECURITY_FIELD,
    check,
    sas_signature,
    sas_token,
)
from runtime.core.solution.model import FieldParser, SecurityField, Sentinel

PRIMARY = "pr1mary-S3CRET"
SECONDARY = "sec0ndary-S3CRET"
DEVICE = Device(
    device_id="dev001", device_configuration="cfg", primary_access_key=PRIMARY, secondary_access_key=SECONDARY
)
NOW = 1_700_000_000.0


def header_field(kind: str, header: str = "x-key", **kw: Any) -> SecurityField:
    return SecurityField(
        key="sec",
        field_type=kind,
        locator=FieldParser(key="sec", search_location="headers", header_name=header, **kw),
    )


def basic(device_id: str, key: str) -> str:
    return base64.b64encode(f"{device_id}:{key}".encode()).decode()


def refused(sentinel: Sentinel, view: MessageView, device: Device = DEVICE, **kw: Any) -> StageError:
    with pytest.raises(StageError) as info:
        check(sentinel, view, device, **kw)
    error = info.value
    assert error.stage == "sentinel"
    for secret in (PRIMARY, SECONDARY, *view.headers.values(), *view.query.values()):
        assert not secret or secret not in error.detail
    return error


def test_anonymous() -> None:
    assert check(Sentinel(key="anonymous"), MessageView(), DEVICE) is None


@pytest.mark.parametrize("key", [PRIMARY, SECONDARY, f"  {PRIMARY} "])
def test_access_key(key: str) -> None:
    check(
        Sentinel(key="s", security_fields=(header_field("accesskey"),)),
        MessageView(headers={"x-key": key}),
        DEVICE,
    )


@pytest.mark.parametrize(
    "headers", [{"x-key": "wrong"}, {"x-key": PRIMARY[:-1]}, {"x-key": PRIMARY + "x"}, {}]
)
def test_access_key_refused(headers: dict[str, str]) -> None:
    error = refused(
        Sentinel(key="s", security_fields=(header_field("accesskey"),)), MessageView(headers=headers)
    )
    assert error.code == UNAUTHORIZED_DEVICE
    assert "'sec'" in error.detail


def test_access_key_from_query_and_body() -> None:
    query = SecurityField(
        key="q",
        field_type="accesskey",
        locator=FieldParser(key="q", search_location="querystring", query_string_field="k"),
    )
    body = SecurityField(
        key="b",
        field_type="accesskey",
        locator=FieldParser(key="b", content_type="json", json_path="auth.key"),
    )
    sentinel = Sentinel(key="s", security_fields=(query, body))  # every field must pass
    check(
        sentinel, MessageView(b'{"auth": {"key": "%s"}}' % SECONDARY.encode(), query={"k": PRIMARY}), DEVICE
    )
    refused(sentinel, MessageView(b'{"auth": {"key": "nope"}}', query={"k": PRIMARY}))
    assert (
        "could not be read (invalid_json)"
        in refused(sentinel, MessageView(b"{", query={"k": PRIMARY})).detail
    )


def test_device_without_keys_is_refused() -> None:
    device = Device(device_id="dev001", device_configuration="cfg")
    error = refused(
        Sentinel(key="s", security_fields=(header_field("accesskey"),)),
        MessageView(headers={"x-key": ""}),
        device,
    )
    assert error.code == UNAUTHORIZED_DEVICE
    error = refused(
        Sentinel(key="s", security_fields=(header_field("accesskey"),)),
        MessageView(headers={"x-key": "x"}),
        device,
    )
    assert "no access key" in error.detail


@pytest.mark.parametrize(
    "value",
    [
        basic("dev001", PRIMARY),
        basic("dev001", SECONDARY),
        "Basic " + basic("dev001", PRIMARY),
        "basic " + basic("dev001", PRIMARY),
    ],
)
def test_basic(value: str) -> None:
    check(
        Sentinel(key="s", security_fields=(header_field("basicaccess", "authorization"),)),
        MessageView(headers={"authorization": value}),
        DEVICE,
    )


def test_basic_with_selector_like_the_docs() -> None:
    field = header_field("basicaccess", "authorization", reg_ex_value_selector="^Basic (.*)$")
    check(
        Sentinel(key="s", security_fields=(field,)),
        MessageView(headers={"authorization": "Basic " + basic("dev001", PRIMARY)}),
        DEVICE,
    )


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (basic("dev002", PRIMARY), "another device"),
        (basic("dev001", "wrong"), "does not match"),
        (base64.b64encode(b"dev001" + PRIMARY.encode()).decode(), "not base64"),  # no colon
        ("%%%not-base64", "not base64"),
        (base64.b64encode(b"\xff\xfe:x").decode(), "not base64"),
    ],
)
def test_basic_refused(value: str, reason: str) -> None:
    error = refused(
        Sentinel(key="s", security_fields=(header_field("basicaccess", "authorization"),)),
        MessageView(headers={"authorization": value}),
    )
    assert error.code == UNAUTHORIZED_DEVICE
    assert reason in error.detail


SAS = Sentinel(key="s", security_fields=(header_field("sharedsignature", "authorization"),))


@pytest.mark.parametrize("key", [PRIMARY, SECONDARY])
def test_sas(key: str) -> None:
    token = sas_token("dev001", key, int(NOW) + 60)
    assert token.startswith("SharedAccessSignature sr=dev001&se=1700000060&sig=")
    check(SAS, MessageView(headers={"authorization": token}), DEVICE, now=NOW)
    check(SAS, MessageView(headers={"authorization": token}, received_at=NOW), DEVICE)  # clock: received_at


def test_sas_signature_is_documented_hmac_sha256() -> None:
    import hashlib
    import hmac

    expected = base64.b64encode(hmac.new(b"k", b"dev001\n123\n", hashlib.sha256).digest()).decode()
    assert sas_signature("dev001", "123", "k") == expected


def test_sas_accepts_an_unescaped_signature_and_no_prefix() -> None:
    expiry = str(int(NOW) + 60)
    signature = sas_signature("dev001", expiry, PRIMARY)
    check(
        SAS, MessageView(headers={"authorization": f"sig={signature}&se={expiry}&sr=dev001"}), DEVICE, now=NOW
    )


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (sas_token("dev001", PRIMARY, int(NOW)), "expired"),
        (sas_token("dev001", PRIMARY, int(NOW) - 1), "expired"),
        (sas_token("dev002", PRIMARY, int(NOW) + 60), "another device"),
        (sas_token("dev001", "wrong", int(NOW) + 60), "signature does not match"),
        (
            sas_token("dev001", PRIMARY, int(NOW) + 60).replace("se=1700000060", "se=1700000061"),
            "signature does not match",
        ),
        ("SharedAccessSignature sr=dev001&se=soon&sig=abc", "not epoch seconds"),
        ("SharedAccessSignature sr=dev001&sig=abc", "lacks"),
        ("garbage", "lacks"),
    ],
)
def test_sas_refused(token: str, reason: str) -> None:
    error = refused(SAS, MessageView(headers={"authorization": token}), now=NOW)
    assert error.code == UNAUTHORIZED_DEVICE
    assert reason in error.detail


def test_field_without_locator_is_refused() -> None:
    error = refused(
        Sentinel(key="s", security_fields=(SecurityField(key="k", field_type="accesskey"),)), MessageView()
    )
    assert "no locator" in error.detail


def test_script_fields_need_a_hook() -> None:
    sentinel = Sentinel(
        key="s", security_fields=(SecurityField(key="js", field_type="script", script="function x(){}"),)
    )
    error = refused(sentinel, MessageView())
    assert error.code == UNSUPPORTED_SECURITY_FIELD

    seen: list[Any] = []

    def allow(field: SecurityField, value: str | None, view: MessageView, device: Device) -> bool:
        seen.append((field.key, value, device.device_id))
        return True

    check(sentinel, MessageView(), DEVICE, script=allow)
    assert seen == [("js", None, "dev001")]
    error = refused(sentinel, MessageView(), script=lambda *a: False)
    assert error.code == UNAUTHORIZED_DEVICE


def test_script_field_gets_its_located_value() -> None:
    field = SecurityField(
        key="js",
        field_type="script",
        locator=FieldParser(key="js", search_location="headers", header_name="x-t"),
    )
    seen: list[str | None] = []

    def hook(field: SecurityField, value: str | None, view: MessageView, device: Device) -> bool:
        seen.append(value)
        return True

    check(
        Sentinel(key="s", security_fields=(field,)), MessageView(headers={"x-t": "tok"}), DEVICE, script=hook
    )
    assert seen == ["tok"]
