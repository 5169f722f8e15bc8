"""Small pure-Python audio helpers for the simulator, the tests and the benchmark.

Stdlib only (``audioop`` is gone in Python 3.13, so G.711 is implemented here).
PCM16 means 16-bit signed little-endian mono samples; a trailing odd byte is
ignored. These helpers favour clarity over speed: fine for seconds of audio,
not for a real-time media path.
"""

from __future__ import annotations

import math
import operator
import sys
from array import array
from functools import cache

from ..protocol import FORMATS, AudioFormat

_ULAW_BIAS = 0x84
_ULAW_CLIP = 8159  # 14-bit magnitude limit before biasing
_ULAW_SEG_END = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)
_ALAW_SEG_END = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)


def parse_format(fmt: str) -> tuple[str, int]:
    """Split a format name such as ``ulaw_8000`` into ``("ulaw", 8000)``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown audio format {fmt!r}; expected one of {', '.join(FORMATS)}")
    parsed = AudioFormat.parse(fmt)
    return parsed.encoding, parsed.sample_rate


def sample_rate(fmt: str) -> int:
    """Sample rate in Hz of a format name."""
    return parse_format(fmt)[1]


def sample_width(fmt: str) -> int:
    """Encoded bytes per sample: 1 for μ-law, 2 for PCM16."""
    return 1 if parse_format(fmt)[0] == "ulaw" else 2


def bytes_per_second(fmt: str) -> int:
    """Encoded bytes per second of audio in a format."""
    return sample_width(fmt) * sample_rate(fmt)


def duration_ms(nbytes: int, fmt: str) -> float:
    """Duration in milliseconds of ``nbytes`` of encoded audio in ``fmt``."""
    return 1000.0 * nbytes / bytes_per_second(fmt)


def _samples(pcm16: bytes, typecode: str = "h") -> array:
    """PCM16 LE bytes as an array of native ints (``h`` signed, ``H`` unsigned)."""
    samples = array(typecode)
    samples.frombytes(pcm16[: len(pcm16) & ~1])
    if sys.byteorder == "big":
        samples.byteswap()
    return samples


def _pcm(samples: array) -> bytes:
    """An array of 16-bit ints as PCM16 LE bytes."""
    if sys.byteorder == "big":
        samples = array(samples.typecode, samples)
        samples.byteswap()
    return samples.tobytes()


def _segment(value: int, ends: tuple[int, ...]) -> int:
    for seg, end in enumerate(ends):
        if value <= end:
            return seg
    return len(ends)


def _linear_to_ulaw(sample: int) -> int:
    """G.711 μ-law code of one signed 16-bit sample."""
    value = sample >> 2
    if value < 0:
        value, mask = -value, 0x7F
    else:
        mask = 0xFF
    value = min(value, _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = _segment(value, _ULAW_SEG_END)
    if seg >= 8:
        return 0x7F ^ mask
    return ((seg << 4) | ((value >> (seg + 1)) & 0x0F)) ^ mask


def _ulaw_to_linear(code: int) -> int:
    """Signed 16-bit sample of one G.711 μ-law code."""
    code = ~code & 0xFF
    magnitude = (((code & 0x0F) << 3) + _ULAW_BIAS) << ((code & 0x70) >> 4)
    return _ULAW_BIAS - magnitude if code & 0x80 else magnitude - _ULAW_BIAS


def _linear_to_alaw(sample: int) -> int:
    """G.711 A-law code of one signed 16-bit sample."""
    value = sample >> 3
    if value >= 0:
        mask = 0xD5
    else:
        value, mask = -value - 1, 0x55
    seg = _segment(value, _ALAW_SEG_END)
    if seg >= 8:
        return 0x7F ^ mask
    shift = 1 if seg < 2 else seg
    return ((seg << 4) | ((value >> shift) & 0x0F)) ^ mask


def _alaw_to_linear(code: int) -> int:
    """Signed 16-bit sample of one G.711 A-law code."""
    code ^= 0x55
    magnitude = (code & 0x0F) << 4
    seg = (code & 0x70) >> 4
    if seg == 0:
        magnitude += 8
    else:
        magnitude = (magnitude + 0x108) << (seg - 1)
    return magnitude if code & 0x80 else -magnitude


@cache
def _encode_table(law: str) -> bytes:
    """Code for every 16-bit sample, indexed by the sample as an unsigned int."""
    encode = _linear_to_ulaw if law == "ulaw" else _linear_to_alaw
    return bytes(encode(u - 0x10000 if u & 0x8000 else u) for u in range(0x10000))


@cache
def _decode_bytes(law: str) -> tuple[bytes, bytes]:
    """Translation tables giving the low and the high byte of each code's PCM16 sample."""
    decode = _ulaw_to_linear if law == "ulaw" else _alaw_to_linear
    words = [decode(code) & 0xFFFF for code in range(256)]
    return bytes(w & 0xFF for w in words), bytes(w >> 8 for w in words)


