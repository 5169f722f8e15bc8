"""Agent audio on its way to the channel thread: one :class:`Downlink` per call.

The path reads as a straight line: protocol -> session -> call -> downlink ->
ring -> the module's channel thread, which writes one frame per 20 ms tick.

:class:`PlaybackQueue` is the pure part (no lock, no thread): event_id-tagged
chunks in, 20 ms frames out, with the interruption gate. Chunks are appended
to one continuous sample stream cut into frames of exactly 20 ms of the output
format. A chunk that ends mid-sample (odd PCM length) leaves its extra byte in
a carry that the next chunk of the same event_id completes; a chunk of
another event_id discards that half sample so later frames stay sample-
aligned. Samples that do not fill a whole frame are held until more audio
arrives; ``finish()`` pads them with silence into a last frame.

Interruption (docs/elevenlabs-protocol.md §6.4): ``interrupt(M)`` flushes every
queued frame, held sample and carry byte, then ``add`` drops audio whose
event_id is strictly below M; audio with event_id == M is the new reply. A
server must not be able to silence a call with one bad id: an M far beyond
any id its audio has carried is clamped (``MAX_EVENT_ID_JUMP``), and a long
run of "stale" audio (``RENUMBERED_AFTER_MS``, far more than the few late
chunks of an interrupted reply) means the ids were renumbered: the gate drops
to them.

Bounded: at most ``MAX_QUEUED_MS`` of agent audio is held (a server sending
faster than real time for minutes would otherwise grow the call without
limit); beyond that the oldest frames are dropped and counted.

:class:`Downlink` owns one call's queue and downlink ring, and is the ring's
only producer: it keeps the ring ``FRAMES_AHEAD`` frames ahead of the channel
thread, flushes queue and ring together at a barge-in, counts underruns and
tells when playback has drained. Threads: the asyncio thread adds audio,
interrupts and finishes (``Call`` applies the session's events in order);
the playback thread calls ``tick()`` every 20 ms. One lock orders them, so a
frame of an interrupted reply can never reach the ring after the flush.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections import deque
from collections.abc import Callable

from .protocol import AudioFormat
from .ring import Ring
from .wire import FRAME_MS

__all__ = ["FRAMES_AHEAD", "MAX_QUEUED_MS", "Added", "Downlink", "PlaybackQueue"]

log = logging.getLogger("pyconvai.playback")

#: Frames kept in the downlink ring ahead of the channel thread: 500 ms, so that the
#: channel thread never runs dry while Python waits for the GIL or a CPU under load.
#: A deep lead costs nothing at a barge-in: the flush discards the ring too.
FRAMES_AHEAD = 25
#: Most agent audio held per call (queue and early audio): 60 s, 1.9 MiB at pcm_16000.
MAX_QUEUED_MS = 60_000
#: An interruption id this far beyond the newest audio's id is not believed.
MAX_EVENT_ID_JUMP = 1000
#: Stale audio, without a chunk accepted in between, that means the ids were renumbered.
RENUMBERED_AFTER_MS = 5_000
_EARLY_MAX_BYTES = 48000 * 2 * MAX_QUEUED_MS // 1000  # before the format is known: the widest


class Added(enum.IntEnum):
    """What :meth:`Downlink.add` did with a chunk (false only when dropped)."""

    STALE = 0  # older than the last interruption: dropped
    QUEUED = 1
    AFTER_SILENCE = 2  # queued when nothing was left to play, in the queue or the ring


class PlaybackQueue:
    """20 ms frames of agent audio with the interruption gate. Not thread-safe: see Downlink."""

    def __init__(self, logger: logging.Logger | logging.LoggerAdapter = log) -> None:
        self._log = logger
        self._format: AudioFormat | None = None
        self._frame_bytes = 0
        self._early: list[tuple[bytes, int | None]] = []  # audio added before configure()
        self._frames: deque[bytes] = deque()
        self._partial = b""  # whole samples, fewer than one frame
        self._carry = b""  # leading bytes of an incomplete sample
        self._stream_id: int | None = None
        self._min_event_id = 0
        self._newest_event_id: int | None = None  # of the audio accepted so far
        self._stale_bytes = 0  # dropped as stale since the last chunk accepted
        self._stale_chunks = 0
        self.overflow_frames = 0  # dropped, oldest first, beyond MAX_QUEUED_MS
        # Where each reply starts in the ring's stream, for a provider that must be told how
        # much of a reply the caller heard (OpenAI's truncate): the frame (counted from the
        # call's first) and offset of a reply's first byte, until that frame reaches the
        # ring; then its ring position.
        self._head = 0  # index of _frames[0]
        self._starts_queued: deque[tuple[int, int, int | None]] = deque()
        self.starts: deque[tuple[int, int | None]] = deque(maxlen=8)

    def configure(self, fmt: AudioFormat) -> None:
        """Set the output format and frame the audio added before; a new format is a ValueError."""
        if self._format is not None:
            if fmt != self._format:
                raise ValueError(f"playback already configured for {self._format}")
            return
        self._format = fmt
        self._frame_bytes = fmt.frame_bytes(FRAME_MS)
        early, self._early = self._early, []
        for audio, event_id in early:
            self._append(audio, event_id)

    def add(self, audio: bytes, event_id: int | None) -> bool:
        """Queue agent audio; False (dropped) when event_id is older than the last interruption.
        ``event_id`` None (legacy audio shape) is never stale."""
        if event_id is not None and event_id < self._min_event_id:
            self._stale_bytes += len(audio)
            self._stale_chunks += 1
            if not self._renumbered():
                return False
            self._log.warning("audio event ids restarted at %d below the interruption gate %d: following them",
                        event_id, self._min_event_id)
            self._min_event_id = event_id
        self._stale_bytes = self._stale_chunks = 0
        if event_id is not None:
            self._newest_event_id = max(event_id, self._newest_event_id or event_id)
        if self._format is None:
            self._early.append((audio, event_id))
            while sum(len(chunk) for chunk, _ in self._early) > _EARLY_MAX_BYTES:
                self._early.pop(0)
        else:
            self._append(audio, event_id)
            self._trim()
        return True

    def stale_since_accepted(self) -> tuple[int, int]:
        """Chunks and bytes dropped as stale since audio was last accepted."""
        return self._stale_chunks, self._stale_bytes

    def _renumbered(self) -> bool:
        """More stale audio in a row than an interrupted reply ever leaves behind."""
        rate = self._format.frame_bytes(1000) if self._format else 32000
        return self._stale_bytes * 1000 >= RENUMBERED_AFTER_MS * rate

    def _trim(self) -> None:
        excess = len(self._frames) - MAX_QUEUED_MS // FRAME_MS
        for _ in range(excess):
            self._frames.popleft()
        if excess > 0:
            self.overflow_frames += excess
            self._head += excess

    def interrupt(self, event_id: int | None) -> int:
        """Flush everything queued, raise the gate to ``event_id``; return complete frames dropped.
        ``event_id`` None flushes only."""
        dropped = len(self._frames)
        self._head += dropped
        self._starts_queued.clear()
        self._frames.clear()
        self._early.clear()
        self._partial = b""
        self._carry = b""
        self._stream_id = None
        if event_id is not None:
            self._min_event_id = max(self._min_event_id, self._believable(event_id))
        return dropped

    @property
    def gate(self) -> int:
        """Audio with an event_id below this is stale."""
        return self._min_event_id

    def _believable(self, event_id: int) -> int:
        """An interruption id, unless it is far beyond every id audio has carried: then the
        id after the newest, which still drops the interrupted reply and keeps the call alive."""
        newest = self._newest_event_id
        if newest is not None and event_id > newest + MAX_EVENT_ID_JUMP:
            self._log.warning("interruption event_id %d is far beyond the newest audio's %d: gating at %d",
                        event_id, newest, newest + 1)
            return newest + 1
        return event_id

    def finish(self) -> bool:
        """Pad held samples with silence into one last frame; True if a frame was emitted."""
        self._carry = b""
        if self._format is None or not self._partial:
            return False
        pad = self._frame_bytes - len(self._partial)
        self._frames.append(self._partial + bytes([self._format.silence_byte]) * pad)
        self._partial = b""
        return True

    def transfer(self, push: Callable[[bytes], bool], max_frames: int, position: int = 0) -> int:
        """Offer frames in order to ``push`` until it returns False or ``max_frames`` moved.
        A frame is removed only after ``push`` accepted it. ``position``: the ring's stream
        position of the first frame pushed (for :attr:`starts`)."""
        moved = 0
        frames = self._frames
        starts = self._starts_queued
        while moved < max_frames and frames and push(frames[0]):
            while starts and starts[0][0] <= self._head:
                index, offset, event_id = starts.popleft()
                if index == self._head:
                    self.starts.append((position + offset, event_id))
            position += len(frames.popleft())
            self._head += 1
            moved += 1
        return moved

    def heard(self, boundary: int) -> tuple[int | None, int]:
        """The reply playing when the written stream stopped at ``boundary`` (a flush), and how
        many of its bytes were written: (event_id, bytes); (None, 0) when none had started.
        Replies that started at or past it were flushed unheard and are forgotten."""
        while self.starts and self.starts[-1][0] >= boundary:
            self.starts.pop()
        if not self.starts:
            return None, 0
        position, event_id = self.starts[-1]
        return event_id, boundary - position

    @property
    def format(self) -> AudioFormat | None:
        return self._format

    @property
    def idle(self) -> bool:
        """No frame queued and no audio waiting for the format."""
        return not self._frames and not self._early

    @property
    def queued_frames(self) -> int:
        """Complete frames ready to play."""
        return len(self._frames)

    @property
    def queued_ms(self) -> int:
        """Playable audio held, in ms, counting held samples as the frame finish() would make."""
        if self._format is None:
            return 0
        return (len(self._frames) + (1 if self._partial else 0)) * FRAME_MS

    def _append(self, audio: bytes, event_id: int | None) -> None:
        assert self._format is not None
        if event_id != self._stream_id:
            self._carry = b""  # half a sample of another response: never completes
            self._stream_id = event_id
            self._starts_queued.append((self._head + len(self._frames), len(self._partial), event_id))
        data = self._partial + self._carry + audio
        aligned = len(data) - len(data) % self._format.bytes_per_sample
        fb = self._frame_bytes
        whole = aligned // fb * fb
        self._frames.extend(data[i : i + fb] for i in range(0, whole, fb))
        self._partial = data[whole:aligned]
        self._carry = data[aligned:]


class Downlink:
    """One call's agent audio: the queue, the downlink ring and the lead kept in it.

    ``wake`` wakes the channel thread; it is called when audio reaches an empty
    ring, which may mean a channel thread that stopped at its last tick, so
    that playback after silence starts at once, not at the next tick.
    """

    def __init__(self, ring: Ring, wake: Callable[[], None], frames_ahead: int = FRAMES_AHEAD,
                 logger: logging.Logger | logging.LoggerAdapter = log) -> None:
        self._ring = ring
        self._wake = wake
        self._frames_ahead = frames_ahead
        self._log = logger  # the call's: its lines name the agent and conversation
        self._lock = threading.Lock()  # the queue and the ring's producer side
        self._queue = PlaybackQueue(logger)
        self._frame_bytes = 0
        self._lead = frames_ahead
        self._fed = False  # the last tick found the ring fed (frames there, or moved)
        self._flushed = False  # interrupted since the last tick
        self.underruns = 0
        self.stale_chunks = 0
        self.heard_at_flush: tuple[int | None, int] = (None, 0)  # see PlaybackQueue.heard
        self._discarded = 0  # ring bytes flushed unplayed, over the call

    # asyncio thread

    def configure(self, fmt: AudioFormat) -> None:
        with self._lock:
            self._queue.configure(fmt)
            self._frame_bytes = fmt.frame_bytes(FRAME_MS)
            # At 48 kHz the ring holds less than FRAMES_AHEAD: lead by what fits.
            self._lead = min(self._frames_ahead, self._ring.capacity // self._frame_bytes - 1)
            self._top_up()

    def add(self, audio: bytes, event_id: int | None) -> Added:
        """Queue agent audio and top the ring up. AFTER_SILENCE is decided under the lock,
        where no frame can move to the ring: exact, with no race against the playback thread."""
        with self._lock:
            silent = self._queue.idle and self._ring.used == 0
            late_chunks, late_bytes = self._queue.stale_since_accepted()
            overflowed = self._queue.overflow_frames
            if not self._queue.add(audio, event_id):
                self.stale_chunks += 1
                return Added.STALE
            self._top_up()
        if late_chunks:
            self._log.info("dropped %d late chunks (%d ms) of an interrupted reply", late_chunks,
                           late_bytes * FRAME_MS // max(1, self._frame_bytes))
        if self._queue.overflow_frames and not overflowed:
            self._log.warning("the agent sent more than %d s of audio ahead of playback: dropping the oldest",
                              MAX_QUEUED_MS // 1000)
        return Added.AFTER_SILENCE if silent else Added.QUEUED

    def interrupt(self, event_id: int | None) -> int:
        """Barge-in: flush queue and ring at once, gate older audio; return the frames that
        will now never play (queued here or waiting in the ring)."""
        with self._lock:
            dropped = self._queue.interrupt(event_id)
            ringed = self._ring.discard()
            self._discarded += ringed
            self.heard_at_flush = self._queue.heard(self._written_position)
            self._flushed = True
            return dropped + (ringed // self._frame_bytes if self._frame_bytes else 0)

    def finish(self) -> None:
        """No more audio is coming: pad the last partial frame so that it plays too."""
        with self._lock:
            self._queue.finish()
            self._top_up()

    # playback thread

    def tick(self) -> None:
        """Keep the ring FRAMES_AHEAD frames ahead (or what fits); count underruns.

        An underrun: the ring ran dry while audio waited here, and it had been fed
        since the last flush. After a flush the ring is empty by design.
        """
        with self._lock:
            ahead, moved = self._top_up()
            if ahead == 0 and moved and self._fed and not self._flushed:
                self.underruns += 1
            self._fed = bool(ahead or moved)
            self._flushed = False

    # any thread

    @property
    def frame_bytes(self) -> int:
        return self._frame_bytes

    @property
    def overflow_frames(self) -> int:
        """Frames dropped, oldest first, because more than MAX_QUEUED_MS was held."""
        return self._queue.overflow_frames

    @property
    def ring_position(self) -> int:
        """Bytes pushed into the ring so far: the stream position the next frame will have."""
        return self._ring.pushed

    @property
    def drained(self) -> bool:
        """Nothing left to play: the queue is empty and the ring holds no whole frame."""
        with self._lock:
            return self._queue.queued_frames == 0 and self._ring.used < max(1, self._frame_bytes)

    @property
    def queued_ms(self) -> int:
        """Audio still to play, here and in the ring."""
        with self._lock:
            ringed = self._ring.used // self._frame_bytes if self._frame_bytes else 0
            return self._queue.queued_ms + ringed * FRAME_MS

    @property
    def _written_position(self) -> int:
        """Lock held: the stream of frames written or to be written (flushed ones left out):
        where the next frame pushed will be in it."""
        return self._ring.pushed - self._discarded

    def _top_up(self) -> tuple[int, int]:
        """Lock held: fill the ring up to the lead; returns (frames there before, moved).

        A ring read as empty can only have filled since through the other
        thread's top-up, which then woke the channel thread too; a spare wake
        costs one loop turn.
        """
        if not self._frame_bytes:
            return 0, 0
        ahead = self._ring.used // self._frame_bytes
        if ahead >= self._lead:
            return ahead, 0
        moved = self._queue.transfer(self._ring.push, self._lead - ahead, self._written_position)
        if moved and not ahead:
            self._wake()
        return ahead, moved
