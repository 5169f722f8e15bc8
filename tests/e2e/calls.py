"""Placing calls through the module and judging what the caller heard.

The agent side of a Local channel runs ElevenLabsConversationalAI(); the caller
side records both directions with MixMonitor (r = what the caller heard, t =
what it said) and plays a prompt, waits, or hangs up as the test asks. Each
call announces its end with a UserEvent carrying the channel variables the
application set.
"""

from __future__ import annotations

import time
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pyconvai.sim import audio

API_KEY = "sk_test_0123456789abcdef0123456789abcd"

FRAME_MS = 20


def dialplan(rec_dir: str, sounds_dir: str, extra: str = "", recording: str = "wav") -> str:
    """The e2e context: ai-<agent>[-<options>] (aic-...: the same through AIConversation),
    caller-<tag>-<secs>, talk-... and ``extra`` lines.

    ``recording``: the format of the caller's heard/said files ("wav16" keeps 16 kHz).
    MixMonitor touches <tag>.done once it has closed them.
    """
    return f"""[e2e]
{extra}
exten => _ai-.,1,Set(AGENT_ARGS=${{CUT(EXTEN,-,2-)}})
 same => n,ElevenLabsConversationalAI(${{CUT(AGENT_ARGS,-,1)}},${{CUT(AGENT_ARGS,-,2)}})
 same => n,UserEvent(ConvaiResult,Status: ${{ELEVENLABS_STATUS}},Conversation: ${{ELEVENLABS_CONVERSATION_ID}},Reason: ${{ELEVENLABS_END_REASON}},Where: dialplan)
 same => n,Hangup()
exten => _aic-.,1,Set(AGENT_ARGS=${{CUT(EXTEN,-,2-)}})
 same => n,AIConversation(${{CUT(AGENT_ARGS,-,1)}},${{CUT(AGENT_ARGS,-,2)}})
 same => n,UserEvent(ConvaiResult,Status: ${{ELEVENLABS_STATUS}},Conversation: ${{ELEVENLABS_CONVERSATION_ID}},Reason: ${{ELEVENLABS_END_REASON}},Where: dialplan)
 same => n,Hangup()
exten => h,1,GotoIf($["${{ELEVENLABS_STATUS}}" = ""]?done)
 same => n,UserEvent(ConvaiResult,Status: ${{ELEVENLABS_STATUS}},Conversation: ${{ELEVENLABS_CONVERSATION_ID}},Reason: ${{ELEVENLABS_END_REASON}},Where: h)
 same => n(done),NoOp()

; caller-<tag>-<seconds>: listen only
exten => _caller-.,1,Answer()
 same => n,MixMonitor({rec_dir}/${{UNIQUEID}}-mix.wav,r({rec_dir}/${{CUT(EXTEN,-,2)}}-heard.{recording})t({rec_dir}/${{CUT(EXTEN,-,2)}}-said.{recording}),touch {rec_dir}/${{CUT(EXTEN,-,2)}}.done)
 same => n,Wait(${{CUT(EXTEN,-,3)}})
 same => n,Hangup()

; talk-<tag>-<before>-<prompt>-<after>: wait, play a prompt, wait, hang up
exten => _talk-.,1,Answer()
 same => n,MixMonitor({rec_dir}/${{UNIQUEID}}-mix.wav,r({rec_dir}/${{CUT(EXTEN,-,2)}}-heard.{recording})t({rec_dir}/${{CUT(EXTEN,-,2)}}-said.{recording}),touch {rec_dir}/${{CUT(EXTEN,-,2)}}.done)
 same => n,Wait(${{CUT(EXTEN,-,3)}})
 same => n,Playback({sounds_dir}/${{CUT(EXTEN,-,4)}})
 same => n,Wait(${{CUT(EXTEN,-,5)}})
 same => n,Hangup()
"""


def write_wav(path: Path, pcm16: bytes, rate: int = 8000) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm16)


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        rate = w.getframerate()
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
    return samples, rate


def tone_wav(path: Path, freq: float, ms: int, rate: int = 8000, amplitude: int = 12000) -> None:
    write_wav(path, audio.tone(freq, ms, rate, amplitude), rate)


@dataclass
class ToneSpan:
    """Where a tone is present in a recording, frame by frame (20 ms frames)."""

    present: np.ndarray  # bool per frame

    @property
    def frames(self) -> int:
        return int(self.present.sum())

    @property
    def first(self) -> int | None:
        idx = np.flatnonzero(self.present)
        return int(idx[0]) if idx.size else None

    @property
    def last(self) -> int | None:
        idx = np.flatnonzero(self.present)
        return int(idx[-1]) if idx.size else None

    @property
    def gaps(self) -> int:
        """Frames without the tone between its first and last frame."""
        if self.first is None:
            return 0
        return int((~self.present[self.first : self.last + 1]).sum())


