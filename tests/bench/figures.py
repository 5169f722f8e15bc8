"""From the runs' raw readings to the figures BENCHMARKS.md reports (all measured in this run)."""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .analysis import (
    FRAME_S,
    RecordingCheck,
    downlink_samples,
    in_window,
    pacing,
    pct,
    uplink_samples,
)
from .bed import cpu_percent, top_threads
from .scenarios import RunResult

MIB = 1024.0


@dataclass
class Latency:
    """The latency figures of one run (ms)."""

    downlink_module: dict = field(default_factory=dict)
    downlink_sim: dict = field(default_factory=dict)
    downlink_unmatched: int = 0
    barge_in: dict = field(default_factory=dict)
    barge_in_windowed: bool = True
    barge_in_stale_written: int = 0  # interruptions after which an old frame was still written
    uplink_last: dict = field(default_factory=dict)
    uplink_first: dict = field(default_factory=dict)
    uplink_gap: dict = field(default_factory=dict)
    uplink_module: dict = field(default_factory=dict)
    uplink_early_left_out: int = 0
    pacing: dict = field(default_factory=dict)
    underruns: int = 0
    calls_with_underruns: int = 0
    benign_underrun_calls: int = 0  # counted an underrun, yet no interval over 25 ms
    frames_out: int = 0
    frames_in: int = 0
    interruptions: int = 0
    caller_dropped_bytes: int = 0
    recordings: list[RecordingCheck] = field(default_factory=list)
    rec: dict = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)  # downlink, barge_in, uplink (ms): the plots'
    intervals: Counter = field(default_factory=Counter)  # frame intervals (ms) of every call


def latency(run: RunResult, window: tuple[float, float] | None) -> Latency:
    out = Latency()
    dl_mod, dl_sim, bi, up_last, up_first, up_gap, up_mod = [], [], [], [], [], [], []
    for s in run.stats:
        conv = run.convs.get(s.conversation_id)
        for d in downlink_samples(s, conv):
            if not in_window(d.first_frame, window):
                continue
            dl_mod.append(d.module_ms)
            if d.sim_ms is None:
                out.downlink_unmatched += 1
            else:
                dl_sim.append(d.sim_ms)
        # Barge-in: the k-th figure is the k-th interruption the simulator sent (its time windows it).
        times = [t for t, _ in conv.interruptions] if conv else []
        if window is not None and len(times) == len(s.barge_in_ms):
            picked = [v for v, t in zip(s.barge_in_ms, times) if in_window(t, window)]
        else:
            picked = list(s.barge_in_ms)
            if window is not None and s.barge_in_ms:
                out.barge_in_windowed = False
        bi += picked
        out.barge_in_stale_written += sum(1 for v in picked if v > 0)
        ups, early = uplink_samples(s, conv)
        out.uplink_early_left_out += early
        for u in ups:
            if not in_window(u.captured, window):
                continue
            up_last.append(u.last_byte_ms)
            if u.first_byte_ms is not None:
                up_first.append(u.first_byte_ms)
                up_gap.append(u.gap_ms)
        up_mod += s.uplink_ms
        out.underruns += s.underruns
        out.calls_with_underruns += s.underruns > 0
        out.benign_underrun_calls += s.underruns > 0 and max(s.intervals or {0: 0}) <= 25
        out.frames_out += s.frames_out
        out.frames_in += s.frames_in
        out.interruptions += s.interruptions
        out.caller_dropped_bytes += s.dropped
    out.downlink_module, out.downlink_sim = pct(dl_mod), pct(dl_sim)
    out.barge_in = pct(bi)
    out.uplink_last, out.uplink_first, out.uplink_gap, out.uplink_module = (
        pct(up_last), pct(up_first), pct(up_gap), pct(up_mod))
    out.pacing = pacing([s.intervals for s in run.stats])
    out.samples = {"downlink": dl_sim, "barge_in": bi, "uplink": up_last}
    out.intervals = sum((s.intervals for s in run.stats), Counter())
    out.recordings = run.rec_checks
    out.rec = summarise_recordings(out.recordings)
    return out


