"""Handing the call on, in a real Asterisk through Local channels and the simulator: transfer,
keys both ways, something to hear while connecting, voicemail, redirects, outbound variables.

The simulator's agents speak tones (greeting 440 Hz, the line after a tool 550 Hz, goodbye
660 Hz), so the recordings tell what the caller heard and when.
"""

from __future__ import annotations

import re

import pytest

from pyconvai.sim import AgentScript, audio
from tests.e2e.calls import tone_frames, write_wav

ULAW = {"output_format": "ulaw_8000", "input_format": "ulaw_8000"}
QUIET = {"vad_threshold": 1e9}  # the caller's keys and silence are no speech
SCRIPTS = {
    "agent_transfer": AgentScript(**ULAW, **QUIET, greeting_ms=1000, client_tool_name="transfer_call",
                                  client_tool_parameters={"destination": "200"}, tool_result_reply_ms=1500),
    "agent_transfer_nowhere": AgentScript(**ULAW, **QUIET, greeting_ms=500, client_tool_name="transfer_call",
                                          client_tool_parameters={"destination": "999"}),
    "agent_keypad": AgentScript(**ULAW, **QUIET, greeting_ms=500, client_tool_name="play_keypad_touch_tone",
                                client_tool_parameters={"dtmf_tones": "1w2#"}),
    "agent_keypad_bad": AgentScript(**ULAW, **QUIET, greeting_ms=500, client_tool_name="play_keypad_touch_tone",
                                    client_tool_parameters={"dtmf_tones": "1x"}),
    "agent_listens": AgentScript(**ULAW, **QUIET, greeting_ms=500),
    "agent_slow": AgentScript(**ULAW, **QUIET, greeting_ms=2000, signed_url_delay_s=2.0),
    "agent_voicemail": AgentScript(**ULAW, greeting_ms=1000, goodbye_ms=1000, end_call_after_turns=0,
                                   end_tool_name="voicemail_detection"),
    "agent_long": AgentScript(**ULAW, **QUIET, greeting_ms=20000),
}

EXTRA = """
; keys-<tag>-<digits>: press keys, hang up 4 s later
exten => _keys-.,1,Answer()
 same => n,Wait(1)
 same => n,SendDTMF(${CUT(EXTEN,-,3)})
 same => n,Wait(4)
 same => n,Hangup()

; keyspause-<tag>-<digits>-<more digits>: press keys, pause 3 s, press more, hang up 4 s later
exten => _keyspause-.,1,Answer()
 same => n,Wait(1)
 same => n,SendDTMF(${CUT(EXTEN,-,3)})
 same => n,Wait(3)
 same => n,SendDTMF(${CUT(EXTEN,-,4)})
 same => n,Wait(4)
 same => n,Hangup()

exten => redirected,1,UserEvent(Redirected,Status: ${ELEVENLABS_STATUS},Reason: ${ELEVENLABS_END_REASON})
 same => n,Hangup()

; the transfer target (transfer_context = e2e)
exten => 200,1,UserEvent(Transferred,Status: ${ELEVENLABS_STATUS},Destination: ${ELEVENLABS_TRANSFER_DESTINATION})
 same => n,Wait(1)
 same => n,Hangup()
"""


@pytest.fixture
def bed(call_bed):
    return lambda agents, **kwargs: call_bed(agents, SCRIPTS, extra_dialplan=EXTRA, **kwargs)


def healthy(b, before=None) -> None:
    b.wait_idle(timeout=30)
    if before is not None:
        after = b.ast.process_stats()
        assert after["threads"] <= before["threads"] + 2 and after["fds"] <= before["fds"] + 2, (before, after)


def test_transfer_plays_the_agents_last_words_then_continues_at_the_extension(bed, sim):
    b = bed({"sales": {"elevenlabs_agent_id": "agent_transfer", "transfer_context": "e2e"}})
    before = b.ast.process_stats()
    b.call("sales", "caller-x1-8")
    moved = b.event("UserEvent", UserEvent="Transferred")
    assert (moved["Status"], moved["Destination"]) == ("TRANSFER", "200")
    assert b.event("Newexten", Context="e2e", Extension="200")
    ended = b.event("ElevenLabsConversationEnded")
    assert (ended["Status"], ended["TransferDestination"]) == ("TRANSFER", "200")
    record = sim.wait_for_conversations(1)[0]
    (result,) = record.tool_results
    assert result["is_error"] is False
    assert record.closed.wait(5) and (record.close_code, record.closed_by) == (1000, "client")
    heard, rate = b.heard("x1")
    greeting, through = tone_frames(heard, rate, 440.0), tone_frames(heard, rate, 550.0)
    assert abs(greeting.frames - 50) <= 1 and greeting.gaps == 0, "the words before the tool were cut"
    assert abs(through.frames - 75) <= 1 and through.gaps == 0, "the words after the tool answer were cut"
    healthy(b, before)


