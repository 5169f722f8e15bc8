"""Sans-I/O core of the generic "any AI server over a WebSocket" bridge protocol.

``provider = websocket``. The small JSON protocol that Asterisk-to-AI bridges
document (session.init, audio.input, text.input; session_started, audio_delta,
transcript, speech_started, response_complete, error), spoken as they describe
it, mapped to the events of :mod:`pyconvai.protocol`:

- client: ``session.init`` (audio format, language, voice, system prompt, VAD),
  then ``text.input`` with the initial message; ``audio.input`` per caller
  chunk; ``text.input`` for keypad digits and text from AMI or the CLI;
- ``session_started`` / ``ready`` -> :class:`Metadata` (a server that sends
  audio or a transcript first has started too, in μ-law). The audio format is
  G.711 μ-law at 8 kHz unless the server names another there (``audio_format``
  or ``format``: ``slin16`` / ``pcm16`` / ``pcm_16000``, with ``sample_rate``
  16000 when given), which then holds both ways;
- ``audio_delta`` (``audio``) / ``audio_chunk`` (``data``) -> :class:`AgentAudio`;
- ``transcript`` (``text``, ``role``) / ``transcription`` (``text``,
  ``speaker``) -> agent or caller transcripts;
- ``user_speech_started`` / ``speech_started`` -> :class:`Interruption` that
  flushes the downlink (the protocol has no ids: audio after it plays);
- ``error`` (``message``, ``fatal``) -> :class:`ServerError`; fatal ends the
  call FAILED;
- an extension of ours, for servers that want the PBX's tools:
  ``tool_call`` (``call_id``, ``name``, ``arguments``) -> :class:`ClientToolCall`,
  answered with ``tool_result`` (``call_id``, ``result``, ``is_error``).

``response_complete`` / ``audio_done`` and unknown types are :class:`Unknown`.
No I/O, one thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from .. import jsoncore as f
from ..config import BridgeAgent
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

__all__ = ["BridgeProtocol"]

ULAW = AudioFormat("ulaw", 8000)
SLIN16 = AudioFormat("pcm", 16000)
#: Names the server may give its audio format in session_started, and what they mean.
_FORMATS = {"g711_ulaw": ULAW, "ulaw": ULAW, "pcmu": ULAW, "mulaw": ULAW,
            "slin16": SLIN16, "pcm16": SLIN16, "pcm_16000": SLIN16, "linear16": SLIN16}
_AGENT_ROLES = frozenset({"assistant", "agent", "ai", "bot", "model"})
_BARGE_IN = frozenset({"user_speech_started", "speech_started"})
#: Messages that mean the conversation is under way, even with no session_started before them.
_CONVERSING = frozenset({"audio_delta", "audio_chunk", "transcript", "transcription", "response_complete",
                         "audio_done"}) | _BARGE_IN


class BridgeProtocol(JsonCore):
    """Client side of one bridge-protocol conversation, without I/O. One thread."""

    START_TYPES = frozenset({"session_started", "ready"})

    def __init__(self, agent: BridgeAgent) -> None:
        super().__init__(ProtocolError)
        self._agent = agent
        self._format_name = "g711_ulaw"  # what audio.input says, as the server named it
        self.metadata: Metadata | None = None

    def begin(self) -> None:
        a = self._agent
        self._send({"type": "session.init", "config": {
            "audio_format": "g711_ulaw", "sample_rate": 8000, "channels": 1,
            "language": a.language, "voice": a.voice, "system_prompt": a.system_prompt,
            "vad_enabled": a.listening.enabled, "vad_threshold": a.listening.threshold,
            "vad_silence_duration_ms": a.listening.silence_duration_ms,
        }})
        if a.initial_message:
            self.user_message(a.initial_message)

    # --- server -> client -------------------------------------------------

    def _parse(self, kind: str, msg: Mapping[str, Any], text: str) -> None:
        if kind in self.START_TYPES:
            if self.metadata is None:
                self.metadata = self._started(msg)
                self._events.append(self.metadata)
            return
        if self.metadata is None and kind in _CONVERSING:
            # A server that talks without announcing the session: it started, in μ-law.
            self.metadata = Metadata("", ULAW, ULAW)
            self._events.append(self.metadata)
        if kind in ("audio_delta", "audio_chunk"):
            audio = f.string(msg, "audio" if kind == "audio_delta" else "data")
            self._events.append(AgentAudio(f.b64(audio), None))
        elif kind in ("transcript", "transcription"):
            role = f.string(msg, "role" if kind == "transcript" else "speaker").lower()
            line = f.string(msg, "text")
            self._events.append(AgentResponse(line, None) if role in _AGENT_ROLES else UserTranscript(line, None))
        elif kind in _BARGE_IN:
            self._events.append(Interruption(None, kind))
        elif kind == "error":
            message = f.string(msg, "message") or f.string(msg, "error")
            fatal = f.boolean(msg, "fatal")
            self._events.append(ServerError(None, f.string(msg, "code") or "error", message, "", fatal))
        elif kind == "tool_call":
            self._events.append(self._tool_call(msg))
        else:
            self._events.append(Unknown(kind, msg))

    def _started(self, msg: Mapping[str, Any]) -> Metadata:
        config = f.section(msg, "config") or msg
        name = (f.string(config, "audio_format") or f.string(config, "format") or self._format_name).lower()
        fmt = _FORMATS.get(name)
        if fmt is None:
            raise Malformed(f"unsupported audio format {name!r}")
        rate = f.integer(config, "sample_rate")
        if rate is not None and rate != fmt.sample_rate:
            raise Malformed(f"audio format {name!r} at {rate} Hz is not supported")
        self._format_name = name
        conversation_id = f.string(msg, "session_id") or f.string(msg, "id") or f.string(msg, "conversation_id")
        return Metadata(conversation_id, fmt, fmt)

    @staticmethod
    def _tool_call(msg: Mapping[str, Any]) -> ClientToolCall:
        call_id = f.string(msg, "call_id") or f.string(msg, "tool_call_id")
        if not call_id:
            raise Malformed("tool_call without call_id")
        arguments = msg.get("arguments", msg.get("parameters"))
        if isinstance(arguments, str):
            try:
                arguments = orjson.loads(arguments)
            except orjson.JSONDecodeError:
                raise Malformed("tool_call arguments are not JSON") from None
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise Malformed("tool_call arguments are not an object")
        return ClientToolCall(f.string(msg, "name"), call_id, arguments, None)

    # --- client -> server -------------------------------------------------

    def user_audio(self, audio: bytes) -> None:
        self._outbox.append('{"type":"audio.input","audio":"' + f.b64_text(audio)
                            + '","format":"' + self._format_name + '"}')

    def user_message(self, text: str) -> None:
        self._send({"type": "text.input", "text": text})

    def contextual_update(self, text: str) -> None:
        """The protocol has one way to give text: text.input."""
        self.user_message(text)

    def client_tool_result(self, tool_call_id: str, result: str, is_error: bool) -> None:
        self._send({"type": "tool_result", "call_id": tool_call_id, "result": result, "is_error": is_error})

    def interrupted(self, event_id: int | None, heard_bytes: int) -> None:
        """Nothing to tell: the server decided the barge-in itself."""
