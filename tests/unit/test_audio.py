"""pyconvai.audio: G.711 tables, format codecs, tones, levels, tone detection, resampling."""

import math
import warnings
from array import array

import pytest

from pyconvai.sim import audio

ALL_SAMPLES = array("h", range(-32768, 32768)).tobytes()
ALL_CODES = bytes(range(256))


def _pcm(*samples: int) -> bytes:
    return array("h", samples).tobytes()


def _values(pcm16: bytes) -> list[int]:
    return list(array("h", pcm16))


def test_ulaw_known_values() -> None:
    assert audio.ulaw_encode(_pcm(0, 32767, -32768, -100)) == bytes([0xFF, 0x80, 0x00, 0x72])
    assert _values(audio.ulaw_decode(bytes([0xFF, 0x7F, 0x80, 0x00, 0xF0]))) == [0, 0, 32124, -32124, 120]


def test_alaw_known_values() -> None:
    assert audio.alaw_encode(_pcm(0, 32767, -32768)) == bytes([0xD5, 0xAA, 0x2A])
    assert _values(audio.alaw_decode(bytes([0xD5, 0x55, 0xAA, 0x2A]))) == [8, -8, 32256, -32256]


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_g711_matches_audioop_where_available(law: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")
    if law == "ulaw":
        assert audio.ulaw_encode(ALL_SAMPLES) == audioop.lin2ulaw(ALL_SAMPLES, 2)
        assert audio.ulaw_decode(ALL_CODES) == audioop.ulaw2lin(ALL_CODES, 2)
    else:
        assert audio.alaw_encode(ALL_SAMPLES) == audioop.lin2alaw(ALL_SAMPLES, 2)
        assert audio.alaw_decode(ALL_CODES) == audioop.alaw2lin(ALL_CODES, 2)


def test_g711_codes_round_trip() -> None:
    # μ-law has two zeros (0xFF and 0x7F); both decode to 0, which encodes as 0xFF.
    assert audio.ulaw_encode(audio.ulaw_decode(ALL_CODES)) == ALL_CODES.replace(b"\x7f", b"\xff")
    assert audio.alaw_encode(audio.alaw_decode(ALL_CODES)) == ALL_CODES


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_g711_samples_round_trip_within_quantisation(law: str) -> None:
    enc, dec = (audio.ulaw_encode, audio.ulaw_decode) if law == "ulaw" else (audio.alaw_encode, audio.alaw_decode)
    original = _values(ALL_SAMPLES)
    decoded = _values(dec(enc(ALL_SAMPLES)))
    for x, y in zip(original[::7], decoded[::7]):
        assert abs(x - y) <= max(16, abs(x) // 16), (x, y)


def test_encode_decode_by_format_name() -> None:
    pcm = audio.tone(1000, 20, 8000)
    assert audio.encode(pcm, "ulaw_8000") == audio.ulaw_encode(pcm)
    assert audio.decode(audio.ulaw_encode(pcm), "ulaw_8000") == audio.ulaw_decode(audio.ulaw_encode(pcm))
    for fmt in audio.FORMATS[1:]:
        assert audio.encode(pcm, fmt) == pcm
        assert audio.decode(pcm + b"\x01", fmt) == pcm  # odd trailing byte ignored


def test_format_helpers() -> None:
    assert audio.parse_format("ulaw_8000") == ("ulaw", 8000)
    assert audio.parse_format("pcm_22050") == ("pcm", 22050)
    assert audio.sample_width("ulaw_8000") == 1 and audio.sample_width("pcm_48000") == 2
    assert audio.bytes_per_second("pcm_16000") == 32000
    assert audio.duration_ms(8000, "ulaw_8000") == 1000.0
    assert audio.duration_ms(4410, "pcm_44100") == 50.0
    for bad in ("alaw_8000", "pcm_11025", "mp3_44100_128", ""):
        with pytest.raises(ValueError):
            audio.parse_format(bad)


def test_tone_length_and_level() -> None:
    pcm = audio.tone(440, 100, 8000, amplitude=10000)
    samples = _values(pcm)
    assert len(samples) == 800
    assert max(samples) <= 10000 and max(samples) > 9900
    assert audio.rms(pcm) == pytest.approx(10000 / math.sqrt(2), rel=0.01)
    assert audio.silence(20, 16000) == bytes(640)
    assert audio.rms(audio.silence(20, 16000)) == 0.0
    assert audio.rms(b"") == 0.0
    with pytest.raises(ValueError):
        audio.tone(440, 10, 8000, amplitude=40000)


@pytest.mark.parametrize("fmt", audio.FORMATS)
def test_goertzel_picks_the_tone(fmt: str) -> None:
    rate = audio.sample_rate(fmt)
    candidates = (440, 660, 880, 1200)
    for freq in candidates:
        pcm = audio.decode(audio.encode(audio.tone(freq, 40, rate), fmt), fmt)
        powers = {f: audio.goertzel_power(pcm, rate, f) for f in candidates}
        assert max(powers, key=powers.__getitem__) == freq
    pcm = audio.tone(1000, 100, rate, amplitude=8000)
    assert audio.goertzel_power(pcm, rate, 1000) == pytest.approx(8000**2 / 2, rel=0.05)


def test_resample() -> None:
    src = audio.tone(500, 200, 22050)
    out = audio.resample(src, 22050, 8000)
    assert len(out) == 2 * (len(src) // 2 * 8000 // 22050)
    assert audio.goertzel_power(out, 8000, 500) > 100 * audio.goertzel_power(out, 8000, 1200)
    up = audio.resample(audio.tone(300, 100, 8000), 8000, 48000)
    assert len(up) == 2 * 4800
    assert audio.rms(up) == pytest.approx(audio.rms(audio.tone(300, 100, 48000)), rel=0.02)
    assert audio.resample(src, 16000, 16000) == src
    assert audio.resample(b"", 8000, 16000) == b""
    assert _values(audio.resample(_pcm(0, 100), 8000, 16000)) == [0, 50, 100, 100]
