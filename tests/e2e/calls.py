"""Placing calls through the module and judging what the caller heard.

The agent side of a Local channel runs ElevenLabsConversationalAI(); the caller
side records both directions with MixMonitor (r = what the caller heard, t =
what it said) and plays a prompt, waits, or hangs up as the test asks. Each
call announces its end with a UserEvent carrying the channel variables the
application set.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pyconvai import audio

FRAME_MS = 20


def dialplan(rec_dir: str, sounds_dir: str) -> str:
    """The e2e context: ai-<agent>[-<options>] and caller-<script> extensions."""
    return f"""[e2e]
exten => _ai-.,1,Set(AGENT_ARGS=${{CUT(EXTEN,-,2-)}})
 same => n,ElevenLabsConversationalAI(${{CUT(AGENT_ARGS,-,1)}},${{CUT(AGENT_ARGS,-,2)}})
 same => n,UserEvent(ConvaiResult,Status: ${{ELEVENLABS_STATUS}},Conversation: ${{ELEVENLABS_CONVERSATION_ID}},Reason: ${{ELEVENLABS_END_REASON}},Where: dialplan)
 same => n,Hangup()
exten => h,1,GotoIf($["${{ELEVENLABS_STATUS}}" = ""]?done)
 same => n,UserEvent(ConvaiResult,Status: ${{ELEVENLABS_STATUS}},Conversation: ${{ELEVENLABS_CONVERSATION_ID}},Reason: ${{ELEVENLABS_END_REASON}},Where: h)
 same => n(done),NoOp()

; caller-<tag>-<seconds>: listen only
exten => _caller-.,1,Answer()
 same => n,MixMonitor({rec_dir}/${{UNIQUEID}}-mix.wav,r({rec_dir}/${{CUT(EXTEN,-,2)}}-heard.wav)t({rec_dir}/${{CUT(EXTEN,-,2)}}-said.wav))
 same => n,Wait(${{CUT(EXTEN,-,3)}})
 same => n,Hangup()

; talk-<tag>-<before>-<prompt>-<after>: wait, play a prompt, wait, hang up
exten => _talk-.,1,Answer()
 same => n,MixMonitor({rec_dir}/${{UNIQUEID}}-mix.wav,r({rec_dir}/${{CUT(EXTEN,-,2)}}-heard.wav)t({rec_dir}/${{CUT(EXTEN,-,2)}}-said.wav))
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
