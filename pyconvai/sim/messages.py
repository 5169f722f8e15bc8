"""Server → client messages of the ElevenLabs Agents WebSocket API, as dicts.

Shapes follow the protocol notes §5; every message has ``type`` and every
``event_id``/``ping_ms`` key is always present (the official Python SDK
indexes them directly).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping


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
