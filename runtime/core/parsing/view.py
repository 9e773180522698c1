"""A read-only view of one inbound message that decodes its body at most once per form.

The planner, the sentinel and the input translator all read the same message; each decoded form (text,
JSON, XML tree, delimited values, regex match) is computed on first use and kept on the view, failures
included (a second field asking for JSON of a broken body gets the same ``invalid_json`` without a
second parse).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import Final

import orjson
from lxml import etree

from runtime.core.jsontypes import JsonValue
from runtime.core.messages import InboundMessage
from runtime.core.parsing.delimited import split_delimited
from runtime.core.parsing.errors import INVALID_JSON, INVALID_TEXT, INVALID_XML, ParseError
from runtime.core.parsing.lenient_json import normalise


class _Unset(enum.Enum):
    UNSET = 0  # a form not decoded yet (an enum member, so a type checker narrows on ``is _UNSET``)


_UNSET: Final = _Unset.UNSET
_BOM = b"\xef\xbb\xbf"
_XML_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
_EMPTY: Mapping[str, str] = {}


class MessageView:
    __slots__ = (
        "_delimited",
        "_folded_headers",
        "_json",
        "_matches",
        "_text",
        "_xml",
        "headers",
        "method",
        "path",
        "payload",
        "query",
        "received_at",
        "topic",
    )

    def __init__(
        self,
        payload: bytes = b"",
        *,
        topic: str | None = None,
        path: str | None = None,
        method: str | None = None,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        received_at: float = 0.0,
    ) -> None:
        self.payload = payload
        self.topic = topic
        self.path = path
        self.method = method
        self.headers = headers if headers is not None else _EMPTY  # names lower-cased by the listener
        self.query = query if query is not None else _EMPTY
        self.received_at = received_at
        self._text: str | ParseError | _Unset = _UNSET
        self._json: JsonValue | ParseError | _Unset = _UNSET
        self._xml: etree._Element | ParseError | _Unset = _UNSET
        self._folded_headers: dict[str, str] | None = None
        self._delimited: dict[tuple[str, bool], list[str] | ParseError] = {}
        self._matches: dict[re.Pattern[str], re.Match[str] | None] = {}

    @classmethod
    def of(cls, message: InboundMessage) -> MessageView:
        return cls(
            message.payload,
            topic=message.topic,
            path=message.path,
            method=message.method,
            headers=message.headers,
            query=message.query,
            received_at=message.received_at,
        )

    # ---- locations that need no body

    def header(self, name: str) -> str | None:
        value = self.headers.get(name)
        if value is not None:
            return value
        if self._folded_headers is None:
            self._folded_headers = {k.lower(): v for k, v in self.headers.items()}
        return self._folded_headers.get(name.lower())

    def query_value(self, name: str) -> str | None:
        return self.query.get(name)

    # ---- the body, decoded once per form

    @property
    def text(self) -> str:
        value = self._text
        if value is _UNSET:
            try:
                value = self.payload.removeprefix(_BOM).decode("utf-8")
            except UnicodeDecodeError as exc:
                value = ParseError(INVALID_TEXT, f"body is not UTF-8 text (byte {exc.start})")
            self._text = value
        if isinstance(value, ParseError):
            raise ParseError(value.code, value.detail)
        return value

    def json(self) -> JsonValue:
        value = self._json
        if value is _UNSET:
            value = self._json = _load_json(self.payload.removeprefix(_BOM))
        if isinstance(value, ParseError):
            raise ParseError(value.code, value.detail)
        return value

    def xml(self) -> etree._Element:
        value = self._xml
        if value is _UNSET:
            try:
                value = etree.fromstring(self.payload, _XML_PARSER)
            except (etree.XMLSyntaxError, ValueError) as exc:
                value = ParseError(INVALID_XML, f"body is not XML: {str(exc)[:80]}")
            self._xml = value
        if isinstance(value, ParseError):
            raise ParseError(value.code, value.detail)
        return value

    def delimited(self, delimiter: str, quoted: bool) -> list[str]:
        key = (delimiter, quoted)
        value = self._delimited.get(key)
        if value is None:
            try:
                value = split_delimited(self.text, delimiter, quoted)
            except ParseError as exc:
                value = exc
            self._delimited[key] = value
        if isinstance(value, ParseError):
            raise ParseError(value.code, value.detail)
        return value

    def regex_match(self, pattern: re.Pattern[str]) -> re.Match[str] | None:
        try:
            return self._matches[pattern]
        except KeyError:
            match = self._matches[pattern] = pattern.search(self.text)
            return match


def _load_json(data: bytes) -> JsonValue | ParseError:
    try:
        strict: JsonValue = orjson.loads(data)  # the fast path: strict JSON
        return strict
    except orjson.JSONDecodeError as exc:
        first = exc
    # Newtonsoft reads single quotes, trailing commas, comments, bare names (NuvIoT's own samples): a second
    # reading, only for a body of device size that shows one of them (a C-speed search), so that garbage
    # costs no Python-level pass
    if len(data) <= LENIENT_MAX_BYTES and _LENIENT_HINT.search(data):
        try:
            lenient: JsonValue = orjson.loads(normalise(data.decode("utf-8")))
            return lenient
        except (orjson.JSONDecodeError, UnicodeDecodeError, ValueError):
            pass
    return ParseError(INVALID_JSON, f"body is not JSON: {first.msg} at {first.pos}")


LENIENT_MAX_BYTES = 64 * 1024
_LENIENT_HINT = re.compile(rb"'|/[/*]|,\s*[}\]]|[{,]\s*[A-Za-z_$]")
