"""Calls through the module in a real Asterisk, against the simulator.

Each test originates Local-channel calls: the agent half runs the application,
the caller half records what it hears and says (MixMonitor) and plays tones.
The simulator's agents speak tones too, one frequency per utterance, so the
recordings tell exactly what was heard: greeting 440 Hz, reply 880 Hz,
goodbye 660 Hz, stale audio that must never be heard 1200 Hz; the caller
speaks 1000 Hz.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from pyconvai.sim import audio
from pyconvai.sim import AgentScript
from tests.e2e.calls import read_wav, tone_frames

ULAW = {"output_format": "ulaw_8000", "input_format": "ulaw_8000"}
SCRIPTS = {
    "agent_greeting": AgentScript(**ULAW, greeting_ms=3000),
    "agent_listener": AgentScript(**ULAW, greeting_ms=500, vad_threshold=1e9),
    "agent_bargein": AgentScript(**ULAW, greeting_ms=8000, reply_ms=1500, late_stale_chunks=3, vad_scores=True),
    "agent_end_call": AgentScript(**ULAW, greeting_ms=1000, goodbye_ms=1500, end_call_after_turns=0),
    "agent_wideband": AgentScript(output_format="pcm_16000", input_format="pcm_16000", greeting_ms=2000),
    "agent_drop": AgentScript(**ULAW, greeting_ms=6000, drop_tcp_after_s=1.5),
    "agent_22k": AgentScript(output_format="pcm_22050", input_format="ulaw_8000", greeting_ms=1000),
}


@pytest.fixture
def bed(call_bed):
    return lambda agents: call_bed(agents, SCRIPTS)


def test_greeting_is_heard_complete_and_at_real_time(bed, sim):
    bed = bed({"greeter": {"elevenlabs_agent_id": "agent_greeting"}})
    bed.call("greeter", "caller-g1-6")
    result = bed.result()
    samples, rate = bed.heard("g1")
    span = tone_frames(samples, rate, 440.0)
    assert span.first is not None, "greeting not heard"
    assert span.gaps == 0, f"{span.gaps} silent frames inside the greeting"
    assert abs(span.frames - 150) <= 1, f"greeting lasted {span.frames * 20} ms, expected 3000 ms"
    greeting = samples[span.first * 160 : (span.last + 1) * 160]
    spectrum = np.abs(np.fft.rfft(greeting))
    assert abs(np.fft.rfftfreq(len(greeting), 1 / rate)[spectrum.argmax()] - 440.0) < 2.0  # no speed change
    assert result["Status"] == "CALLER_HANGUP"
    assert result["Conversation"] == sim.conversations[0].conversation_id
    # The module's own clock, as properties a busy machine keeps (the interval histogram
    # belongs to make bench): every frame written exactly once, never a dry ring, and no
    # drift: the 150 frames span 149 periods, never less (no frame before its deadline,
    # a deadline rounds to the nearest tick), and more only by the stalls the machine caused.
    stats = bed.stats()
    assert stats["FramesOut"] == "150"
    assert stats["Underruns"] == "0"
    drift_ms = float(stats["WrittenSpanMs"]) - 149 * 20
    assert -10 <= drift_ms <= 300, f"150 frames written over {stats['WrittenSpanMs']} ms"


def test_caller_audio_reaches_the_agent_intact_in_its_input_format(bed, sim):
    bed = bed({"listener": {"elevenlabs_agent_id": "agent_listener", "elevenlabs_audio_frames_buffer_ms": 20}})
    bed.call("listener", "talk-p1-1-speak1k-1")
    bed.result()
    received = audio.decode(sim.wait_for_conversations(1)[0].received_audio, "ulaw_8000")
    samples = np.frombuffer(received, dtype="<i2").astype(np.float64)
    span = tone_frames(samples, 8000, 1000.0)
    assert abs(span.frames - 50) <= 1, f"agent heard {span.frames * 20} ms of the 1000 ms prompt"
    assert span.gaps == 0


def test_barge_in_stops_the_old_response_and_plays_the_reply(bed, sim):
    bed = bed({"barge": {"elevenlabs_agent_id": "agent_bargein", "elevenlabs_audio_frames_buffer_ms": 20}})
    bed.call("barge", "talk-b1-2-speak1k-4")
    bed.result()
    record = sim.wait_for_conversations(1)[0]
    assert record.interruptions, "the simulator saw no barge-in"
    reply_id = record.interruptions[0]
    assert [m["audio_event"]["event_id"] for m in record.sent_of_type("audio")].count(reply_id - 1) > 3  # stale sent

    heard, rate = bed.heard("b1")
    bed.wait_idle()
    said, _ = read_wav(bed.ast.recording("b1-said.wav"))
    greeting = tone_frames(heard, rate, 440.0)
    reply = tone_frames(heard, rate, 880.0)
    stale = tone_frames(heard, rate, 1200.0)
    speech = tone_frames(said, rate, 1000.0)
    assert greeting.frames < 8000 // 20 - 100, "the greeting was not interrupted"
    assert stale.frames == 0, "late audio of the interrupted response was played"
    assert abs(reply.frames - 1500 // 20) <= 1, "the reply was not heard in full"
    assert greeting.gaps == 0 and greeting.last < reply.first  # nothing old after the reply started
    # The module counted the frames it had written when the interruption arrived;
    # the recording may hold at most two more of the old response (40 ms). The recording's
    # 20 ms analysis windows need not line up with the frames written: the last one may be
    # half tone, half silence, and not counted (one frame of measurement resolution).
    stats = bed.stats()
    written_before = int(stats["InterruptedAfterFrames"].split(",")[0])
    assert -1 <= greeting.frames - written_before <= 2, (greeting.frames, written_before)
    assert float(stats["BargeInStopMs"].split(",")[0]) <= 40.0, stats["BargeInStopMs"]
    # And the caller was heard at once: old response gone within 200 ms of the caller
    # starting to speak (20 ms uplink chunks + the simulator's 60 ms VAD + one frame).
    assert 0 <= (greeting.last - speech.first) * 20 <= 200, (greeting.last - speech.first) * 20


@pytest.mark.parametrize("options, where", [("", "dialplan"), ("h", "h")])
def test_end_call_plays_the_goodbye_then_ends(bed, sim, options, where):
    bed = bed({"closer": {"elevenlabs_agent_id": "agent_end_call"}})
    bed.call(f"closer-{options}" if options else "closer", "caller-e1-10")
    result = bed.result()
    assert result["Status"] == "AGENT_ENDED"
    assert result["Where"] == where
    assert result["Conversation"] == sim.conversations[0].conversation_id
    assert "1000" in result["Reason"]
    heard, rate = bed.heard("e1")
    goodbye = tone_frames(heard, rate, 660.0)
    assert abs(goodbye.frames - 75) <= 1, f"goodbye lasted {goodbye.frames * 20} ms of 1500"
    assert goodbye.gaps == 0


def test_caller_hangup_closes_with_1000_and_leaves_nothing_behind(bed, sim):
    bed = bed({"greeter": {"elevenlabs_agent_id": "agent_greeting"}})
    before = bed.baseline("greeter")
    for i in range(50):
        bed.call("greeter", f"caller-h{i}-1")
        assert bed.result(index=i + 1)["Status"] == "CALLER_HANGUP"
    bed.wait_idle()
    records = sim.wait_for_conversations(51)
    assert all(r.closed.wait(5) for r in records)
    assert [r.close_code for r in records] == [1000] * 51
    assert all(r.closed_by == "client" for r in records)
    after = bed.ast.process_stats()
    assert after["threads"] <= before["threads"] + 2, (before, after)
    assert after["fds"] <= before["fds"] + 2, (before, after)
    assert "Live calls:      0" in bed.ast.cli("elevenlabs show runtime")


@pytest.mark.parametrize("codec", ["alaw", "slin16"])
def test_caller_codec_gets_correct_audio_both_ways(bed, sim, codec):
    """The framehook sees the caller's native codec and must translate it for the agent."""
    bed = bed({"listener": {"elevenlabs_agent_id": "agent_listener", "elevenlabs_audio_frames_buffer_ms": 20},
                    "greeter": {"elevenlabs_agent_id": "agent_greeting"}})
    bed.call("listener", "talk-a1-1-speak1k-1", codecs=codec)
    bed.call("greeter", "caller-a2-5", codecs=codec)
    bed.result(index=1)
    received = next(r for r in sim.wait_for_conversations(2) if r.agent_id == "agent_listener").received_audio
    samples = np.frombuffer(audio.decode(received, "ulaw_8000"), dtype="<i2").astype(np.float64)
    assert abs(tone_frames(samples, 8000, 1000.0).frames - 50) <= 1
    heard, rate = bed.heard("a2")
    greeting = tone_frames(heard, rate, 440.0)
    assert abs(greeting.frames - 150) <= 1 and greeting.gaps == 0


