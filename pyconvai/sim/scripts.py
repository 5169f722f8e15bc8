"""Agent scripts: what a simulated agent says and does, and the named presets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from . import audio

CHUNK_PATTERN_MS: tuple[int, ...] = (20, 60, 100, 250, 40, 500, 120, 1000)
"""Default durations of consecutive agent audio chunks (cycled), a few of them large."""

CLOSE_ERROR_TYPES: Mapping[int, str] = {1002: "llm_error", 1008: "invalid_message", 1011: "unknown"}
"""``error_type`` sent before a scripted close, by close code, unless the script names one."""


DEFAULT_CLIENT_EVENTS: tuple[str, ...] = (
    "audio", "interruption", "agent_response", "user_transcript", "tentative_user_transcript",
    "conversation_initiation_metadata", "ping", "client_tool_call", "agent_tool_response")
"""An agent's client events: ElevenLabs' defaults plus the two the module's tools need."""


@dataclass(frozen=True)
class AgentScript:
    """Behaviour of one simulated agent.

    Times are seconds, audio lengths milliseconds. Timers (``close_after_s``,
    ``drop_tcp_after_s``, ``max_duration_s``, ``transport_receive_timeout_s``)
    start when the metadata is sent; ``None`` disables them.
    """

    output_format: str = "pcm_16000"
    input_format: str = "pcm_16000"

    greeting_text: str = "Hello! This is the ElevenLabs simulator. How can I help you today?"
    greeting_ms: int = 3000
    """0 = no greeting (the agent waits for the caller)."""
    greeting_tone_hz: float = 440.0
    reply_text: str = "Sure, I can help you with that."
    reply_texts: tuple[str, ...] = ()
    """Texts of the successive replies (the last one repeats); empty = ``reply_text`` for all."""
    reply_ms: int = 1500
    reply_tone_hz: float = 880.0
    reply_tones_hz: tuple[float, ...] = ()
    """Successive replies cycle through these tones (instead of ``reply_tone_hz``), so that
    on a recording where one reply ends and the next begins is told apart."""
    goodbye_text: str = "Thank you for calling. Goodbye!"
    goodbye_ms: int = 1000
    goodbye_tone_hz: float = 660.0
    tone_amplitude: int = 8000
    speech: bool = False
    """Speak the texts with ``espeak-ng`` when it is on PATH (tones otherwise)."""

    send_speed: float = 4.0
    """How much faster than real time agent audio is sent."""
    chunk_pattern_ms: tuple[int, ...] = CHUNK_PATTERN_MS
    odd_split: bool = False
    """Split PCM chunks at odd byte offsets (tests a client's carry-over byte)."""
    large_frame: bool = False
    """Make the first greeting chunk one message over 1 MiB (greeting padded with silence)."""

    ping_interval_s: float = 2.0
    """First ping right after the metadata (``ping_ms`` null), then every interval."""

    vad_threshold: float = 1000.0
    """Caller speech = PCM16 RMS above this in 20 ms frames ..."""
    vad_min_speech_ms: int = 60
    """... for at least this long (the onset) ..."""
    vad_silence_ms: int = 300
    """... and the utterance ends after this much quiet (the next onset is a new turn)."""
    vad_scores: bool = False
    """Send a ``vad_score`` for each received chunk (the agent's client_events opt-in)."""
    reply_after_utterance: bool = False
    """Reply when the caller's utterance ends instead of at its onset (a barge-in still
    interrupts at the onset), as a real agent takes turns."""
    late_stale_chunks: int = 3
    """Audio chunks of the interrupted response sent right after an interruption."""
    stale_tone_hz: float = 1200.0
    stale_chunk_ms: int = 100
    interruption_event_id: int | None = None
    """Send this id in every interruption instead of the new reply's (a faulty server)."""

    end_call_after_turns: int | None = None
    """Hang up (goodbye, end_call tool, close 1000) after this many replies; 0 = after the greeting."""
    end_tool_name: str = "end_call"
    """The system tool reported before that close (``voicemail_detection``: a voicemail reached)."""
    client_tool_name: str | None = None
    """Send a ``client_tool_call`` for this tool right after the greeting."""
    client_tool_parameters: Mapping[str, object] = field(default_factory=dict)
    client_tool_expects_response: bool = True
    more_client_tools: tuple[tuple[str, Mapping[str, object]], ...] = ()
    """(name, parameters) of more client tool calls sent right after the first (calls in flight at once)."""
    tool_result_reply_ms: int = 0
    """After a successful client tool result, say this much more (e.g. "putting you through")."""
    tool_result_reply_tone_hz: float = 550.0

    close_after_s: float | None = None
    close_code: int = 1000
    close_reason: str = ""
    close_error_type: str | None = None
    """Defaults by code from ``CLOSE_ERROR_TYPES``; no ``error`` event for 1000."""
    fatal_error_after_s: float | None = None
    """Send an error the client must end the call for (the bridge's ``fatal``) and wait for its close."""
    drop_tcp_after_s: float | None = None
    """Abort the TCP connection without a close frame."""
    transport_receive_timeout_s: float | None = None
    """No caller audio for this long → ``transport_receive_timeout`` error, close 1002."""
    max_duration_s: float | None = None
    """Conversation longer than this → ``max_duration_exceeded`` error, close 1000."""

    enabled_overrides: frozenset[str] = frozenset()
    """Dotted ``conversation_config_override`` paths the client may set (a prefix enables its
    subtree), plus ``custom_llm_extra_body``; anything else → ``override_error``, close 1008."""
    enable_auth: bool | None = None
    """What ``GET /v1/convai/agents/{id}`` says of authentication (None: whether the simulator
    requires signatures)."""
    client_events: tuple[str, ...] = DEFAULT_CLIENT_EVENTS
    """The agent's ``conversation.client_events``, as that endpoint reports them."""
    client_tools: tuple[str, ...] = ()
    """Names of the client tools the agent defines (that endpoint's ``prompt.tools``)."""
    system_tools: tuple[str, ...] = ("end_call",)

    signed_url_delay_s: float = 0.0
    """Delay before answering a signed-URL request for this agent."""
    signed_url_refusal: int | None = None
    """Refuse signed-URL requests for this agent with this HTTP status (an ElevenLabs
    ``detail`` body whose message carries ``hostile_text``)."""

    hostile_text: str = ""
    """Appended to every text field the agent sends (transcripts, conversation and tool
    ids, tool names and parameters, error messages, the close reason) but the message
    types, audio and audio formats: a server that tests the client's sanitising."""

    def __post_init__(self) -> None:
        audio.parse_format(self.output_format)
        audio.parse_format(self.input_format)
        if self.send_speed <= 0:
            raise ValueError("send_speed must be positive")
        if not self.chunk_pattern_ms or min(self.chunk_pattern_ms) <= 0:
            raise ValueError("chunk_pattern_ms needs positive durations")


