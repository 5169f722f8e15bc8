"""Per-call figures from the module's clock records: latency, barge-in, pacing.

The channel thread reports (``struct convai_clock_record``, CLOCK_MONOTONIC,
the clock ``time.monotonic`` reads) every agent frame it writes, with its
position in the downlink stream, and every piece of caller audio the
framehook captures, with the uplink stream's end after it. Joined with when
Python received agent audio and interruptions and sent caller chunks, that
gives exact figures, with no clock to align:

- downlink latency: agent audio received while the caller heard nothing ->
  its first frame written. Nothing was left to play (the playback queue and
  the ring were empty: ``audio_after_silence``) and the last frame written
  had finished playing; audio arriving while that frame still plays continues
  the stream and is no sample;
- uplink latency: caller audio captured -> the chunk holding it sent on the
  socket (timed from the chunk's last byte, so ``buffer_ms`` is not counted);
- barge-in: interruption received -> last frame of the old response written
  (0 when none was written after it);
- pacing: intervals between consecutive frames while audio plays.

No I/O, no threads: the runtime feeds it on the asyncio thread. The bulk of
the records (frames that only add to the counters and the pacing histogram,
captures kept until the chunks holding them are sent) is counted in C
(``csrc/clockstats.c``), which stops at each record these rules need.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from ._ring import ffi, lib
from .wire import CLOCK_RECORD, FRAME_SECONDS, ClockKind

#: A silence longer than this between two frames is not a pacing interval.
IDLE_GAP_SECONDS = 0.060
#: How long after an interruption stale frames are still looked for.
BARGE_IN_WINDOW_SECONDS = 0.200
#: Samples kept per call (the oldest go first).
MAX_SAMPLES = 200
#: Raw timestamps kept per call for benchmarks (the first ones).
MAX_TIMESTAMPS = 100

#: clockstats.c hands over no frame written before this (CLOCK_MONOTONIC ns).
_NO_HAND_OVER = 2**64 - 1
#: Frames written this close before a time Python compares with are handed over all the
#: same: Python decides with its own float arithmetic.
_HAND_OVER_MARGIN_NS = 1000


def _new_clock():
    clock = ffi.new("struct convai_clockstats *")
    clock.hand_over_writes_from_ns = _NO_HAND_OVER
    return clock


@dataclass
class _PendingInterruption:
    received_at: float
    boundary: int  # stream positions below this belong to the old response
    frames_before: int  # frames written before the interruption arrived
    last_stale_write: float | None = None


@dataclass
class CallStats:
    """Figures of one call. Feed it clock records and events; read the results."""

    interruptions: int = 0
    downlink_latencies: list[float] = field(default_factory=list)
    downlink_first_frames: list[float] = field(default_factory=list)
    uplink_latencies: list[float] = field(default_factory=list)
    uplink_captured: list[float] = field(default_factory=list)
    barge_in_stops: list[float] = field(default_factory=list)
    frames_before_interruptions: list[int] = field(default_factory=list)
    _awaiting_first_frame: float | None = None
    _pending: list[_PendingInterruption] = field(default_factory=list)
    _unmatched_sends: deque = field(default_factory=deque)  # (caller stream end, sent at)
    # Frame counters, pacing histogram and recent captures (struct convai_clockstats).
    _clock: object = field(default_factory=_new_clock, repr=False, compare=False)
    _captured_at: object = field(default_factory=lambda: ffi.new("uint64_t *"), repr=False, compare=False)

    @property
    def frames_written(self) -> int:
        return self._clock.frames_written

    @property
    def first_write(self) -> float | None:
        return self._clock.first_write_ns / 1e9 if self._clock.frames_written else None

    @property
    def last_write(self) -> float | None:
        return self._clock.last_write_ns / 1e9 if self._clock.frames_written else None

    @property
    def frame_intervals_ms(self) -> dict[int, int]:
        """Intervals between consecutive frames while audio plays: {milliseconds: count}."""
        return {ms: n for ms, n in enumerate(self._clock.intervals_ms) if n}

    def audio_after_silence(self, received_at: float) -> None:
        """Agent audio arrived with nothing left to play; the next frame written is its
        first, and tells whether the last frame before had finished playing (``_frame``)."""
        if self._awaiting_first_frame is None:
            self._awaiting_first_frame = received_at
            self._hand_over()

    def interrupted(self, received_at: float, boundary: int) -> None:
        """The downlink was flushed; stream positions below ``boundary`` are stale."""
        self.interruptions += 1
        self._awaiting_first_frame = None
        self._pending.append(_PendingInterruption(received_at, boundary, self.frames_written))
        self._hand_over()

    def _hand_over(self) -> None:
        """Which frames clockstats.c leaves to ``_frame``: every one while a barge-in is
        measured, those from the audio's arrival while its first frame is awaited."""
        if self._pending:
            start = 0
        elif self._awaiting_first_frame is not None:
            start = max(0, int(self._awaiting_first_frame * 1e9) - _HAND_OVER_MARGIN_NS)
        else:
            start = _NO_HAND_OVER
        self._clock.hand_over_writes_from_ns = start

    def caller_audio_sent(self, stream_end: int, sent_at: float) -> None:
        """A caller chunk ending at ``stream_end`` went to the socket."""
        self._unmatched_sends.append((stream_end, sent_at))
        self._match_sends()

    def records(self, data: bytes) -> list[tuple[int, int, float]]:
        """Consume clock records popped from the clock ring; return the ones that are not
        about audio (keys, answers to control records) as (kind, position, at), in order."""
        usable = len(data) - len(data) % CLOCK_RECORD.size
        others = []
        if usable:
            records, offset = ffi.from_buffer(data), 0
            while True:
                offset += lib.convai_clockstats_digest(self._clock, records + offset, usable - offset)
                if offset >= usable:
                    break
                position, at_ns, kind, _ = CLOCK_RECORD.unpack_from(data, offset)
                offset += CLOCK_RECORD.size
                if kind == ClockKind.WRITTEN:
                    self._frame(position, at_ns)
                else:
                    others.append((kind, position, at_ns / 1e9))
        self._match_sends()
        return others

    def _match_sends(self) -> None:
        """Time each sent chunk from the capture of its last byte."""
        sends, captured_at = self._unmatched_sends, self._captured_at
        while sends:
            stream_end, sent_at = sends[0]
            found = lib.convai_clockstats_captured_at(self._clock, stream_end, captured_at)
            if not found:
                return  # its capture record has not been read yet
            sends.popleft()
            if found < 0:
                continue  # dropped, Python being seconds behind: no figure rather than a wrong one
            self._add(self.uplink_latencies, sent_at - captured_at[0] / 1e9)
            if len(self.uplink_captured) < MAX_TIMESTAMPS:
                self.uplink_captured.append(captured_at[0] / 1e9)

    def _frame(self, position: int, at_ns: int) -> None:
        """A frame clockstats.c handed over: count it there, then apply the rules."""
        previous = self.last_write
        lib.convai_clockstats_written(self._clock, at_ns)
        written = at_ns / 1e9
        received = self._awaiting_first_frame
        if received is not None and written >= received:
            self._awaiting_first_frame = None
            self._hand_over()
            if previous is None or previous + FRAME_SECONDS <= received:
                self._add(self.downlink_latencies, written - received)
                if len(self.downlink_first_frames) < MAX_TIMESTAMPS:
                    self.downlink_first_frames.append(written)
        for pending in self._pending:
            if written < pending.received_at:
                pending.frames_before += 1  # reported after the interruption was
            elif position < pending.boundary:
                pending.last_stale_write = written

    def settle(self, now: float) -> None:
        """Close barge-in measurements whose window has passed."""
        keep = []
        for pending in self._pending:
            if now - pending.received_at < BARGE_IN_WINDOW_SECONDS:
                keep.append(pending)
                continue
            stop = 0.0 if pending.last_stale_write is None else pending.last_stale_write - pending.received_at
            self._add(self.barge_in_stops, stop)
            self.frames_before_interruptions.append(pending.frames_before)
        if len(keep) != len(self._pending):
            self._pending = keep
            self._hand_over()

    @staticmethod
    def _add(samples: list[float], value: float) -> None:
        samples.append(value)
        if len(samples) > MAX_SAMPLES:
            del samples[0]

    @property
    def last_latency_ms(self) -> float | None:
        return self.downlink_latencies[-1] * 1000 if self.downlink_latencies else None

    def ami_headers(self) -> dict[str, str]:
        """The figures as AMI headers (lists comma-separated, milliseconds)."""
        def ms(values: list[float]) -> str:
            return ",".join(f"{v * 1000:.2f}" for v in values)

        def ns(values: list[float]) -> str:
            return ",".join(str(round(v * 1e9)) for v in values)

        return {
            "FramesOut": str(self.frames_written),
            "DownlinkLatencyMs": ms(self.downlink_latencies),
            "DownlinkFirstFrameNs": ns(self.downlink_first_frames),
            "UplinkLatencyMs": ms(self.uplink_latencies),
            "UplinkCapturedNs": ns(self.uplink_captured),
            "BargeInStopMs": ms(self.barge_in_stops),
            "InterruptedAfterFrames": ",".join(map(str, self.frames_before_interruptions[-MAX_SAMPLES:])),
            "FrameIntervalsMs": ",".join(f"{k}:{v}" for k, v in sorted(self.frame_intervals_ms.items())),
            "WrittenSpanMs": f"{(self.last_write - self.first_write) * 1000:.2f}" if self.first_write else "",
        }


