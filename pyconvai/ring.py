"""The lock-free ring shared with the Asterisk module (csrc/ring.c, through cffi).

The module allocates a call's rings and hands their addresses to Python;
``Ring.attach`` takes a reference of its own, so either side may let go first.
Producer and consumer each stay on one thread (see csrc/ring.h): in pyconvai the
playback thread produces the downlink and the asyncio thread consumes the uplink.
No method takes the GIL off or blocks; each is one short C call.
"""

from __future__ import annotations

from pyconvai._ring import ffi, lib

_NEVER = ffi.cast("size_t", -1)


class Ring:
    """A reference to one ring; released when this object is collected."""

    __slots__ = ("_ring", "_scratch")

    def __init__(self, pointer) -> None:
        # The cdata owns one ring reference; ffi.gc drops it on collection.
        self._ring = ffi.gc(pointer, lib.convai_ring_unref)
        self._scratch = None  # the consumer's copy buffer, grown on demand (producers need none)

    @classmethod
    def allocate(cls, capacity: int) -> "Ring":
        """A new ring of at least ``capacity`` bytes (for tests and tools)."""
        pointer = lib.convai_ring_alloc(capacity)
        if pointer == ffi.NULL:
            raise MemoryError("convai_ring_alloc failed")
        return cls(pointer)

    @classmethod
    def attach(cls, address: int) -> "Ring":
        """Share a ring the module allocated; takes a reference of its own."""
        if not address:
            raise ValueError("null ring address")
        pointer = ffi.cast("struct convai_ring *", address)
        lib.convai_ring_ref(pointer)
        return cls(pointer)

    @property
    def address(self) -> int:
        return int(ffi.cast("uintptr_t", self._ring))

    @property
    def capacity(self) -> int:
        return lib.convai_ring_capacity(self._ring)

    @property
    def used(self) -> int:
        return lib.convai_ring_used(self._ring)

    @property
    def pushed(self) -> int:
        """Bytes pushed since allocation: the producer's stream position."""
        return lib.convai_ring_pushed(self._ring)

    def push(self, data: bytes) -> bool:
        """Producer: append all of ``data`` or nothing; False when full."""
        return lib.convai_ring_push(self._ring, data, len(data)) == 0

    def push_overwrite(self, data: bytes, unit: int = 1) -> int:
        """Producer: append ``data``, dropping the oldest bytes; returns bytes dropped."""
        return lib.convai_ring_push_overwrite(self._ring, data, len(data), unit)

    def pop(self, max_bytes: int = 65536) -> bytes:
        """Consumer: take up to ``max_bytes`` (b"" when empty)."""
        size = min(max_bytes, lib.convai_ring_used(self._ring))
        if not size:
            return b""
        scratch = self._scratch_of(size)
        count = lib.convai_ring_pop(self._ring, scratch, size)
        return ffi.buffer(scratch, count)[:]

    def pop_exact(self, size: int) -> bytes | None:
        """Consumer: take exactly ``size`` bytes, or None if fewer are queued."""
        scratch = self._scratch_of(size)
        if lib.convai_ring_pop_exact(self._ring, scratch, size):
            return None
        return ffi.buffer(scratch, size)[:]

    def _scratch_of(self, size: int):
        if self._scratch is None or size > len(self._scratch):
            self._scratch = ffi.new("unsigned char[]", max(4096, 1 << (size - 1).bit_length()))
        return self._scratch

    @property
    def doorbell(self) -> int:
        """The eventfd rung at the notify level (see ``notify_at``), or -1."""
        return lib.convai_ring_doorbell(self._ring)

    def open_doorbell(self) -> int:
        """Give the ring a doorbell (the module does this for the uplink); returns its fd."""
        return lib.convai_ring_open_doorbell(self._ring)

    def notify_at(self, level: int | None) -> None:
        """Consumer: ring the doorbell once ``level`` bytes are queued (None: never)."""
        lib.convai_ring_notify_at(self._ring, _NEVER if level is None else level)

    def wake(self) -> None:
        """Ring the doorbell now, whatever the level (the module does this after a key or an answer)."""
        lib.convai_ring_wake(self._ring)

    def discard(self) -> int:
        """Producer: drop everything queued now (barge-in); returns bytes dropped."""
        return lib.convai_ring_discard(self._ring)

    @property
    def counters(self) -> dict[str, int]:
        return {
            "pushed": lib.convai_ring_pushed(self._ring),
            "popped": lib.convai_ring_popped(self._ring),
            "overflowed": lib.convai_ring_overflowed(self._ring),
            "discarded": lib.convai_ring_discarded(self._ring),
        }
