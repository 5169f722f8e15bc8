"""Turning the module's per-call figures, the simulator's records and the recordings into numbers.

Every time here is CLOCK_MONOTONIC in seconds: the module stamps frames with
clock_gettime(CLOCK_MONOTONIC), the simulator with time.monotonic() (the same
clock, same kernel), so no alignment is needed between them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .bed import RATE
from .simproc import ConvSummary

FRAME_S = 0.020
#: First frames this soon after an interruption are left out of the recording's onset checks.
AFTER_BARGE_IN_S = 1.0

# Tones of the bench agent (pyconvai.sim renders each utterance as one tone).
GREETING_HZ = 440.0
REPLY_HZ = (880.0, 990.0)  # replies alternate (AgentScript.reply_tones_hz)
STALE_HZ = 1200.0
CALLER_HZ = 1000.0


def pct(values, ps=(50, 95, 99)) -> dict:
    """Percentiles (linear interpolation), max, mean and count of a list of numbers."""
    arr = np.asarray(list(values), dtype=float)
    if arr.size == 0:
        return {"n": 0}
    out = {"n": int(arr.size), "max": float(arr.max()), "min": float(arr.min()), "mean": float(arr.mean())}
    for p in ps:
        out[f"p{p}"] = float(np.percentile(arr, p))
    return out


def _floats(text: str | None, scale: float = 1.0) -> list[float]:
    return [float(x) * scale for x in (text or "").split(",") if x.strip()]


def _ints(text: str | None) -> list[int]:
    return [int(x) for x in (text or "").split(",") if x.strip()]


@dataclass
class CallStats:
    """One ElevenLabsConversationStats event, parsed (times in seconds)."""

    channel: str
    conversation_id: str
    status: str
    frames_in: int
    frames_out: int
    underruns: int
    interruptions: int
    dropped: int
    downlink_ms: list[float]
    first_frames: list[float]
    uplink_ms: list[float]
    uplink_captured: list[float]
    barge_in_ms: list[float]
    interrupted_after: list[int]
    intervals: Counter

    @classmethod
    def parse(cls, e: dict) -> "CallStats":
        intervals = Counter()
        for pair in (e.get("FrameIntervalsMs") or "").split(","):
            if ":" in pair:
                k, v = pair.split(":")
                intervals[int(k)] += int(v)
        return cls(
            channel=e.get("Channel", ""), conversation_id=e.get("ConversationID", ""), status=e.get("Status", ""),
            frames_in=int(e.get("FramesIn") or 0), frames_out=int(e.get("FramesOut") or 0),
            underruns=int(e.get("Underruns") or 0), interruptions=int(e.get("Interruptions") or 0),
            dropped=int(e.get("CallerAudioDroppedBytes") or 0),
            downlink_ms=_floats(e.get("DownlinkLatencyMs")), first_frames=_floats(e.get("DownlinkFirstFrameNs"), 1e-9),
            uplink_ms=_floats(e.get("UplinkLatencyMs")), uplink_captured=_floats(e.get("UplinkCapturedNs"), 1e-9),
            barge_in_ms=_floats(e.get("BargeInStopMs")), interrupted_after=_ints(e.get("InterruptedAfterFrames")),
            intervals=intervals,
        )


def in_window(t: float, window: tuple[float, float] | None) -> bool:
    return window is None or window[0] <= t <= window[1]


# --- downlink ---------------------------------------------------------------------------------

def burst_starts(conv: ConvSummary) -> list[float]:
    """When the simulator sent audio to a silent caller, by its own play-out clock.

    Audio whose event_id is below the last interruption is stale (the module drops
    it). A message starts a burst when the caller had nothing left to hear from
    what was sent before (the simulator's play-out clock: each message extends it
    by its duration; an interruption stops it).
    """
    events = [(t, 0, eid, size) for t, eid, size in conv.audio] + [(t, 1, eid, 0) for t, eid in conv.interruptions]
    events.sort(key=lambda x: (x[0], -x[1]))
    playout_end = 0.0
    gate = 0
    starts = []
    for t, kind, eid, size in events:
        if kind == 1:
            gate = max(gate, eid)
            playout_end = t
            continue
        if eid < gate:
            continue
        if t >= playout_end:
            starts.append(t)
        playout_end = max(playout_end, t) + size / RATE  # μ-law: one byte per sample
    return starts


@dataclass
class DownlinkSample:
    module_ms: float  # agent audio received by Python -> first frame written (module clock)
    sim_ms: float | None  # simulator sent the message -> first frame written
    first_frame: float


def downlink_samples(stats: CallStats, conv: ConvSummary | None) -> list[DownlinkSample]:
    """Pair each first frame the module timed with the simulator's message that started that burst."""
    starts = burst_starts(conv) if conv else []
    out = []
    n = min(len(stats.first_frames), len(stats.downlink_ms))
    # Both lists start at the call's first burst while it has fewer than 100 of them.
    for f, module_ms in zip(stats.first_frames[:n], stats.downlink_ms[:n]):
        received = f - module_ms / 1000
        sim_ms = None
        before = [s for s in starts if s <= received + 1e-6]
        if before and f - before[-1] < 1.0:
            sim_ms = (f - before[-1]) * 1000
        out.append(DownlinkSample(module_ms, sim_ms, f))
    return out


