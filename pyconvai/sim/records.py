"""What the simulator observed: per-conversation records and the JSON-lines log."""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import orjson


@dataclass(eq=False)
class ConversationRecord:
    """One WebSocket connection as the server saw it.

    Written only by the simulator's event loop; safe to read from other
    threads: lists and dicts only grow, and ``close_code``, ``close_reason``
    and ``closed_by`` are set before ``closed`` is.
    Times are ``time.monotonic()`` values.
    """

    agent_id: str
    conversation_id: str
    path: str
    """Request path with the query string."""
    subprotocol: str | None = None
    init_data: dict | None = None
    """The ``conversation_initiation_client_data`` message, if the client sent one first."""
    audio_chunks: list[tuple[float, bytes]] = field(default_factory=list)
    """Decoded ``user_audio_chunk`` payloads (input format) with arrival times."""
    pongs: list[int] = field(default_factory=list)
    pings_sent: list[int] = field(default_factory=list)
    messages: list[tuple[float, dict]] = field(default_factory=list)
    """Every client message."""
    sent: list[tuple[float, dict]] = field(default_factory=list)
    """Every server message."""
    interruptions: list[int] = field(default_factory=list)
    tool_results: list[dict] = field(default_factory=list)
    truncations: list[tuple[str, int]] = field(default_factory=list)
    """OpenAI: (item_id, audio_end_ms) of each conversation.item.truncate."""
    first_user_text: str | None = None
    """OpenAI: the user item sent before the first response.create (an initial message)."""
    dialect: str = "elevenlabs"
    authorization: str | None = None
    """The Authorization header of the WebSocket handshake."""
    audio_sent_ms: dict[int, float] = field(default_factory=dict)
    """Milliseconds of agent audio sent per ``event_id`` (stale chunks included)."""
    close_code: int | None = None
    close_reason: str | None = None
    closed_by: str | None = None
    """``client`` (it sent the first close frame), ``server``, ``drop`` (the server aborted
    TCP) or ``lost`` (the connection ended without a close frame from the client)."""
    closed: threading.Event = field(default_factory=threading.Event)

    @property
    def received_audio(self) -> bytes:
        """All caller audio received, concatenated, in the input format."""
        return b"".join(chunk for _, chunk in list(self.audio_chunks))

    def sent_of_type(self, msg_type: str) -> list[dict]:
        """Server messages of one ``type``, in order."""
        return [msg for _, msg in list(self.sent) if msg.get("type") == msg_type]


@dataclass(frozen=True)
class HttpRequestRecord:
    """One plain HTTP request answered by the simulator (``t``: when it arrived)."""

    t: float
    path: str
    params: dict[str, str]
    status: int


def _scrub(msg: dict) -> dict:
    """A copy of ``msg`` with audio payloads replaced by their byte counts."""
    def size(b64: str) -> str:
        return f"<{len(b64) * 3 // 4 - b64[-2:].count('=')} bytes>"

    if isinstance(msg.get("user_audio_chunk"), str):
        return {**msg, "user_audio_chunk": size(msg["user_audio_chunk"])}
    event = msg.get("audio_event")
    if isinstance(event, dict) and isinstance(event.get("audio_base_64"), str):
        scrubbed = copy.copy(msg)
        scrubbed["audio_event"] = {**event, "audio_base_64": size(event["audio_base_64"])}
        return scrubbed
    return msg


class EventLog:
    """JSON lines of everything received and sent, audio replaced by byte counts."""

    def __init__(self, path: str | Path | None) -> None:
        self._file: IO[bytes] | None = open(path, "ab") if path else None  # noqa: SIM115 (closed by close())

    def write(self, kind: str, conversation_id: str | None, **fields: object) -> None:
        """Append one line: ``{"t", "kind", "conversation_id", **fields}``."""
        if self._file is None:
            return
        message = fields.get("message")
        if isinstance(message, dict):
            fields["message"] = _scrub(message)
        line = {"t": round(time.time(), 3), "kind": kind, "conversation_id": conversation_id, **fields}
        self._file.write(orjson.dumps(line, default=repr) + b"\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
