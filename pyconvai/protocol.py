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

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Union

import orjson

from .jsoncore import JsonCore
from .jsoncore import Malformed as _Malformed
from .jsoncore import b64 as _b64
from .jsoncore import b64_text as _b64_text
from .jsoncore import boolean as _bool
from .jsoncore import integer as _int
from .jsoncore import number as _number
from .jsoncore import opt_string as _opt_str
from .jsoncore import section as _section
from .jsoncore import string as _str

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
    fatal: bool = False  # other providers: the server says the conversation cannot go on


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


class ConvaiProtocol(JsonCore):
    """Client side of one ConvAI conversation, without I/O.

    Not thread-safe: drive it from one thread (the asyncio thread).
    After every ``receive_*`` call the caller must send ``messages_to_send()``
    (it may hold a pong) and should handle ``events_received()``.
    """

    #: The message that starts the conversation (a provider core's ``Metadata``).
    START_TYPES = frozenset({_METADATA})

    def __init__(
        self,
        dynamic_variables: Mapping[str, Any] | None = None,
        overrides: Mapping[str, Any] | None = None,
        user_id: str | None = None,
    ) -> None:
        super().__init__(ProtocolError)
        self._opening = {"dynamic_variables": dynamic_variables, "overrides": overrides, "user_id": user_id}
        self.metadata: Metadata | None = None

    def begin(self) -> None:
        """The socket is open: queue what opens the conversation (the client data)."""
        self.init_data(**self._opening)

    def interrupted(self, event_id: int | None, heard_bytes: int) -> None:
        """The downlink was flushed at a barge-in. Nothing to say: ElevenLabs tracks it itself."""

    # --- inputs ---------------------------------------------------------------

    def _parse(self, kind: str, msg: Mapping[str, Any], text: str) -> None:
        parser = _PARSERS.get(kind)
        if parser is None:
            self._events.append(Unknown(kind, msg))
            return
        event = parser(msg)
        if isinstance(event, Metadata):
            if self.metadata is not None:
                self._protocol_error("duplicate conversation_initiation_metadata", text, kind)
                return
            self.metadata = event
        elif isinstance(event, Ping):
            self.pong(event.event_id)
        self._events.append(event)

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
            '{"user_audio_chunk":"' + _b64_text(audio) + '"}'
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
