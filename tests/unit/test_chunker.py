"""Caller audio into user_audio_chunk sizes (pyconvai/chunker.py), no socket."""

from pyconvai.chunker import CallerChunker
from pyconvai.protocol import AudioFormat

ULAW = AudioFormat("ulaw", 8000)
PCM16 = AudioFormat("pcm", 16000)


def test_chunks_of_buffer_ms_each_with_its_stream_end():
    c = CallerChunker(buffer_ms=40)
    assert c.start(ULAW) == [] and c.wanted == 320
    assert c.feed(b"a" * 300) == [] and c.wanted == 20
    chunks = c.feed(b"b" * 700)  # completes the first chunk and makes two more
    assert [(len(chunk), end) for chunk, end in chunks] == [(320, 320), (320, 640), (320, 960)]
    assert chunks[0][0] == b"a" * 300 + b"b" * 20
    assert c.wanted == 320 - 40 and c.fed == 1000 and c.dropped == 0


def test_before_the_format_only_the_newest_300_ms_are_kept():
    c = CallerChunker(buffer_ms=20)
    fed = [bytes([i]) * 160 for i in range(50)]  # 1 s of μ-law
    for frame in fed:
        assert c.feed(frame) == []
    assert c.wanted is None
    chunks = c.start(ULAW)
    assert [chunk for chunk, _ in chunks] == fed[-15:]  # the newest 300 ms
    assert c.dropped == 35 * 160
    assert chunks[-1][1] == 50 * 160  # stream ends count what was dropped too


def test_early_audio_is_capped_even_for_the_widest_format():
    c = CallerChunker(buffer_ms=1000)
    c.feed(bytes(10 * 96000))  # 10 s of pcm_48000
    assert c.dropped == 10 * 96000 - 300 * 96
    c.start(PCM16)  # trimmed again to 300 ms of the real format
    assert c.dropped == 10 * 96000 - 300 * 32 and c.wanted == 32000 - 300 * 32
