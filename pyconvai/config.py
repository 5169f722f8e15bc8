"""Per-call settings: from the module's strings to typed, validated settings.

The module parses elevenlabs.conf with Asterisk's config framework, evaluates
the dialplan expressions on the channel's thread, and hands each call a flat
``dict[str, str]`` (convai_call_settings() in csrc/app_elevenlabs_convai.c):

- plain keys: ``agent``, ``agent_id``, ``api_key``, ``signed_url_endpoint``,
  ``buffer_ms``, ``max_connection_attempts``, ``connection_timeout_seconds``,
  ``debug``, ``user_id``, ``max_call_duration_seconds``,
  ``max_call_duration_message``, ``channel``, ``uniqueid``;
- ``var:<name>``: a dynamic variable (already evaluated);
- ``override:<field>``: an override the agent allows (first_message, prompt,
  language, voice_id);
- ``provider`` (elevenlabs, websocket, openai_realtime) and the keys of the
  other providers: ``websocket_url``, ``websocket_auth_token``, ``voice``,
  ``language``, ``system_prompt``, ``initial_message``, ``vad_enabled``,
  ``vad_threshold``, ``vad_silence_duration_ms``; ``openai_api_key``,
  ``openai_model``, ``openai_voice``, ``instructions``, ``openai_url``.

This is the one place that reads it. The defaults and ranges mirror
elevenlabs.conf's (``convai_agent_ranges`` in csrc/convai_config.c), which
has already checked every value; ``SessionSettings`` checks again for
callers that are not the module (tests, tools). Pure, any thread.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_SIGNED_URL_ENDPOINT = "https://api.elevenlabs.io/v1/convai/conversation/get-signed-url"

DEFAULT_GOODBYE_MESSAGE = (
    "The maximum duration of this call has been reached. Tell the caller briefly and say goodbye."
)

@dataclass(frozen=True)
class Range:
    """A numeric option of elevenlabs.conf: the module's key for it, its default and limits."""

    conf_name: str
    default: int
    min: int
    max: int

    def check(self, key: str, value: float) -> None:
        if not self.min <= value <= self.max:
            raise ValueError(f"{key} must be {self.min}..{self.max}, got {value:g}")


#: Mirror of convai_agent_ranges (csrc/convai_config.c); tests/unit/test_config.py compares them.
RANGES = {
    "buffer_ms": Range("elevenlabs_audio_frames_buffer_ms", 240, 20, 1000),
    "max_connection_attempts": Range("max_connection_attempts", 3, 1, 10),
    "connection_timeout_seconds": Range("connection_timeout_seconds", 10, 1, 60),
    "max_call_duration_seconds": Range("max_call_duration_seconds", 0, 0, 86400),
    "dtmf_timeout_ms": Range("dtmf_timeout_ms", 2000, 200, 10000),
    "client_tool_timeout_seconds": Range("client_tool_timeout_seconds", 10, 1, 120),
    "vad_silence_duration_ms": Range("vad_silence_duration_ms", 500, 100, 5000),
}

PROVIDERS = ("elevenlabs", "websocket", "openai_realtime")
DEFAULT_OPENAI_URL = "wss://api.openai.com/v1/realtime"
DEFAULT_OPENAI_MODEL = "gpt-realtime"
DEFAULT_OPENAI_VOICE = "marin"
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")


@dataclass(frozen=True)
class Listening:
    """Turn detection the server does for the other providers (vad_* keys)."""

    enabled: bool = True
    threshold: float = 0.5
    silence_duration_ms: int = RANGES["vad_silence_duration_ms"].default


@dataclass(frozen=True)
class BridgeAgent:
    """``provider = websocket``: any AI server speaking the generic bridge protocol."""

    url: str
    auth_token: str | None = field(default=None, repr=False)
    voice: str = ""
    language: str = ""
    system_prompt: str = ""
    initial_message: str = ""
    listening: Listening = field(default_factory=Listening)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.auth_token}"} if self.auth_token else {}

    @property
    def socket_url(self) -> str:
        return self.url


