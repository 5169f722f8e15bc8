"""What the simulated agent says (tones or espeak-ng speech, cut into chunks) and hears (VAD)."""

from __future__ import annotations

import logging
import shutil
import subprocess
from functools import lru_cache
from itertools import cycle

from . import audio

log = logging.getLogger("pyconvai.sim")

LARGE_FRAME_BYTES = 800 * 1024
"""Raw audio bytes in the large frame: base64 makes the JSON message just over 1 MiB."""


def espeak_available() -> bool:
    """Whether ``espeak-ng`` is on PATH."""
    return shutil.which("espeak-ng") is not None


def _wav_pcm16(wav: bytes) -> tuple[bytes, int]:
    """Samples and rate of a mono PCM16 WAV file (espeak-ng streams one with bogus sizes)."""
    if wav[:4] != b"RIFF" or wav[8:12] != b"WAVE":
        raise ValueError("not a WAV file")
    rate = 0
    pos = 12
    while pos + 8 <= len(wav):
        chunk_id, size = wav[pos : pos + 4], int.from_bytes(wav[pos + 4 : pos + 8], "little")
        body = wav[pos + 8 : pos + 8 + size]
        if chunk_id == b"fmt ":
            channels, rate, bits = body[2] | body[3] << 8, int.from_bytes(body[4:8], "little"), body[14]
            if channels != 1 or bits != 16:
                raise ValueError(f"expected mono 16-bit WAV, got {channels} channels of {bits} bits")
        elif chunk_id == b"data" and rate:
            return wav[pos + 8 :], rate
        pos += 8 + size + (size & 1)
    raise ValueError("WAV file without format or data")


@lru_cache(maxsize=32)
def _espeak(text: str) -> tuple[bytes, int]:
    """``text`` spoken by espeak-ng: PCM16 samples and their rate."""
    result = subprocess.run(
        ["espeak-ng", "--stdout", text], capture_output=True, check=True, timeout=20
    )
    return _wav_pcm16(result.stdout)


@lru_cache(maxsize=64)
def render(text: str, tone_hz: float, ms: int, fmt: str, amplitude: int, speech: bool) -> bytes:
    """One utterance in ``fmt``: ``text`` spoken when asked and possible, else a tone of ``ms``."""
    rate = audio.sample_rate(fmt)
    if speech and text and espeak_available():
        try:
            pcm, speech_rate = _espeak(text)
            return audio.encode(audio.resample(pcm, speech_rate, rate), fmt)
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            log.warning("espeak-ng failed (%s); using a tone", exc)
    return audio.encode(audio.tone(tone_hz, ms, rate, amplitude), fmt)


def pad(data: bytes, nbytes: int, fmt: str) -> bytes:
    """``data`` extended with encoded silence to at least ``nbytes``."""
    width = audio.sample_width(fmt)
    samples = -(-(nbytes - len(data)) // width)
    return data + audio.encode(bytes(2 * samples), fmt) if samples > 0 else data


def split(
    data: bytes, fmt: str, pattern_ms: tuple[int, ...], first_bytes: int = 0, odd: bool = False
) -> list[bytes]:
    """Cut encoded audio into chunks whose durations cycle through ``pattern_ms``.

    ``first_bytes`` forces a first chunk of at least that size; ``odd`` moves
    every cut one byte later so PCM chunks have odd lengths.
    """
    per_ms = audio.bytes_per_second(fmt) / 1000
    sample_bytes = audio.sample_width(fmt)
    chunks: list[bytes] = []
    pos = 0
    for ms in cycle(pattern_ms):
        if pos >= len(data):
            break
        size = max(sample_bytes, int(ms * per_ms) // sample_bytes * sample_bytes)
        if not chunks:
            size = max(size, first_bytes)
            if odd and sample_bytes == 2:
                size += 1
        chunks.append(data[pos : pos + size])
        pos += size
    return chunks


class Vad:
    """Energy voice-activity detector on PCM16, in 20 ms frames.

    ``feed`` returns True once per utterance, when speech has lasted
    ``min_speech_ms``; the utterance ends after ``silence_ms`` of quiet
    (``utterances_ended`` counts the ends).
    """

    def __init__(self, rate: int, threshold: float, min_speech_ms: int, silence_ms: int) -> None:
        self._frame_bytes = rate // 50 * 2
        self._threshold = threshold
        self._min_speech_ms = min_speech_ms
        self._silence_ms = silence_ms
        self._pending = b""
        self._loud_ms = 0
        self._quiet_ms = 0
        self.in_speech = False
        self.last_score = 0.0
        self.utterances_ended = 0

    def feed(self, pcm16: bytes) -> bool:
        """Add caller audio; True when a new utterance starts within it."""
        data = self._pending + pcm16
        usable = len(data) - len(data) % self._frame_bytes
        self._pending = data[usable:]
        onset = False
        for pos in range(0, usable, self._frame_bytes):
            level = audio.rms(data[pos : pos + self._frame_bytes])
            self.last_score = min(1.0, level / (2 * self._threshold))
            if level > self._threshold:
                self._loud_ms += 20
                self._quiet_ms = 0
                if not self.in_speech and self._loud_ms >= self._min_speech_ms:
                    self.in_speech = onset = True
            else:
                self._quiet_ms += 20
                if not self.in_speech:
                    self._loud_ms = 0
                elif self._quiet_ms >= self._silence_ms:
                    self.in_speech = False
                    self._loud_ms = 0
                    self.utterances_ended += 1
        return onset
