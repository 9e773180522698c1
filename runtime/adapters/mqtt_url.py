"""``mqtt://[user:pass@]host[:port]`` and ``mqtts://…`` (TLS) broker URLs (CONTRACT §2, NUVIOT_CONTROL_MQTT).

The password is a ``SecretStr``; neither ``repr``/``str`` of the result nor any error message shows it.
User name and password may be percent-encoded (``%40`` for ``@``, ``%3A`` for ``:``).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from pydantic import SecretStr

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (safe for logs and error messages).

    Everything up to the last ``@`` counts as user info, so a password with an unencoded ``@``, ``/`` or
    ``#`` is still hidden even though such a URL does not parse.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    userinfo, at, hostpart = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{hostpart}"


@dataclass(frozen=True, slots=True)
class MqttUrl:
    host: str
    port: int
    username: str | None = None
    password: SecretStr | None = None
    tls: bool = False

    def __repr__(self) -> str:
        password = "***" if self.password is not None else None
        return (
            f"MqttUrl(host={self.host!r}, port={self.port}, username={self.username!r}, "
            f"password={password}, tls={self.tls})"
        )

    def __str__(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        auth = ""
        if self.username is not None:
            auth = self.username + (":***" if self.password is not None else "") + "@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{auth}{host}:{self.port}"


def parse_mqtt_url(url: str) -> MqttUrl:
    """Parse a broker URL; raise ``ValueError`` naming what is wrong (the password is never shown)."""
    shown = redact_url(url.strip())

    def bad(why: str) -> ValueError:
        return ValueError(f"invalid MQTT URL {shown!r}: {why}")

    text = url.strip()
    if not text:
        raise ValueError("invalid MQTT URL: it is empty; expected mqtt://[user:pass@]host:port")
    if "://" not in text:
        raise bad("expected mqtt://[user:pass@]host:port or mqtts://…")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        hint = "; percent-encode @ : / ? # in the user name and password" if "@" in text else ""
        raise bad(f"the port must be a number from 1 to 65535{hint}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise bad(f"the scheme must be mqtt or mqtts, not {parts.scheme!r}")
    if not parts.hostname:
        raise bad("the host is missing")
    if port == 0:
        raise bad("the port must be a number from 1 to 65535")
    if parts.path not in ("", "/"):
        raise bad("a path is not allowed")
    if parts.query or parts.fragment:
        raise bad("a query or fragment is not allowed")
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    if password is not None and not username:
        raise bad("a password needs a user name")
    return MqttUrl(
        host=parts.hostname,
        port=port or DEFAULT_PORTS[scheme],
        username=username or None,
        password=SecretStr(password) if password is not None else None,
        tls=scheme == "mqtts",
    )