@dataclass(frozen=True)
class RealtimeAgent:
    """``provider = openai_realtime``: OpenAI's Realtime API."""

    api_key: str = field(repr=False)
    url: str = DEFAULT_OPENAI_URL
    model: str = DEFAULT_OPENAI_MODEL
    voice: str = DEFAULT_OPENAI_VOICE
    instructions: str = ""
    initial_message: str = ""
    language: str = ""
    listening: Listening = field(default_factory=Listening)
    tools: tuple[Mapping[str, Any], ...] = ()  # function declarations for session.update

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    @property
    def socket_url(self) -> str:
        joiner = "&" if "?" in self.url else "?"
        return f"{self.url}{joiner}model={self.model}"

# Where each override goes in conversation_config_override.
_OVERRIDE_PATHS = {
    "first_message": ("agent", "first_message"),
    "prompt": ("agent", "prompt", "prompt"),
    "language": ("agent", "language"),
    "voice_id": ("tts", "voice_id"),
}


def override_path(name: str) -> tuple[str, ...]:
    """Where the override ``name`` (first_message, prompt, language, voice_id) goes in
    conversation_config_override, and where an agent enables it."""
    return _OVERRIDE_PATHS[name]


def allowed_overrides(settings: Mapping[str, str]) -> list[str]:
    """The agent's allow_overrides (the module sends ``allowed:<name>`` keys)."""
    return [key.removeprefix("allowed:") for key in settings if key.startswith("allowed:")]


@dataclass(frozen=True)
class SessionSettings:
    """Per-call settings; validated on construction (ValueError)."""

    agent_name: str
    agent_id: str
    api_key: str | None = field(default=None, repr=False)
    signed_url_endpoint: str = DEFAULT_SIGNED_URL_ENDPOINT
    buffer_ms: int = RANGES["buffer_ms"].default
    max_connection_attempts: int = RANGES["max_connection_attempts"].default
    connection_timeout_seconds: float = float(RANGES["connection_timeout_seconds"].default)
    dynamic_variables: Mapping[str, Any] = field(default_factory=dict)
    overrides: Mapping[str, Any] = field(default_factory=dict)  # conversation_config_override
    user_id: str | None = None
    ssl_context: ssl.SSLContext | None = None
    debug: bool = False
    provider: str = "elevenlabs"
    bridge: BridgeAgent | None = None  # provider = websocket
    realtime: RealtimeAgent | None = None  # provider = openai_realtime

    @property
    def direct(self) -> BridgeAgent | RealtimeAgent | None:
        """The agent of a provider whose socket is opened directly (``socket_url`` with
        ``headers``); None for ElevenLabs (a signed URL)."""
        return self.bridge or self.realtime

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise ValueError(f"provider must be one of {', '.join(PROVIDERS)}")
        if self.provider == "elevenlabs" and not self.agent_id:
            raise ValueError("agent_id is required")
        if self.provider == "websocket" and (self.bridge is None or not _is_ws(self.bridge.url)):
            raise ValueError("websocket_url must be a ws:// or wss:// URL")
        if self.provider == "openai_realtime" and (self.realtime is None or not self.realtime.api_key):
            raise ValueError("openai_api_key is required")
        RANGES["buffer_ms"].check("buffer_ms", self.buffer_ms)
        RANGES["max_connection_attempts"].check("max_connection_attempts", self.max_connection_attempts)
        if not self.connection_timeout_seconds > 0:  # fractions are fine for tests and tools
            raise ValueError("connection_timeout_seconds must be positive")
        if not self.signed_url_endpoint.startswith(("https://", "http://")):
            raise ValueError("signed_url_endpoint must be an http(s) URL")
        ctx = self.ssl_context
        if ctx is not None and (ctx.verify_mode != ssl.CERT_REQUIRED or not ctx.check_hostname):
            raise ValueError("ssl_context must verify certificates and host names")


class SettingsError(ValueError):
    """A per-call setting the module passed is unusable (names the key)."""


@dataclass(frozen=True)
class CallLimits:
    """What the call bridge enforces on top of the session."""

    max_duration_seconds: int = 0  # 0: no limit
    goodbye_message: str = DEFAULT_GOODBYE_MESSAGE


