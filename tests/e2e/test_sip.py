"""Callers over SIP and RTP in every codec a PBX meets: μ-law, A-law, G.722, Opus.

A second Asterisk plays the caller's phone (tests/e2e/sip.py): it dials the PBX under
test over a PJSIP trunk in one codec, plays tones and records what it hears at 16 kHz.
The simulator's agents speak tones (greeting 440 Hz, reply 880 Hz, stale audio 1200 Hz;
6 kHz for the wideband checks), so the recordings say what was heard and at what pitch.

The RTP crosses a relay (tests/e2e/impair.py; transparent unless a test impairs it) that
counts the packets: that every frame reached the wire is judged there, against the
frames the module says it wrote. The phone's recording judges the rest (pitch, order,
nothing stale), not the count nor holes: MixMonitor drops buffered audio to keep its two
directions within 100 ms of each other, so on a loaded machine it can lose, or punch a
hole in, what the wire delivered (seen in CI: 6 of 100 Opus frames, and a one-frame hole).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest

from pyconvai.sim import AgentScript, audio
from tests.e2e.asterisk import MODULES
from tests.e2e.calls import tone_frames
from tests.e2e.impair import Impairment, ImpairingRelay
from tests.e2e.sip import (CODECS, JITTER_BUFFERED, SIP_MODULES, SipBed, Sipp, free_udp_port, rtp_conf, start_phone,
                           sut_pjsip)

WIDEBAND = {"g722", "opus"}
PCM16 = {"output_format": "pcm_16000", "input_format": "pcm_16000"}
SCRIPTS = {
    "agent_greeting": AgentScript(**PCM16, greeting_ms=2000, vad_threshold=1e9),
    "agent_ulaw": AgentScript(output_format="ulaw_8000", input_format="ulaw_8000", greeting_ms=2000,
                              vad_threshold=1e9),
    "agent_wideband": AgentScript(**PCM16, greeting_ms=2000, greeting_tone_hz=6000.0, vad_threshold=1e9),
    "agent_bargein": AgentScript(**PCM16, greeting_ms=8000, reply_ms=1500, late_stale_chunks=3, vad_scores=True),
}
AGENTS = {
    "greeter": {"elevenlabs_agent_id": "agent_greeting", "elevenlabs_audio_frames_buffer_ms": 20},
    "ulaw": {"elevenlabs_agent_id": "agent_ulaw", "elevenlabs_audio_frames_buffer_ms": 20},
    "wide": {"elevenlabs_agent_id": "agent_wideband", "elevenlabs_audio_frames_buffer_ms": 20},
    "barge": {"elevenlabs_agent_id": "agent_bargein", "elevenlabs_audio_frames_buffer_ms": 20},
}
KEYS_SCENARIO = Path(__file__).parent / "sipp" / "keys.xml"


def _sut(call_bed):
    port = free_udp_port()
    sut = call_bed(AGENTS, SCRIPTS, JITTER_BUFFERED, modules=MODULES + SIP_MODULES,
                   configs={"pjsip.conf": sut_pjsip(port), "rtp.conf": rtp_conf()})
    return sut, port


def _bed(call_bed, make_asterisk, toward_phone: Impairment, toward_sut: Impairment):
    sut, port = _sut(call_bed)
    relay = ImpairingRelay(port, toward_phone=toward_phone, toward_sut=toward_sut).start()
    bed = SipBed(sut, start_phone(make_asterisk, relay.port), port)
    bed.relay = relay
    return bed


@pytest.fixture
def sip_bed(call_bed, make_asterisk):
    """The PBX under test with PJSIP, and the phone that calls it through a relay that only
    counts."""
    bed = _bed(call_bed, make_asterisk, Impairment(seed=0, loss=0.0, jitter_ms=(0.0, 0.0)),
               Impairment(seed=0, loss=0.0, jitter_ms=(0.0, 0.0)))
    yield bed
    bed.relay.stop()


@pytest.fixture
def impaired_bed(call_bed, make_asterisk):
    """The same, with RTP both ways through the seeded impairment relay. Toward the PBX under
    test: 2 % loss and 0-60 ms of jitter, which reorders packets, with the module behind
    Asterisk's adaptive jitter buffer (jb- extensions), as behind a trunk. Toward the phone,
    our measuring instrument: 2 % loss only. What happens to RTP after the module wrote its
    frames cannot change what the module did, and the phone records what arrives with no
    jitter buffer of its own: jitter there blurs the measurement, not the module (with it, a
    loaded machine's recording once lost 15 of 75 reply frames where the relay dropped 5)."""
    bed = _bed(call_bed, make_asterisk, Impairment(seed=16, jitter_ms=(0.0, 0.0)), Impairment(seed=61))
    yield bed
    bed.relay.stop()


def _on_the_wire(bed, frames: int) -> dict:
    """The module wrote ``frames`` frames, never ran dry, and every one crossed the wire
    toward the phone (sent, or dropped by an impairing relay). Returns its figures."""
    stats = bed.sut.stats()
    assert stats["FramesOut"] == str(frames) and stats["Underruns"] == "0", stats
    relay = bed.relay.toward_phone
    _wait_until(lambda: relay.sent + relay.dropped >= frames)
    assert relay.sent + relay.dropped == frames, (relay, frames)
    return stats


def _heard(heard: np.ndarray, rate: int, hz: float, frames: int):
    """The tone heard, at most as long as sent, at its pitch."""
    span = tone_frames(heard, rate, hz)
    assert span.first is not None, f"no {hz:g} Hz heard"
    assert span.frames <= frames + 1, f"{span.frames} frames of {hz:g} Hz heard, {frames} sent"
    n = rate // 50
    part = heard[span.first * n : (span.last + 1) * n]
    spectrum = np.abs(np.fft.rfft(part * np.hanning(len(part))))
    pitch = np.fft.rfftfreq(len(part), 1 / rate)[spectrum.argmax()]
    assert abs(pitch - hz) < 2.0, f"heard at {pitch:.1f} Hz, sent at {hz:g} Hz"
    return span


def _tone_at_agent(sim, fmt: str, hz: float, ms: int) -> None:
    received = audio.decode(sim.wait_for_conversations(1)[0].received_audio, fmt)
    rate = audio.parse_format(fmt)[1]
    samples = np.frombuffer(received, dtype="<i2").astype(np.float64)
    span = tone_frames(samples, rate, hz)
    assert abs(span.frames - ms // 20) <= 1, f"the agent heard {span.frames * 20} ms of the caller's {ms} ms tone"
    assert span.gaps == 0


@pytest.mark.parametrize("codec", CODECS)
def test_sip_caller_hears_the_greeting_and_the_agent_hears_the_caller(sip_bed, sim, codec):
    # The phone waits out the 2 s greeting, then speaks 1 s of 1 kHz.
    sip_bed.call("ai-greeter", "talk-s1-3-speak1k-1", codec)
    assert sip_bed.sut.result()["Status"] == "CALLER_HANGUP"
    _on_the_wire(sip_bed, 100)
    heard, rate = sip_bed.heard("s1")
    _heard(heard, rate, 440.0, 100)
    _tone_at_agent(sim, "pcm_16000", 1000.0, 1000)
    sip_bed.wait_idle()


def test_sip_mulaw_caller_with_a_mulaw_agent_needs_no_translation(sip_bed, sim):
    sip_bed.call("ai-ulaw", "talk-u1-3-speak1k-1", "ulaw")
    record = sim.wait_for_conversations(1, timeout=15)[0]
    _wait_until(lambda: record.sent_of_type("audio"))  # the module has set its formats by now
    shown = sip_bed.sut.ast.cli(f"core show channel {sip_bed.sut_channel()}")
    assert re.search(r"WriteTranscode:\s+No", shown), shown
    assert sip_bed.sut.result()["Status"] == "CALLER_HANGUP"
    _on_the_wire(sip_bed, 100)
    heard, rate = sip_bed.heard("u1")
    _heard(heard, rate, 440.0, 100)
    _tone_at_agent(sim, "ulaw_8000", 1000.0, 1000)


def _barge_in(bed, sim, tag: str) -> None:
    """The caller speaks over the 8 s greeting: the module stops it at its next frame, writes
    the 1.5 s reply, all of it crosses the wire, and the phone hears no old audio after."""
    bed.sut.result()
    assert sim.wait_for_conversations(1)[0].interruptions, "the simulator saw no barge-in"
    stats = bed.sut.stats()
    written_before = int(stats["InterruptedAfterFrames"].split(",")[0])
    assert written_before < 8000 // 20 - 50, "the greeting was not interrupted"
    # After the interruption: the reply, and at most two frames already on their way (as test_call).
    assert 1500 // 20 <= int(stats["FramesOut"]) - written_before <= 1500 // 20 + 2, stats
    assert float(stats["BargeInStopMs"].split(",")[0]) <= 40.0, stats
    _on_the_wire(bed, int(stats["FramesOut"]))
    heard, rate = bed.heard(tag)
    assert tone_frames(heard, rate, 1200.0).frames == 0, "stale audio of the interrupted response was heard"
    greeting, reply = tone_frames(heard, rate, 440.0), tone_frames(heard, rate, 880.0)
    assert greeting.last is not None and reply.first is not None and greeting.last < reply.first
    assert reply.frames <= 1500 // 20 + 1
    bed.wait_idle()


@pytest.mark.parametrize("codec", CODECS)
def test_sip_barge_in_leaves_nothing_stale(sip_bed, sim, codec):
    sip_bed.call("ai-barge", "talk-b1-2-speak1k-4", codec)
    _barge_in(sip_bed, sim, "b1")


def _wait_until(predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _energy_above(samples: np.ndarray, rate: int, hz: float) -> float:
    """The share of the recording's energy above ``hz``."""
    spectrum = np.abs(np.fft.rfft(samples)) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    total = spectrum.sum()
    return float(spectrum[freqs > hz].sum() / total) if total else 0.0


@pytest.mark.parametrize("codec", CODECS)
def test_sip_wideband_end_to_end_only_without_a_narrowband_codec(sip_bed, sim, codec):
    """6 kHz both ways: heard by the phone and by the agent (pcm_16000) when the caller's
    codec is G.722 or Opus; gone when μ-law or A-law is in the path."""
    sip_bed.call("ai-wide", "talk-w1-3-speak6k-1", codec)
    shown = sip_bed.sut_channel_once(r"WriteFormat:\s+slin16")
    sip_bed.sut.result()
    heard, rate = sip_bed.heard("w1")
    assert rate == 16000
    received = audio.decode(sim.wait_for_conversations(1)[0].received_audio, "pcm_16000")
    uplink = np.frombuffer(received, dtype="<i2").astype(np.float64)
    if codec in WIDEBAND:
        _on_the_wire(sip_bed, 100)
        _heard(heard, rate, 6000.0, 100)
        _tone_at_agent(sim, "pcm_16000", 6000.0, 1000)
        # No 8 kHz step on the way to the caller: the channel writes 16 kHz into a 16 kHz codec.
        write = re.search(r"WriteTranscode:\s+(.*)", shown).group(1)
        assert "@8000" not in write, shown
        # Nor on the way to the agent: the module's own translation of the caller's audio.
        path = sip_bed.sut.ast.wait_for_log_match(r"caller audio to the agent: (\S+)").group(1)
        assert "@8000" not in path and path.endswith("(slin@16000)"), path
    else:
        assert _energy_above(heard, rate, 4000.0) < 0.01, "6 kHz through a narrowband codec?"
        assert _energy_above(uplink, 16000, 4000.0) < 0.01
        write = re.search(r"WriteTranscode:\s+(.*)", shown).group(1)
        # One resampling step, then the codec; and one on the way to the agent.
        assert write.strip() == f"Yes (slin@16000)->(slin@8000)->({codec}@8000)", shown
        path = sip_bed.sut.ast.wait_for_log_match(r"caller audio to the agent: (\S+)").group(1)
        assert path == f"({codec}@8000)->(slin@8000)->(slin@16000)", path


def test_sip_rfc4733_keys_reach_the_agent(sip_bed, sim, testbed_root):
    """SIPp presses 4711# as RFC 4733 events; the agent gets them as one message."""
    done = Sipp(testbed_root, KEYS_SCENARIO, sip_bed.sut_port, service="ai-greeter").wait()
    assert done.returncode == 0, done.output[-2000:]
    record = sim.wait_for_conversations(1)[0]
    assert sip_bed.sut.result()["Status"] == "CALLER_HANGUP"
    texts = [m["text"] for _, m in list(record.messages) if m.get("type") == "user_message"]
    assert texts == ["The caller pressed the keys 4711#"]


@pytest.mark.parametrize("codec", CODECS)
def test_sip_impaired_greeting_is_complete_apart_from_the_losses(impaired_bed, sim, codec):
    impaired_bed.call("jb-ai-greeter", "talk-i1-3-speak1k-1", codec)
    assert impaired_bed.sut.result()["Status"] == "CALLER_HANGUP"
    _on_the_wire(impaired_bed, 100)
    lost = impaired_bed.relay.toward_phone.dropped
    heard, rate = impaired_bed.heard("i1")
    _heard(heard, rate, 440.0, 100 - lost)
    # The caller, behind 2 % loss, 0-60 ms jitter and the jitter buffer: what the relay
    # delivered reaches the agent.
    received = audio.decode(sim.wait_for_conversations(1)[0].received_audio, "pcm_16000")
    caller = tone_frames(np.frombuffer(received, dtype="<i2").astype(np.float64), 16000, 1000.0)
    lost_up = impaired_bed.relay.toward_sut.dropped
    assert caller.frames >= 50 - 2 * lost_up - 1, (caller.frames, lost_up)
    impaired_bed.wait_idle()


@pytest.mark.parametrize("codec", CODECS)
def test_sip_impaired_barge_in_leaves_nothing_stale(impaired_bed, sim, codec):
    impaired_bed.call("jb-ai-barge", "talk-j1-2-speak1k-4", codec)
    _barge_in(impaired_bed, sim, "j1")
