"""Sans-I/O core of OpenAI's Realtime API (GA), mapped to the events of :mod:`pyconvai.protocol`.

``provider = openai_realtime``; shapes from docs/openai-realtime.md (the GA
event names; the beta audio names are accepted too).

- ``begin()``: ``session.update`` — G.711 μ-law (``audio/pcmu``) both ways, so
  μ-law callers need no transcoding; server VAD that creates and interrupts
  responses; the caller's speech transcribed; the PBX's client tools declared
  as functions — then the first response (after ``initial_message`` as the
  caller's first words, when set), so that the agent speaks first.
- ``session.updated`` (the first) -> :class:`Metadata` with the formats the
  server confirmed; the session id from ``session.created`` is the
  conversation id.
- ``response.output_audio.delta`` -> :class:`AgentAudio`; its ``event_id`` is
  the item's number in this conversation (1, 2, ...), so the downlink's
  interruption gate works as it does for ElevenLabs.
- ``input_audio_buffer.speech_started`` -> :class:`Interruption` gating every
  item received so far; the call then reports, through :meth:`interrupted`,
  the item that was playing and how much of it the caller heard, and the core
  sends ``conversation.item.truncate`` with that ``audio_end_ms`` (never more
  than was received; nothing when the item had finished playing).
- ``response.function_call_arguments.done`` -> :class:`ClientToolCall`, answered
  with ``conversation.item.create`` (``function_call_output``) and
  ``response.create``. A ``response.create`` while a response is active waits
  for its ``response.done`` (the server refuses two at once).
- transcripts: ``response.output_audio_transcript.done`` and
  ``conversation.item.input_audio_transcription.completed``.
- ``error`` -> :class:`ServerError`, not fatal: OpenAI's errors leave the
  session open, and a refused truncate must not end a call.

No I/O, one thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from .. import jsoncore as f
from ..config import RealtimeAgent
from ..jsoncore import JsonCore, Malformed
from ..protocol import (
    AgentAudio,
    AgentResponse,
    AudioFormat,
    ClientToolCall,
    Interruption,
    Metadata,
    ProtocolError,
    ServerError,
    Unknown,
    UserTranscript,
)

__all__ = ["RealtimeProtocol"]

TRANSCRIPTION_MODEL = "gpt-4o-mini-transcribe"
PREFIX_PADDING_MS = 300
_AUDIO_DELTAS = frozenset({"response.output_audio.delta", "response.audio.delta"})
_TRANSCRIPTS = frozenset({"response.output_audio_transcript.done", "response.audio_transcript.done"})
_BUSY = "conversation_already_has_active_response"


def _format(spec: object) -> AudioFormat:
    """An audio format object of session.updated (``{"type": "audio/pcmu"}``...)."""
    kind = spec.get("type") if isinstance(spec, dict) else spec
    if kind in ("audio/pcmu", "g711_ulaw"):
        return AudioFormat("ulaw", 8000)
    if kind in ("audio/pcm", "pcm16"):
        rate = spec.get("rate", 24000) if isinstance(spec, dict) else 24000
        return AudioFormat("pcm", rate if isinstance(rate, int) and not isinstance(rate, bool) else 24000)
    raise Malformed(f"unsupported audio format {kind!r}")


class RealtimeProtocol(JsonCore):
    """Client side of one Realtime conversation, without I/O. One thread."""

    START_TYPES = frozenset({"session.updated"})

    def __init__(self, agent: RealtimeAgent) -> None:
        super().__init__(ProtocolError)
        self._agent = agent
        self._session_id = ""
        self._items: dict[str, int] = {}  # item_id -> its number, the audio's event_id
        self._item_ids: dict[int, str] = {}
        self._received: dict[int, int] = {}  # audio bytes received per item number
        self._response_active = False
        self._response_wanted = False
        self.metadata: Metadata | None = None
        self.output_format = AudioFormat("ulaw", 8000)

    def begin(self) -> None:
        a = self._agent
        listening = a.listening
        transcription: dict[str, Any] = {"model": TRANSCRIPTION_MODEL}
        if a.language:
            transcription["language"] = a.language
        turn_detection = {
            "type": "server_vad", "threshold": listening.threshold, "prefix_padding_ms": PREFIX_PADDING_MS,
            "silence_duration_ms": listening.silence_duration_ms, "create_response": True,
            "interrupt_response": True,
        } if listening.enabled else None
        session: dict[str, Any] = {
            "type": "realtime",
            "output_modalities": ["audio"],
            "audio": {
                "input": {"format": {"type": "audio/pcmu"}, "transcription": transcription,
                          "turn_detection": turn_detection},
                "output": {"format": {"type": "audio/pcmu"}, "voice": a.voice},
            },
        }
        if a.instructions:
            session["instructions"] = a.instructions
        if a.tools:
            session["tools"] = list(a.tools)
            session["tool_choice"] = "auto"
        self._send({"type": "session.update", "session": session})
        if a.initial_message:
            self._item("user", a.initial_message)
        self._request_response()

    # --- server -> client -------------------------------------------------

    def _parse(self, kind: str, msg: Mapping[str, Any], text: str) -> None:
        if kind in _AUDIO_DELTAS:
            number = self._number(f.string(msg, "item_id"))
            audio = f.b64(f.string(msg, "delta"))
            self._received[number] = self._received.get(number, 0) + len(audio)
            self._events.append(AgentAudio(audio, number))
        elif kind == "input_audio_buffer.speech_started":
            self._events.append(Interruption(max(self._items.values(), default=0) + 1, "speech_started"))
        elif kind in _TRANSCRIPTS:
            self._events.append(AgentResponse(f.string(msg, "transcript"), self._number(f.string(msg, "item_id"))))
        elif kind == "conversation.item.input_audio_transcription.completed":
            self._events.append(UserTranscript(f.string(msg, "transcript"), None))
        elif kind == "response.function_call_arguments.done":
            self._events.append(self._function_call(msg))
        elif kind == "response.created":
            self._response_active = True
        elif kind == "response.done":
            self._response_done(msg)
        elif kind == "session.created":
            self._session_id = f.string(f.section(msg, "session"), "id")
        elif kind == "session.updated":
            if self.metadata is None:
                self._started(msg)
        elif kind == "error":
            self._error(msg)
        else:
            self._events.append(Unknown(kind, msg))

    def _number(self, item_id: str) -> int:
        number = self._items.get(item_id)
        if number is None:
            number = self._items[item_id] = len(self._items) + 1
            self._item_ids[number] = item_id
        return number

    def _started(self, msg: Mapping[str, Any]) -> None:
        session = f.section(msg, "session")
        audio = f.section(session, "audio")
        fmt_in = _format(f.section(f.section(audio, "input"), "format") or {"type": "audio/pcmu"})
        fmt_out = _format(f.section(f.section(audio, "output"), "format") or {"type": "audio/pcmu"})
        self.output_format = fmt_out
        self.metadata = Metadata(self._session_id or f.string(session, "id"), fmt_in, fmt_out)
        self._events.append(self.metadata)

    @staticmethod
    def _function_call(msg: Mapping[str, Any]) -> ClientToolCall:
        call_id = f.string(msg, "call_id")
        if not call_id:
            raise Malformed("function call without call_id")
        raw = f.string(msg, "arguments") or "{}"
        try:
            arguments = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise Malformed("function call arguments are not JSON") from None
        if not isinstance(arguments, dict):
            raise Malformed("function call arguments are not an object")
        return ClientToolCall(f.string(msg, "name"), call_id, arguments, None)

    def _response_done(self, msg: Mapping[str, Any]) -> None:
        self._response_active = False
        response = f.section(msg, "response")
        if f.string(response, "status") == "failed":
            error = f.section(f.section(response, "status_details"), "error")
            self._events.append(ServerError(None, f.string(error, "type") or "response_failed",
                                            f.string(error, "code") or f.string(error, "message"), ""))
        if self._response_wanted:
            self._response_wanted = False
            self._request_response()

    def _error(self, msg: Mapping[str, Any]) -> None:
        error = f.section(msg, "error")
        code = f.string(error, "code")
        if code == _BUSY:  # our response.create raced a VAD turn: ask again once it is done
            self._response_wanted = True
        self._events.append(ServerError(None, f.string(error, "type") or "error",
                                        " ".join(part for part in (code, f.string(error, "message")) if part), ""))

    # --- client -> server -------------------------------------------------

    def user_audio(self, audio: bytes) -> None:
        self._outbox.append('{"type":"input_audio_buffer.append","audio":"'
                            + f.b64_text(audio) + '"}')

    def user_message(self, text: str) -> None:
        self._item("user", text)
        self._request_response()

    def contextual_update(self, text: str) -> None:
        """Context without a reply: a system item, no response asked for."""
        self._item("system", text)

    def client_tool_result(self, tool_call_id: str, result: str, is_error: bool) -> None:
        output = orjson.dumps({"error": result}).decode() if is_error else result
        self._send({"type": "conversation.item.create",
                    "item": {"type": "function_call_output", "call_id": tool_call_id, "output": output}})
        self._request_response()

    def interrupted(self, event_id: int | None, heard_bytes: int) -> None:
        """The downlink was flushed while item ``event_id`` played, ``heard_bytes`` of it
        written to the caller: truncate the item there, if the caller did not hear it all."""
        item_id = self._item_ids.get(event_id) if event_id is not None else None
        received = self._received.get(event_id, 0) if event_id is not None else 0
        if item_id is None or heard_bytes >= received:
            return
        rate = self.output_format.frame_bytes(1000)
        self._send({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
                    "audio_end_ms": max(0, heard_bytes) * 1000 // rate})

    def _item(self, role: str, text: str) -> None:
        self._send({"type": "conversation.item.create",
                    "item": {"type": "message", "role": role, "content": [{"type": "input_text", "text": text}]}})

    def _request_response(self) -> None:
        if self._response_active:
            self._response_wanted = True
        else:
            self._send({"type": "response.create"})
