"""Agent audio queue: event_id-tagged chunks in, 20 ms frames out.

Threads: the asyncio thread produces (:meth:`PlaybackQueue.add`,
:meth:`~PlaybackQueue.interrupt`, :meth:`~PlaybackQueue.configure`,
:meth:`~PlaybackQueue.finish`); the playback timing thread, and the asyncio
thread when audio arrives, consume (:meth:`~PlaybackQueue.transfer`,
:meth:`~PlaybackQueue.pop_frame`). Every public method takes the queue's lock,
so any mix of threads is safe.

Framing: chunks are appended to one continuous sample stream that is cut into
frames of exactly 20 ms of the output format. A chunk that ends mid-sample
(odd PCM length) leaves its extra byte in a carry that the next chunk of the
same event_id completes; a chunk of another event_id discards that half sample
so later frames stay sample-aligned. Samples that do not fill a whole frame
are held until more audio arrives; :meth:`~PlaybackQueue.finish` pads them with
silence into a last frame (call it when no more audio is coming, e.g. after
the server closed the conversation).

Interruption (docs/elevenlabs-protocol.md §6.4): ``interrupt(M)`` flushes every
queued frame, held sample and carry byte, then ``add`` drops audio whose
event_id is strictly below M; audio with event_id == M is the new reply.
"""

from __future__ import annotations

import enum
import threading
from collections import deque
from dataclasses import dataclass
from typing import Callable

from .protocol import AudioFormat

__all__ = ["Added", "PlaybackCounters", "PlaybackQueue", "FRAME_MS"]

FRAME_MS = 20


class Added(enum.IntEnum):
    """What :meth:`PlaybackQueue.add` did with a chunk (false only when dropped)."""

    STALE = 0  # older than the last interruption: dropped
    QUEUED = 1
    AFTER_SILENCE = 2  # queued when nothing was left to play, here or in the consumer


@dataclass(frozen=True, slots=True)
class PlaybackCounters:
    """Snapshot of a queue's counters."""

    frames_in: int
    frames_out: int
    frames_flushed: int
    dropped_stale_chunks: int
    interruptions: int