def summarise_recordings(checks: list[RecordingCheck]) -> dict:
    if not checks:
        return {}
    jitter, offsets, heard_dl, bargein = [], [], [], []
    incomplete = [c for c in checks if not c.complete]
    for c in checks:
        later = c.onset_residual_ms
        jitter += [later[i] - later[i - 1] for i in range(1, len(later))]
        offsets += c.anchor_residual_ms[1:]
        heard_dl += c.heard_downlink_ms[1:]
        bargein += c.bargein_heard_ms
    return {
        "calls": len(checks),
        "incomplete": len(incomplete),
        "lost_frames": sum(c.frames_out - c.heard_frames for c in incomplete),
        "heard_frames": sum(c.heard_frames for c in checks),
        "frames_out": sum(c.frames_out for c in checks),
        "stale_tone_frames": sum(c.stale_tone_frames for c in checks),
        "gaps": sum(c.gaps_in_speech for c in checks),
        "unmatched_onsets": sum(c.unmatched_onsets for c in checks),
        "onset_jitter": pct([abs(j) for j in jitter]),
        "anchor_offset": pct(offsets),
        "heard_downlink": pct(heard_dl),
        "bargein_heard": pct(bargein),
        "bargein_heard_late": sum(1 for b in bargein if b > 0),
    }


@dataclass
class Level:
    level: int
    module: RunResult | None
    floor: RunResult | None
    mod: dict = field(default_factory=dict)
    flo: dict = field(default_factory=dict)
    lat: Latency | None = None
    per_call: dict = field(default_factory=dict)


def resources(run: RunResult | None) -> dict:
    """CPU, RSS, threads, fds of Asterisk (and the simulator) over the steady window."""
    if run is None or run.window is None:
        return {}
    start, end = run.window
    ast = [s for s in run.samples.get("asterisk", []) if start - 0.5 <= s.t <= end + 0.5]
    out = {"errors": run.errors, "statuses": run.statuses, "idle_cpu": run.idle_cpu}
    if len(ast) >= 2:
        out["cpu"] = cpu_percent(ast[0], ast[-1])
        out["rss_mib"] = float(np.mean([s.rss_kib for s in ast])) / MIB
        out["rss_max_mib"] = max(s.rss_kib for s in ast) / MIB
        out["threads"] = int(np.median([s.threads for s in ast]))
        out["fds"] = int(np.median([s.fds for s in ast]))
    sim = [s for s in run.samples.get("sim", []) if start - 0.5 <= s.t <= end + 0.5]
    if len(sim) >= 2:
        out["sim_cpu"] = cpu_percent(sim[0], sim[-1])
    bench = [s for s in run.samples.get("bench", []) if start - 0.5 <= s.t <= end + 0.5]
    if len(bench) >= 2:
        out["bench_cpu"] = cpu_percent(bench[0], bench[-1])
    sipp = [s for s in run.samples.get("sipp", []) if start - 0.5 <= s.t <= end + 0.5]
    if len(sipp) >= 2:
        out["sipp_cpu"] = cpu_percent(sipp[0], sipp[-1])
    if run.machine:
        out["machine_busy"], out["steal"] = run.machine
    if run.machine and "cpu" in out:
        cores = os.cpu_count() or 1
        out["other_cpu"] = max(0.0, run.machine[0] * cores - out["cpu"] - out.get("sim_cpu", 0.0)
                               - out.get("sipp_cpu", 0.0)
                               - out.get("bench_cpu", 0.0))
    if run.connected_at and run.originated_at:
        out["connect_s"] = run.connected_at - run.originated_at
    if run.channels_in_window:
        out["channels_in_window"] = run.channels_in_window
        out["calls_up"] = min(run.channels_in_window) // run.channels_per_call
    if run.idle_before:
        out["idle_rss_mib"] = run.idle_before.rss_kib / MIB
        out["idle_threads"] = run.idle_before.threads
        out["idle_fds"] = run.idle_before.fds
    if run.idle_after:
        out["after_rss_mib"] = run.idle_after.rss_kib / MIB
        out["after_threads"] = run.idle_after.threads
        out["after_fds"] = run.idle_after.fds
    if run.tasks_start and run.tasks_end:
        out["top_threads"] = top_threads(run.tasks_start, run.tasks_end, 4)
    return out


def floor_heard(run: RunResult | None) -> dict:
    return run.floor_heard if run is not None else {}


