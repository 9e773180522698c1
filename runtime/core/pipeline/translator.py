"""Input translator (spec §2.4): the message's fields as ``{field key: typed value}``.

Every field is read (binary "relative" offsets follow field order); all problems are collected into one
``StageError("inputtranslator", <code of the first problem>, "key: code detail; key: code detail")``.
Absent optional fields without a default are left out. A ``nocontent`` message reads only header, path,
query-string and topic fields (body fields are absent) and never touches the payload.
"""

from __future__ import annotations

from runtime.core.errors import StageError
from runtime.core.parsing.errors import ParseError
from runtime.core.parsing.fields import message_readers
from runtime.core.parsing.locate import MISSING, BinaryCursor
from runtime.core.parsing.view import MessageView
from runtime.core.solution.model import MessageDefinition, SolutionDocument

STAGE = "inputtranslator"


def translate(doc: SolutionDocument, message: MessageDefinition, view: MessageView) -> dict[str, object]:
    readers = message_readers(doc, message)
    cursor = BinaryCursor()
    values: dict[str, object] = {}
    problems: list[tuple[str, ParseError]] = []
    for reader in readers:
        try:
            value = reader.read(view, cursor)
        except ParseError as exc:
            problems.append((reader.key, exc))
            continue
        if value is not MISSING:
            values[reader.key] = value
    if problems:
        # one line per distinct problem, naming every field it hit (a body that is not JSON is one problem)
        grouped: dict[tuple[str, str], list[str]] = {}
        for key, problem in problems:
            grouped.setdefault((problem.code, problem.detail), []).append(key)
        detail = "; ".join(f"{', '.join(keys)}: {code} {why}" for (code, why), keys in grouped.items())
        raise StageError(STAGE, problems[0][1].code, f"message {message.key!r}: {detail}")
    return values
