"""Message fields: locate, convert, validate. Compiled once per (document, message), run per message.

Per field (docs/parsing.md §Fields):
1. locate the raw value (``locate.py``); an empty string counts as absent;
2. absent: ``is_required`` -> ``missing_required_field``; else ``default_value`` (converted and validated
   like a wire value); else the field is left out of the result;
3. convert to the storage type (``convert.py``);
4. validate: ``min_value``/``max_value`` (inclusive) for numbers, ``reg_ex_validation`` for strings.
"""

from __future__ import annotations

import re

from runtime.core.parsing.convert import Converter, make_converter
from runtime.core.parsing.errors import (
    MISSING_REQUIRED_FIELD,
    REGEX_VALIDATION_FAILED,
    VALUE_OUT_OF_RANGE,
    ParseError,
    shown,
)
from runtime.core.parsing.locate import MISSING, BinaryCursor, Locator, compile_locator
from runtime.core.parsing.memo import IdentityCache
from runtime.core.parsing.patterns import compile_regex
from runtime.core.parsing.view import MessageView
from runtime.core.solution.enums import ContentType, ParameterType, SearchLocation
from runtime.core.solution.model import MessageDefinition, MessageField, SolutionDocument


class FieldReader:
    """One message field, ready to run. ``read`` returns the typed value or ``MISSING``; raises ``ParseError``."""

    __slots__ = (
        "_convert",
        "_default",
        "_locate",
        "_maximum",
        "_minimum",
        "_required",
        "_validation",
        "key",
        "where",
    )

    def __init__(self, doc: SolutionDocument, message: MessageDefinition, field: MessageField) -> None:
        self.key = field.key
        self.where = describe_location(field, message)
        self._locate: Locator = compile_locator(field, message)
        self._convert: Converter = make_converter(
            field.storage_type,
            field.parsed_string_field_type,
            scaler=field.decimal_scaler,
            zone=field.date_time_zone,
            state_set=doc.state_set_by_key.get(field.state_set) if field.state_set else None,
            unit_set=doc.unit_set_by_key.get(field.unit_set) if field.unit_set else None,
            state_set_key=field.state_set,
            unit_set_key=field.unit_set,
        )
        self._required = field.is_required
        self._minimum = field.min_value
        self._maximum = field.max_value
        self._validation: re.Pattern[str] | ParseError | None = None
        if field.reg_ex_validation and field.storage_type is ParameterType.STRING:
            try:
                self._validation = compile_regex(field.reg_ex_validation)
            except ParseError as exc:
                self._validation = exc
        self._default: object = MISSING
        if field.default_value is not None and field.default_value != "":
            try:
                self._default = self._finish(self._convert(field.default_value))
            except ParseError as exc:
                self._default = ParseError(exc.code, f"default_value: {exc.detail}")

    def read(self, view: MessageView, cursor: BinaryCursor | None) -> object:
        raw = self._locate(view, cursor)
        if raw is MISSING or raw == "":
            if self._required:
                raise ParseError(MISSING_REQUIRED_FIELD, f"required value not found ({self.where})")
            default = self._default
            if isinstance(default, ParseError):
                raise ParseError(default.code, default.detail)
            return default
        return self._finish(self._convert(raw))

    @property
    def required(self) -> bool:
        return self._required

    @property
    def default(self) -> object:
        """The typed default for an absent value: a value, ``MISSING`` (none), or the ``ParseError`` it raises."""
        return self._default

    def typed(self, raw: object) -> object:
        """A located, present raw value converted and validated as ``read`` does; raises ``ParseError``."""
        return self._finish(self._convert(raw))

    def _finish(self, value: object) -> object:
        bounded = self._minimum is not None or self._maximum is not None
        if bounded and isinstance(value, int | float) and type(value) is not bool:
            if self._minimum is not None and value < self._minimum:
                raise ParseError(VALUE_OUT_OF_RANGE, f"{shown(value)} is below the minimum {self._minimum:g}")
            if self._maximum is not None and value > self._maximum:
                raise ParseError(VALUE_OUT_OF_RANGE, f"{shown(value)} is above the maximum {self._maximum:g}")
        validation = self._validation
        if validation is not None:
            if isinstance(validation, ParseError):
                raise ParseError(validation.code, f"reg_ex_validation: {validation.detail}")
            if isinstance(value, str) and validation.search(value) is None:
                raise ParseError(
                    REGEX_VALIDATION_FAILED, f"{shown(value)} does not match {shown(validation.pattern)}"
                )
        return value


def describe_location(field: MessageField, message: MessageDefinition | None) -> str:
    """Where a field is looked for, for error details (never a value)."""
    location = field.search_location or SearchLocation.BODY
    if location is SearchLocation.HEADERS:
        return f"header {field.header_name!r}"
    if location is SearchLocation.QUERY_STRING:
        return f"query string field {field.query_string_field!r}"
    if location is SearchLocation.PATH:
        return f"path locator {field.path_locator!r}"
    if location is SearchLocation.TOPIC:
        return f"topic locator {field.topic_locator!r}"
    content = message.content_type if message is not None else field.content_type
    if content is ContentType.JSON:
        return f"json_path {field.json_path!r}"
    if content is ContentType.XML:
        return f"x_path {field.x_path!r}"
    if content is ContentType.DELIMITED:
        return f"delimited index {field.delimited_index}"
    if content is ContentType.STRING_POSITION:
        return f"characters from {field.start_index}, length {field.length}"
    if content is ContentType.STRING_REGEX:
        return f"regex group {field.reg_ex_group_name!r}"
    if content is ContentType.BINARY:
        return f"binary offset {field.binary_offset}"
    return f"body ({content.value if content else 'no content type'})"


_compiled: IdentityCache[MessageDefinition, tuple[SolutionDocument, tuple[FieldReader, ...]]] = (
    IdentityCache()
)


def message_readers(doc: SolutionDocument, message: MessageDefinition) -> tuple[FieldReader, ...]:
    """The compiled readers of a message's fields, in field order (cached per message and document)."""
    cached_doc, readers = _compiled.get(message, lambda m: (doc, _build(doc, m)))
    if cached_doc is not doc:  # the same message object under another document: rebuild, rare
        readers = _build(doc, message)
    return readers


def _build(doc: SolutionDocument, message: MessageDefinition) -> tuple[FieldReader, ...]:
    return tuple(FieldReader(doc, message, f) for f in message.fields)
