"""Caller audio into ``user_audio_chunk`` sizes: pure, no I/O, one thread (the asyncio thread).

Before the agent's formats are known, only the newest ~300 ms is kept (the
caller's first words, not a backlog); :meth:`CallerChunker.start` then trims
that to 300 ms of the input format and cuts chunks of ``buffer_ms`` from
then on. Each chunk comes with its ``stream_end``: how many bytes had been
fed when its last byte was, so uplink latency is timed from that byte.
"""

from __future__ import annotations

from .protocol import AudioFormat

__all__ = ["EARLY_CALLER_MS", "CallerChunker"]

#: Caller audio kept while waiting for the metadata.
EARLY_CALLER_MS = 300
_EARLY_CAP = AudioFormat("pcm", 48000).frame_bytes(EARLY_CALLER_MS)  # the widest format


class CallerChunker:
    """Caller audio in, whole chunks out; counts what it had to drop."""

    def __init__(self, buffer_ms: int) -> None:
        self.buffer_ms = buffer_ms
        self.fed = 0  # bytes given to feed()
        self.dropped = 0  # bytes dropped before start()
        self.chunk_bytes = 0  # 0 until start()
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[bytes, int]]:
        """Take caller audio; return the chunks it completed, each with its stream end."""
        self.fed += len(data)
        self._buf += data
        if not self.chunk_bytes:
            self._trim(_EARLY_CAP)
            return []
        return self._cut()

    def start(self, input_format: AudioFormat) -> list[tuple[bytes, int]]:
        """The input format is known: keep 300 ms of what came early, cut chunks from now on."""
        self._trim(input_format.frame_bytes(EARLY_CALLER_MS))
        self.chunk_bytes = input_format.frame_bytes(self.buffer_ms)
        return self._cut()

    @property
    def wanted(self) -> int | None:
        """Bytes that complete the next chunk; None before start()."""
        return self.chunk_bytes - len(self._buf) if self.chunk_bytes else None

    def _trim(self, keep: int) -> None:
        excess = len(self._buf) - keep
        if excess > 0:
            del self._buf[:excess]
            self.dropped += excess

    def _cut(self) -> list[tuple[bytes, int]]:
        buf, size = self._buf, self.chunk_bytes
        chunks = []
        while len(buf) >= size:
            chunk = bytes(buf[:size])
            del buf[:size]
            # The buffer holds the newest bytes not yet in a chunk: this chunk ends here.
            chunks.append((chunk, self.fed - len(buf)))
        return chunks
