"""Where a value is: compile a ``FieldParser`` once into a locator, then call it per message.

A locator is ``(view, cursor) -> raw value | MISSING``. Raw values are what the wire gives: ``str`` for
text locations, JSON scalars (``str``/``int``/``float``/``bool``) or objects, ``int``/``float``/``bool``/``str``
for binary, ``bytes`` for media bodies. ``MISSING`` means "not there" (a JSON ``null`` counts as not
there). Problems raise ``ParseError``; settings that cannot work raise it on every call (with
``invalid_locator``/``invalid_regex``), never at compile time, so one bad field cannot hide the others.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

import orjson
from lxml import etree

from runtime.core.parsing.binary import read_binary
from runtime.core.parsing.delimited import check_delimiter
from runtime.core.parsing.errors import (
    INVALID_LOCATOR,
    INVALID_VALUE,
    READ_PAST_END,
    UNSUPPORTED_CONTENT_TYPE,
    UNSUPPORTED_PARSING_STRATEGY,
    ParseError,
    shown,
)
from runtime.core.parsing.memo import IdentityCache
from runtime.core.parsing.patterns import compile_regex, segment_locator
from runtime.core.parsing.view import MessageView
from runtime.core.solution.enums import (
    BinaryParsingStrategy,
    ContentType,
    Endian,
    ParameterType,
    SearchLocation,
)
from runtime.core.solution.model import FieldParser, MessageDefinition, MessageField


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing()


class BinaryCursor:
    """Where the previous binary field ended (the "relative" strategy's origin), per message."""

    __slots__ = ("position",)

    def __init__(self) -> None:
        self.position = 0


Locator = Callable[[MessageView, BinaryCursor | None], object]


def as_text(value: object) -> str:
    """The text form of a raw value (for selectors, ids, string storage)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        raise ParseError(INVALID_VALUE, f"{shown(value)} has no text form") from None


_parser_locators: IdentityCache[FieldParser, Locator] = IdentityCache()


def locator_for(parser: FieldParser) -> Locator:
    """The cached locator of a message-less parser (planner id parsers, sentinel security fields)."""
    return _parser_locators.get(parser, compile_locator)


def compile_locator(parser: FieldParser, message: MessageDefinition | None = None) -> Locator:
    try:
        find = _where(parser, message)
        selector = parser.reg_ex_value_selector
        if selector and not _selector_is_pattern(parser, message):
            return _with_selector(find, compile_regex(selector))
        return find
    except ParseError as exc:
        return _failing(exc)


def locator_problem(parser: FieldParser, message: MessageDefinition | None = None) -> ParseError | None:
    """Why this parser's locator cannot work (every message would fail on it), or ``None``: for ``validate``."""
    try:
        _where(parser, message)
        selector = parser.reg_ex_value_selector
        if selector and not _selector_is_pattern(parser, message):
            compile_regex(selector)
    except ParseError as exc:
        return exc
    return None


def _failing(exc: ParseError) -> Locator:
    def find(view: MessageView, cursor: BinaryCursor | None) -> object:
        raise ParseError(exc.code, exc.detail)

    return find


def _with_selector(find: Locator, pattern: re.Pattern[str]) -> Locator:
    def select(view: MessageView, cursor: BinaryCursor | None) -> object:
        value = find(view, cursor)
        if value is MISSING:
            return MISSING
        match = pattern.search(as_text(value))
        if match is None:
            return MISSING
        selected = match.group(1) if pattern.groups else match.group(0)
        return MISSING if selected is None else selected

    return select


def _selector_is_pattern(parser: FieldParser, message: MessageDefinition | None) -> bool:
    """A message-less string-regex parser uses its selector as the body pattern (docs/parsing.md)."""
    return message is None and _content_type(parser, message) is ContentType.STRING_REGEX


def _content_type(parser: FieldParser, message: MessageDefinition | None) -> ContentType | None:
    return message.content_type if message is not None else parser.content_type


# the locator attribute and its latitude/longitude variants, by where a geolocation field is read
_GEO_BY_CONTENT = {
    ContentType.JSON: "json_path",
    ContentType.XML: "x_path",
    ContentType.DELIMITED: "delimited_index",
    ContentType.STRING_POSITION: "start_index",
    ContentType.STRING_REGEX: "reg_ex_group_name",
    ContentType.BINARY: "binary_offset",
}


def _geo_pair(parser: FieldParser, message: MessageDefinition | None) -> Locator | None:
    """A geolocation field with ``Lat…``/``Lon…`` sub-locators: both read, as ``{"lat", "lon"}``."""
    if not isinstance(parser, MessageField) or parser.storage_type is not ParameterType.GEOLOCATION:
        return None
    location = parser.search_location or SearchLocation.BODY
    if location is SearchLocation.QUERY_STRING:
        attr: str | None = "query_string_field"
    elif location is SearchLocation.BODY:
        content = _content_type(parser, message)
        attr = _GEO_BY_CONTENT.get(content) if content is not None else None
    else:
        attr = None
    if attr is None:
        return None
    lat, lon = getattr(parser, f"lat_{attr}"), getattr(parser, f"lon_{attr}")
    if lat is None and lon is None:
        return None
    if lat is None or lon is None:
        missing = f"lon_{attr}" if lon is None else f"lat_{attr}"
        raise ParseError(INVALID_LOCATOR, f"{missing} is not set (a geolocation needs both sub-locators)")
    alt = getattr(parser, f"altitude_{attr}")
    plain = {"storage_type": ParameterType.STRING, f"lat_{attr}": None, f"lon_{attr}": None,
             f"altitude_{attr}": None}
    find_lat = _where(parser.model_copy(update={**plain, attr: lat}), message)
    find_lon = _where(parser.model_copy(update={**plain, attr: lon}), message)
    find_alt = _where(parser.model_copy(update={**plain, attr: alt}), message) if alt is not None else None

    def find(view: MessageView, cursor: BinaryCursor | None) -> object:
        la, lo = find_lat(view, cursor), find_lon(view, cursor)
        la, lo = (None if v is MISSING or v == "" else v for v in (la, lo))
        if la is None and lo is None:
            return MISSING
        found = {"lat": la, "lon": lo}  # half a location is malformed (MGV1010)
        if find_alt is not None:
            al = find_alt(view, cursor)
            if al is not MISSING and al != "":
                found["alt"] = al
        return found

    return find


def _where(parser: FieldParser, message: MessageDefinition | None) -> Locator:
    pair = _geo_pair(parser, message)
    if pair is not None:
        return pair
    location = parser.search_location or SearchLocation.BODY
    if location is SearchLocation.HEADERS:
        name = _required(parser.header_name, "header_name")
        return lambda view, cursor: _present(view.header(name))
    if location is SearchLocation.QUERY_STRING:
        name = _required(parser.query_string_field, "query_string_field")
        return lambda view, cursor: _present(view.query_value(name))
    if location is SearchLocation.PATH:
        path = segment_locator(
            _required(parser.path_locator, "path_locator"), is_path=True, prefer=parser.key
        )
        return lambda view, cursor: _present(path.capture(view.path))
    if location is SearchLocation.TOPIC:
        topic = segment_locator(
            _required(parser.topic_locator, "topic_locator"), is_path=False, prefer=parser.key
        )
        return lambda view, cursor: _present(topic.capture(view.topic))
    return _body(parser, message)


def _required(value: str | None, what: str) -> str:
    if not value:
        raise ParseError(INVALID_LOCATOR, f"{what} is not set")
    return value


def _present(value: str | None) -> object:
    return MISSING if value is None else value


def _body(parser: FieldParser, message: MessageDefinition | None) -> Locator:
    content = _content_type(parser, message)
    if content is None:
        raise ParseError(INVALID_LOCATOR, "a body parser needs a content type")
    if content is ContentType.JSON:
        return _json(_json_path(_required(parser.json_path, "json_path")))
    if content is ContentType.XML:
        return _xml(_required(parser.x_path, "x_path"))
    if content is ContentType.DELIMITED:
        return _delimited(parser, message)
    if content is ContentType.STRING_POSITION:
        return _position(parser.start_index, parser.length)
    if content is ContentType.STRING_REGEX:
        return _regex(parser, message)
    if content is ContentType.BINARY:
        return _binary(parser, message)
    if content is ContentType.NO_CONTENT:
        return lambda view, cursor: MISSING
    if content is ContentType.MEDIA:
        return lambda view, cursor: view.payload if view.payload else MISSING
    raise ParseError(
        UNSUPPORTED_CONTENT_TYPE, f"content type {content.value!r} is not parsed by this runtime"
    )


# --------------------------------------------------------------------------- JSON and XML


def _json_path(path: str) -> tuple[str, ...]:
    path = path.strip()
    if path.startswith("$."):
        path = path[2:]
    segments = tuple(path.split("."))
    if not path or any(not s for s in segments):
        raise ParseError(INVALID_LOCATOR, f"json_path {shown(path)} is not a dotted name path")
    return segments


def _walk(document: object, segments: tuple[str, ...]) -> object:
    node = document
    for segment in segments:
        if not isinstance(node, dict):
            return MISSING
        node = node.get(segment, MISSING)
    return MISSING if node is None else node


def _json(segments: tuple[str, ...]) -> Locator:
    return lambda view, cursor: _walk(view.json(), segments)


def _xml(expression: str) -> Locator:
    try:
        xpath = etree.XPath(expression)
    except etree.XPathSyntaxError as exc:
        raise ParseError(INVALID_LOCATOR, f"x_path {shown(expression)} does not compile: {exc}") from None

    def find(view: MessageView, cursor: BinaryCursor | None) -> object:
        try:
            result: object = xpath(view.xml())
        except etree.XPathError as exc:
            raise ParseError(INVALID_LOCATOR, f"x_path {shown(expression)} failed: {exc}") from None
        if isinstance(result, list):
            if not result:
                return MISSING
            result = result[0]
        if isinstance(result, etree._Element):
            return "".join(result.itertext())  # type: ignore[arg-type]  # lxml-stubs: str | bytes; a parsed tree yields str
        if isinstance(result, str):  # text() and attribute results are str subclasses
            return str(result)
        return result  # float or bool from an XPath function

    return find


# --------------------------------------------------------------------------- text


def _delimited(parser: FieldParser, message: MessageDefinition | None) -> Locator:
    delimiter = check_delimiter(parser.delimiter or (message.delimiter if message is not None else None))
    quoted = parser.quoted_text or (message is not None and message.quoted_text)
    index = parser.delimited_index
    if index is None or index < 1:
        raise ParseError(INVALID_LOCATOR, f"delimited_index must be 1 or more, not {shown(index)}")
    position = index - 1

    def find(view: MessageView, cursor: BinaryCursor | None) -> object:
        values = view.delimited(delimiter, quoted)
        return values[position] if position < len(values) else MISSING

    return find


def _position(start_index: int | None, length: int | None) -> Locator:
    if start_index is None or start_index < 1:
        raise ParseError(INVALID_LOCATOR, f"start_index must be 1 or more, not {shown(start_index)}")
    if length is not None and length < 0:
        raise ParseError(INVALID_LOCATOR, f"length must not be negative, not {length}")
    start = start_index - 1

    def find(view: MessageView, cursor: BinaryCursor | None) -> object:
        text = view.text
        end = len(text) if length is None else start + length
        if start > len(text) or end > len(text):
            raise ParseError(
                READ_PAST_END,
                f"characters {start_index}..{end} run past the end of a {len(text)}-character body",
            )
        return text[start:end]

    return find


def _regex(parser: FieldParser, message: MessageDefinition | None) -> Locator:
    if message is not None:
        pattern = compile_regex(_required(message.reg_ex, "the message's reg_ex"))
    else:
        pattern = compile_regex(_required(parser.reg_ex_value_selector, "reg_ex_value_selector"))
    group: str | int = parser.reg_ex_group_name or (1 if pattern.groups else 0)
    if isinstance(group, str) and group not in pattern.groupindex:
        raise ParseError(INVALID_LOCATOR, f"the pattern has no group named {shown(group)}")

    def find(view: MessageView, cursor: BinaryCursor | None) -> object:
        match = view.regex_match(pattern)
        if match is None:
            return MISSING
        value = match.group(group)
        return MISSING if value is None else value

    return find


# --------------------------------------------------------------------------- binary


def _binary(parser: FieldParser, message: MessageDefinition | None) -> Locator:
    kind = parser.parsed_binary_field_type
    if kind is None:
        raise ParseError(INVALID_LOCATOR, "parsed_binary_field_type is not set")
    strategy = parser.binary_parsing_strategy or (message.binary_parsing_strategy if message else None)
    if strategy is BinaryParsingStrategy.SCRIPT:
        raise ParseError(UNSUPPORTED_PARSING_STRATEGY, "the script binary parsing strategy is not supported")
    relative = strategy is BinaryParsingStrategy.RELATIVE
    endian = parser.endian or (message.endian if message else None) or Endian.BIG
    strings = parser.string_parsing_strategy or (message.string_parsing_strategy if message else None)
    length_bytes = parser.string_length_byte_count
    offset = parser.binary_offset or 0
    if offset < 0:
        raise ParseError(INVALID_LOCATOR, f"binary_offset must not be negative, not {offset}")

    def find(view: MessageView, cursor: BinaryCursor | None) -> object:
        start = offset + cursor.position if relative and cursor is not None else offset
        value, end = read_binary(view.payload, start, kind, endian, strings, length_bytes)
        if cursor is not None:
            cursor.position = end
        return value

    return find
