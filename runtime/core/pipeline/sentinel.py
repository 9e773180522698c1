"""Sentinel (spec §2.3): is the device who the message says it is?

No security fields: anonymous, the message passes. Otherwise every security field must pass:
- ``accesskey``: the located value is the device's primary or secondary key;
- ``basicaccess``: the located value is ``base64(deviceId:key)`` (a leading ``Basic `` is stripped);
- ``sharedsignature``: a signed, expiring token, the scheme in docs/parsing.md §SAS (``sas_token`` makes one);
- ``script``: only with a ``SecurityScript`` hook; without one, ``unsupported_security_field``.
Keys are compared with ``hmac.compare_digest``. Details never carry a key or the presented secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Protocol
from urllib.parse import quote, unquote

from runtime.core.devices import Device
from runtime.core.errors import StageError
from runtime.core.parsing.errors import ParseError
from runtime.core.parsing.locate import MISSING, as_text, locator_for
from runtime.core.parsing.view import MessageView
from runtime.core.solution.enums import SecurityFieldType
from runtime.core.solution.model import SecurityField, Sentinel

STAGE = "sentinel"
UNAUTHORIZED_DEVICE = "unauthorized_device"
UNSUPPORTED_SECURITY_FIELD = "unsupported_security_field"
SAS_PREFIX = "SharedAccessSignature "


class SecurityScript(Protocol):
    """Runs a ``script`` security field; True lets the message through. Synchronous: stages never await."""

    def __call__(
        self, field: SecurityField, value: str | None, view: MessageView, device: Device
    ) -> bool: ...


class _RefusedError(Exception):
    """Private control flow: becomes ``StageError(unauthorized_device)`` in ``check``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def check(
    sentinel: Sentinel,
    view: MessageView,
    device: Device,
    *,
    now: float | None = None,
    script: SecurityScript | None = None,
) -> None:
    """Raise ``StageError(sentinel, unauthorized_device | unsupported_security_field)`` or return None.

    ``now`` (epoch seconds) is the clock for SAS expiry; by default the message's ``received_at``.
    """
    clock = view.received_at if now is None else now
    for field in sentinel.security_fields:
        label = f"security field {field.key!r} ({field.field_type.value})"
        if field.field_type is SecurityFieldType.SCRIPT and script is None:
            raise StageError(
                STAGE, UNSUPPORTED_SECURITY_FIELD, f"{label}: script security fields need a script engine"
            )
        try:
            value = _locate(field, view)
            _check_one(field, value, view, device, clock, script)
        except _RefusedError as refused:
            raise StageError(STAGE, UNAUTHORIZED_DEVICE, f"{label}: {refused.reason}") from None


def _locate(field: SecurityField, view: MessageView) -> str | None:
    if field.locator is None:
        if field.field_type is SecurityFieldType.SCRIPT:
            return None
        raise _RefusedError("has no locator")
    try:
        raw = locator_for(field.locator)(view, None)
        value = None if raw is MISSING else as_text(raw).strip()
    except ParseError as exc:
        raise _RefusedError(f"could not be read ({exc.code})") from None
    if value is None and field.field_type is not SecurityFieldType.SCRIPT:
        raise _RefusedError("no value in the message")
    return value


def _check_one(
    field: SecurityField,
    value: str | None,
    view: MessageView,
    device: Device,
    now: float,
    script: SecurityScript | None,
) -> None:
    kind = field.field_type
    if kind is SecurityFieldType.SCRIPT:
        assert script is not None  # checked by the caller
        if not script(field, value, view, device):
            raise _RefusedError("the script refused the device")
        return
    assert value is not None
    keys = _keys(device)
    if kind is SecurityFieldType.ACCESS_KEY:
        if not _matches(value, keys):
            raise _RefusedError("the access key does not match the device's keys")
    elif kind is SecurityFieldType.BASIC_ACCESS:
        _check_basic(value, device, keys)
    elif kind is SecurityFieldType.SHARED_SIGNATURE:
        _check_sas(value, device, keys, now)
    else:  # pragma: no cover - every SecurityFieldType is handled above
        raise _RefusedError("unknown security field type")


def _keys(device: Device) -> tuple[str, ...]:
    keys = tuple(k for k in (device.primary_access_key, device.secondary_access_key) if k)
    if not keys:
        raise _RefusedError("the device has no access key")
    return keys


def _matches(presented: str, keys: tuple[str, ...]) -> bool:
    given = presented.encode("utf-8")
    found = False
    for key in keys:  # compare with every key, so the time does not tell which one matched
        found |= hmac.compare_digest(given, key.encode("utf-8"))
    return found


def _check_basic(value: str, device: Device, keys: tuple[str, ...]) -> None:
    if value[:6].lower() == "basic ":
        value = value[6:].strip()
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise _RefusedError("the value is not base64 of deviceId:key") from None
    device_id, colon, key = decoded.partition(":")
    if not colon:
        raise _RefusedError("the value is not base64 of deviceId:key")
    if device_id != device.device_id:
        raise _RefusedError("the credentials name another device")
    if not _matches(key, keys):
        raise _RefusedError("the key does not match the device's keys")


# --------------------------------------------------------------------------- shared access signature


def sas_signature(device_id: str, expiry: str, key: str) -> str:
    """base64(HMAC-SHA256(key, deviceId + "\\n" + expiry + "\\n")), expiry exactly as presented."""
    digest = hmac.new(key.encode("utf-8"), f"{device_id}\n{expiry}\n".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def sas_token(device_id: str, key: str, expiry: int) -> str:
    """The token a device presents: ``SharedAccessSignature sr=<id>&se=<expiry>&sig=<signature>``."""
    signature = sas_signature(device_id, str(expiry), key)
    return f"{SAS_PREFIX}sr={quote(device_id, safe='')}&se={expiry}&sig={quote(signature, safe='')}"


def _check_sas(value: str, device: Device, keys: tuple[str, ...], now: float) -> None:
    if value.startswith(SAS_PREFIX):
        value = value[len(SAS_PREFIX) :]
    parts: dict[str, str] = {}
    for pair in value.split("&"):
        name, _, text = pair.partition("=")
        parts[name.strip()] = unquote(text) if "%" in text else text
    resource, expiry, signature = parts.get("sr"), parts.get("se"), parts.get("sig")
    if signature:
        signature = signature.replace(" ", "+")  # a form encoder may have turned '+' into a space
    if not resource or not expiry or not signature:
        raise _RefusedError("the token lacks sr, se or sig")
    if resource != device.device_id:
        raise _RefusedError("the token names another device")
    if not expiry.isascii() or not expiry.isdigit():
        raise _RefusedError("the token's expiry is not epoch seconds")
    if int(expiry) <= now:
        raise _RefusedError("the token has expired")
    given = signature.encode("ascii", "replace")
    found = False
    for key in keys:
        found |= hmac.compare_digest(given, sas_signature(resource, expiry, key).encode("ascii"))
    if not found:
        raise _RefusedError("the signature does not match the device's keys")
