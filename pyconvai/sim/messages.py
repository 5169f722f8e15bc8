"""Server → client messages of the ElevenLabs Agents WebSocket API, as dicts.

Shapes follow the protocol notes §5; every message has ``type`` and every
``event_id``/``ping_ms`` key is always present (the official Python SDK
indexes them directly).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping

FIXED_TEXT_KEYS = frozenset({"type", "audio_base_64", "agent_output_audio_format", "user_input_audio_format",
                             "audio", "data", "delta", "audio_format", "role", "speaker", "status", "arguments"})
"""String fields whose value a client must understand; ``with_text_appended`` leaves them."""


def with_text_appended(msg: object, suffix: str, key: str | None = None) -> object:
    """``msg`` with ``suffix`` appended to every string in it but ``FIXED_TEXT_KEYS``."""
    if isinstance(msg, dict):
        return {k: with_text_appended(v, suffix, k) for k, v in msg.items()}
    if isinstance(msg, list):
        return [with_text_appended(v, suffix, key) for v in msg]
    if isinstance(msg, str) and key not in FIXED_TEXT_KEYS:
        return msg + suffix
    return msg


def metadata(conversation_id: str, output_format: str, input_format: str) -> dict:
    return {
        "type": "conversation_initiation_metadata",
        "conversation_initiation_metadata_event": {
            "conversation_id": conversation_id,
            "agent_output_audio_format": output_format,
            "user_input_audio_format": input_format,
        },
    }


def ping(event_id: int, ping_ms: int | None) -> dict:
    return {"type": "ping", "ping_event": {"event_id": event_id, "ping_ms": ping_ms}}


def audio(event_id: int, data: bytes) -> dict:
    return {
        "type": "audio",
        "audio_event": {"audio_base_64": base64.b64encode(data).decode(), "event_id": event_id},
    }


def agent_response(event_id: int, text: str) -> dict:
    return {
        "type": "agent_response",
        "agent_response_event": {"agent_response": text, "event_id": event_id},
    }


def agent_response_correction(event_id: int, original: str, corrected: str) -> dict:
    return {
        "type": "agent_response_correction",
        "agent_response_correction_event": {
            "original_agent_response": original,
            "corrected_agent_response": corrected,
            "event_id": event_id,
        },
    }


def user_transcript(event_id: int, text: str) -> dict:
    return {
        "type": "user_transcript",
        "user_transcription_event": {"user_transcript": text, "event_id": event_id},
    }


def vad_score(score: float) -> dict:
    return {"type": "vad_score", "vad_score_event": {"vad_score": score}}


def interruption(event_id: int) -> dict:
    return {"type": "interruption", "interruption_event": {"event_id": event_id}}


def client_tool_call(
    event_id: int, tool_name: str, tool_call_id: str, parameters: Mapping[str, object],
    expects_response: bool,
) -> dict:
    return {
        "type": "client_tool_call",
        "client_tool_call": {
            "tool_name": tool_name,
            "tool_call_id": tool_call_id,
            "parameters": dict(parameters),
            "expects_response": expects_response,
            "event_id": event_id,
        },
    }


def agent_tool_response(event_id: int, tool_name: str, tool_call_id: str) -> dict:
    return {
        "type": "agent_tool_response",
        "agent_tool_response": {
            "tool_name": tool_name,
            "tool_call_id": tool_call_id,
            "tool_type": "system",
            "is_error": False,
            "is_called": True,
            "event_id": event_id,
        },
    }


def error(code: int, error_type: str, message: str) -> dict:
    return {
        "type": "error",
        "error_event": {
            "code": code,
            "message": message,
            "error_type": error_type,
            "reason": message,
            "debug_message": None,
            "details": None,
        },
    }


def agent_document(agent_id: str, script, enable_auth: bool) -> dict:  # noqa: ANN001 - an AgentScript
    """``GET /v1/convai/agents/{agent_id}``: the settings a client can check (protocol notes §11)."""
    overrides: dict = {}
    for path in sorted(script.enabled_overrides):
        if path == "custom_llm_extra_body":
            continue
        node = overrides
        *parents, leaf = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = True
    tools = [{"type": "client", "name": name, "expects_response": True} for name in script.client_tools]
    tools += [{"type": "system", "name": name} for name in script.system_tools]
    return {
        "agent_id": agent_id,
        "name": f"Simulated {agent_id}",
        "conversation_config": {
            "asr": {"user_input_audio_format": script.input_format},
            "tts": {"agent_output_audio_format": script.output_format},
            "conversation": {"client_events": list(script.client_events)},
            "agent": {"first_message": script.greeting_text, "prompt": {"prompt": "", "tools": tools}},
        },
        "platform_settings": {
            "auth": {"enable_auth": enable_auth},
            "overrides": {"conversation_config_override": overrides,
                          "custom_llm_extra_body": "custom_llm_extra_body" in script.enabled_overrides},
        },
    }