def test_wideband_agent_gets_correct_audio_both_ways(bed, sim):
    bed = bed({"wide": {"elevenlabs_agent_id": "agent_wideband", "elevenlabs_audio_frames_buffer_ms": 20}})
    bed.call("wide", "talk-w1-3-speak1k-1", codecs="ulaw")
    bed.result()
    record = sim.wait_for_conversations(1)[0]
    samples = np.frombuffer(record.received_audio, dtype="<i2").astype(np.float64)
    speech = tone_frames(samples, 16000, 1000.0)
    assert abs(speech.frames - 50) <= 1, f"agent heard {speech.frames * 20} ms of 1000 ms at 16 kHz"
    heard, rate = bed.heard("w1")
    greeting = tone_frames(heard, rate, 440.0)
    assert abs(greeting.frames - 100) <= 1 and greeting.gaps == 0


def test_twenty_concurrent_calls_have_clean_audio(bed, sim):
    bed = bed({"greeter": {"elevenlabs_agent_id": "agent_greeting"}})
    for i in range(20):
        bed.call("greeter", f"caller-c{i}-6")
    for i in range(20):
        assert bed.result(index=i, timeout=60)["Status"] == "CALLER_HANGUP"
    for i in range(20):
        heard, rate = bed.heard(f"c{i}")
        span = tone_frames(heard, rate, 440.0)
        assert abs(span.frames - 150) <= 1 and span.gaps == 0, f"call {i}: {span.frames} frames, {span.gaps} gaps"
    bed.wait_idle()