@pytest.mark.parametrize("agent, context", [("agent_transfer_nowhere", "e2e"),
                                            ("agent_transfer", None)])
def test_a_transfer_that_cannot_happen_is_an_error_and_the_call_goes_on(bed, sim, agent, context):
    b = bed({"sales": {"elevenlabs_agent_id": agent, "transfer_context": context}})
    b.call("sales", "caller-x2-4")
    assert b.result()["Status"] == "CALLER_HANGUP"  # the conversation went on until the caller left
    (result,) = sim.wait_for_conversations(1)[0].tool_results
    assert result["is_error"] is True
    assert ("no extension 999" in result["result"]) if context else ("not enabled" in result["result"])
    assert not [e for e in b.events("Newexten") if e.get("Extension") in ("200", "999")]
    healthy(b)


def _texts(record, kind: str) -> list[str]:
    return [m.get("text", "") for _, m in record.messages if m.get("type") == kind]


@pytest.mark.parametrize("mode", ["user_message", "contextual_update", "no"])
def test_the_callers_keys_reach_the_agent_as_one_message(bed, sim, mode):
    b = bed({"keys": {"elevenlabs_agent_id": "agent_listens", "dtmf_to_agent": mode}})
    b.call("keys", "keys-k1-4711#")
    b.result()
    record = sim.wait_for_conversations(1)[0]
    sent = [t for t in _texts(record, "user_message") + _texts(record, "contextual_update") if "pressed" in t]
    if mode == "no":
        assert sent == []
    else:
        assert _texts(record, mode) == ["The caller pressed the keys 4711#"]
    healthy(b)


def test_keys_then_a_pause_make_one_message(bed, sim):
    b = bed({"keys": {"elevenlabs_agent_id": "agent_listens"}})
    b.call("keys", "keyspause-k2-12-3")
    b.result()
    texts = [t for t in _texts(sim.wait_for_conversations(1)[0], "user_message") if "pressed" in t]
    assert texts == ["The caller pressed the keys 12", "The caller pressed the keys 3"]


def test_the_agent_presses_keys_on_the_callers_side(bed, sim):
    b = bed({"ivr": {"elevenlabs_agent_id": "agent_keypad"}})
    b.call("ivr", "caller-d1-5")
    b.result()
    record = sim.wait_for_conversations(1)[0]
    (result,) = record.tool_results
    assert result["is_error"] is False
    keys = [e for e in b.events("DTMFEnd") if e.get("Channel", "").endswith(";1")]
    assert [e["Digit"] for e in keys] == ["1", "2", "#"], keys
    assert keys[1]["_at"] - keys[0]["_at"] >= 0.5  # the w pause
    healthy(b)


def test_keys_the_agent_may_not_press_are_an_error_and_none_is_sent(bed, sim):
    b = bed({"ivr": {"elevenlabs_agent_id": "agent_keypad_bad"}})
    b.call("ivr", "caller-d2-3")
    b.result()
    (result,) = sim.wait_for_conversations(1)[0].tool_results
    assert result["is_error"] is True
    assert not b.events("DTMFEnd")