PRESETS: Mapping[str, AgentScript] = {
    "greeting": AgentScript(),
    "bargein": AgentScript(greeting_ms=8000, reply_ms=3000),
    "end_call": AgentScript(end_call_after_turns=1),
    "hangup": AgentScript(end_call_after_turns=0),
    "close_1002": AgentScript(
        greeting_ms=8000, close_after_s=3.0, close_code=1002,
        close_error_type="llm_timeout", close_reason="LLM response timed out",
    ),
    "close_1008": AgentScript(
        close_after_s=3.0, close_code=1008, close_reason="Invalid message received",
    ),
    "close_1011": AgentScript(
        greeting_ms=8000, close_after_s=3.0, close_code=1011,
        close_reason="Unexpected error in websocket endpoint",
    ),
    "drop": AgentScript(greeting_ms=8000, drop_tcp_after_s=2.0),
    "slow_url": AgentScript(signed_url_delay_s=15.0),
    "big_frame": AgentScript(large_frame=True),
    "odd_chunks": AgentScript(odd_split=True),
    "tool": AgentScript(client_tool_name="lookup_caller", client_tool_parameters={"caller": "unknown"}),
    "idle_timeout": AgentScript(transport_receive_timeout_s=10.0),
    "max_duration": AgentScript(max_duration_s=20.0),
    "overrides": AgentScript(
        enabled_overrides=frozenset(
            {"agent.prompt.prompt", "agent.first_message", "agent.language", "tts.voice_id",
             "custom_llm_extra_body"}
        ),
    ),
}
"""Named scripts for ``python -m pyconvai.sim --agent ID=PRESET``."""