def tone_frames(samples: np.ndarray, rate: int, freq: float, min_ratio: float = 0.5, min_rms: float = 300.0) -> ToneSpan:
    """Frames whose energy is mostly at ``freq`` (a Goertzel-like projection per frame)."""
    n = rate * FRAME_MS // 1000
    count = len(samples) // n
    frames = samples[: count * n].reshape(count, n)
    t = np.arange(n) / rate
    ref_c, ref_s = np.cos(2 * np.pi * freq * t), np.sin(2 * np.pi * freq * t)
    c = frames @ ref_c
    s = frames @ ref_s
    tone_power = 2 * (c**2 + s**2) / n
    total_power = (frames**2).sum(axis=1)
    rms = np.sqrt(total_power / n)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(total_power > 0, tone_power / total_power, 0.0)
    return ToneSpan((ratio >= min_ratio) & (rms >= min_rms))


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


def agents_conf(endpoint: str, agents: dict[str, dict], general: dict | None = None, etc: str = "") -> str:
    """elevenlabs.conf with each agent pointed at the simulator's signed-URL endpoint.

    A value None leaves a default key out; a list repeats the key; "{etc}" is
    the sandbox's configuration directory. Agents of another provider get no ElevenLabs keys.
    """
    text = "[general]\n" + "".join(f"{k} = {v}\n" for k, v in (general or {}).items())
    for name, keys in agents.items():
        if keys.get("provider", "elevenlabs") == "elevenlabs":
            keys = {"elevenlabs_api_key": API_KEY, "elevenlabs_get_signed_url_endpoint": endpoint, **keys}
        text += f"\n[{name}]\n"
        for key, value in keys.items():
            for item in value if isinstance(value, list) else [value]:
                if item is not None:
                    text += f"{key} = {str(item).replace('{etc}', etc)}\n"
    return text


class CallBed:
    """An Asterisk with the e2e dialplan, an AMI client and the caller's sounds."""

    def __init__(self, ast, ami, recording: str = "wav"):
        self.ast = ast
        self.ami = ami
        self.recording = recording
        sounds = ast.host_path(ast.path("sounds"))
        # A second of speech, then silence that pushes it through the caller's translators.
        write_wav(sounds / "speak1k.wav", audio.tone(1000.0, 1000, 8000, 12000) + audio.silence(300, 8000))
        write_wav(sounds / "quiet1s.wav", audio.silence(1000, 8000))
        # Wideband speech: 6 kHz, which only a 16 kHz path carries.
        write_wav(sounds / "speak6k.wav16", audio.tone(6000.0, 1000, 16000, 12000) + audio.silence(300, 16000), 16000)

    def call(self, agent: str, caller: str, codecs: str | None = None, app: str = "ai") -> None:
        """``app``: "ai" runs ElevenLabsConversationalAI(), "aic" AIConversation()."""
        self.ast.originate(f"{app}-{agent}", caller, codecs=codecs, ami=self.ami)

    def events(self, name: str) -> list[dict]:
        return [e for e in list(self.ami.events) if e.get("Event") == name]

    def event(self, name: str, index: int = 0, timeout: float = 30.0, **match: str) -> dict:
        """The index-th AMI event called ``name`` whose headers match ``match``."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.events(name) if all(e.get(k) == v for k, v in match.items())]
            if len(found) > index:
                return found[index]
            if time.monotonic() > deadline:
                raise AssertionError(f"no {name} event #{index} {match}: {self.ast.log_text()[-3000:]}")
            time.sleep(0.05)

    def result(self, timeout: float = 30.0, index: int = 0) -> dict:
        """The ConvaiResult UserEvent the dialplan raises after the application."""
        return self.event("UserEvent", index, timeout, UserEvent="ConvaiResult")

    def stats(self, index: int = 0, timeout: float = 15.0) -> dict:
        """The module's figures for a call (AMI ElevenLabsConversationStats)."""
        return self.event("ElevenLabsConversationStats", index, timeout)

    def heard(self, tag: str, timeout: float = 10.0):
        """What the caller heard, once MixMonitor has finished the files (after the hangup)."""
        done = self.ast.recording(f"{tag}.done")
        deadline = time.monotonic() + timeout
        while not done.exists():
            if time.monotonic() > deadline:
                raise AssertionError(f"MixMonitor did not finish {tag}'s recording within {timeout} s")
            time.sleep(0.05)
        return read_wav(self.ast.recording(f"{tag}-heard.{self.recording}"))

    def baseline(self, agent: str) -> dict[str, int]:
        """One call to warm the runtime up, then the process's threads, fds and RSS: what
        later calls must leave as they found it."""
        self.call(agent, "caller-warm-1")
        self.result()
        self.wait_idle()
        return self.ast.process_stats()

    def wait_idle(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.ast.channel_count() or "Live calls:      0" not in self.ast.cli("elevenlabs show runtime"):
            if time.monotonic() > deadline:
                raise AssertionError("calls left behind:\n" + self.ast.cli("core show channels"))
            time.sleep(0.1)


def assert_one_line_each(events: list[dict]) -> None:
    """No header of these AMI events was forged, and each value is one bounded line."""
    for event in events:
        assert not event["Event"].startswith("Hangup") and "Cause" not in event, event.keys()
        for key, value in event.items():
            if key.startswith("_"):  # the test client's own (arrival time)
                continue
            assert not set(value) & {"\r", "\n", "\x00"} and len(value) <= 2000, value[:200]
