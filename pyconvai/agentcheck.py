"""What an agent's settings at ElevenLabs mean for this module: ``elevenlabs check agent``.

Pure, no I/O: :func:`checklist` reads the agent as ``GET /v1/convai/agents/{agent_id}``
returns it (protocol notes §11) beside the agent's elevenlabs.conf settings, and says,
line by line, what a caller would otherwise find out: audio formats, authentication
against the key, overrides, client tools and the client events the module relies on.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .config import CallControl, override_path
from .protocol import FORMATS
from .wire import one_line

__all__ = ["Check", "Mark", "checklist", "render"]

#: Client events without which a call does not work (audio, barge-in, transcripts, keepalive).
REQUIRED_EVENTS = ("audio", "interruption", "agent_response", "ping")
#: Client events a feature needs: the tools, end_call (agent_tool_response), caller transcripts.
FEATURE_EVENTS = {"client_tool_call": "client tools (transfer, keypad, client_tool)",
                  "agent_tool_response": "end_call and voicemail_detection",
                  "user_transcript": "the caller's transcripts (ElevenLabsTranscript)"}


class Mark(enum.Enum):
    OK = "✓"
    WARN = "⚠"
    FAIL = "✗"


@dataclass(frozen=True)
class Check:
    mark: Mark
    line: str


def _get(tree: object, *path: str) -> Any:
    for key in path:
        if not isinstance(tree, Mapping):
            return None
        tree = tree.get(key)
    return tree


def _format_check(what: str, name: object) -> Check:
    if name == "ulaw_8000":
        return Check(Mark.OK, f"{what} audio format ulaw_8000: a μ-law caller needs no resampling")
    if name == "pcm_22050":
        return Check(Mark.FAIL, f"{what} audio format pcm_22050: Asterisk has no 22.05 kHz signed linear, "
                                "every call fails (choose ulaw_8000 or pcm_16000)")
    if name in FORMATS:
        return Check(Mark.WARN, f"{what} audio format {name}: works, resampled for an 8 kHz caller "
                                "(ulaw_8000 suits G.711 trunks; pcm_16000 suits G.722 and Opus callers)")
    return Check(Mark.FAIL, f"{what} audio format {name!r}: the module cannot use it "
                            f"(one of {', '.join(f for f in FORMATS if f != 'pcm_22050')})")


def _tools_check(agent: Mapping[str, Any], control: CallControl) -> list[Check]:
    wanted: dict[str, str] = {}
    if control.transfer_enabled:
        wanted[control.transfer_tool] = "transfer_tool"
    wanted[control.dtmf_tool] = "dtmf_tool"
    for name in sorted(control.dialplan_tools):
        wanted[name] = "client_tool"
    tools = _get(agent, "conversation_config", "agent", "prompt", "tools")
    client = {t.get("name") for t in tools if isinstance(t, Mapping) and t.get("type") == "client"} \
        if isinstance(tools, list) else set()
    system = {t.get("name") for t in tools if isinstance(t, Mapping) and t.get("type") == "system"} \
        if isinstance(tools, list) else set()
    checks = []
    for name, key in wanted.items():
        if name in client:
            checks.append(Check(Mark.OK, f"client tool {name} ({key}) is defined"))
        elif key == "dtmf_tool" and name in system:
            checks.append(Check(Mark.WARN, f"{name} ({key}) is a system tool: over a WebSocket the agent's keys "
                                           "are only sent if it is a client tool of that name"))
        elif key == "dtmf_tool":
            checks.append(Check(Mark.WARN, f"no client tool {name} ({key}): the agent cannot press keys"))
        else:
            checks.append(Check(Mark.FAIL, f"no client tool {name} ({key}): add it in the agent's tools "
                                           "(type client, \"Wait for response\" on)"))
    if control.tools_via_ami:
        others = sorted(client - set(wanted))
        checks.append(Check(Mark.OK, "client tools answered over AMI: "
                                     + (", ".join(others) if others else "none defined besides the above")))
    return checks


def checklist(agent: Mapping[str, Any], *, api_key: bool, allowed_overrides: Sequence[str],
              control: CallControl) -> list[Check]:
    """The checklist of one agent (``agent`` as the API returned it), in display order."""
    checks = [
        _format_check("input", _get(agent, "conversation_config", "asr", "user_input_audio_format")),
        _format_check("output", _get(agent, "conversation_config", "tts", "agent_output_audio_format")),
    ]
    auth = _get(agent, "platform_settings", "auth", "enable_auth")
    if auth and api_key:
        checks.append(Check(Mark.OK, "authentication on, and a key is configured"))
    elif auth:
        checks.append(Check(Mark.FAIL, "authentication on, but no key is configured: every call fails "
                                       "(set elevenlabs_api_key or elevenlabs_api_key_file)"))
    elif api_key:
        checks.append(Check(Mark.WARN, "authentication off: anyone with the agent id can talk to it "
                                       "(the key is used anyway; turn it on in the agent's security settings)"))
    else:
        checks.append(Check(Mark.OK, "public agent (authentication off, no key configured)"))

    allowed = _get(agent, "platform_settings", "overrides", "conversation_config_override")
    for name in allowed_overrides:
        if _get(allowed, *override_path(name)) is True:
            checks.append(Check(Mark.OK, f"override {name} is enabled"))
        else:
            checks.append(Check(Mark.FAIL, f"override {name} is in allow_overrides but not enabled in the agent's "
                                           "security settings: the server refuses the call (1008)"))

    checks += _tools_check(agent, control)

    events = _get(agent, "conversation_config", "conversation", "client_events")
    events = set(events) if isinstance(events, list) else set()
    missing = [e for e in REQUIRED_EVENTS if e not in events]
    if missing:
        checks.append(Check(Mark.FAIL, f"client events missing: {', '.join(missing)} (the agent's advanced settings)"))
    else:
        checks.append(Check(Mark.OK, f"client events {', '.join(REQUIRED_EVENTS)} are enabled"))
    for event, feature in FEATURE_EVENTS.items():
        if event not in events:
            checks.append(Check(Mark.WARN, f"client event {event} is off: no {feature}"))
    return checks


def render(name: str, checks: Sequence[Check]) -> str:
    """The CLI text of one agent's checklist."""
    failed = sum(c.mark is Mark.FAIL for c in checks)
    warned = sum(c.mark is Mark.WARN for c in checks)
    lines = [f"Agent {name}:"] + [f"  {c.mark.value} {one_line(c.line, 300)}" for c in checks]
    lines.append(f"  {failed} problem(s), {warned} warning(s)")
    return "\n".join(lines) + "\n"
