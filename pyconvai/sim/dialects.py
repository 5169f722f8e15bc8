"""How the simulated agent speaks each provider's protocol: one dialect per provider.

The conversation (:mod:`pyconvai.sim.conversation`) decides what the agent
does — greet, reply, barge in, call a tool, fail — and asks its dialect for
the wire messages that say it; the dialect also reads each client message
into one :class:`Heard` the conversation acts on. The ElevenLabs dialect is
the protocol notes' (:mod:`pyconvai.sim.messages`); the bridge dialect is the
generic "any AI over a WebSocket" protocol (session.init / session_started,
audio.input / audio_delta, speech_started, error with ``fatal``, and our
tool_call / tool_result); the OpenAI dialect is the Realtime API's GA events.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from . import messages

__all__ = ["DIALECTS", "BridgeDialect", "Dialect", "ElevenLabsDialect", "Heard", "RealtimeDialect"]


@dataclass(frozen=True)
class Heard:
    """One client message, read. ``kind``: audio (``text`` is base64), pong (``number``),
    tool_result (``result``), user_message, context, respond (OpenAI's response.create),
    truncate (``text`` item id, ``number`` audio_end_ms), session (a session update),
    accepted (nothing to do) or invalid (``text`` says why)."""

    kind: str
    text: str = ""
    number: int | None = None
    result: Mapping[str, object] | None = None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Dialect:
    """What every dialect says unless it says otherwise: nothing."""

    pings = False
    #: The agent speaks (greeting, replies to text, after a tool) only when the client asks
    #: (OpenAI's response.create), and takes the client's audio formats (its session.update).
    on_request = False

    def response_end(self, event_id: int, text: str, cancelled: bool) -> list[dict]:
        return []

    def correction(self, event_id: int, original: str, corrected: str) -> list[dict]:
        return []

    def end_call(self, event_id: int, tool_name: str, call_id: str) -> list[dict]:
        return []


class ElevenLabsDialect(Dialect):
    name = "elevenlabs"
    pings = True
    start_message = "conversation_initiation_client_data"

    def started(self, conversation_id: str, output_format: str, input_format: str) -> list[dict]:
        return [messages.metadata(conversation_id, output_format, input_format)]

    def response_start(self, event_id: int, text: str) -> list[dict]:
        return [messages.agent_response(event_id, text)]

    def audio(self, event_id: int, chunk: bytes) -> dict:
        return messages.audio(event_id, chunk)

    def interruption(self, event_id: int, interrupted: int) -> list[dict]:
        return [messages.interruption(event_id)]

    def correction(self, event_id: int, original: str, corrected: str) -> list[dict]:
        return [messages.agent_response_correction(event_id, original, corrected)]

    def user_transcript(self, event_id: int, text: str) -> list[dict]:
        return [messages.user_transcript(event_id, text)]

    def tool_call(self, event_id: int, name: str, call_id: str, parameters: Mapping[str, object],
                  expects_response: bool) -> list[dict]:
        return [messages.client_tool_call(event_id, name, call_id, parameters, expects_response)]

    def end_call(self, event_id: int, tool_name: str, call_id: str) -> list[dict]:
        return [messages.agent_tool_response(event_id, tool_name, call_id)]

    def error(self, code: int, error_type: str, message: str, fatal: bool) -> list[dict]:
        return [messages.error(code, error_type, message)]

    def hear(self, msg: dict) -> Heard:
        kind = msg.get("type")
        if "user_audio_chunk" in msg:
            return Heard("audio", msg["user_audio_chunk"])
        if kind == "pong":
            event_id = msg.get("event_id")
            return Heard("pong", number=event_id if isinstance(event_id, int) else None)
        if kind == "client_tool_result":
            return Heard("tool_result", result=msg)
        if kind == "user_message":
            return Heard("user_message", str(msg.get("text", "")))
        if kind in ("contextual_update", "user_activity", "feedback", "multimodal_message",
                    "mcp_tool_approval_result"):
            return Heard("accepted")
        return Heard("invalid", f"unexpected message type {kind!r}")


#: The bridge protocol's names of the simulator's formats.
BRIDGE_FORMATS = {"ulaw_8000": "g711_ulaw", "pcm_16000": "slin16"}


class BridgeDialect(Dialect):
    name = "websocket"
    start_message = "session.init"

    def started(self, conversation_id: str, output_format: str, input_format: str) -> list[dict]:
        return [{"type": "session_started", "session_id": conversation_id,
                 "audio_format": BRIDGE_FORMATS[output_format],
                 "sample_rate": 8000 if output_format == "ulaw_8000" else 16000}]

    def response_start(self, event_id: int, text: str) -> list[dict]:
        return [{"type": "transcript", "role": "assistant", "text": text}]

    def response_end(self, event_id: int, text: str, cancelled: bool) -> list[dict]:
        return [] if cancelled else [{"type": "response_complete"}]

    def audio(self, event_id: int, chunk: bytes) -> dict:
        # Both shapes the protocol allows, alternating by reply.
        if event_id % 2:
            return {"type": "audio_delta", "audio": _b64(chunk)}
        return {"type": "audio_chunk", "data": _b64(chunk)}

    def interruption(self, event_id: int, interrupted: int) -> list[dict]:
        return [{"type": "speech_started"}]

    def user_transcript(self, event_id: int, text: str) -> list[dict]:
        return [{"type": "transcription", "speaker": "user", "text": text}]

    def tool_call(self, event_id: int, name: str, call_id: str, parameters: Mapping[str, object],
                  expects_response: bool) -> list[dict]:
        return [{"type": "tool_call", "call_id": call_id, "name": name, "arguments": dict(parameters)}]

    def error(self, code: int, error_type: str, message: str, fatal: bool) -> list[dict]:
        return [{"type": "error", "code": error_type, "message": message, "fatal": fatal}]

    def hear(self, msg: dict) -> Heard:
        kind = msg.get("type")
        if kind == "audio.input":
            return Heard("audio", msg.get("audio"))  # type: ignore[arg-type]
        if kind == "text.input":
            return Heard("user_message", str(msg.get("text", "")))
        if kind == "tool_result":
            return Heard("tool_result", result={"tool_call_id": msg.get("call_id"), "result": msg.get("result"),
                                                "is_error": msg.get("is_error")})
        return Heard("invalid", f"unexpected message type {kind!r}")


class RealtimeDialect(Dialect):
    name = "openai_realtime"
    on_request = True
    start_message = "session.update"

    def started(self, conversation_id: str, output_format: str, input_format: str) -> list[dict]:
        def fmt(name: str) -> dict:
            return {"type": "audio/pcmu"} if name == "ulaw_8000" else {"type": "audio/pcm", "rate": 24000}
        return [{"type": "session.updated", "event_id": "event_sim",
                 "session": {"id": conversation_id, "type": "realtime", "object": "realtime.session",
                             "audio": {"input": {"format": fmt(input_format)},
                                       "output": {"format": fmt(output_format)}}}}]

    def response_start(self, event_id: int, text: str) -> list[dict]:
        return [{"type": "response.created", "response": {"id": f"resp_{event_id}", "status": "in_progress"}}]

    def response_end(self, event_id: int, text: str, cancelled: bool) -> list[dict]:
        ids = {"response_id": f"resp_{event_id}", "item_id": f"item_{event_id}", "output_index": 0,
               "content_index": 0}
        status = {"status": "cancelled", "status_details": {"type": "cancelled", "reason": "turn_detected"}} \
            if cancelled else {"status": "completed"}
        return [{"type": "response.output_audio.done", **ids},
                {"type": "response.output_audio_transcript.done", **ids, "transcript": text},
                {"type": "response.done", "response": {"id": f"resp_{event_id}", **status}}]

    def audio(self, event_id: int, chunk: bytes) -> dict:
        return {"type": "response.output_audio.delta", "response_id": f"resp_{event_id}",
                "item_id": f"item_{event_id}", "output_index": 0, "content_index": 0, "delta": _b64(chunk)}

    def interruption(self, event_id: int, interrupted: int) -> list[dict]:
        return [{"type": "input_audio_buffer.speech_started", "audio_start_ms": 0, "item_id": f"user_{event_id}"}]

    def user_transcript(self, event_id: int, text: str) -> list[dict]:
        return [{"type": "conversation.item.input_audio_transcription.completed", "item_id": f"user_{event_id}",
                 "content_index": 0, "transcript": text}]

    def tool_call(self, event_id: int, name: str, call_id: str, parameters: Mapping[str, object],
                  expects_response: bool) -> list[dict]:
        response = f"resp_{event_id}"
        return [{"type": "response.created", "response": {"id": response, "status": "in_progress"}},
                {"type": "response.function_call_arguments.done", "response_id": response,
                 "item_id": f"item_{event_id}", "output_index": 0, "call_id": call_id, "name": name,
                 "arguments": orjson.dumps(dict(parameters)).decode()},
                {"type": "response.done", "response": {"id": response, "status": "completed"}}]

    def error(self, code: int, error_type: str, message: str, fatal: bool) -> list[dict]:
        return [{"type": "error", "event_id": "event_sim_error",
                 "error": {"type": "server_error" if code >= 1011 or fatal else "invalid_request_error",
                           "code": error_type, "message": message, "param": None, "event_id": None}}]

    def hear(self, msg: dict) -> Heard:
        kind = msg.get("type")
        if kind == "input_audio_buffer.append":
            return Heard("audio", msg.get("audio"))  # type: ignore[arg-type]
        if kind == "response.create":
            return Heard("respond")
        if kind == "session.update":
            return Heard("session")
        if kind == "conversation.item.truncate":
            end = msg.get("audio_end_ms")
            if not isinstance(end, int) or isinstance(end, bool) or end < 0:
                return Heard("invalid", f"truncate with audio_end_ms {end!r}")
            return Heard("truncate", str(msg.get("item_id", "")), end)
        if kind == "conversation.item.create":
            item = msg.get("item") if isinstance(msg.get("item"), dict) else {}
            if item.get("type") == "function_call_output":
                output = str(item.get("output", ""))
                try:
                    error = orjson.loads(output)
                except orjson.JSONDecodeError:
                    error = None
                is_error = isinstance(error, dict) and set(error) == {"error"}
                return Heard("tool_result", result={"tool_call_id": item.get("call_id"), "result":
                                                    error["error"] if is_error else output, "is_error": is_error})
            if item.get("type") == "message" and item.get("role") in ("user", "system"):
                content = item.get("content") or [{}]
                text = str(content[0].get("text", "")) if isinstance(content[0], dict) else ""
                return Heard("user_message" if item["role"] == "user" else "context", text)
        return Heard("invalid", f"unexpected message type {kind!r}")


DIALECTS = {d.name: d for d in (ElevenLabsDialect(), BridgeDialect(), RealtimeDialect())}