def _int(settings: Mapping[str, str], key: str) -> int:
    """A numeric setting; its elevenlabs.conf default when the module did not pass it."""
    raw = settings.get(key, "")
    if raw == "":
        return RANGES[key].default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{key} = {raw!r} is not a whole number") from None


def connection_timeout(settings: Mapping[str, str]) -> float:
    """connection_timeout_seconds of these settings; its default when unusable (whoever builds the
    session from them reports why)."""
    try:
        return float(_int(settings, "connection_timeout_seconds"))
    except SettingsError:
        return float(RANGES["connection_timeout_seconds"].default)


def _flag(settings: Mapping[str, str], key: str) -> bool:
    return settings.get(key, "0") not in ("", "0", "no", "false")


def overrides(settings: Mapping[str, str]) -> dict[str, Any]:
    """conversation_config_override built from the ``override:<field>`` keys."""
    result: dict[str, Any] = {}
    for key, value in settings.items():
        if not key.startswith("override:"):
            continue
        field = key.removeprefix("override:")
        path = _OVERRIDE_PATHS.get(field)
        if path is None:
            raise SettingsError(f"unknown override {field!r}")
        node = result
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return result


def _is_ws(url: str) -> bool:
    return url.startswith(("ws://", "wss://"))


def _filled(text: str, variables: Mapping[str, Any]) -> str:
    """``text`` with ``{{name}}`` replaced by the dynamic variable ``name`` (as ElevenLabs
    does on its side); an unknown name stays as written."""
    return _PLACEHOLDER.sub(lambda m: str(variables.get(m.group(1), m.group(0))), text)


def _listening(settings: Mapping[str, str]) -> Listening:
    raw = settings.get("vad_threshold") or "0.5"
    try:
        threshold = float(raw)
    except ValueError:
        raise SettingsError(f"vad_threshold = {raw!r} is not a number") from None
    if not 0.0 <= threshold <= 1.0:
        raise SettingsError(f"vad_threshold must be 0.0..1.0, got {raw}")
    return Listening(_flag(settings, "vad_enabled") if "vad_enabled" in settings else True, threshold,
                     _int(settings, "vad_silence_duration_ms"))


def _tool(name: str, description: str, properties: Mapping[str, Any] | None = None) -> dict[str, Any]:
    parameters: dict[str, Any] = {"type": "object", "properties": dict(properties or {})}
    if properties:
        parameters["required"] = list(properties)
    else:
        parameters["additionalProperties"] = {"type": "string"}
    return {"type": "function", "name": name, "description": description, "parameters": parameters}


def realtime_tools(control: CallControl) -> tuple[dict[str, Any], ...]:
    """The client tools this agent can carry out, declared to OpenAI (which calls only
    declared functions): the transfer, the keypad and each dialplan tool."""
    tools = []
    if control.transfer_enabled:
        tools.append(_tool(control.transfer_tool, "Transfer the caller to a person or another extension.",
                           {"destination": {"type": "string", "description": "the extension to transfer to"}}))
    tools.append(_tool(control.dtmf_tool, "Press keys on the phone line (touch tones), e.g. in a menu.",
                       {"dtmf_tones": {"type": "string", "description": "digits 0-9, * and #, w for a pause"}}))
    for name in sorted(control.dialplan_tools):
        tools.append(_tool(name, f"Run {name} in the phone system; parameters are strings."))
    return tuple(tools)


