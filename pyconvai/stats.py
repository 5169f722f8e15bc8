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

No I/O, no threads: the runtime feeds it on the asyncio thread.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from .wire import CLOCK_RECORD, FRAME_SECONDS, ClockKind

#: A silence longer than this between two frames is not a pacing interval.
IDLE_GAP_SECONDS = 0.060
#: How long after an interruption stale frames are still looked for.
BARGE_IN_WINDOW_SECONDS = 0.200
#: Samples kept per call (the oldest go first).
MAX_SAMPLES = 200
#: Raw timestamps kept per call for benchmarks (the first ones).
MAX_TIMESTAMPS = 100


@dataclass
class _PendingInterruption:
    received_at: float
    boundary: int  # stream positions below this belong to the old response
    frames_before: int  # frames written before the interruption arrived
    last_stale_write: float | None = None


@dataclass
class CallStats:
    """Figures of one call. Feed it clock records and events; read the results."""

    frames_written: int = 0
    interruptions: int = 0
    downlink_latencies: list[float] = field(default_factory=list)
    downlink_first_frames: list[float] = field(default_factory=list)
    uplink_latencies: list[float] = field(default_factory=list)
    uplink_captured: list[float] = field(default_factory=list)
    barge_in_stops: list[float] = field(default_factory=list)
    frames_before_interruptions: list[int] = field(default_factory=list)
    frame_intervals_ms: Counter = field(default_factory=Counter)
    first_write: float | None = None
    last_write: float | None = None
    _awaiting_first_frame: float | None = None
    _pending: list[_PendingInterruption] = field(default_factory=list)
    _captures: deque = field(default_factory=deque)  # (uplink stream end, captured at)
    _unmatched_sends: deque = field(default_factory=deque)  # (caller stream end, sent at)

    def audio_after_silence(self, received_at: float) -> None:
        """Agent audio arrived with nothing left to play; the next frame written is its
        first, and tells whether the last frame before had finished playing (``_frame``)."""
        if self._awaiting_first_frame is None:
            self._awaiting_first_frame = received_at

    def interrupted(self, received_at: float, boundary: int) -> None:
        """The downlink was flushed; stream positions below ``boundary`` are stale."""
        self.interruptions += 1
        self._awaiting_first_frame = None
        self._pending.append(_PendingInterruption(received_at, boundary, self.frames_written))

    def caller_audio_sent(self, stream_end: int, sent_at: float) -> None:
        """A caller chunk ending at ``stream_end`` went to the socket."""
        self._unmatched_sends.append((stream_end, sent_at))
        self._match_sends()

    def records(self, data: bytes) -> list[tuple[int, int, float]]:
        """Consume clock records popped from the clock ring; return the ones that are not
        about audio (keys, answers to control records) as (kind, position, at), in order."""
        usable = len(data) - len(data) % CLOCK_RECORD.size
        others = []
        for position, at_ns, kind, _ in CLOCK_RECORD.iter_unpack(data[:usable]):
            if kind == ClockKind.WRITTEN:
                self._frame(position, at_ns / 1e9)
            elif kind == ClockKind.CAPTURED:
                self._captures.append((position, at_ns / 1e9))
            else:
                others.append((kind, position, at_ns / 1e9))
        self._match_sends()
        return others

    def _match_sends(self) -> None:
        """Time each sent chunk from the capture of its last byte."""
        captures, sends = self._captures, self._unmatched_sends
        while sends:
            stream_end, sent_at = sends[0]
            while captures and captures[0][0] < stream_end:
                captures.popleft()
            if not captures:
                return  # its capture record has not been read yet
            captured_at = captures[0][1]
            sends.popleft()
            self._add(self.uplink_latencies, sent_at - captured_at)
            if len(self.uplink_captured) < MAX_TIMESTAMPS:
                self.uplink_captured.append(captured_at)

    def _frame(self, position: int, written: float) -> None:
        self.frames_written += 1
        previous, self.last_write = self.last_write, written
        if self.first_write is None:
            self.first_write = written
        if previous is not None:
            gap = written - previous
            if gap <= IDLE_GAP_SECONDS:
                self.frame_intervals_ms[round(gap * 1000)] += 1
        received = self._awaiting_first_frame
        if received is not None and written >= received:
            self._awaiting_first_frame = None
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
        self._pending = keep

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
