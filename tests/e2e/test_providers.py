"""The other providers in a real Asterisk: the generic bridge protocol (provider = websocket)
and OpenAI's Realtime API (provider = openai_realtime), each against the simulator speaking
it. Tones as in test_call: greeting 440 Hz, reply 880 Hz, stale audio 1200 Hz (never to be
heard), the caller 1000 Hz."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pyconvai.sim import AgentScript, audio
from tests.e2e.calls import API_KEY, assert_one_line_each, tone_frames

ULAW = {"output_format": "ulaw_8000", "input_format": "ulaw_8000"}
SCRIPTS = {
    "greeting": AgentScript(**ULAW, greeting_ms=3000),
    "listener": AgentScript(**ULAW, greeting_ms=500, vad_threshold=1e9),
    "bargein": AgentScript(**ULAW, greeting_ms=8000, reply_ms=1500, late_stale_chunks=3),
    # The bridge protocol has no ids to tell a late chunk of the old answer from the new
    # one: its servers stop sending at speech_started, and so does this one.
    "bargein_bridge": AgentScript(**ULAW, greeting_ms=8000, reply_ms=1500, late_stale_chunks=0),
    "tool": AgentScript(**ULAW, greeting_ms=1500, client_tool_name="lookup_order",
                        client_tool_parameters={"order_id": 4711}, tool_result_reply_ms=1000),
    "fatal": AgentScript(**ULAW, greeting_ms=6000, fatal_error_after_s=1.5),
    "drop": AgentScript(**ULAW, greeting_ms=6000, drop_tcp_after_s=1.5),
    "close_1011": AgentScript(**ULAW, greeting_ms=6000, close_after_s=1.5, close_code=1011,
                              close_reason="Internal error"),
    "hostile": AgentScript(**ULAW, greeting_ms=6000, reply_ms=500, client_tool_name="crm_lookup",
                           client_tool_parameters={"account": "A-1"}, close_after_s=5.0, close_code=1011,
                           close_reason="bad", hostile_text="\r\nEvent: Hangup\r\nChannel: SIP/victim-0001\x00"
                           + "y" * (1 << 16)),
    "wideband": AgentScript(output_format="pcm_16000", input_format="pcm_16000", greeting_ms=2000, vad_threshold=1e9),
}
TOOLS = """
exten => lookup_order,1,Return(order ${ELEVENLABS_TOOL_ORDER_ID} shipped)
exten => _keys-.,1,Answer()
 same => n,Wait(1)
 same => n,SendDTMF(${CUT(EXTEN,-,3)})
 same => n,Wait(4)
 same => n,Hangup()
"""
PROVIDERS = ("websocket", "openai_realtime")


def agent(provider: str, script: str, **keys: str) -> dict:
    """An agent of ``provider`` speaking the simulator's ``script``."""
    if provider == "websocket":
        return {"provider": "websocket", "websocket_url": f"{{sim_ws}}/bridge?agent={script}",
                "websocket_auth_token": API_KEY, **keys}
    return {"provider": "openai_realtime", "openai_api_key": API_KEY,
            "openai_url": f"{{sim_ws}}/v1/realtime?agent={script}", "instructions": "Be brief.", **keys}


@pytest.fixture
def bed(call_bed):
    return lambda agents: call_bed(agents, SCRIPTS, extra_dialplan=TOOLS)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_greeting_is_heard_complete_and_paced_through_ai_conversation(bed, sim, provider):
    b = bed({"bot": agent(provider, "greeting")})
    b.call("bot", "caller-g1-6", app="aic")
    result = b.result()
    record = sim.wait_for_conversations(1)[0]
    assert record.dialect == provider and record.authorization == f"Bearer {API_KEY}"
    samples, rate = b.heard("g1")
    span = tone_frames(samples, rate, 440.0)
    assert span.first is not None, "greeting not heard"
    assert span.gaps == 0 and abs(span.frames - 150) <= 1, (span.frames, span.gaps)
    assert result["Status"] == "CALLER_HANGUP"
    assert result["Conversation"] == record.conversation_id
    stats = b.stats()
    assert stats["FramesOut"] == "150" and stats["Underruns"] == "0"
    assert -10 <= float(stats["WrittenSpanMs"]) - 149 * 20 <= 300, stats["WrittenSpanMs"]
    init = record.init_data
    if provider == "websocket":
        assert init["config"]["audio_format"] == "g711_ulaw" and init["config"]["sample_rate"] == 8000
    else:
        assert init["session"]["audio"]["output"]["format"] == {"type": "audio/pcmu"}
        assert init["session"]["instructions"] == "Be brief."
    assert record.close_code == 1000 and record.closed_by == "client"
    assert b.event("ElevenLabsTranscript", Role="agent")["Text"] == SCRIPTS["greeting"].greeting_text