def _provider_agents(settings: Mapping[str, str], variables: Mapping[str, Any]) -> dict[str, Any]:
    """The provider and its agent settings (SessionSettings' provider, bridge, realtime)."""
    provider = settings.get("provider") or "elevenlabs"  # SessionSettings refuses an unknown one
    if provider == "websocket":
        return {"provider": provider, "bridge": BridgeAgent(
            url=settings.get("websocket_url", ""),
            auth_token=settings.get("websocket_auth_token") or None,
            voice=settings.get("voice", ""),
            language=settings.get("language", ""),
            system_prompt=_filled(settings.get("system_prompt", ""), variables),
            initial_message=_filled(settings.get("initial_message", ""), variables),
            listening=_listening(settings),
        )}
    if provider == "openai_realtime":
        return {"provider": provider, "realtime": RealtimeAgent(
            api_key=settings.get("openai_api_key", ""),
            url=settings.get("openai_url") or DEFAULT_OPENAI_URL,
            model=settings.get("openai_model") or DEFAULT_OPENAI_MODEL,
            voice=settings.get("openai_voice") or DEFAULT_OPENAI_VOICE,
            instructions=_filled(settings.get("instructions", ""), variables),
            initial_message=_filled(settings.get("initial_message", ""), variables),
            language=settings.get("language", ""),
            listening=_listening(settings),
            tools=realtime_tools(call_control(settings)),
        )}
    return {"provider": provider}


def session_settings(settings: Mapping[str, str]) -> SessionSettings:
    """Build the SessionSettings of one call; SettingsError on a bad value."""
    agent_id = settings.get("agent_id", "")
    provider = settings.get("provider") or "elevenlabs"
    if not agent_id and provider == "elevenlabs":
        raise SettingsError("agent_id is empty")
    dynamic_variables = {
        key.removeprefix("var:"): value for key, value in settings.items() if key.startswith("var:")
    }
    try:
        return SessionSettings(
            agent_name=settings.get("agent", agent_id),
            agent_id=agent_id or settings.get("agent", provider),
            api_key=settings.get("api_key") or None,
            signed_url_endpoint=settings.get("signed_url_endpoint") or DEFAULT_SIGNED_URL_ENDPOINT,
            buffer_ms=_int(settings, "buffer_ms"),
            max_connection_attempts=_int(settings, "max_connection_attempts"),
            connection_timeout_seconds=float(_int(settings, "connection_timeout_seconds")),
            dynamic_variables=dynamic_variables,
            overrides=overrides(settings),
            user_id=settings.get("user_id") or None,
            debug=_flag(settings, "debug"),
            **_provider_agents(settings, dynamic_variables),
        )
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


@dataclass(frozen=True)
class CallControl:
    """Transfers and keys (elevenlabs.conf's transfer_*, dtmf_*; the module checked the values)."""

    transfer_enabled: bool = False  # transfer_context is set (the module keeps the context)
    transfer_tool: str = "transfer_call"
    dtmf_tool: str = "play_keypad_touch_tone"
    dtmf_to_agent: str = "user_message"  # or contextual_update, no
    dtmf_timeout_seconds: float = RANGES["dtmf_timeout_ms"].default / 1000
    dialplan_tools: frozenset[str] = frozenset()  # client_tool lines (the module keeps their contexts)
    tools_via_ami: bool = False
    ami_tool_timeout_seconds: float = float(RANGES["client_tool_timeout_seconds"].default)


def call_control(settings: Mapping[str, str]) -> CallControl:
    defaults = CallControl()
    mode = settings.get("dtmf_to_agent") or defaults.dtmf_to_agent
    if mode not in ("user_message", "contextual_update", "no"):
        raise SettingsError(f"dtmf_to_agent = {mode!r} is not user_message, contextual_update or no")
    return CallControl(
        transfer_enabled=bool(settings.get("transfer_context")),
        transfer_tool=settings.get("transfer_tool") or defaults.transfer_tool,
        dtmf_tool=settings.get("dtmf_tool") or defaults.dtmf_tool,
        dtmf_to_agent=mode,
        dtmf_timeout_seconds=_int(settings, "dtmf_timeout_ms") / 1000,
        dialplan_tools=frozenset(key.removeprefix("tool:") for key in settings if key.startswith("tool:")),
        tools_via_ami=_flag(settings, "client_tools_via_ami"),
        ami_tool_timeout_seconds=float(_int(settings, "client_tool_timeout_seconds")),
    )


def call_limits(settings: Mapping[str, str]) -> CallLimits:
    return CallLimits(
        max_duration_seconds=_int(settings, "max_call_duration_seconds"),
        goodbye_message=settings.get("max_call_duration_message") or DEFAULT_GOODBYE_MESSAGE,
    )
