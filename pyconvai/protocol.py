"""Sans-I/O core of the ElevenLabs Conversational AI WebSocket protocol.

No I/O happens here. The caller feeds every frame the server sent into
:meth:`ConvaiProtocol.receive_text` (or :meth:`~ConvaiProtocol.receive_bytes`),
then must write :meth:`~ConvaiProtocol.messages_to_send` to the socket and
should handle :meth:`~ConvaiProtocol.events_received`. Client messages are
built with the other methods and land in the same outbox.

Parsing never raises: malformed input becomes a :class:`ProtocolError` event
and increments :attr:`ConvaiProtocol.errors`; unknown message types become
:class:`Unknown` events; missing optional fields take their defaults.

Message shapes follow docs/elevenlabs-protocol.md §4 and §5.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Union

import orjson

__all__ = [
    "AudioFormat",
    "ConvaiProtocol",
    "Metadata",
    "AgentAudio",
    "AgentResponse",
    "AgentResponseCorrection",
    "UserTranscript",
    "TentativeUserTranscript",
    "Interruption",
    "VadScore",
    "Ping",
    "ClientToolCall",
    "AgentToolRequest",
    "AgentToolResponse",
    "ServerError",
    "Unknown",
    "ProtocolError",
    "Event",
]

_RAW_EXCERPT = 200
_METADATA = "conversation_initiation_metadata"


#: The audio formats the ElevenLabs Agents WebSocket API names (the module plays all but
#: pcm_22050, which Asterisk has no format for, and refuses that one clearly).
FORMATS: tuple[str, ...] = (
    "ulaw_8000",
    "pcm_8000",
    "pcm_16000",
    "pcm_22050",
    "pcm_24000",
    "pcm_44100",
    "pcm_48000",
)


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """A headerless mono audio format: ``pcm`` (16-bit LE) or ``ulaw`` (G.711 μ-law)."""

    encoding: str
    sample_rate: int

    def __post_init__(self) -> None:
        if self.encoding not in ("pcm", "ulaw"):
            raise ValueError(f"unsupported audio encoding {self.encoding!r}")
        if self.sample_rate <= 0:
            raise ValueError(f"invalid sample rate {self.sample_rate!r}")

    @classmethod
    def parse(cls, name: str) -> AudioFormat:
        """Parse one of :data:`FORMATS` (e.g. ``ulaw_8000``); ValueError otherwise."""
        if name not in FORMATS:
            raise ValueError(f"unsupported audio format {name!r}")
        encoding, _, rate = name.partition("_")
        return cls(encoding, int(rate))

    @property
    def name(self) -> str:
        return f"{self.encoding}_{self.sample_rate}"

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self.encoding == "pcm" else 1

    @property
    def silence_byte(self) -> int:
        """Byte value of digital silence (0x00 for PCM, 0xFF for μ-law)."""
        return 0x00 if self.encoding == "pcm" else 0xFF

    def frame_bytes(self, ms: float = 20) -> int:
        """Bytes in ``ms`` milliseconds of audio (whole samples, rounded down)."""
        return int(self.sample_rate * ms // 1000) * self.bytes_per_sample

    def __str__(self) -> str:
        return self.name


DEFAULT_FORMAT = AudioFormat("pcm", 16000)


# --- events (server -> client) ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Metadata:
    """``conversation_initiation_metadata``: the conversation id and the negotiated formats."""

    conversation_id: str
    input_format: AudioFormat
    output_format: AudioFormat


@dataclass(frozen=True, slots=True)
class AgentAudio:
    """Decoded agent audio; ``event_id`` is None only for the legacy ``audio.chunk`` shape."""

    audio: bytes
    event_id: int | None


@dataclass(frozen=True, slots=True)
class AgentResponse:
    text: str
    event_id: int | None


@dataclass(frozen=True, slots=True)
class AgentResponseCorrection:
    original: str
    corrected: str
    event_id: int | None


@dataclass(frozen=True, slots=True)
class UserTranscript:
    text: str
    event_id: int | None


@dataclass(frozen=True, slots=True)
class TentativeUserTranscript:
    text: str
    event_id: int | None


@dataclass(frozen=True, slots=True)
class Interruption:
    """Barge-in: flush queued agent audio, then drop audio with ``event_id`` < this one."""

    event_id: int | None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class VadScore:
    score: float


@dataclass(frozen=True, slots=True)
class Ping:
    """A server ping; the matching pong is already queued when this event is seen."""

    event_id: int
    ping_ms: int | None


@dataclass(frozen=True, slots=True)
class ClientToolCall:
    tool_name: str
    tool_call_id: str
    parameters: Mapping[str, Any]
    event_id: int | None


@dataclass(frozen=True, slots=True)
class AgentToolRequest:
    tool_name: str
    tool_call_id: str
    tool_type: str
    event_id: int | None


@dataclass(frozen=True, slots=True)
class AgentToolResponse:
    tool_name: str
    tool_call_id: str
    tool_type: str
    is_error: bool
    event_id: int | None

    @property
    def is_end_call(self) -> bool:
        """True when the agent invoked the ``end_call`` system tool (a close 1000 follows)."""
        return self.tool_name == "end_call"


@dataclass(frozen=True, slots=True)
class ServerError:
    """``error``: sent right before the server closes; ``code`` is that close code."""

    code: int | None
    error_type: str
    message: str
    reason: str


@dataclass(frozen=True, slots=True)
class Unknown:
    """A well-formed message of a type this module does not model."""

    type: str
    payload: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """An unusable frame; ``message_type`` is its ``type`` when that much was readable."""

    description: str
    raw: str
    message_type: str | None = None


Event = Union[
    Metadata,
    AgentAudio,
    AgentResponse,
    AgentResponseCorrection,
    UserTranscript,
    TentativeUserTranscript,
    Interruption,
    VadScore,
    Ping,
    ClientToolCall,
    AgentToolRequest,
    AgentToolResponse,
    ServerError,
    Unknown,
    ProtocolError,
]


class _Malformed(Exception):
    """Internal: a field had the wrong type or an undecodable value."""


# --- field readers: missing -> default, wrong type -> _Malformed --------------


def _section(msg: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = msg.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Malformed(f"{key} is not an object")
    return value


def _str(obj: Mapping[str, Any], key: str, default: str = "") -> str:
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise _Malformed(f"{key} is not a string")
    return value


def _opt_str(obj: Mapping[str, Any], key: str) -> str | None:
    return _str(obj, key) if obj.get(key) is not None else None


def _int(obj: Mapping[str, Any], key: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Malformed(f"{key} is not an integer")
    return value


def _number(obj: Mapping[str, Any], key: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Malformed(f"{key} is not a number")
    return value


def _bool(obj: Mapping[str, Any], key: str) -> bool:
    value = obj.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _Malformed(f"{key} is not a boolean")
    return value


def _b64(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _Malformed(f"audio is not valid base64 ({exc})") from None


def _format(obj: Mapping[str, Any], key: str) -> AudioFormat:
    name = _str(obj, key)
    if not name:
        return DEFAULT_FORMAT
    try:
        return AudioFormat.parse(name)
    except ValueError as exc:
        raise _Malformed(str(exc)) from None


# --- per-type parsers ----------------------------------------------------------


def _metadata(msg: Mapping[str, Any]) -> Metadata:
    ev = _section(msg, "conversation_initiation_metadata_event")
    return Metadata(
        conversation_id=_str(ev, "conversation_id"),
        input_format=_format(ev, "user_input_audio_format"),
        output_format=_format(ev, "agent_output_audio_format"),
    )


def _audio(msg: Mapping[str, Any]) -> AgentAudio:
    if "audio_event" in msg or "audio" not in msg:
        ev = _section(msg, "audio_event")
        return AgentAudio(_b64(_str(ev, "audio_base_64")), _int(ev, "event_id"))
    legacy = _section(msg, "audio")  # {"type":"audio","audio":{"chunk":...}}
    return AgentAudio(_b64(_str(legacy, "chunk")), None)


def _agent_response(msg: Mapping[str, Any]) -> AgentResponse:
    ev = _section(msg, "agent_response_event")
    return AgentResponse(_str(ev, "agent_response"), _int(ev, "event_id"))


def _correction(msg: Mapping[str, Any]) -> AgentResponseCorrection:
    ev = _section(msg, "agent_response_correction_event")
    return AgentResponseCorrection(
        _str(ev, "original_agent_response"),
        _str(ev, "corrected_agent_response"),
        _int(ev, "event_id"),
    )


def _user_transcript(msg: Mapping[str, Any]) -> UserTranscript:
    ev = _section(msg, "user_transcription_event")
    return UserTranscript(_str(ev, "user_transcript"), _int(ev, "event_id"))


def _tentative(msg: Mapping[str, Any]) -> TentativeUserTranscript:
    ev = _section(msg, "tentative_user_transcription_event")
    return TentativeUserTranscript(_str(ev, "user_transcript"), _int(ev, "event_id"))


def _interruption(msg: Mapping[str, Any]) -> Interruption:
    ev = _section(msg, "interruption_event")
    return Interruption(_int(ev, "event_id"), _opt_str(ev, "reason"))


def _vad(msg: Mapping[str, Any]) -> VadScore:
    score = _number(_section(msg, "vad_score_event"), "vad_score")
    if score is None:
        raise _Malformed("vad_score missing")
    return VadScore(float(score))


def _ping(msg: Mapping[str, Any]) -> Ping:
    ev = _section(msg, "ping_event")
    event_id = _int(ev, "event_id")
    if event_id is None:
        raise _Malformed("ping without event_id")
    ping_ms = _number(ev, "ping_ms")
    return Ping(event_id, None if ping_ms is None else round(ping_ms))


def _client_tool_call(msg: Mapping[str, Any]) -> ClientToolCall:
    ev = _section(msg, "client_tool_call")
    tool_call_id = _str(ev, "tool_call_id")
    if not tool_call_id:
        raise _Malformed("client_tool_call without tool_call_id")
    return ClientToolCall(
        _str(ev, "tool_name"), tool_call_id, _section(ev, "parameters"), _int(ev, "event_id")
    )


def _agent_tool_request(msg: Mapping[str, Any]) -> AgentToolRequest:
    ev = _section(msg, "agent_tool_request")
    return AgentToolRequest(
        _str(ev, "tool_name"), _str(ev, "tool_call_id"), _str(ev, "tool_type"), _int(ev, "event_id")
    )


def _agent_tool_response(msg: Mapping[str, Any], key: str) -> AgentToolResponse:
    ev = _section(msg, key)
    return AgentToolResponse(
        _str(ev, "tool_name"),
        _str(ev, "tool_call_id"),
        _str(ev, "tool_type"),
        _bool(ev, "is_error"),
        _int(ev, "event_id"),
    )


def _error(msg: Mapping[str, Any]) -> ServerError:
    ev = _section(msg, "error_event")
    return ServerError(
        _int(ev, "code"), _str(ev, "error_type"), _str(ev, "message"), _str(ev, "reason")
    )


_PARSERS: dict[str, Callable[[Mapping[str, Any]], Event]] = {
    _METADATA: _metadata,
    "audio": _audio,
    "agent_response": _agent_response,
    "agent_response_correction": _correction,
    "user_transcript": _user_transcript,
    "tentative_user_transcript": _tentative,
    "interruption": _interruption,
    "vad_score": _vad,
    "ping": _ping,
    "client_tool_call": _client_tool_call,
    "agent_tool_request": _agent_tool_request,
    "agent_tool_response": lambda m: _agent_tool_response(m, "agent_tool_response"),
    "agent_tool_response_full_payload": lambda m: _agent_tool_response(
        m, "agent_tool_response_full_payload"
    ),
    "error": _error,
}


def _dumps(obj: Mapping[str, Any]) -> str:
    return orjson.dumps(obj).decode()


class ConvaiProtocol:
    """Client side of one ConvAI conversation, without I/O.

    Not thread-safe: drive it from one thread (the asyncio thread).
    After every ``receive_*`` call the caller must send ``messages_to_send()``
    (it may hold a pong) and should handle ``events_received()``.
    """

    def __init__(self) -> None:
        self._events: list[Event] = []
        self._outbox: list[str] = []
        self.errors = 0
        self.metadata: Metadata | None = None

    # --- inputs ---------------------------------------------------------------

    def receive_text(self, text: str) -> None:
        """Parse one text frame from the server; queue a pong when it is a ping."""
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
        parser = _PARSERS.get(kind)
        if parser is None:
            self._events.append(Unknown(kind, msg))
            return
        try:
            event = parser(msg)
        except _Malformed as exc:
            self._protocol_error(f"{kind}: {exc}", text, kind)
            return
        if isinstance(event, Metadata):
            if self.metadata is not None:
                self._protocol_error("duplicate conversation_initiation_metadata", text, kind)
                return
            self.metadata = event
        elif isinstance(event, Ping):
            self.pong(event.event_id)
        self._events.append(event)

    def receive_bytes(self, data: bytes) -> None:
        """Binary frames are not part of the protocol: report a ProtocolError."""
        self._protocol_error(f"unexpected binary frame ({len(data)} bytes)", data[:32].hex())

    # --- outputs --------------------------------------------------------------

    def events_received(self) -> list[Event]:
        """Return and clear the events parsed since the last call."""
        events, self._events = self._events, []
        return events

    def messages_to_send(self) -> list[str]:
        """Return and clear the JSON text frames to send, in order."""
        messages, self._outbox = self._outbox, []
        return messages

    # --- client messages ------------------------------------------------------

    def init_data(
        self,
        dynamic_variables: Mapping[str, Any] | None = None,
        overrides: Mapping[str, Any] | None = None,
        user_id: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> None:
        """Queue ``conversation_initiation_client_data``; empty parts are omitted."""
        msg: dict[str, Any] = {"type": "conversation_initiation_client_data"}
        if overrides:
            msg["conversation_config_override"] = overrides
        if extra_body:
            msg["custom_llm_extra_body"] = extra_body
        if dynamic_variables:
            msg["dynamic_variables"] = dynamic_variables
        if user_id is not None:
            msg["user_id"] = user_id
        self._outbox.append(_dumps(msg))

    def user_audio(self, audio: bytes) -> None:
        """Queue one ``user_audio_chunk`` (audio already in the agent's input format)."""
        self._outbox.append(
            '{"user_audio_chunk":"' + base64.b64encode(audio).decode("ascii") + '"}'
        )

    def pong(self, event_id: int) -> None:
        self._outbox.append(_dumps({"type": "pong", "event_id": event_id}))

    def client_tool_result(self, tool_call_id: str, result: str, is_error: bool) -> None:
        self._outbox.append(
            _dumps(
                {
                    "type": "client_tool_result",
                    "tool_call_id": tool_call_id,
                    "result": result,
                    "is_error": is_error,
                }
            )
        )

    def contextual_update(self, text: str, context_id: str | None = None) -> None:
        msg: dict[str, Any] = {"type": "contextual_update", "text": text}
        if context_id is not None:
            msg["context_id"] = context_id
        self._outbox.append(_dumps(msg))

    def user_message(self, text: str) -> None:
        self._outbox.append(_dumps({"type": "user_message", "text": text}))

    def user_activity(self) -> None:
        self._outbox.append('{"type":"user_activity"}')

    # --- internals ------------------------------------------------------------

    def _protocol_error(self, description: str, raw: str, message_type: str | None = None) -> None:
        self.errors += 1
        self._events.append(ProtocolError(description, raw[:_RAW_EXCERPT], message_type))
