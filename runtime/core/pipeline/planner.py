"""Planner (spec §2.2): which device sent the message, which message it is, and which route handles it.

- ``plan``: run the device-id parsers in order, the first that yields a non-empty value wins; the same for
  the message-id parsers. Ids are always strings (a JSON number ``7`` is ``"7"``). A parser that cannot
  read (no such header, broken JSON body, regex validation fails) simply yields nothing.
- ``select_route``: the route whose message definition's ``message_id`` equals the parsed id, else the
  configuration's ``is_default`` route, else, only when no message id was parsed, the route of the one
  message the configuration handles (spec §2.2 inferred fallback).
- The device lookup happens in the dispatcher; ``planned_device`` checks what it found and finds its
  configuration.
"""

from __future__ import annotations

from runtime.core.devices import Device
from runtime.core.errors import StageError
from runtime.core.parsing.errors import ParseError, shown
from runtime.core.parsing.locate import MISSING, as_text, locator_for
from runtime.core.parsing.memo import IdentityCache
from runtime.core.parsing.patterns import compile_regex
from runtime.core.parsing.view import MessageView
from runtime.core.solution.model import DeviceConfiguration, FieldParser, Planner, Route, SolutionDocument

STAGE = "planner"
COULD_NOT_DETERMINE_DEVICE_ID = "CouldNotDetermineDeviceId"
COULD_NOT_DETERMINE_MESSAGE_ID = "CouldNotDetermineMessageId"
COULD_NOT_FIND_DEVICE = "CouldNotFindDevice"
COULD_NOT_FIND_DEVICE_CONFIGURATION = "CouldNotFindDeviceConfiguration"
COULD_NOT_FIND_MESSAGE = "CouldNotFindMessage"


def plan(planner: Planner, view: MessageView) -> tuple[str, str | None]:
    """``(device_id, message_id)``; raises ``StageError(planner, CouldNotDetermineDeviceId)``."""
    notes: list[str] = []
    device_id = _first(planner.device_id_parsers, view, notes)
    if device_id is None:
        tried = "; ".join(notes) if notes else "the planner has no device id parsers"
        raise StageError(STAGE, COULD_NOT_DETERMINE_DEVICE_ID, f"no device id parser found a value ({tried})")
    return device_id, _first(planner.message_type_id_parsers, view, [])


def _first(parsers: tuple[FieldParser, ...], view: MessageView, notes: list[str]) -> str | None:
    for parser in parsers:
        try:
            raw = locator_for(parser)(view, None)
            value = None if raw is MISSING else as_text(raw).strip()
        except ParseError as exc:
            notes.append(f"{parser.key}: {exc.code} {exc.detail}")
            continue
        if value is None:
            notes.append(f"{parser.key}: nothing found")
            continue
        if not value:
            notes.append(f"{parser.key}: empty")
            continue
        if parser.reg_ex_validation:
            try:
                valid = compile_regex(parser.reg_ex_validation).search(value) is not None
            except ParseError as exc:
                notes.append(f"{parser.key}: reg_ex_validation {exc.code}")
                continue
            if not valid:
                notes.append(f"{parser.key}: {shown(value)} fails reg_ex_validation")
                continue
        return value
    return None


# --------------------------------------------------------------------------- routes


class _RouteTable:
    __slots__ = ("by_message_id", "default", "only")

    def __init__(self, doc: SolutionDocument, config: DeviceConfiguration) -> None:
        self.by_message_id: dict[str, Route] = {}
        self.default: Route | None = None
        handled: dict[str, Route] = {}  # message key -> its first route (routes of unknown messages ignored)
        for route in config.routes:
            message = doc.message_by_key.get(route.message_definition)
            if message is None:
                continue  # a route to a message the document lacks is a solution error; never chosen
            self.by_message_id.setdefault(message.message_id, route)
            handled.setdefault(message.key, route)
            if route.is_default and self.default is None:
                self.default = route
        self.only = next(iter(handled.values())) if len(handled) == 1 else None


_tables: IdentityCache[DeviceConfiguration, tuple[SolutionDocument, _RouteTable]] = IdentityCache()


def select_route(doc: SolutionDocument, config: DeviceConfiguration, message_id: str | None) -> Route:
    cached_doc, table = _tables.get(config, lambda c: (doc, _RouteTable(doc, c)))
    if cached_doc is not doc:
        table = _RouteTable(doc, config)
    if message_id is not None:
        route = table.by_message_id.get(message_id)
        if route is not None:
            return route
    if table.default is not None:
        return table.default
    if message_id is None:
        if table.only is not None:
            return table.only
        raise StageError(
            STAGE,
            COULD_NOT_DETERMINE_MESSAGE_ID,
            f"no message id in the message and device configuration {config.key!r} handles "
            f"{len(table.by_message_id)} messages without a default route",
        )
    raise StageError(
        STAGE,
        COULD_NOT_FIND_MESSAGE,
        f"message id {shown(message_id)} is not handled by device configuration {config.key!r}",
    )


def planned_device(
    doc: SolutionDocument, device_id: str, device: Device | None
) -> tuple[Device, DeviceConfiguration]:
    """The device the repository returned for the planned id, with its configuration from the solution;
    raises ``StageError(planner, CouldNotFindDevice | CouldNotFindDeviceConfiguration)``."""
    if device is None:
        raise StageError(STAGE, COULD_NOT_FIND_DEVICE, f"device {shown(device_id)} is not in the device repository")
    config = doc.device_configuration_by_key.get(device.device_configuration)
    if config is None:
        raise StageError(STAGE, COULD_NOT_FIND_DEVICE_CONFIGURATION,
                         f"device {device_id} uses device configuration {device.device_configuration!r}, "
                         "which is not in the solution")
    return device, config
