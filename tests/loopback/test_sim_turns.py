"""Simulator turn-taking used by the demo: per-turn reply texts, replies after the utterance."""

from __future__ import annotations

from test_sim import agent_url, closed_record, running, talk

from pyconvai.sim import audio
from pyconvai.sim import AgentScript
from pyconvai.sim.voice import Vad

FAST = {"send_speed": 20.0, "greeting_ms": 300, "reply_ms": 300, "goodbye_ms": 200}


def utterances(*spans: tuple[float, float]):
    return lambda t: any(start <= t < end for start, end in spans)


def test_vad_counts_utterance_ends() -> None:
    vad = Vad(8000, threshold=1000, min_speech_ms=60, silence_ms=100)
    loud, quiet = audio.tone(300, 20, 8000, 8000), audio.silence(20, 8000)
    vad.feed(loud * 5 + quiet * 4)
    assert vad.in_speech and vad.utterances_ended == 0
    vad.feed(quiet)
    assert not vad.in_speech and vad.utterances_ended == 1
    assert vad.feed(loud * 5 + quiet * 5 + loud * 5)  # a whole utterance, then the onset of the next
    assert vad.utterances_ended == 2


def test_successive_replies_take_successive_texts_and_the_last_repeats() -> None:
    script = AgentScript(reply_texts=("First.", "Second."), **FAST)
    with running(script) as sim:
        run = talk(agent_url(sim), speaking=utterances((0.5, 0.7), (1.1, 1.3), (1.7, 1.9)), hangup_after=2.3)
        texts = [m["agent_response_event"]["agent_response"] for m in run.of_type("agent_response")]
        assert texts == [script.greeting_text, "First.", "Second.", "Second."]
        assert run.of_type("interruption") == []


def test_reply_after_utterance_interrupts_at_the_onset_and_answers_after_the_pause() -> None:
    fmt = "ulaw_8000"
    script = AgentScript(output_format=fmt, input_format=fmt, greeting_ms=3000, reply_ms=300, send_speed=10.0,
                         vad_silence_ms=300, reply_after_utterance=True, end_call_after_turns=1)
    with running(script) as sim:
        run = talk(agent_url(sim), fmt=fmt, speaking=utterances((0.5, 1.0)), timeout=6.0)
        record = closed_record(sim)
    loud = [t for t, chunk in record.audio_chunks if audio.rms(audio.decode(chunk, fmt)) > 1000]
    sent_at = {msg["type"]: t for t, msg in reversed(record.sent)}  # first time of each type
    # Barge-in at the onset: the greeting is stopped while the caller is still talking ...
    assert loud[0] <= sent_at["interruption"] < loud[-1]
    # ... and the answer comes once the caller has been quiet for vad_silence_ms.
    assert sent_at["user_transcript"] >= loud[-1] + 0.28
    kinds = [m["type"] for m in run.received if m["type"] not in ("ping", "audio")]
    assert kinds == ["conversation_initiation_metadata", "agent_response", "interruption",
                     "agent_response_correction", "user_transcript", "agent_response", "agent_response",
                     "agent_tool_response"]
    reply, transcript = run.of_type("agent_response")[1], run.of_type("user_transcript")[0]
    assert reply["agent_response_event"]["event_id"] == transcript["user_transcription_event"]["event_id"]
    assert record.interruptions == [run.of_type("interruption")[0]["interruption_event"]["event_id"]]
    assert run.close_code == 1000


def test_reply_after_utterance_without_barge_in() -> None:
    script = AgentScript(reply_after_utterance=True, **FAST)
    with running(script) as sim:
        run = talk(agent_url(sim), speaking=utterances((0.5, 0.9)), hangup_after=1.8)
        record = closed_record(sim)
    assert run.of_type("interruption") == []
    assert len(run.of_type("user_transcript")) == 1 and len(run.of_type("agent_response")) == 2
    loud = [t for t, chunk in record.audio_chunks if audio.rms(audio.decode(chunk, "pcm_16000")) > 1000]
    reply_at = [t for t, m in record.sent if m["type"] == "agent_response"][1]
    assert reply_at >= loud[-1] + 0.28


def test_successive_replies_cycle_through_reply_tones() -> None:
    import base64

    script = AgentScript(reply_tones_hz=(880.0, 990.0), **FAST)
    with running(script) as sim:
        run = talk(agent_url(sim), speaking=utterances((0.5, 0.7), (1.1, 1.3), (1.7, 1.9)), hangup_after=2.3)
    replies = [m["agent_response_event"]["event_id"] for m in run.of_type("agent_response")][1:]
    tones = []
    for event_id in replies:
        pcm = b"".join(base64.b64decode(m["audio_event"]["audio_base_64"]) for m in run.of_type("audio")
                       if m["audio_event"]["event_id"] == event_id)
        tones.append(max((880.0, 990.0), key=lambda hz: audio.goertzel_power(pcm, 16000, hz)))
    assert tones == [880.0, 990.0, 880.0]