@pytest.mark.parametrize("sound", ["moh", "ring"])
def test_something_to_hear_while_connecting_and_nothing_after(bed, sim, sound):
    b = bed({"slow": {"elevenlabs_agent_id": "agent_slow", "while_connecting": sound}},
            configs={"musiconhold.conf": "[default]\nmode = files\ndirectory = /moh-files\n"})
    if sound == "moh":  # the class's directory holds one file: a 330 Hz tone
        moh = b.ast.path("sounds") + "/moh"
        b.ast.host_path(moh).mkdir(exist_ok=True)
        write_wav(b.ast.host_path(moh) / "tone.wav", audio.tone(330.0, 10000, 8000, 8000))
        b.ast.write_config("musiconhold.conf", f"[default]\nmode = files\ndirectory = {moh}\n")
        b.ast.cli("moh reload")
    b.call("slow", "caller-m1-6")
    b.result()
    heard, rate = b.heard("m1")
    greeting = tone_frames(heard, rate, 440.0, min_ratio=0.8)
    waiting = tone_frames(heard, rate, 330.0) if sound == "moh" else tone_frames(heard, rate, 480.0, min_ratio=0.3)
    assert greeting.first is not None and abs(greeting.frames - 100) <= 1 and greeting.gaps == 0
    assert waiting.first is not None and waiting.first < greeting.first, "nothing was heard while connecting"
    assert waiting.last < greeting.first, "the waiting sound went on over the agent"
    healthy(b)


def test_a_voicemail_reached_ends_with_its_status_after_the_message(bed, sim):
    b = bed({"dialer": {"elevenlabs_agent_id": "agent_voicemail"}})
    b.call("dialer", "caller-v1-8")
    result = b.result()
    assert result["Status"] == "VOICEMAIL" and result["Where"] == "dialplan", result
    heard, rate = b.heard("v1")
    assert abs(tone_frames(heard, rate, 660.0).frames - 50) <= 1  # its message played out
    assert 'asterisk_elevenlabs_calls_total{status="VOICEMAIL"} 1' in b.ast.cli("elevenlabs show metrics")
    healthy(b)


def test_a_redirected_channel_ends_its_conversation_and_runs_where_it_was_sent(bed, sim):
    b = bed({"long": {"elevenlabs_agent_id": "agent_long"}})
    b.call("long", "caller-r1-10")
    started = b.event("ElevenLabsConversationStarted")
    response = b.ami.action("Redirect", Channel=started["Channel"], Context="e2e", Exten="redirected",
                            Priority="1")
    assert response.get("Response") == "Success", response
    moved = b.event("UserEvent", UserEvent="Redirected")
    assert moved["Status"] == "REDIRECTED"
    record = sim.wait_for_conversations(1)[0]
    assert record.closed.wait(5) and (record.close_code, record.closed_by) == (1000, "client")
    healthy(b)


def test_an_outbound_call_takes_its_variables_from_the_originate(bed, sim):
    b = bed({"campaign": {"elevenlabs_agent_id": "agent_listens"}})
    response = b.ami.action("Originate", Channel="Local/ai-campaign@e2e/n", Context="e2e", Exten="caller-o1-3",
                            Priority="1", Async="true", Variable="ELEVENLABS_VAR_account=4711")
    assert response.get("Response") == "Success", response
    b.result()
    variables = sim.wait_for_conversations(1)[0].init_data["dynamic_variables"]
    assert variables["account"] == "4711"
    assert re.fullmatch(r"[\d.]+", variables["call_uniqueid"])


def test_every_ending_leaves_no_channel_thread_or_fd_behind(bed, sim):
    b = bed({"listens": {"elevenlabs_agent_id": "agent_listens"},
             "sales": {"elevenlabs_agent_id": "agent_transfer", "transfer_context": "e2e"},
             "ivr": {"elevenlabs_agent_id": "agent_keypad"},
             "dialer": {"elevenlabs_agent_id": "agent_voicemail"},
             "long": {"elevenlabs_agent_id": "agent_long"}})
    before = b.baseline("listens")
    b.call("sales", "caller-e1-8")
    b.event("UserEvent", UserEvent="Transferred")
    b.wait_idle(timeout=30)
    b.call("ivr", "caller-e2-4")
    b.wait_idle(timeout=30)
    b.call("dialer", "caller-e3-8")
    b.event("UserEvent", UserEvent="ConvaiResult", Status="VOICEMAIL")
    b.wait_idle(timeout=30)
    b.call("long", "caller-e4-10")
    started = b.event("ElevenLabsConversationStarted", index=4)
    b.ami.action("Redirect", Channel=started["Channel"], Context="e2e", Exten="redirected", Priority="1")
    b.event("UserEvent", UserEvent="Redirected")
    healthy(b, before)
    assert all(r.closed.wait(10) and r.close_code == 1000 for r in sim.wait_for_conversations(5))
