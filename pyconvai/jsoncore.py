"""What every provider's sans-I/O protocol core shares: JSON in, typed events out.

:class:`JsonCore` holds the inbox of events and the outbox of text frames and
turns a frame that is not a JSON object with a string ``type`` into a
``ProtocolError`` event; a core parses the rest (``_parse``). The field readers
give the default for a missing field and raise :class:`Malformed` for a wrong
type, which the core also turns into a ``ProtocolError``. Parsing never raises.
No I/O, no threads: a core is driven from one thread (the asyncio thread).
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping
from typing import Any, Callable

import orjson

__all__ = ["JsonCore", "Malformed", "b64", "b64_text", "boolean", "integer", "number", "opt_string", "section", "string"]


class Malformed(Exception):
    """A field had the wrong type or an undecodable value."""


def section(obj: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Malformed(f"{key} is not an object")
    return value


def string(obj: Mapping[str, Any], key: str, default: str = "") -> str:
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise Malformed(f"{key} is not a string")
    return value


def opt_string(obj: Mapping[str, Any], key: str) -> str | None:
    return string(obj, key) if obj.get(key) is not None else None


def integer(obj: Mapping[str, Any], key: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise Malformed(f"{key} is not an integer")
    return value


def number(obj: Mapping[str, Any], key: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Malformed(f"{key} is not a number")
    return value


def boolean(obj: Mapping[str, Any], key: str) -> bool:
    value = obj.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise Malformed(f"{key} is not a boolean")
    return value


def b64_text(data: bytes) -> str:
    """``data`` as base64 text (base64.b64encode without its Python frame)."""
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def b64(value: str) -> bytes:
    # binascii directly: base64.b64decode(value, validate=True) is this call behind a Python frame
    try:
        return binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise Malformed(f"audio is not valid base64 ({exc})") from None


RAW_EXCERPT = 200


class JsonCore:
    """Inbox and outbox of one provider core. Subclasses implement ``_parse``."""

    def __init__(self, protocol_error: Callable[[str, str, str | None], object]) -> None:
        self._events: list[object] = []
        self._outbox: list[str] = []
        self._make_error = protocol_error  # the ProtocolError event type
        self.errors = 0

    def receive_text(self, text: str) -> None:
        """Parse one text frame from the server into events (and perhaps answers)."""
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            self._protocol_error(f"malformed JSON: {exc}", text)
            return
        if not isinstance(msg, dict):
            self._protocol_error("message is not a JSON object", text)
            return
        kind = msg.get("type")
        if not isinstance(kind, str):
            self._protocol_error("message without a string type", text)
            return
        try:
            self._parse(kind, msg, text)
        except Malformed as exc:
            self._protocol_error(f"{kind}: {exc}", text, kind)

    def receive_bytes(self, data: bytes) -> None:
        """Binary frames are not part of these protocols: report a ProtocolError."""
        self._protocol_error(f"unexpected binary frame ({len(data)} bytes)", data[:32].hex())

    def events_received(self) -> list[Any]:
        """Return and clear the events parsed since the last call."""
        events, self._events = self._events, []
        return events

    def messages_to_send(self) -> list[str]:
        """Return and clear the JSON text frames to send, in order."""
        messages, self._outbox = self._outbox, []
        return messages

    def _parse(self, kind: str, msg: Mapping[str, Any], text: str) -> None:
        raise NotImplementedError

    def _send(self, msg: Mapping[str, Any]) -> None:
        self._outbox.append(orjson.dumps(msg).decode())

    def _protocol_error(self, description: str, raw: str, message_type: str | None = None) -> None:
        self.errors += 1
        self._events.append(self._make_error(description, raw[:RAW_EXCERPT], message_type))
