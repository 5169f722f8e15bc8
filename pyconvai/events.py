"""What a :class:`~pyconvai.session.Session` tells its listener, in order.

Emitted on the asyncio thread; the listener (``Call``) applies them there, in
the order they come: agent audio and interruptions go to the call's downlink,
the rest to the channel thread, AMI and the statistics. The last event of a
session is always its :class:`~pyconvai.outcome.SessionEnded`. Frozen values,
no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .outcome import EndStatus, SessionEnded
from .protocol import AudioFormat, VadScore

__all__ = [
    "AgentAudioReceived",
    "AgentCorrection",
    "CallerAudioSent",
    "ClientToolCalled",
    "ConversationStarted",
    "EndStatus",
    "FormatsNegotiated",
    "InterruptionReceived",
    "SessionEnded",
    "ToolCall",
    "Transcript",
    "VadScore",
]


@dataclass(frozen=True, slots=True)
class FormatsNegotiated:
    """The agent's formats, from conversation_initiation_metadata (before any of its audio)."""

    input_format: AudioFormat
    output_format: AudioFormat


@dataclass(frozen=True, slots=True)
class ConversationStarted:
    conversation_id: str


@dataclass(frozen=True, slots=True)
class AgentAudioReceived:
    """Agent audio to play, in the output format; ``received_at``: time.monotonic()."""

    audio: bytes
    event_id: int | None
    received_at: float


@dataclass(frozen=True, slots=True)
class InterruptionReceived:
    """The caller barged in: play nothing older than ``event_id`` (None: flush only)."""

    event_id: int | None
    received_at: float


@dataclass(frozen=True, slots=True)
class Transcript:
    role: Literal["user", "agent"]
    text: str
    final: bool
    event_id: int | None


@dataclass(frozen=True, slots=True)
class AgentCorrection:
    """What the agent actually said before it was interrupted."""

    original: str
    corrected: str
    event_id: int | None


@dataclass(frozen=True, slots=True)
class CallerAudioSent:
    """A caller audio chunk went to the socket.

    ``stream_end``: bytes of caller audio fed to the session up to the end of
    this chunk (feed_caller_audio's running total); ``sent_at``: time.monotonic().
    """

    stream_end: int
    sent_at: float


@dataclass(frozen=True, slots=True)
class ClientToolCalled:
    """The agent called a client tool: the listener must answer it (Session.answer_client_tool)."""

    name: str
    tool_call_id: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A client tool call (answered with an error) or an agent tool result (``end_call``...)."""

    name: str
    tool_call_id: str
    source: Literal["client", "agent"]
    parameters: Mapping[str, Any]
    is_error: bool
