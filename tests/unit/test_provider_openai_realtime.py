"""OpenAI Realtime's sans-I/O core (pyconvai.providers.openai_realtime)."""

from __future__ import annotations

import base64

from pyconvai.config import CallControl, Listening, RealtimeAgent, realtime_tools
from pyconvai.protocol import (
    AgentAudio,
    AgentResponse,
    AudioFormat,
    ClientToolCall,
    Interruption,
    Metadata,
    ProtocolError,
    ServerError,
    UserTranscript,
)
from pyconvai.providers import RealtimeProtocol
from tests.unit.cores import feed, sent


def core(**agent) -> RealtimeProtocol:
    return RealtimeProtocol(RealtimeAgent(api_key="sk-test", **agent))



def delta(item: str, data: bytes) -> dict:
    return {"type": "response.output_audio.delta", "response_id": "r", "item_id": item, "output_index": 0,
            "content_index": 0, "delta": base64.b64encode(data).decode()}


def test_begin_asks_for_pcmu_server_vad_the_tools_then_the_first_response():
    tools = realtime_tools(CallControl(transfer_enabled=True, dialplan_tools=frozenset({"lookup"})))
    p = core(instructions="Be brief.", initial_message="Hi there", language="fr",
             listening=Listening(True, 0.6, 700), tools=tools, voice="cedar")
    p.begin()
    update, item, response = sent(p)
    session = update["session"]
    assert update["type"] == "session.update" and session["type"] == "realtime"
    assert session["audio"]["input"]["format"] == session["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    assert session["audio"]["output"]["voice"] == "cedar" and session["instructions"] == "Be brief."
    vad = session["audio"]["input"]["turn_detection"]
    assert vad["type"] == "server_vad" and vad["threshold"] == 0.6 and vad["silence_duration_ms"] == 700
    assert vad["create_response"] is vad["interrupt_response"] is True
    assert session["audio"]["input"]["transcription"]["language"] == "fr"
    assert [t["name"] for t in session["tools"]] == ["transfer_call", "play_keypad_touch_tone", "lookup"]
    assert session["tools"][0]["parameters"]["required"] == ["destination"]
    assert item["item"] == {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi there"}]}
    assert response == {"type": "response.create"}


def test_session_updated_starts_with_the_confirmed_formats_and_the_created_session_id():
    p = core()
    assert feed(p, {"type": "session.created", "session": {"id": "sess_1"}}) == []
    (meta,) = feed(p, {"type": "session.updated", "session": {"audio": {
        "input": {"format": {"type": "audio/pcmu"}}, "output": {"format": {"type": "audio/pcm", "rate": 24000}}}}})
    assert meta == Metadata("sess_1", AudioFormat("ulaw", 8000), AudioFormat("pcm", 24000))
    assert feed(p, {"type": "session.updated", "session": {}}) == []
    (bad,) = feed(core(), {"type": "session.updated", "session": {"audio": {"output": {"format": {"type": "audio/pcma"}}}}})
    assert isinstance(bad, ProtocolError) and bad.message_type == "session.updated"


def test_items_are_numbered_and_speech_started_gates_every_item_so_far():
    p = core()
    assert feed(p, delta("item_a", b"\xff" * 160)) == [AgentAudio(b"\xff" * 160, 1)]
    assert feed(p, delta("item_b", b"\x7f" * 80)) == [AgentAudio(b"\x7f" * 80, 2)]
    assert feed(p, delta("item_a", b"\xff" * 8))[0].event_id == 1
    assert feed(p, {"type": "input_audio_buffer.speech_started", "audio_start_ms": 100, "item_id": "u"}) == [
        Interruption(3, "speech_started")]
    assert feed(p, {"type": "response.output_audio_transcript.done", "item_id": "item_b", "transcript": "Hi"}) == [
        AgentResponse("Hi", 2)]
    assert feed(p, {"type": "conversation.item.input_audio_transcription.completed", "transcript": "yes"}) == [
        UserTranscript("yes", None)]


def test_truncate_reports_what_was_heard_clamped_and_not_when_the_item_played_out():
    p = core()
    feed(p, delta("item_a", b"\xff" * 1600))  # 200 ms of μ-law
    p.interrupted(1, 800)
    assert sent(p) == [{"type": "conversation.item.truncate", "item_id": "item_a", "content_index": 0,
                        "audio_end_ms": 100}]
    p.interrupted(1, 1600)  # played to the end: nothing to cut
    p.interrupted(None, 0)
    p.interrupted(7, 10)  # an item this core never saw
    assert sent(p) == []


def test_function_calls_are_client_tools_answered_with_an_output_and_a_response_after_the_active_one():
    p = core()
    feed(p, {"type": "response.created", "response": {"id": "r1"}})
    (call,) = feed(p, {"type": "response.function_call_arguments.done", "call_id": "call_1", "name": "lookup",
                       "arguments": '{"account": "42"}', "item_id": "i", "response_id": "r1"})
    assert call == ClientToolCall("lookup", "call_1", {"account": "42"}, None)
    p.client_tool_result("call_1", "balance 10", False)
    assert sent(p) == [{"type": "conversation.item.create", "item": {
        "type": "function_call_output", "call_id": "call_1", "output": "balance 10"}}]  # response waits
    feed(p, {"type": "response.done", "response": {"id": "r1", "status": "completed"}})
    assert sent(p) == [{"type": "response.create"}]
    p.client_tool_result("call_2", "no such account", True)
    assert sent(p)[0]["item"]["output"] == '{"error":"no such account"}'


def test_errors_are_not_fatal_and_a_busy_refusal_asks_again_after_response_done():
    p = core()
    (error,) = feed(p, {"type": "error", "error": {"type": "invalid_request_error",
                                                    "code": "conversation_already_has_active_response",
                                                    "message": "busy"}})
    assert isinstance(error, ServerError) and not error.fatal and "busy" in error.message
    assert sent(p) == []
    feed(p, {"type": "response.done", "response": {"status": "completed"}})
    assert sent(p) == [{"type": "response.create"}]
    (failed,) = feed(p, {"type": "response.done", "response": {"status": "failed", "status_details": {
        "error": {"type": "server_error", "code": "overloaded"}}}})
    assert failed == ServerError(None, "server_error", "overloaded", "")


def test_contextual_updates_are_system_items_without_a_response():
    p = core()
    p.contextual_update("The caller is a VIP.")
    assert sent(p) == [{"type": "conversation.item.create", "item": {
        "type": "message", "role": "system", "content": [{"type": "input_text", "text": "The caller is a VIP."}]}}]
