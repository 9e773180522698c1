"""Stream framing for the raw TCP listener (pure: no I/O, no clock).

A ``Deframer`` turns a byte stream, fed in chunks of any size, into whole frames; ``FrameSpec.encode`` frames
a reply the same way. A ``FrameSpec`` is built from a NuvIoT ``ListenerConfiguration`` (``FrameSpec.from_listener``).

Decisions (NuvIoT does not document its TCP framing; reference/nuviot-spec.md §3.2 "[gap]"):

- **Which framing.** The first that applies wins: ``MessageLengthInMessage`` -> length prefix;
  ``DelimitedWithSOHEOT`` -> SOH (0x01) ... EOT (0x04); ``StartMessageSequence`` and/or ``EndMessageSequence``
  -> those sequences; otherwise newline-terminated lines (``\\n``; a trailing ``\\r`` is stripped).
- **Sequences** are text with backslash escapes: ``\\xHH``, ``\\n``, ``\\r``, ``\\t``, ``\\0``, ``\\\\``
  (so ``"\\x02"`` is the byte 0x02 and ``"END"`` the three bytes ``E N D``); any other character is
  UTF-8 encoded as is. A malformed ``\\x`` escape is a configuration error (``ValueError``).
- **Delimiters are not payload.** A frame is the bytes between the start and the end sequence. Bytes outside
  frames (before a start sequence) are discarded and counted (``garbage_bytes``). Inside a frame only the
  end sequence is looked for: a start sequence inside a frame is data (binary payloads keep their 0x01/0x02
  bytes; the cost is that a lost end sequence merges two frames, which the parser then rejects).
  With a start sequence only, a frame runs up to the next start sequence (or is flushed by ``expire``).
  With an end sequence only (or newline), everything up to the end sequence is the frame.
- **Length prefix.** ``MessageLengthSize`` (1, 2 or 4 bytes, default 2) bytes at ``MessageLengthLocation``
  (default 0) in ``MessageLengthByteCountEndiness`` (default big endian) hold the number of bytes that
  *follow* the length field: the length does not count itself nor the bytes before it (``length_counts_header``
  turns that on). The length field is framing and is removed from the payload; the bytes before it (a
  header, when the location is > 0) are kept: payload = ``frame[:location] + frame[location+size:]``.
  ``encode`` inserts the field back, so ``deframe(encode(p)) == p``.
- **Empty frames** (blank lines, ``\\x01\\x04``) are skipped.
- **Size cap** (``MaxMessageSize``, default 64 KiB) bounds a frame's payload and the bytes held for it.
  Delimited framing: an oversized frame is dropped, counted (``oversized``) and the stream resynchronises at
  the next end sequence (start sequence if there is none). Length prefix: a declared length over the cap
  cannot be skipped safely, so the deframer *breaks* (``broken`` names why) and the listener closes the
  connection. Garbage is never held (at most ``len(start) - 1`` bytes, to see a start sequence split in two).
- **Half frames** stay buffered until the rest arrives. ``expire()`` is what the listener calls when a half
  frame waited too long (``MessageReceiveTimeoutMS``): it is dropped and counted (``truncated``) and, with an
  end sequence only, the stream skips to the next end sequence (the rest of that frame is not a frame of its
  own); with a start sequence only, the pending frame is complete by definition and is returned instead.
  With a length prefix there is no way to find the next frame: the deframer breaks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from runtime.core.solution.enums import Endian
from runtime.core.solution.model import Listener

DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024
SOH = b"\x01"
EOT = b"\x04"
_ESCAPES = {"n": b"\n", "r": b"\r", "t": b"\t", "0": b"\x00", "\\": b"\\"}

Mode = Literal["newline", "soheot", "sequences", "length"]


def parse_sequence(text: str | None) -> bytes | None:
    """A configured start/end sequence as bytes (backslash escapes decoded); ``None`` when empty."""
    if not text:
        return None
    out = bytearray()
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch != "\\" or i + 1 >= n:
            out += ch.encode()
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "x":
            digits = text[i + 2 : i + 4]
            if len(digits) != 2 or any(c not in "0123456789abcdefABCDEF" for c in digits):
                raise ValueError(f"bad \\x escape in sequence {text!r}")
            out.append(int(digits, 16))
            i += 4
        elif nxt in _ESCAPES:
            out += _ESCAPES[nxt]
            i += 2
        else:
            out += ch.encode()
            i += 1
    return bytes(out) or None


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


@dataclass(frozen=True, slots=True)
class FrameSpec:
    mode: Mode = "newline"
    start: bytes | None = None
    end: bytes | None = b"\n"
    length_location: int = 0
    length_size: int = 2
    big_endian: bool = True
    length_counts_header: bool = False
    max_size: int = DEFAULT_MAX_MESSAGE_SIZE

    def __post_init__(self) -> None:
        if self.max_size <= 0:
            raise ValueError("the maximum message size must be positive")
        if self.mode == "length":
            if self.length_size not in (1, 2, 4):
                raise ValueError(f"the message length size must be 1, 2 or 4 bytes, not {self.length_size}")
            if self.length_location < 0:
                raise ValueError("the message length location must not be negative")
        elif not (self.start or self.end):
            raise ValueError("delimited framing needs a start or an end sequence")

    @classmethod
    def from_listener(cls, config: Listener) -> FrameSpec:
        max_size = config.max_message_size or DEFAULT_MAX_MESSAGE_SIZE
        if config.message_length_in_message:
            return cls(
                mode="length",
                start=None,
                end=None,
                length_location=_or(config.message_length_location, 0),
                length_size=_or(config.message_length_size, 2),
                big_endian=config.message_length_byte_count_endiness is not Endian.LITTLE,
                max_size=max_size,
            )
        if config.delimited_with_soheot:
            return cls(mode="soheot", start=SOH, end=EOT, max_size=max_size)
        start = parse_sequence(config.start_message_sequence)
        end = parse_sequence(config.end_message_sequence)
        if start or end:
            return cls(mode="sequences", start=start, end=end, max_size=max_size)
        return cls(max_size=max_size)

    @property
    def ends_at_next_start(self) -> bool:
        """Start sequence only: a frame is complete when the next one starts (or the stream ends)."""
        return self.mode != "length" and self.end is None

    @property
    def header_size(self) -> int:
        return self.length_location + self.length_size

    def encode(self, payload: bytes) -> bytes:
        """Frame ``payload`` for the wire (replies). ``ValueError`` when it cannot be framed."""
        if self.mode != "length":
            return (self.start or b"") + payload + (self.end or b"")
        loc = self.length_location
        if len(payload) < loc:
            raise ValueError(f"the payload is shorter than the length location ({loc})")
        value = len(payload) - loc + (self.header_size if self.length_counts_header else 0)
        if value >= 1 << (8 * self.length_size):
            raise ValueError(f"the payload is too long for a {self.length_size}-byte length")
        field = value.to_bytes(self.length_size, "big" if self.big_endian else "little")
        return payload[:loc] + field + payload[loc:]


@dataclass(slots=True)
class FrameStats:
    """Counts shared by every deframer of one listener."""

    frames: int = 0
    oversized: int = 0
    truncated: int = 0
    garbage_bytes: int = 0


class Deframer:
    """Incremental: ``feed(chunk)`` returns the frames completed by that chunk (payloads, in order)."""

    __slots__ = ("_buf", "_in_frame", "_scan", "_skipping", "broken", "completed", "spec", "stats")

    def __init__(self, spec: FrameSpec, stats: FrameStats | None = None) -> None:
        self.spec = spec
        self.stats = stats if stats is not None else FrameStats()
        self._buf = bytearray()
        self._in_frame = False  # past a start sequence (start-delimited modes)
        self._skipping = False  # resynchronising after an oversized or expired frame
        self._scan = 0  # where to resume looking for the end sequence
        self.completed = 0  # frames ended so far, delivered or not (the caller sees that a new frame began)
        self.broken: str | None = None  # set when the stream cannot be framed any more (length prefix)

    @property
    def pending(self) -> bool:
        """A frame has begun and is not complete."""
        if self.broken or self._skipping:
            return False
        if self.spec.start is not None and self.spec.mode != "length":
            return self._in_frame
        return bool(self._buf)

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        if self.broken:
            return []
        self._buf += data
        out: list[bytes] = []
        if self.spec.mode == "length":
            self._feed_length(out)
        else:
            self._feed_delimited(out)
        return out

    def expire(self) -> bytes | None:
        """The pending half frame waited too long: drop it (or, start sequence only, return it)."""
        spec = self.spec
        if not self.pending:
            return None
        if spec.mode == "length":
            self.stats.truncated += 1
            self._break("a frame was not completed in time")
            return None
        if spec.ends_at_next_start:  # the frame is complete
            frame = bytes(self._buf)
            self._buf.clear()
            self._in_frame = False
            return self._emit(frame)
        self.stats.truncated += 1
        self._buf.clear()
        self._scan = 0
        if spec.start is not None:
            self._in_frame = False
        else:
            self._skipping = True
        return None

    # ------------------------------------------------------------------ internals
    def _emit(self, frame: bytes) -> bytes | None:
        self.completed += 1
        if self.spec.mode == "newline" and frame.endswith(b"\r"):
            frame = frame[:-1]
        if not frame:
            return None
        if len(frame) > self.spec.max_size:
            self.stats.oversized += 1
            return None
        self.stats.frames += 1
        return frame

    def _discard(self, n: int) -> None:
        if n > 0:
            del self._buf[:n]
            self.stats.garbage_bytes += n

    def _feed_delimited(self, out: list[bytes]) -> None:
        spec, buf = self.spec, self._buf
        start, end, cap = spec.start, spec.end, spec.max_size
        while buf:
            if self._skipping:
                delim = end or start
                assert delim is not None
                i = buf.find(delim)
                if i < 0:
                    self._discard(len(buf) - (len(delim) - 1))
                    return
                self._discard(i + len(delim) if end else i)
                self._skipping = False
                continue
            if start is not None and not self._in_frame:
                i = buf.find(start)
                if i < 0:
                    self._discard(len(buf) - (len(start) - 1))
                    return
                self._discard(i)
                del buf[: len(start)]
                self._in_frame = True
                self._scan = 0
                continue
            delim = end or start
            assert delim is not None
            i = buf.find(delim, self._scan)
            if i < 0:
                if len(buf) - (len(delim) - 1) > cap:  # the frame is over the cap already: drop, resync
                    self.stats.oversized += 1
                    self.completed += 1
                    self._discard(len(buf) - (len(delim) - 1))
                    self._in_frame = False
                    self._skipping = True
                    self._scan = 0
                    continue
                self._scan = max(0, len(buf) - len(delim) + 1)
                return
            frame = bytes(buf[:i])
            del buf[: i + (len(end) if end else 0)]  # start only: the next start stays, it opens the next frame
            self._in_frame = False
            self._scan = 0
            emitted = self._emit(frame)
            if emitted is not None:
                out.append(emitted)

    def _feed_length(self, out: list[bytes]) -> None:
        spec, buf = self.spec, self._buf
        loc, header = spec.length_location, spec.header_size
        order: Literal["big", "little"] = "big" if spec.big_endian else "little"
        while len(buf) >= header:
            value = int.from_bytes(buf[loc:header], order)
            body = value - header if spec.length_counts_header else value
            if body < 0:
                self._break(f"declared length {value} is shorter than the header")
                return
            if loc + body > spec.max_size:
                self.stats.oversized += 1
                self._break(f"declared length {value} is over the maximum message size {spec.max_size}")
                return
            total = header + body
            if len(buf) < total:
                return
            frame = bytes(buf[:loc]) + bytes(buf[header:total])
            del buf[:total]
            emitted = self._emit(frame)
            if emitted is not None:
                out.append(emitted)

    def _break(self, reason: str) -> None:
        self.broken = reason
        self._buf.clear()