def per_call(level: Level) -> dict:
    """Increments over idle, per call, and the module's over the floor's."""
    m, f = level.mod, level.flo
    out = {}
    n = m.get("calls_up") or level.level  # calls really up in the window (both halves of each)
    nf = f.get("calls_up") or level.level
    if "rss_mib" in m and "idle_rss_mib" in m:
        out["mod_rss_per_call_kib"] = (m["rss_mib"] - m["idle_rss_mib"]) * MIB / n
    if "rss_mib" in f and "idle_rss_mib" in f:
        out["floor_rss_per_call_kib"] = (f["rss_mib"] - f["idle_rss_mib"]) * MIB / nf
    if "mod_rss_per_call_kib" in out and "floor_rss_per_call_kib" in out:
        out["rss_over_floor_kib"] = out["mod_rss_per_call_kib"] - out["floor_rss_per_call_kib"]
    if "cpu" in m:
        out["mod_cpu_per_call"] = (m["cpu"] - m.get("idle_cpu", 0.0)) / n
    if "cpu" in f:
        out["floor_cpu_per_call"] = (f["cpu"] - f.get("idle_cpu", 0.0)) / nf
    if "mod_cpu_per_call" in out and "floor_cpu_per_call" in out:
        out["cpu_over_floor"] = out["mod_cpu_per_call"] - out["floor_cpu_per_call"]
        if out["floor_cpu_per_call"] > 0:
            # The figure issue 15 sets its goal in: the module's extra per call in floors.
            out["cpu_extra_per_floor"] = out["cpu_over_floor"] / out["floor_cpu_per_call"]
    return out


def soak(run: RunResult | None) -> dict:
    if run is None or not run.checkpoints:
        return {}
    points = [(n, s.rss_kib / MIB, s.threads, s.fds) for n, s in run.checkpoints]
    out = {"points": points, "errors": run.errors, "statuses": run.statuses, "name": run.name,
           "calls": run.calls, "duration": run.duration, "memory": run.memory}
    start, first, last = points[0], points[1] if len(points) > 1 else points[0], points[-1]
    out["rss_before"], out["rss_after"] = start[1], last[1]
    out["threads_before"], out["threads_after"] = start[2], last[2]
    out["fds_before"], out["fds_after"] = start[3], last[3]
    out["rss_first_checkpoint"] = first[1]
    out["first_checkpoint"] = first[0]
    # Growth per call from the first checkpoint on (the first calls fill caches and arenas).
    if len(points) >= 3:
        xs = np.array([p[0] for p in points[1:]], dtype=float)
        ys = np.array([p[1] for p in points[1:]], dtype=float) * MIB  # KiB
        out["rss_slope_kib_per_call"] = float(np.polyfit(xs, ys, 1)[0])
        out["rss_growth_after_first_mib"] = last[1] - first[1]
    if len(run.memory) >= 2:
        a, b = run.memory[1][1] if len(run.memory) > 2 else run.memory[0][1], run.memory[-1][1]
        out["memory_first"], out["memory_last"], out["memory_start"] = a, b, run.memory[0][1]
    calls = max(1, run.calls)
    cp0, cp1 = run.checkpoints[0][1], run.checkpoints[-1][1]
    out["cpu_ms_per_call"] = 1000.0 * (cp1.cpu_s - cp0.cpu_s) / calls
    if run.tasks_start and run.tasks_end:
        for tid, (comm, cpu) in run.tasks_end.tasks.items():
            if comm.startswith("pyconvai-async"):
                before = run.tasks_start.tasks.get(tid, (comm, 0.0))[1]
                out["asyncio_ms_per_call"] = 1000.0 * (cpu - before) / calls
            elif comm.startswith("pyconvai-playb"):
                before = run.tasks_start.tasks.get(tid, (comm, 0.0))[1]
                out["playback_ms_per_call"] = 1000.0 * (cpu - before) / calls
    if run.stats:
        lat = latency(run, None)
        out["underruns"] = lat.underruns
        out["interruptions"] = lat.interruptions
        out["calls_with_underruns"] = lat.calls_with_underruns
        out["benign_underrun_calls"] = lat.benign_underrun_calls
    return out


def fmt(value, digits: int = 2, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}{unit}"


def frames_s(seconds: float) -> float:
    return seconds / FRAME_S


__all__ = ["Latency", "Level", "floor_heard", "fmt", "latency", "per_call", "resources", "soak"]