# --- uplink -----------------------------------------------------------------------------------

@dataclass
class UplinkSample:
    last_byte_ms: float  # last byte captured (framehook) -> message received by the simulator
    first_byte_ms: float | None  # previous chunk's last byte captured -> received: the whole chunk
    captured: float
    gap_ms: float | None  # capture time of this chunk's last byte minus the previous chunk's


def uplink_samples(stats: CallStats, conv: ConvSummary | None) -> tuple[list[UplinkSample], int]:
    """Chunk i in send order is the simulator's chunk i; returns samples and the count of
    early chunks left out (captured before the simulator sent the metadata: they waited for
    the connection, not for the module)."""
    if conv is None:
        return [], 0
    out, early = [], 0
    caps = stats.uplink_captured
    start = conv.metadata_at or 0.0
    for i, cap in enumerate(caps):
        if i >= len(conv.chunks):
            break
        if cap <= start:
            early += 1
            continue
        received = conv.chunks[i][0]
        prev = caps[i - 1] if i > 0 and caps[i - 1] > start else None
        out.append(UplinkSample(
            last_byte_ms=(received - cap) * 1000,
            first_byte_ms=(received - prev) * 1000 if prev is not None else None,
            captured=cap,
            gap_ms=(cap - prev) * 1000 if prev is not None else None,
        ))
    return out, early


# --- pacing -----------------------------------------------------------------------------------

def pacing(histograms: list[Counter]) -> dict:
    total = Counter()
    for h in histograms:
        total.update(h)
    n = sum(total.values())
    if not n:
        return {"n": 0}
    keys = sorted(total)
    values = np.repeat(np.array(keys, dtype=float), [total[k] for k in keys])
    on_time = sum(v for k, v in total.items() if 19 <= k <= 21)
    return {
        "n": n,
        "on_time": on_time / n,
        "early": sum(v for k, v in total.items() if k < 19),
        "late": sum(v for k, v in total.items() if k > 21),
        "p50": float(np.percentile(values, 50)), "p99": float(np.percentile(values, 99)),
        "p999": float(np.percentile(values, 99.9)),
        "min": float(keys[0]), "max": float(keys[-1]),
        "hist": dict(sorted(total.items())),
    }


# --- recordings -------------------------------------------------------------------------------