#: Histogram buckets (seconds) for the latency metrics.
LATENCY_BUCKETS = (0.005, 0.010, 0.020, 0.040, 0.080, 0.160, 0.320)


@dataclass
class Histogram:
    """A Prometheus histogram: cumulative bucket counts, sum and count."""

    buckets: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS))
    total: float = 0.0
    count: int = 0

    def add(self, value: float) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
        self.total += value
        self.count += 1

    def lines(self, name: str) -> list[str]:
        lines = [f'{name}_bucket{{le="{bound}"}} {n}' for bound, n in zip(self.buckets, self.counts)]
        lines += [f'{name}_bucket{{le="+Inf"}} {self.count}', f"{name}_sum {self.total:.6f}", f"{name}_count {self.count}"]
        return lines


@dataclass
class Totals:
    """Figures of every call that has finished in this Asterisk process."""

    calls: int = 0
    frames_in: int = 0
    frames_out: int = 0
    underruns: int = 0
    interruptions: int = 0
    caller_audio_dropped_bytes: int = 0
    downlink_latency: Histogram = field(default_factory=Histogram)
    barge_in_stop: Histogram = field(default_factory=Histogram)

    def add(self, stats: CallStats, frames_in: int, underruns: int, dropped: int) -> None:
        self.calls += 1
        self.frames_in += frames_in
        self.frames_out += stats.frames_written
        self.underruns += underruns
        self.interruptions += stats.interruptions
        self.caller_audio_dropped_bytes += dropped
        for value in stats.downlink_latencies:
            self.downlink_latency.add(value)
        for value in stats.barge_in_stops:
            self.barge_in_stop.add(value)

    def prometheus(self) -> str:
        """Prometheus text format, ``asterisk_elevenlabs_`` names."""
        counters = (
            ("frames_in_total", "Caller frames sent to agents (finished calls).", self.frames_in),
            ("frames_out_total", "Agent frames written to callers (finished calls).", self.frames_out),
            ("underruns_total", "Times the downlink ran dry while agent audio was queued.", self.underruns),
            ("interruptions_total", "Barge-ins (interruption messages).", self.interruptions),
            ("caller_audio_dropped_bytes_total", "Caller audio dropped because Python fell behind.",
             self.caller_audio_dropped_bytes),
        )
        lines: list[str] = []
        for name, help_text, value in counters:
            full = f"asterisk_elevenlabs_{name}"
            lines += [f"# HELP {full} {help_text}", f"# TYPE {full} counter", f"{full} {value}"]
        for name, help_text, histogram in (
            ("downlink_latency_seconds", "Agent audio received -> its first frame written.", self.downlink_latency),
            ("barge_in_stop_seconds", "Interruption received -> last old frame written.", self.barge_in_stop),
        ):
            full = f"asterisk_elevenlabs_{name}"
            lines += [f"# HELP {full} {help_text}", f"# TYPE {full} histogram", *histogram.lines(full)]
        return "\n".join(lines) + "\n"