def test_signed_url_401_fails_into_the_dialplan(bed, sim):
    bed = bed({"badkey": {"elevenlabs_agent_id": "agent_greeting", "elevenlabs_api_key": "sk_wrong_key_0000000000",
                               "max_connection_attempts": 1}})
    bed.call("badkey", "caller-f1-10")
    result = bed.result()
    assert result["Status"] == "FAILED"
    assert result["Where"] == "dialplan"
    assert "401" in result["Reason"]
    assert "sk_wrong_key" not in bed.ast.log_text()


def test_abrupt_drop_mid_call_fails_into_the_dialplan(bed, sim):
    bed = bed({"dropper": {"elevenlabs_agent_id": "agent_drop"}})
    bed.call("dropper", "caller-f2-10")
    result = bed.result()
    assert result["Status"] == "FAILED"
    assert result["Where"] == "dialplan"
    assert re.search(r"lost|drop|closed", result["Reason"], re.I), result["Reason"]
    assert result["Conversation"] == sim.conversations[0].conversation_id


@pytest.mark.parametrize("debug", [True, False])
def test_debug_logging_shows_vad_interruptions_and_websocket_lifecycle(bed, sim, debug):
    bed = bed({"barge": {"elevenlabs_agent_id": "agent_bargein", "elevenlabs_audio_frames_buffer_ms": 20}})
    if debug:
        bed.ast.cli("elevenlabs debug on")
    bed.call("barge", "talk-d1-2-speak1k-2")
    bed.result()
    bed.wait_idle()
    log = bed.ast.log_text()
    interruption = sim.conversations[0].interruptions[0]
    debug_lines = [line for line in log.splitlines() if "DEBUG[" in line and "[barge" in line]
    wanted = [r"vad score \d\.\d\d", rf"interruption event_id={interruption}: dropped \d+ frames",
              r"websocket open after", r"websocket closed: code 1000"]
    for pattern in wanted:
        found = any(re.search(pattern, line) for line in debug_lines)
        assert found is debug, (pattern, debug)
    # Never a line per frame above debug level.
    notices = [line for line in log.splitlines() if "NOTICE[" in line and "barge" in line]
    assert len(notices) < 5, notices


def test_an_output_format_asterisk_cannot_write_fails_clearly(bed, sim):
    b = bed({"odd": {"elevenlabs_agent_id": "agent_22k"}})
    b.call("odd", "caller-z1-5")
    result = b.result()
    assert result["Status"] == "FAILED" and result["Where"] == "dialplan"
    assert "unsupported agent audio format ulaw_8000 / pcm_22050" in b.event("ElevenLabsConversationEnded")["Reason"]
    assert sim.wait_for_conversations(1)[0].closed.wait(5)  # the socket was closed, not left open


def test_core_stop_now_during_a_call_closes_the_conversation_and_exits(bed, sim):
    import time

    b = bed({"greeter": {"elevenlabs_agent_id": "agent_greeting"}})
    b.call("greeter", "caller-q1-10")
    b.event("ElevenLabsConversationStarted")
    started = time.monotonic()
    assert b.ast.stop(timeout=10) == 0
    assert time.monotonic() - started < 5
    record = sim.wait_for_conversations(1)[0]
    assert record.closed.wait(5) and (record.close_code, record.closed_by) == (1000, "client")