def response_tones(conv: ConvSummary) -> dict[int, float]:
    """The tone of each response the simulator spoke: the greeting, then replies alternating."""
    gate, seen = 0, []
    events = sorted([(t, 0, eid) for t, eid, _ in conv.audio] + [(t, 1, eid) for t, eid in conv.interruptions])
    for _t, kind, eid in events:
        if kind == 1:
            gate = max(gate, eid)
        elif eid >= gate and eid not in seen:
            seen.append(eid)
    return {eid: GREETING_HZ if i == 0 else REPLY_HZ[(i - 1) % 2] for i, eid in enumerate(seen)}


def _presence(samples: np.ndarray, freq: float) -> np.ndarray:
    from tests.e2e.calls import tone_frames

    return tone_frames(samples, RATE, freq).present


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, length) of each run of True."""
    out, i, n = [], 0, len(mask)
    while i < n:
        if mask[i]:
            j = i
            while j < n and mask[j]:
                j += 1
            out.append((i, j - i))
            i = j
        else:
            i += 1
    return out


@dataclass
class RecordingCheck:
    heard_frames: int = 0  # agent frames heard (greeting or reply tone)
    frames_out: int = 0
    stale_tone_frames: int = 0  # late audio of an interrupted response heard (1200 Hz): must be 0
    gaps_in_speech: int = 0  # silent frames inside one response
    bargein_heard_ms: list[float] = field(default_factory=list)  # old response heard after the interruption
    onset_residual_ms: list[float] = field(default_factory=list)  # recording vs module, relative to the 1st
    heard_downlink_ms: list[float] = field(default_factory=list)  # sim sent -> heard (anchored, buffer 20)
    anchor_residual_ms: list[float] = field(default_factory=list)  # heard (anchored) - module first frame
    unmatched_onsets: int = 0
    complete: bool = True
    notes: list[str] = field(default_factory=list)


def check_recording(heard: np.ndarray, said: np.ndarray, stats: CallStats, conv: ConvSummary | None,
                    chunk_frames: int) -> RecordingCheck:
    out = RecordingCheck(frames_out=stats.frames_out)
    tones = {hz: _presence(heard, hz) for hz in (GREETING_HZ, *REPLY_HZ)}
    agent = np.zeros_like(tones[GREETING_HZ])
    for mask in tones.values():
        agent |= mask
    out.heard_frames = int(agent.sum())
    out.stale_tone_frames = int(_presence(heard, STALE_HZ).sum())
    # Which tone each agent frame has, in order: cumulative counts match the module's frames.
    label = np.full(len(agent), -1)
    for i, hz in enumerate((GREETING_HZ, *REPLY_HZ)):
        label[tones[hz]] = i
    positions = np.flatnonzero(agent)
    labels = label[positions]
    # Responses: maximal runs of one tone over agent frames (silence between them or not).
    for idx in _runs(agent):
        start, length = idx
        seg = label[start : start + length]
        if (seg < 0).any():
            out.gaps_in_speech += int((seg < 0).sum())
    # A recording that lost frames (MixMonitor under saturation) cannot be lined up frame by frame.
    out.complete = out.heard_frames >= stats.frames_out - 2
    if not out.complete:
        out.notes.append(f"recording lost {stats.frames_out - out.heard_frames} frames")
        return out
    # Barge-in as heard: the W-th agent frame heard is the last one written before the interruption;
    # frames with the interrupted response's tone right after it were heard late.
    tones = response_tones(conv) if conv is not None else {}
    tone_index = {GREETING_HZ: 0, REPLY_HZ[0]: 1, REPLY_HZ[1]: 2}
    interruptions = conv.interruptions if conv is not None else []
    for j, written in enumerate(stats.interrupted_after):
        if written <= 0 or written > len(positions) or j >= len(interruptions):
            continue
        t_int, gate = interruptions[j]
        old = [eid for t, eid, _ in conv.audio if t <= t_int and eid < gate and eid in tones]
        if not old:
            continue
        old_label = tone_index[tones[max(old)]]
        k, extra = written - 1, 0
        while k + 1 < len(positions) and positions[k + 1] == positions[k] + 1 and labels[k + 1] == old_label:
            k += 1
            extra += 1
        out.bargein_heard_ms.append(extra * FRAME_S * 1000)
    # Onsets after silence (>= 3 frames without agent audio) and the module's first frames.
    onsets = [s for s, _ in _runs(agent) if s == 0 or not agent[max(0, s - 3) : s].any()]
    # Replies right after a barge-in have no silence before them on the recording (their
    # onset is not an onset there): only first frames that follow a quiet line are lined up.
    cut_at = [t for t, _ in conv.interruptions] if conv is not None else []
    firsts = [f for f in stats.first_frames if not any(0 <= f - t < AFTER_BARGE_IN_S for t in cut_at)]
    if onsets and firsts:
        n0, f0 = onsets[0], firsts[0]
        for f in firsts[1:]:
            predicted = n0 + (f - f0) / FRAME_S
            best = min(onsets, key=lambda n: abs(n - predicted))
            if abs(best - predicted) > 3:
                out.unmatched_onsets += 1
                continue
            out.onset_residual_ms.append(((best - n0) * FRAME_S - (f - f0)) * 1000)
    # Absolute, on the caller's timeline: the first caller utterance in the "said" track is the
    # frame the framehook captured at UplinkCapturedNs[i] (buffer 20: one chunk = one frame).
    if chunk_frames == 1 and conv is not None and conv.loud and onsets and firsts:
        spoken = np.flatnonzero(_presence(said, CALLER_HZ))
        loud_chunks = [i for i, first in enumerate(conv.loud) if first >= 0 and i < len(stats.uplink_captured)]
        if spoken.size and loud_chunks:
            anchor_frame, anchor_t = int(spoken[0]), stats.uplink_captured[loud_chunks[0]]
            starts = burst_starts(conv)

            def heard_at(n: int) -> float:
                # Frame n of the recording ends (n - anchor) frames after the anchor frame ended.
                return anchor_t + (n - anchor_frame) * FRAME_S

            for f in firsts:
                predicted = anchor_frame + (f - anchor_t) / FRAME_S
                best = min(onsets, key=lambda n: abs(n - predicted))
                if abs(best - predicted) > 3:
                    continue
                t_heard = heard_at(best)
                out.anchor_residual_ms.append((t_heard - f) * 1000)
                sent = [s for s in starts if s <= f]
                if sent and f - sent[-1] < 1.0:
                    out.heard_downlink_ms.append((t_heard - sent[-1]) * 1000)
        else:
            out.notes.append("no caller utterance to anchor the recording")
    return out


def recording_checks(stats: list[CallStats], convs: dict, recordings: dict, buffer_ms: int) -> list[RecordingCheck]:
    """Check every recorded call against the module's figures for it."""
    from tests.e2e.calls import read_wav

    by_channel = {s.channel: s for s in stats}
    checks = []
    for heard_path, said_path, channel in recordings.values():
        call = by_channel.get(channel)
        if call is None:
            continue
        heard, _ = read_wav(heard_path)
        said, _ = read_wav(said_path)
        checks.append(check_recording(heard, said, call, convs.get(call.conversation_id), max(1, buffer_ms // 20)))
    return checks


def floor_heard(recordings: dict) -> dict:
    """The floor's recorded calls: frames without the tone inside the tone (frames Asterisk missed)."""
    from tests.e2e.calls import read_wav

    frames = gaps = 0
    for heard_path, _said, _channel in recordings.values():
        heard, _ = read_wav(heard_path)
        present = _presence(heard, GREETING_HZ)
        idx = np.flatnonzero(present)
        if idx.size:
            span = present[idx[0] : idx[-1] + 1]
            frames += int(span.sum())
            gaps += int((~span).sum())
    return {"calls": len(recordings), "frames": frames, "gaps": gaps}


__all__ = ["CallStats", "DownlinkSample", "RecordingCheck", "UplinkSample", "burst_starts", "check_recording",
           "downlink_samples", "in_window", "pacing", "pct", "uplink_samples"]
