"""Regular expressions written for .NET, and the path and topic locators.

.NET names groups ``(?'name'...)`` or ``(?<name>...)`` and back-references them ``\\k<name>``/``\\k'name'``;
Python wants ``(?P<name>...)`` and ``(?P=name)``. ``dotnet_to_python`` rewrites those (outside character
classes, never touching escapes, ``(?<=``/``(?<!`` look-behinds or ``(?P...)``). Balancing groups
``(?<a-b>...)`` have no Python form and are refused.

Locators (``/sensor/{deviceid}/*``) are documented in docs/parsing.md §Locators.
"""

from __future__ import annotations

import re
import warnings
from urllib.parse import unquote

from runtime.core.parsing.errors import INVALID_LOCATOR, INVALID_REGEX, ParseError, shown
from runtime.core.parsing.memo import KeyedCache

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def dotnet_to_python(pattern: str) -> str:
    """Rewrite .NET named groups and named back-references into Python syntax."""
    out: list[str] = []
    i, n = 0, len(pattern)
    in_class = False
    while i < n:
        c = pattern[i]
        if c == "\\":
            if not in_class and pattern.startswith(("\\k<", "\\k'"), i):
                close = ">" if pattern[i + 2] == "<" else "'"
                end = pattern.find(close, i + 3)
                if end > 0 and _NAME.fullmatch(pattern, i + 3, end):
                    out.append(f"(?P={pattern[i + 3 : end]})")
                    i = end + 1
                    continue
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
            out.append(c)
            i += 1
            continue
        if c == "[":
            in_class = True
            out.append(c)
            i += 1
            # a ']' right after '[' or '[^' is a literal
            if pattern.startswith("^", i):
                out.append("^")
                i += 1
            if pattern.startswith("]", i):
                out.append("]")
                i += 1
            continue
        if c == "(" and pattern.startswith("(?", i) and i + 2 < n and pattern[i + 2] in "'<":
            opener = pattern[i + 2]
            if opener == "<" and i + 3 < n and pattern[i + 3] in "=!":
                out.append(pattern[i : i + 4])  # look-behind
                i += 4
                continue
            close = ">" if opener == "<" else "'"
            end = pattern.find(close, i + 3)
            name = pattern[i + 3 : end] if end > 0 else ""
            if "-" in name:
                raise ParseError(INVALID_REGEX, f"balancing group {shown(name)} has no Python equivalent")
            if end > 0 and _NAME.fullmatch(name):
                out.append(f"(?P<{name}>")
                i = end + 1
                continue
        out.append(c)
        i += 1
    return "".join(out)


def _compile(pattern: str) -> re.Pattern[str] | ParseError:
    try:
        with warnings.catch_warnings():  # "possible nested set" for '[[' etc.: .NET reads it as written, so do we
            warnings.simplefilter("ignore", FutureWarning)
            return re.compile(dotnet_to_python(pattern))
    except ParseError as exc:
        return exc
    except re.error as exc:
        return ParseError(INVALID_REGEX, f"pattern {shown(pattern)} does not compile: {exc.msg}")
    except RecursionError:
        return ParseError(INVALID_REGEX, f"pattern {shown(pattern)} is too deeply nested")


_regexes: KeyedCache[re.Pattern[str] | ParseError] = KeyedCache()


def compile_regex(pattern: str) -> re.Pattern[str]:
    """Compile a solution's (.NET-flavoured) pattern once; raises ``ParseError(invalid_regex)``."""
    result = _regexes.get(pattern, lambda: _compile(pattern))
    if isinstance(result, ParseError):
        raise result
    return result


# --------------------------------------------------------------------------- locators

_TOKEN = re.compile(r"\{([^{}/]*)\}")


class SegmentLocator:
    """A compiled path or topic locator; ``capture(text)`` returns the placeholder's value or None."""

    __slots__ = ("_group", "_is_path", "_regex", "locator")

    def __init__(self, locator: str, *, is_path: bool, prefer: str | None = None) -> None:
        self.locator = locator
        self._is_path = is_path
        segments = locator.strip().strip("/").split("/")
        parts: list[str] = []
        names: list[str] = []
        for index, segment in enumerate(segments):
            if segment in ("*", "+"):
                parts.append("[^/]+")
            elif segment == "#" and index == len(segments) - 1:
                parts.append(".*")
            else:
                parts.append(self._segment(segment, names))
        if not names:
            raise ParseError(INVALID_LOCATOR, f"locator {shown(locator)} has no {{name}} placeholder")
        wanted = prefer.lower() if prefer else None
        chosen = next((i for i, name in enumerate(names) if name.lower() == wanted), 0)
        self._group = f"g{chosen}"
        self._regex = re.compile("/*" + "/".join(parts) + "(?:/.*)?", re.DOTALL)

    @staticmethod
    def _segment(segment: str, names: list[str]) -> str:
        pieces: list[str] = []
        pos = 0
        for match in _TOKEN.finditer(segment):
            pieces.append(_literal(segment[pos : match.start()]))
            pieces.append(f"(?P<g{len(names)}>[^/]*)")
            names.append(match.group(1).strip())
            pos = match.end()
        pieces.append(_literal(segment[pos:]))
        return "".join(pieces)

    def capture(self, text: str | None) -> str | None:
        if not text:
            return None
        if self._is_path:
            cut = min((i for i in (text.find("?"), text.find("#")) if i >= 0), default=-1)
            if cut >= 0:
                text = text[:cut]
        match = self._regex.fullmatch(text)
        if match is None:
            return None
        value = match.group(self._group)
        if not value:
            return None
        return unquote(value) if self._is_path else value


def _literal(text: str) -> str:
    """A literal part of a segment; a lone ``*`` inside a segment matches any run of characters."""
    return "[^/]*".join(re.escape(piece) for piece in text.split("*"))


_locators: KeyedCache[SegmentLocator | ParseError] = KeyedCache()


def segment_locator(locator: str, *, is_path: bool, prefer: str | None = None) -> SegmentLocator:
    def build() -> SegmentLocator | ParseError:
        try:
            return SegmentLocator(locator, is_path=is_path, prefer=prefer)
        except ParseError as exc:
            return exc

    result = _locators.get((locator, is_path, prefer), build)
    if isinstance(result, ParseError):
        raise result
    return result