def _g711_decode(data: bytes, law: str) -> bytes:
    # bytes.translate twice, interleaved: no Python work per sample.
    low, high = _decode_bytes(law)
    out = bytearray(2 * len(data))
    out[0::2] = data.translate(low)
    out[1::2] = data.translate(high)
    return bytes(out)


def ulaw_encode(pcm16: bytes) -> bytes:
    """PCM16 → G.711 μ-law, one byte per sample."""
    return bytes(map(_encode_table("ulaw").__getitem__, _samples(pcm16, "H")))


def ulaw_decode(data: bytes) -> bytes:
    """G.711 μ-law → PCM16."""
    return _g711_decode(data, "ulaw")


def alaw_encode(pcm16: bytes) -> bytes:
    """PCM16 → G.711 A-law, one byte per sample."""
    return bytes(map(_encode_table("alaw").__getitem__, _samples(pcm16, "H")))


def alaw_decode(data: bytes) -> bytes:
    """G.711 A-law → PCM16."""
    return _g711_decode(data, "alaw")


def encode(pcm16: bytes, fmt: str) -> bytes:
    """PCM16 already at ``fmt``'s sample rate → bytes in ``fmt`` (no resampling)."""
    codec, _ = parse_format(fmt)
    return ulaw_encode(pcm16) if codec == "ulaw" else pcm16[: len(pcm16) & ~1]


def decode(data: bytes, fmt: str) -> bytes:
    """Bytes in ``fmt`` → PCM16 at ``fmt``'s sample rate."""
    codec, _ = parse_format(fmt)
    return ulaw_decode(data) if codec == "ulaw" else data[: len(data) & ~1]


def silence(ms: float, rate: int) -> bytes:
    """``ms`` milliseconds of PCM16 silence."""
    return bytes(2 * int(rate * ms / 1000))


def tone(freq_hz: float, ms: float, rate: int = 16000, amplitude: int = 8000) -> bytes:
    """A sine tone as PCM16: ``ms`` milliseconds at ``rate`` Hz, peak ``amplitude``."""
    if not 0 <= amplitude <= 32767:
        raise ValueError("amplitude must be within 0..32767")
    step = 2.0 * math.pi * freq_hz / rate
    count = int(rate * ms / 1000)
    return _pcm(array("h", (round(amplitude * math.sin(step * i)) for i in range(count))))


_sumprod = getattr(math, "sumprod", None)  # Python 3.12+: in C


def _sum_of_squares(samples: array) -> int:
    if _sumprod is not None:
        return int(_sumprod(samples, samples))
    return sum(map(operator.mul, samples, samples))


def rms(pcm16: bytes) -> float:
    """Root-mean-square level of PCM16 (0.0 for no samples)."""
    samples = _samples(pcm16)
    if not samples:
        return 0.0
    return math.sqrt(_sum_of_squares(samples) / len(samples))


def goertzel_power(pcm16: bytes, rate: int, freq: float) -> float:
    """Power of one frequency in PCM16, scaled like a mean square.

    A pure tone of peak amplitude A at ``freq`` yields about A²/2 (its RMS²);
    other frequencies yield far less, so comparing powers picks the tone.
    """
    samples = _samples(pcm16)
    if not samples:
        return 0.0
    coeff = 2.0 * math.cos(2.0 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2
    return 2.0 * power / (len(samples) ** 2)


def resample(pcm16: bytes, src_rate: int, dst_rate: int) -> bytes:
    """Linear-interpolation resampling of PCM16 (no anti-alias filter)."""
    if src_rate <= 0 or dst_rate <= 0:
        raise ValueError("sample rates must be positive")
    if src_rate == dst_rate:
        return pcm16[: len(pcm16) & ~1]
    src = _samples(pcm16)
    if not src:
        return b""
    last = len(src) - 1
    step = src_rate / dst_rate
    out = array("h")
    for i in range(len(src) * dst_rate // src_rate):
        pos = i * step
        j = int(pos)
        x0 = src[j]
        x1 = src[j + 1] if j < last else x0
        out.append(round(x0 + (x1 - x0) * (pos - j)))
    return _pcm(out)