class PlaybackQueue:
    """Thread-safe queue of 20 ms agent audio frames with the interruption gate."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._format: AudioFormat | None = None
        self._frame_bytes = 0
        self._early: list[tuple[bytes, int | None]] = []  # audio added before configure()
        self._frames: deque[bytes] = deque()
        self._partial = b""  # whole samples, fewer than one frame
        self._carry = b""  # leading bytes of an incomplete sample
        self._stream_id: int | None = None
        self._min_event_id = 0
        self._flush_hook: Callable[[], None] | None = None
        self._consumer_empty: Callable[[], bool] = lambda: True
        self._frames_in = 0
        self._frames_out = 0
        self._frames_flushed = 0
        self._dropped_stale = 0
        self._interruptions = 0

    # --- producer side (asyncio thread) -------------------------------------------

    def configure(self, fmt: AudioFormat) -> None:
        """Set the output format and frame the audio added before; a new format is a ValueError."""
        with self._lock:
            if self._format is not None:
                if fmt != self._format:
                    raise ValueError(f"playback already configured for {self._format}")
                return
            self._format = fmt
            self._frame_bytes = fmt.frame_bytes(FRAME_MS)
            early, self._early = self._early, []
            for audio, event_id in early:
                self._append(audio, event_id)

    def add(self, audio: bytes, event_id: int | None) -> Added:
        """Queue agent audio; STALE (false, and counted) when event_id is older than the last
        interruption. ``event_id`` None (legacy audio shape) is never stale.

        AFTER_SILENCE is decided under the lock, where no frame can move to the consumer:
        exact, with no race against the playback thread.
        """
        with self._lock:
            if event_id is not None and event_id < self._min_event_id:
                self._dropped_stale += 1
                return Added.STALE
            silent = not self._frames and not self._early and self._consumer_empty()
            if self._format is None:
                self._early.append((audio, event_id))
            else:
                self._append(audio, event_id)
            return Added.AFTER_SILENCE if silent else Added.QUEUED

    def interrupt(self, event_id: int | None) -> int:
        """Flush everything queued, raise the gate to ``event_id``; return complete frames dropped.

        The flush hook runs inside the lock, so the consumer cannot move a stale
        frame between the flush and the hook. ``event_id`` None flushes only.
        """
        with self._lock:
            dropped = len(self._frames)
            self._frames.clear()
            self._early.clear()
            self._partial = b""
            self._carry = b""
            self._stream_id = None
            if event_id is not None:
                self._min_event_id = max(self._min_event_id, event_id)
            self._frames_flushed += dropped
            self._interruptions += 1
            if self._flush_hook is not None:
                self._flush_hook()
            return dropped

    def finish(self) -> bool:
        """Pad held samples with silence into one last frame; True if a frame was emitted."""
        with self._lock:
            self._carry = b""
            if self._format is None or not self._partial:
                return False
            pad = self._frame_bytes - len(self._partial)
            self._frames.append(self._partial + bytes([self._format.silence_byte]) * pad)
            self._partial = b""
            self._frames_in += 1
            return True

    def set_flush_hook(self, hook: Callable[[], None] | None) -> None:
        """Install the callable run (under the lock) on every interrupt, e.g. the ring's discard."""
        with self._lock:
            self._flush_hook = hook

    def set_consumer_empty(self, probe: Callable[[], bool]) -> None:
        """Install the callable telling (under the lock) whether the frames already handed
        on by ``transfer`` have all been played, e.g. the ring is empty."""
        with self._lock:
            self._consumer_empty = probe

    # --- consumer side (playback thread, asyncio thread) -----------------------------

    def transfer(self, push: Callable[[bytes], bool], max_frames: int) -> int:
        """Offer frames in order to ``push`` until it returns False or ``max_frames`` moved.

        Runs under the lock: ``push`` must be quick and must not call back into
        this queue. A frame is removed only after ``push`` accepted it.
        """
        moved = 0
        with self._lock:
            frames = self._frames
            while moved < max_frames and frames and push(frames[0]):
                frames.popleft()
                moved += 1
            self._frames_out += moved
        return moved

    def pop_frame(self) -> bytes | None:
        """Remove and return the next 20 ms frame, or None when none is ready."""
        with self._lock:
            if not self._frames:
                return None
            self._frames_out += 1
            return self._frames.popleft()

    # --- queries ----------------------------------------------------------------

    @property
    def format(self) -> AudioFormat | None:
        return self._format

    @property
    def queued_frames(self) -> int:
        """Complete frames ready to play."""
        with self._lock:
            return len(self._frames)

    @property
    def flushes(self) -> int:
        """Interruptions so far: a change tells the consumer its queue was flushed."""
        with self._lock:
            return self._interruptions

    @property
    def queued_ms(self) -> int:
        """Playable audio held, in ms, counting held samples as the frame finish() would make."""
        with self._lock:
            if self._format is None:
                return 0
            return (len(self._frames) + (1 if self._partial else 0)) * FRAME_MS

    @property
    def counters(self) -> PlaybackCounters:
        with self._lock:
            return PlaybackCounters(
                frames_in=self._frames_in,
                frames_out=self._frames_out,
                frames_flushed=self._frames_flushed,
                dropped_stale_chunks=self._dropped_stale,
                interruptions=self._interruptions,
            )

    # --- internals (lock held) ----------------------------------------------------

    def _append(self, audio: bytes, event_id: int | None) -> None:
        assert self._format is not None
        if event_id != self._stream_id:
            self._carry = b""  # half a sample of another response: never completes
            self._stream_id = event_id
        data = self._partial + self._carry + audio
        aligned = len(data) - len(data) % self._format.bytes_per_sample
        fb = self._frame_bytes
        whole = aligned // fb * fb
        self._frames.extend(data[i : i + fb] for i in range(0, whole, fb))
        self._frames_in += whole // fb
        self._partial = data[whole:aligned]
        self._carry = data[aligned:]