@pytest.mark.parametrize("provider", PROVIDERS)
def test_caller_audio_reaches_the_agent_intact(bed, sim, provider):
    b = bed({"bot": agent(provider, "listener", elevenlabs_audio_frames_buffer_ms="20")})
    b.call("bot", "talk-p1-1-speak1k-1")
    b.result()
    received = audio.decode(sim.wait_for_conversations(1)[0].received_audio, "ulaw_8000")
    span = tone_frames(np.frombuffer(received, dtype="<i2").astype(np.float64), 8000, 1000.0)
    assert abs(span.frames - 50) <= 1 and span.gaps == 0, (span.frames, span.gaps)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_barge_in_silences_the_old_answer_and_the_reply_plays(bed, sim, provider):
    script = "bargein_bridge" if provider == "websocket" else "bargein"
    b = bed({"bot": agent(provider, script, elevenlabs_audio_frames_buffer_ms="20")})
    b.call("bot", "talk-b1-2-speak1k-4")
    b.result()
    record = sim.wait_for_conversations(1)[0]
    assert record.interruptions, "the simulator saw no barge-in"
    heard, rate = b.heard("b1")
    greeting, reply, stale = (tone_frames(heard, rate, hz) for hz in (440.0, 880.0, 1200.0))
    assert greeting.frames < 8000 // 20 - 100, "the greeting was not interrupted"
    assert stale.frames == 0, "late audio of the interrupted answer was played"
    assert abs(reply.frames - 1500 // 20) <= 1, "the reply was not heard in full"
    assert greeting.gaps == 0 and greeting.last < reply.first
    stats = b.stats()
    written_before = int(stats["InterruptedAfterFrames"].split(",")[0])
    assert -1 <= greeting.frames - written_before <= 2, (greeting.frames, written_before)
    assert float(stats["BargeInStopMs"].split(",")[0]) <= 40.0, stats["BargeInStopMs"]
    if provider == "openai_realtime":
        # The truncate names the greeting's item and what the caller heard of it, to the frame.
        ((item_id, audio_end_ms),) = record.truncations
        greeting_item = record.sent_of_type("response.output_audio.delta")[0]["item_id"]
        assert item_id == greeting_item
        assert abs(audio_end_ms - written_before * 20) <= 20, (audio_end_ms, written_before)
        assert abs(audio_end_ms - greeting.frames * 20) <= 40, (audio_end_ms, greeting.frames)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_tool_call_reaches_the_dialplan_and_its_result_comes_back(bed, sim, provider):
    b = bed({"shop": agent(provider, "tool", client_tool="lookup_order,e2e")})
    b.call("shop", "caller-t1-6")
    b.result()
    record = sim.wait_for_conversations(1)[0]
    (result,) = record.tool_results
    if provider == "websocket":
        call_id = record.sent_of_type("tool_call")[0]["call_id"]
    else:
        call_id = record.sent_of_type("response.function_call_arguments.done")[0]["call_id"]
        declared = [tool["name"] for tool in record.init_data["session"]["tools"]]
        assert "lookup_order" in declared
    assert result == {"tool_call_id": call_id, "result": "order 4711 shipped", "is_error": False}
    event = b.event("ElevenLabsToolCall", Tool="lookup_order")
    assert event["Source"] == "client"
    heard, rate = b.heard("t1")
    assert abs(tone_frames(heard, rate, 550.0).frames - 50) <= 1, "the answer after the tool was not heard"


@pytest.mark.parametrize("provider, script, reason", [
    ("websocket", "fatal", "fatal server error"),
    ("websocket", "drop", "connection lost mid-call"),
    ("openai_realtime", "drop", "connection lost mid-call"),
    ("openai_realtime", "close_1011", "websocket closed 1011"),
])
def test_fatal_errors_and_drops_end_failed(bed, sim, provider, script, reason):
    b = bed({"bot": agent(provider, script)})
    b.call("bot", "caller-f1-8")
    result = b.result()
    assert result["Status"] == "FAILED" and reason in result["Reason"], result
    b.wait_idle()


def test_a_server_asking_for_slin16_is_played_and_fed_wideband(bed, sim):
    b = bed({"bot": agent("websocket", "wideband")})
    b.call("bot", "talk-w1-1-speak1k-2")
    b.result()
    record = sim.wait_for_conversations(1)[0]
    assert record.sent[0][1]["audio_format"] == "slin16"
    assert {m["format"] for _, m in record.messages if m.get("type") == "audio.input"} == {"slin16"}
    assert len(record.received_audio) % 640 == 0 and record.received_audio  # 16 kHz PCM, 20 ms units
    stats = b.stats()
    assert stats["FramesOut"] == "100" and stats["Underruns"] == "0"


def test_show_agents_names_each_agents_provider(bed, sim):
    b = bed({"eleven": {"elevenlabs_agent_id": "greeting"}, "bridge": agent("websocket", "greeting"),
             "openai": agent("openai_realtime", "greeting")})
    rows = {line.split()[0]: line.split()[1] for line in b.ast.cli("elevenlabs show agents").splitlines()
            if line.split() and line.split()[0] in ("eleven", "bridge", "openai")}
    assert rows == {"eleven": "elevenlabs", "bridge": "websocket", "openai": "openai_realtime"}
    shown = b.ast.cli("elevenlabs show agent openai")
    assert "openai_realtime" in shown and API_KEY not in shown


def test_check_agent_opens_the_providers_socket_with_its_key(bed, sim):
    b = bed({"bridge": agent("websocket", "greeting"), "openai": agent("openai_realtime", "greeting"),
             "wrong": agent("openai_realtime", "greeting", openai_api_key="sk-not-the-key")})
    out = b.ast.cli("elevenlabs check agents")
    assert out.count("accepts a connection") == 2, out
    assert "HTTP 401" in out and "sk-not-the-key" not in out and API_KEY not in out, out
    records = sim.wait_for_conversations(2)
    assert {r.dialect for r in records} == {"websocket", "openai_realtime"}


def _texts_sent(record) -> list[str]:
    """The text the module gave the agent: the bridge's text.input, OpenAI's user items."""
    texts = []
    for _, msg in record.messages:
        if msg.get("type") == "text.input":
            texts.append(msg["text"])
        elif msg.get("type") == "conversation.item.create" and msg["item"].get("role") == "user":
            texts.append(msg["item"]["content"][0]["text"])
    return texts


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_callers_keys_reach_the_agent_as_text(bed, sim, provider):
    b = bed({"keys": agent(provider, "listener")})
    b.call("keys", "keys-k1-4711#")
    b.result()
    record = sim.wait_for_conversations(1)[0]
    assert _texts_sent(record) == ["The caller pressed the keys 4711#"]
    if provider == "openai_realtime":  # and the agent was asked to answer it
        creates = [t for t, m in record.messages if m.get("type") == "response.create"]
        assert len(creates) == 2, "a greeting and an answer to the keys"


def test_wire_debug_never_shows_the_bearer_token(bed, sim):
    b = bed({"bot": agent("websocket", "greeting", websocket_auth_token="tok-S3CRET-123")})
    sim.config = dataclasses.replace(sim.config, api_key="tok-S3CRET-123")
    b.ast.cli("elevenlabs debug on")
    b.call("bot", "caller-d1-2")
    assert b.result()["Status"] == "CALLER_HANGUP"
    log = b.ast.log_text()
    assert "Authorization: Bearer ***" in log, "the handshake's headers are not in the wire debug log"
    assert "S3CRET" not in log


@pytest.mark.parametrize("provider", PROVIDERS)
def test_server_text_cannot_forge_ami_headers_or_log_lines(bed, sim, provider):
    """CR/LF/NUL and 64 KiB in every text field the server sends (session and item ids,
    transcripts, tool name and call id, the close reason)."""
    b = bed({"bot": agent(provider, "hostile", client_tools_via_ami="yes")})
    b.call("bot", "talk-h1-2-speak1k-6")
    result = b.result()
    assert result["Status"] == "FAILED" and "1011" in result["Reason"], result
    ours = [e for e in b.ami.events if e.get("Event", "").startswith("ElevenLabs")]
    assert {"ElevenLabsConversationStarted", "ElevenLabsTranscript", "ElevenLabsToolCall",
            "ElevenLabsConversationEnded"} <= {e["Event"] for e in ours}
    assert_one_line_each(ours + b.events("UserEvent"))
    assert not [e for e in b.events("Hangup") if e.get("Channel", "").startswith("SIP/victim")]
    lines = b.ast.log_text().splitlines()
    assert not [line for line in lines if line.startswith(("Event:", "Channel: SIP/victim"))]
    assert all(len(line) < 2300 for line in lines if "yyyy" in line)
    b.wait_idle(timeout=30)
