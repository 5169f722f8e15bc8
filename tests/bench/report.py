"""BENCHMARKS.md and the console summary, from the raw readings of one ``make bench``."""

from __future__ import annotations

import re

from .figures import Latency, Level, fmt, latency, per_call, resources, soak
from .scenarios import PATTERN, REPLY_MS, RunResult

BARS = {
    "downlink_p99_ms": 25.0,
    "barge_in_p99_ms": 20.0,
    "rss_per_call_kib": 256.0,  # issue 15: 0.25 MiB at 100 calls (was 1 MiB)
    "cpu_extra_per_floor": 0.35,  # issue 15: extra CPU per call / the floor's, at 50-150 calls
}
BAR_LEVEL = 200


def _calls(n: int) -> str:
    return f"{n} call" if n == 1 else f"{n} calls"


# --- figures ----------------------------------------------------------------------------------

def compute(raw: dict) -> dict:
    """Everything the report prints, computed once."""
    out: dict = {"raw": raw}
    single: RunResult | None = raw.get("single")
    if single is not None:
        out["single"] = latency(single, None)
        out["single_res"] = resources(single)
    up: RunResult | None = raw.get("uplink240")
    if up is not None:
        out["uplink240"] = latency(up, None)
    out["levels"] = _levels(raw.get("levels", {}))
    out["sip_levels"] = _levels(raw.get("sip_levels", {}))
    out["soak"] = soak(raw.get("soak"))
    out["soak_floor"] = soak(raw.get("soak_floor"))
    out["bars"] = bars(out)
    return out


def _levels(runs: dict) -> list[Level]:
    """Each level's (module, floor) runs with their figures, by number of calls."""
    levels = []
    for level, (module, floor) in sorted(runs.items()):
        lv = Level(level, module, floor)
        lv.mod, lv.flo = resources(module), resources(floor)
        if module is not None:
            lv.lat = latency(module, module.window)
        lv.per_call = per_call(lv)
        levels.append(lv)
    return levels


def _level(out: dict, n: int) -> Level | None:
    return next((lv for lv in out["levels"] if lv.level == n), None)


def _miss(value: float | None, bar: float, unit: str) -> tuple[str, str]:
    if value is None:
        return "–", "not measured"
    if value <= bar:
        return f"{value:.2f} {unit}", f"**pass** ({bar - value:.2f} {unit} to spare)"
    return f"{value:.2f} {unit}", f"**MISS** by {value - bar:.2f} {unit} ({value / bar:.1f}x the bar)"


def _profile(add, level: int, prof: dict) -> None:
    """The runtime's Python profile (tests/bench/profile.py) as two short tables."""
    add(f"Where the runtime's asyncio thread spends its time at {_calls(level)} (py-spy with native frames, "
        f"100 Hz for {prof.get('seconds', 0):g} s in a run of its own at that level, waits in epoll left out; "
        f"shares of "
        f"{prof.get('samples', 0)} busy samples):")
    add("")
    if "error" in prof:
        add(f"- not profiled: {' '.join(prof['error'])}")
        add("")
        return
    add("| Own time | Function | | Including callees | Function |")
    add("|---|---|---|---|---|")
    for (own_share, own), (inc_share, inc) in zip(prof["own"], prof["inclusive"]):
        add(f"| {own_share:.1%} | `{own}` | | {inc_share:.1%} | `{inc}` |")
    add("")


def bars(out: dict) -> list[dict]:
    rows = []
    single: Latency | None = out.get("single")
    at = _level(out, BAR_LEVEL)
    for what, key, bar in (("Downlink latency p99", "downlink", BARS["downlink_p99_ms"]),
                           ("Barge-in stop p99", "barge_in", BARS["barge_in_p99_ms"])):
        for label, lat in (("1 call", single), (f"{BAR_LEVEL} calls", at.lat if at else None)):
            if lat is None:
                rows.append({"bar": f"{what} at {label}", "target": f"≤ {bar:g} ms", "value": "–",
                             "result": "not run", "miss": None})
                continue
            figures = lat.downlink_sim if key == "downlink" else lat.barge_in
            value = figures.get("p99")
            shown, result = _miss(value, bar, "ms")
            rows.append({"bar": f"{what} at {label}", "target": f"≤ {bar:g} ms", "value": f"{shown} (n={figures.get('n', 0)})",
                         "result": result, "miss": value is not None and value > bar})
    # Underruns: every run with the module.
    runs = []
    if single is not None:
        runs.append(("1 call", single))
    for lv in out["levels"]:
        if lv.lat is not None:
            runs.append((f"{_calls(lv.level)}", lv.lat))
    total = sum(lat.underruns for _, lat in runs)
    missed = [f"{label}: {lat.underruns}" for label, lat in runs if lat.underruns]
    soak_underruns = out["soak"].get("underruns", 0) if out["soak"] else 0
    rows.append({"bar": "Underruns (all runs with the module)", "target": "0",
                 "value": f"{total + soak_underruns}" + (f" ({', '.join(missed)}; soak: {soak_underruns})" if missed or soak_underruns else ""),
                 "result": "**pass**" if total + soak_underruns == 0 else f"**MISS** by {total + soak_underruns}",
                 "miss": total + soak_underruns > 0})
    # RSS per call over the floor, at every level with both runs (the bar applies to each).
    for lv in out["levels"]:
        value = lv.per_call.get("rss_over_floor_kib")
        if value is None:
            continue
        shown, result = _miss(value / 1024, BARS["rss_per_call_kib"] / 1024, "MiB")
        bar_shown = f"≤ {BARS['rss_per_call_kib'] / 1024:g} MiB"
        up = lv.mod.get("calls_up", lv.level)
        comparable = up >= lv.level
        if lv.level == 1:
            result += " (one call: the runtime's first-call set-up, see below)"
        if not comparable:
            result = (f"not measurable: only {up} of {lv.level} calls were up in the window, the memory of the "
                      "others stayed")
        rows.append({"bar": f"RSS per call over the floor at {_calls(lv.level)}", "target": bar_shown,
                     "value": shown, "result": result,
                     "miss": value > BARS["rss_per_call_kib"] and lv.level > 1 and comparable})
    # CPU: the module's extra per call in units of the floor's per-call CPU (same run).
    for lv in out["levels"]:
        ratio = lv.per_call.get("cpu_extra_per_floor")
        if ratio is None or lv.level < 50:
            continue
        shown, result = _miss(ratio, BARS["cpu_extra_per_floor"], "x")
        rows.append({"bar": f"Extra CPU per call ÷ the floor's at {_calls(lv.level)}",
                     "target": f"≤ {BARS['cpu_extra_per_floor']:g}x", "value": shown, "result": result,
                     "miss": ratio > BARS["cpu_extra_per_floor"]})
    s = out["soak"]
    if s:
        growth = s.get("rss_growth_after_first_mib")
        fd_ok = s["fds_after"] <= s["fds_before"]
        th_ok = s["threads_after"] <= s["threads_before"]
        slope = s.get("rss_slope_kib_per_call", 0.0)
        rss_ok = slope <= 1.0  # KiB per call: below a KiB per call is allocator noise over 2,000 calls
        rows.append({
            "bar": f"No growth across the soak ({s['calls']} calls)", "target": "RSS, fds, threads flat",
            "value": (f"RSS {s['rss_before']:.1f} → {s['rss_after']:.1f} MiB (after the first checkpoint: "
                      f"{fmt(growth, 2)} MiB, {fmt(slope, 2)} KiB/call); fds {s['fds_before']} → {s['fds_after']}; "
                      f"threads {s['threads_before']} → {s['threads_after']}"),
            "result": "**pass**" if fd_ok and th_ok and rss_ok else "**MISS**",
            "miss": not (fd_ok and th_ok and rss_ok),
        })
    return rows


# --- rendering --------------------------------------------------------------------------------

def _p(d: dict, digits: int = 2) -> str:
    if not d or not d.get("n"):
        return "– | – | – | – | 0"
    return " | ".join(fmt(d.get(k), digits) for k in ("p50", "p95", "p99", "max")) + f" | {d['n']}"


def _runtime_lines(raw: dict) -> tuple[str, str]:
    runs = [raw.get("single"), raw.get("uplink240"), *[m for m, _ in raw.get("levels", {}).values()]]
    for run in runs:
        if run is not None and run.runtime_text:
            python = re.search(r"Python:\s*(.+)", run.runtime_text)
            return run.version, python.group(1).strip() if python else "?"
    for run in runs:
        if run is not None and run.version:
            return run.version, "?"
    return "?", "?"


def render(raw: dict) -> str:
    out = compute(raw)
    cfg = raw["settings"]
    m = raw["machine"]
    version, python = _runtime_lines(raw)
    L: list[str] = []
    add = L.append
    add("# Benchmarks")
    add("")
    add(f"Written by `make bench` (`tests/bench/`) on {raw['started']}; every figure below was measured in that "
        f"run, which took {raw['duration_s'] / 60:.1f} minutes. The file is rewritten by each run.")
    if raw.get("soak_source"):
        src = raw["soak_source"]
        add("")
        add(f"The soak figures come from a later run of the soak alone (`BENCH_PARTS=soak`, {src['started']}, "
            f"commit {src['commit']}): {src['why']}")
    if raw.get("levels_source"):
        src = raw["levels_source"]
        add("")
        add(f"The capacity levels {src['levels']} come from a later run of those levels (`BENCH_PARTS=capacity`, "
            f"{src['started']}, commit {src['commit']}): {src['why']}")
    add("")
    add("## Machine")
    add("")
    add(f"- CPU: {m['cpu']} ({m['cores']} cores{', ' + m['mhz'] + ' MHz' if m.get('mhz') not in (None, '?') else ''}), "
        f"RAM {m['ram']}, Linux {m['kernel']}")
    add(f"- Asterisk: {version.splitlines()[0] if version else '?'} (the Debian sid test bed of `make test`, "
        "run as a sandboxed process, `chroot`)")
    add(f"- The module: built by `make bench` from commit {raw.get('commit', '?')}")
    add(f"- Python inside Asterisk (`elevenlabs show runtime`): {python}; the bench and the simulator: Python "
        f"{m['host_python']} on the host")
    add(f"- RLIMIT_NOFILE for Asterisk: {raw['fd_limit']}")
    add("")
    add("## Bars")
    add("")
    add("| Bar | Target | Measured | Result |")
    add("|---|---|---|---|")
    for row in out["bars"]:
        add(f"| {row['bar']} | {row['target']} | {row['value']} | {row['result']} |")
    add("")
    L += misses(out)
    L += method(raw, cfg)
    L += results(out, cfg)
    return "\n".join(L) + "\n"


def misses(out: dict) -> list[str]:
    """Where a bar is missed: by how much, why, and the design change that would meet it."""
    from .explain import explanations

    return explanations(out)


def method(raw: dict, cfg) -> list[str]:
    from .explain import method_text

    return method_text(raw, cfg)


def results(out: dict, cfg) -> list[str]:
    L: list[str] = []
    add = L.append
    single: Latency | None = out.get("single")
    add("## Results")
    add("")
    add("### Latency at 1 call")
    add("")
    if single is not None:
        r = out["raw"]["single"]
        add(f"{r.calls} calls of {cfg.single_seconds:g} s, one at a time, elevenlabs_audio_frames_buffer_ms = 20, "
            f"every call recorded. Milliseconds.")
        add("")
        add("| Figure | p50 | p95 | p99 | max | n |")
        add("|---|---|---|---|---|---|")
        add(f"| Downlink: simulator sent the audio → module wrote its first frame | {_p(single.downlink_sim)} |")
        add(f"| Downlink, module part: Python received the audio → first frame written | {_p(single.downlink_module, 3)} |")
        add(f"| Barge-in: interruption received → last stale frame written (0 = none after) | {_p(single.barge_in)} |")
        add(f"| Uplink, last byte: caller frame read (framehook) → simulator received the chunk | {_p(single.uplink_last)} |")
        add(f"| Uplink, first byte: previous chunk's last frame read → simulator received the chunk | {_p(single.uplink_first)} |")
        add(f"| Uplink, module part: last byte captured → chunk handed to the socket | {_p(single.uplink_module)} |")
        add("")
        L += recording_lines(single, "1 call")
    up: Latency | None = out.get("uplink240")
    add("### Uplink latency")
    add("")
    add("| Buffer | Load | View | p50 | p95 | p99 | max | n |")
    add("|---|---|---|---|---|---|---|---|")
    if single is not None:
        add(f"| 20 ms | 1 call | last byte | {_p(single.uplink_last)} |")
        add(f"| 20 ms | 1 call | first byte | {_p(single.uplink_first)} |")
    if up is not None:
        add(f"| 240 ms | 1 call | last byte | {_p(up.uplink_last)} |")
        add(f"| 240 ms | 1 call | first byte | {_p(up.uplink_first)} |")
    for lv in out["levels"]:
        if lv.lat is not None and lv.lat.uplink_last.get("n"):
            add(f"| {cfg.capacity_buffer_ms} ms | {_calls(lv.level)} | last byte | {_p(lv.lat.uplink_last)} |")
            add(f"| {cfg.capacity_buffer_ms} ms | {_calls(lv.level)} | first byte | {_p(lv.lat.uplink_first)} |")
    add("")
    if up is not None and up.uplink_gap.get("n"):
        add(f"Chunk cadence check (capture time of a chunk's last byte minus the previous chunk's): buffer 240 ms: "
            f"p50 {fmt(up.uplink_gap.get('p50'))} ms, p99 {fmt(up.uplink_gap.get('p99'))} ms"
            + (f"; buffer 20 ms: p50 {fmt(single.uplink_gap.get('p50'))} ms, p99 {fmt(single.uplink_gap.get('p99'))} ms"
               if single is not None and single.uplink_gap.get("n") else "") + ".")
        add("")
    L += capacity_lines(out, cfg)
    L += sip_lines(out, cfg)
    L += picture_lines(out)
    L += soak_lines(out)
    L += error_lines(out)
    return L


def recording_lines(lat: Latency, label: str) -> list[str]:
    rec = lat.rec
    if not rec:
        return []
    L = []
    L.append(f"Cross-check on the caller's recordings ({label}, {rec['calls']} recorded call"
             f"{'s' if rec['calls'] != 1 else ''}; MixMonitor on the caller's channel, 20 ms frames):")
    L.append("")
    L.append(f"- agent frames heard {rec['heard_frames']} of {rec['frames_out']} written; late audio of interrupted "
             f"responses heard: {rec['stale_tone_frames']} frames; silent frames inside a response: {rec['gaps']}"
             + (f"; {rec['incomplete']} recording(s) lost {rec['lost_frames']} frames (MixMonitor under load) and "
                "are left out of the frame-by-frame checks below" if rec.get("incomplete") else ""))
    if rec["onset_jitter"].get("n"):
        L.append(f"- the time between two replies after silence on the recording (20 ms frames) and between the "
                 f"module's first-frame timestamps of the two differ by p50 {fmt(rec['onset_jitter'].get('p50'))} "
                 f"ms, p99 {fmt(rec['onset_jitter'].get('p99'))} ms, max {fmt(rec['onset_jitter'].get('max'))} ms "
                 f"({rec['onset_jitter']['n']} pairs; {rec['unmatched_onsets']} onsets not found on the recording)")
    if rec["anchor_offset"].get("n"):
        offset = rec["anchor_offset"]
        L.append(f"- on the caller's absolute timeline (anchored on the caller's first utterance: its frame in the "
                 f"recording is the frame the framehook captured at its UplinkCapturedNs), each reply is heard "
                 f"{fmt(offset.get('p50'))} ms (p50; max {fmt(offset.get('max'))} ms) after the module wrote its "
                 "first frame" + (": within the one-frame resolution of a recording" if offset.get("max", 99) <= 20.0
                                  else "; offsets over one frame (20 ms) are replies the onset search lined up with "
                                  "a neighbouring onset, mostly replies right after a barge-in, which have no "
                                  "silence before them on the recording"))
        L.append(f"- simulator sent → heard by the caller (same anchor, ±20 ms resolution): p50 "
                 f"{fmt(rec['heard_downlink'].get('p50'))} ms, p99 {fmt(rec['heard_downlink'].get('p99'))} ms, n = "
                 f"{rec['heard_downlink'].get('n', 0)}")
    if rec["bargein_heard"].get("n"):
        L.append(f"- barge-in as heard: frames of the interrupted response heard after the module had written the "
                 f"last frame before the interruption arrived: {rec['bargein_heard_late']} of "
                 f"{rec['bargein_heard']['n']} interruptions had any; max {fmt(rec['bargein_heard'].get('max'), 0)} ms "
                 "(successive responses have different tones, so where the old one ends is exact on the recording)")
    L.append("")
    return L


def capacity_lines(out: dict, cfg) -> list[str]:
    L: list[str] = []
    add = L.append
    if not out["levels"]:
        return L
    add("### Capacity")
    add("")
    add(f"Concurrent calls, the agent speaking {REPLY_MS / 1000:g} s replies and interrupted as in the latency "
        f"runs (speech {speech_share():.0%} of each call), buffer {cfg.capacity_buffer_ms} ms, originated at "
        f"{cfg.ramp_rate:g} calls/s; figures over a {cfg.window_s:g} s window starting {cfg.warmup_s:g} s after the "
        "last call was up. CPU in % of one core (the machine has "
        f"{out['raw']['machine']['cores']}); RSS mean over the window.")
    add("")
    add("| Calls | Up in the window (floor) | Asterisk CPU | Floor CPU | RSS MiB | Floor RSS | Threads (floor) | "
        "fds (floor) | Underruns | Late frames | Downlink p50/p95/p99 ms | Barge-in p50/p95/p99 ms | "
        "Uplink p50/p99 ms | Simulator CPU | Machine busy (floor) |")
    add("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for lv in out["levels"]:
        m, f, lat = lv.mod, lv.flo, lv.lat
        dl = lat.downlink_sim if lat else {}
        bi = lat.barge_in if lat else {}
        ul = lat.uplink_last if lat else {}
        late = lat.pacing.get("late", 0) if lat and lat.pacing.get("n") else "–"
        add(f"| {lv.level} | {m.get('calls_up', '–')} ({f.get('calls_up', '–')}) | {fmt(m.get('cpu'), 1)} % | "
            f"{fmt(f.get('cpu'), 1)} % | {fmt(m.get('rss_mib'), 1)} | "
            f"{fmt(f.get('rss_mib'), 1)} | {m.get('threads', '–')} ({f.get('threads', '–')}) | "
            f"{m.get('fds', '–')} ({f.get('fds', '–')}) | {lat.underruns if lat else '–'} | {late} | "
            f"{fmt(dl.get('p50'))} / {fmt(dl.get('p95'))} / {fmt(dl.get('p99'))} (n={dl.get('n', 0)}) | "
            f"{fmt(bi.get('p50'))} / {fmt(bi.get('p95'))} / {fmt(bi.get('p99'))} (n={bi.get('n', 0)}) | "
            f"{fmt(ul.get('p50'))} / {fmt(ul.get('p99'))} | {fmt(m.get('sim_cpu'), 1)} % | "
            f"{fmt(m.get('machine_busy'), 0)} % ({fmt(f.get('machine_busy'), 0)} %) |")
    add("")
    odd = [f"{_calls(lv.level)}: " + ", ".join(f"{k} {v}" for k, v in lv.mod.get("statuses", {}).items())
           for lv in out["levels"] if set(lv.mod.get("statuses", {})) - {"CALLER_HANGUP"}]
    if odd:
        add("Calls that did not end by the bench's hang-up (ELEVENLABS_STATUS): " + "; ".join(odd) + ".")
        add("")
    add("Per call, over each run's own idle Asterisk (RSS and CPU before the first call), and the module's "
        "per-call cost over the floor's:")
    add("")
    add("| Calls | RSS/call module | RSS/call floor | RSS/call over floor | CPU/call module | CPU/call floor | "
        "CPU/call over floor | Extra ÷ floor | Idle RSS module (floor) | Idle CPU module (floor) |")
    add("|---|---|---|---|---|---|---|---|---|---|")
    for lv in out["levels"]:
        pc, m, f = lv.per_call, lv.mod, lv.flo
        add(f"| {lv.level} | {fmt(pc.get('mod_rss_per_call_kib'), 0)} KiB | {fmt(pc.get('floor_rss_per_call_kib'), 0)} KiB | "
            f"{fmt(pc.get('rss_over_floor_kib'), 0)} KiB | {fmt(pc.get('mod_cpu_per_call'), 3)} % | "
            f"{fmt(pc.get('floor_cpu_per_call'), 3)} % | {fmt(pc.get('cpu_over_floor'), 3)} % | "
            f"{fmt(pc.get('cpu_extra_per_floor'), 2)}x | "
            f"{fmt(m.get('idle_rss_mib'), 1)} ({fmt(f.get('idle_rss_mib'), 1)}) MiB | "
            f"{fmt(m.get('idle_cpu'), 2)} ({fmt(f.get('idle_cpu'), 2)}) % |")
    add("")
    add("Busiest Asterisk threads over the window (% of one core; the two pyconvai threads are the Python "
        "runtime's asyncio and playback threads, the rest are channel threads):")
    add("")
    for lv in out["levels"]:
        top = lv.mod.get("top_threads")
        if top:
            add(f"- {_calls(lv.level)}: " + ", ".join(f"{_thread_name(comm)} {cpu:.1f} %" for _tid, comm, cpu in top))
    add("")
    for lv in out["levels"]:
        prof = lv.module.profile if lv.module is not None else None
        if prof:
            _profile(add, lv.level, prof)
    add("Pacing (intervals between consecutive frames written while audio plays, all calls of the level):")
    add("")
    add("| Calls | Intervals | 19–21 ms | < 19 ms | > 21 ms | p50 | p99 | p99.9 | min | max |")
    add("|---|---|---|---|---|---|---|---|---|---|")
    single = out.get("single")
    rows = ([("1 (latency run)", single)] if single is not None else []) + [
        (str(lv.level), lv.lat) for lv in out["levels"] if lv.lat is not None]
    for label, lat in rows:
        p = lat.pacing
        if not p.get("n"):
            continue
        add(f"| {label} | {p['n']} | {p['on_time']:.2%} | {p['early']} | {p['late']} | {p['p50']:.0f} | "
            f"{p['p99']:.0f} | {p['p999']:.0f} | {p['min']:.0f} | {p['max']:.0f} |")
    add("")
    for lv in out["levels"]:
        if lv.lat is not None and lv.lat.rec:
            L += recording_lines(lv.lat, f"{_calls(lv.level)}")
        fh = lv.floor.floor_heard if lv.floor is not None else {}
        if fh.get("calls"):
            add(f"Floor at {_calls(lv.level)}, recorded callers: {fh['frames']} tone frames heard, {fh['gaps']} missing "
                "inside the tone.")
            add("")
    return L


def picture_lines(out: dict) -> list[str]:
    """The PNGs __main__ drew beside the report (plots.py), shown in it."""
    pictures = out["raw"].get("plots") or []
    if not pictures:
        return []
    L = ["### Pictures", ""]
    for name, caption in pictures:
        L += [f"{caption}:", "", f"![{caption}]({name})", ""]
    return L


def sip_lines(out: dict, cfg) -> list[str]:
    """The SIP levels: SIPp callers over PJSIP and RTP, module and floor in the same run."""
    if not out.get("sip_levels"):
        return []
    L = ["### SIP callers", "",
         "The same calls placed by SIPp over PJSIP and RTP on 127.0.0.1 (μ-law both ways; SIPp streams the "
         "caller's audio and is the caller), to the module or to the floor (`Answer()` + `Playback` of a "
         f"μ-law tone, no module); buffer {cfg.capacity_buffer_ms} ms, the same window as the capacity levels. "
         "One channel per call (no Local pair), so the per-call CPU of both is lower than above.", "",
         "| SIP calls | Up (floor) | Asterisk CPU | Floor CPU | CPU/call over floor | Extra ÷ floor | "
         "RSS/call over floor | Underruns | Downlink p50/p99 ms | Barge-in p99 ms | SIPp CPU | SIPp |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for lv in out["sip_levels"]:
        m, f, lat, pc = lv.mod, lv.flo, lv.lat, lv.per_call
        dl = lat.downlink_sim if lat else {}
        bi = lat.barge_in if lat else {}
        L.append(f"| {lv.level} | {m.get('calls_up', '–')} ({f.get('calls_up', '–')}) | {fmt(m.get('cpu'), 1)} % | "
                 f"{fmt(f.get('cpu'), 1)} % | {fmt(pc.get('cpu_over_floor'), 3)} % | "
                 f"{fmt(pc.get('cpu_extra_per_floor'), 2)}x | {fmt(pc.get('rss_over_floor_kib'), 0)} KiB | "
                 f"{lat.underruns if lat else '–'} | {fmt(dl.get('p50'))} / {fmt(dl.get('p99'))} | "
                 f"{fmt(bi.get('p99'))} | {fmt(m.get('sipp_cpu'), 1)} % | "
                 f"{lv.module.sipp if lv.module else '–'}; floor: {lv.floor.sipp if lv.floor else '–'} |")
    L.append("")
    return L


def soak_lines(out: dict) -> list[str]:
    s, f = out["soak"], out["soak_floor"]
    if not s:
        return []
    cfg = out["raw"]["settings"]
    L = ["### Soak", ""]
    L.append(f"{s['calls']} short calls ({', '.join(f'{k}: {v}' for k, v in s['statuses'].items())}), "
             f"{cfg.soak_concurrency} at a time, buffer {cfg.soak_buffer_ms} ms, in {s['duration'] / 60:.1f} min. "
             "Each call: the greeting, the caller speaks over it (a barge-in), the reply starts, the caller hangs up "
             f"{0.2 + 1.4:.1f} s after answering. " + (
                 f"The control: the same {f['calls']} callers reaching the floor extension (no module), in "
                 f"{f['duration'] / 60:.1f} min. " if f else "")
             + "Asterisk idle at each checkpoint (no channel, no live call):")
    L.append("")
    header = "| Calls done | RSS MiB | Threads | fds |" + (" Floor RSS MiB | Floor threads | Floor fds |" if f else "")
    L.append(header)
    L.append("|---|---|---|---|" + ("---|---|---|" if f else ""))
    floor_points = {n: (rss, th, fd) for n, rss, th, fd in f["points"]} if f else {}
    for n, rss, threads, fds in s["points"]:
        row = f"| {n} | {rss:.1f} | {threads} | {fds} |"
        if f:
            fp = floor_points.get(n)
            row += f" {fp[0]:.1f} | {fp[1]} | {fp[2]} |" if fp else " – | – | – |"
        L.append(row)
    L.append("")
    if "memory_last" in s:
        a, b, z = s["memory_first"], s["memory_last"], s["memory_start"]
        kinds = (("arenas", "glibc malloc arenas other than the main heap"), ("heap", "glibc main heap"),
                 ("pymalloc", "CPython object arenas (1 MiB)"), ("other_anon", "other anonymous (stacks, mmap'd blocks)"),
                 ("files", "file mappings"))
        L.append(f"Where the module's resident memory is (MiB, /proc/<pid>/smaps; at start → after "
                 f"{s['first_checkpoint']} calls → after {s['calls']}):")
        L.append("")
        for key, label in kinds:
            L.append(f"- {label}: {z[key]:.1f} → {a[key]:.1f} → {b[key]:.1f}")
        if f and "memory_last" in f:
            fa = f["memory_last"]
            L.append(f"- (floor after {f['calls']} calls: arenas {fa['arenas']:.1f}, heap {fa['heap']:.1f}, "
                     f"files {fa['files']:.1f})")
        L.append("")
    L.append(f"Asterisk CPU per call over the soak: {fmt(s.get('cpu_ms_per_call'), 1)} ms with the module"
             + (f", {fmt(f.get('cpu_ms_per_call'), 1)} ms without" if f else "")
             + (f"; of which the pyconvai asyncio thread {fmt(s.get('asyncio_ms_per_call'), 1)} ms and the playback "
                f"thread {fmt(s.get('playback_ms_per_call'), 1)} ms" if "asyncio_ms_per_call" in s else "") + ".")
    L.append(f"Underruns over the soak: {s.get('underruns', 0)} (in {s.get('calls_with_underruns', 0)} calls); "
             f"interruptions: {s.get('interruptions', 0)}.")
    L.append("")
    return L


def error_lines(out: dict) -> list[str]:
    L = []
    raw = out["raw"]
    runs = [raw.get("single"), raw.get("uplink240"), raw.get("soak"), raw.get("soak_floor")]
    for module, floor in [*raw.get("levels", {}).values(), *raw.get("sip_levels", {}).values()]:
        runs += [module, floor]
    for run in runs:
        if run is None:
            continue
        if run.errors or run.log_errors or run.channels_left or (run.live_calls_left and not run.live_calls_left.endswith(" 0")):
            L.append(f"- {run.name}: " + "; ".join(run.errors + run.log_errors[:5]
                                                  + ([f"{run.channels_left} channels left"] if run.channels_left else [])))
    if L:
        return ["### Errors and warnings seen", ""] + L + [""]
    return []


def _thread_name(comm: str) -> str:
    return {"pyconvai-asynci": "pyconvai-asyncio", "pyconvai-playba": "pyconvai-playback"}.get(
        comm, "a channel thread" if comm == "asterisk" else comm)


def speech_share() -> float:
    """Share of each pattern cycle in which the agent speaks (two replies, the first cut by the second)."""
    return (PATTERN.second_s + REPLY_MS / 1000) / PATTERN.period_s


def summary_lines(raw: dict) -> list[str]:
    out = compute(raw)
    lines = ["Bars:"]
    for row in out["bars"]:
        lines.append(f"  {row['bar']}: {row['value']} → {re.sub(r'[*]', '', row['result'])}")
    single = out.get("single")
    if single is not None:
        lines.append(f"1 call: downlink p50/p95/p99 {fmt(single.downlink_sim.get('p50'))}/"
                     f"{fmt(single.downlink_sim.get('p95'))}/{fmt(single.downlink_sim.get('p99'))} ms; barge-in "
                     f"p99 {fmt(single.barge_in.get('p99'))} ms; uplink(20) last-byte p50/p99 "
                     f"{fmt(single.uplink_last.get('p50'))}/{fmt(single.uplink_last.get('p99'))} ms")
    up = out.get("uplink240")
    if up is not None:
        lines.append(f"uplink(240) 1 call: last-byte p50/p99 {fmt(up.uplink_last.get('p50'))}/"
                     f"{fmt(up.uplink_last.get('p99'))} ms, first-byte p50/p99 {fmt(up.uplink_first.get('p50'))}/"
                     f"{fmt(up.uplink_first.get('p99'))} ms")
    for lv in out["levels"]:
        lat = lv.lat
        lines.append(
            f"{lv.level:>4} calls: CPU {fmt(lv.mod.get('cpu'), 1)}% (floor {fmt(lv.flo.get('cpu'), 1)}%), RSS "
            f"{fmt(lv.mod.get('rss_mib'), 1)} MiB (floor {fmt(lv.flo.get('rss_mib'), 1)}), threads "
            f"{lv.mod.get('threads', '–')}, underruns {lat.underruns if lat else '–'}, downlink p99 "
            f"{fmt(lat.downlink_sim.get('p99') if lat else None)} ms, barge-in p99 "
            f"{fmt(lat.barge_in.get('p99') if lat else None)} ms, RSS/call over floor "
            f"{fmt(lv.per_call.get('rss_over_floor_kib'), 0)} KiB, CPU/call over floor "
            f"{fmt(lv.per_call.get('cpu_over_floor'), 3)}% ({fmt(lv.per_call.get('cpu_extra_per_floor'), 2)}x the floor's)")
    for lv in out["sip_levels"]:
        lines.append(f"{lv.level:>4} SIP calls: CPU {fmt(lv.mod.get('cpu'), 1)}% (floor {fmt(lv.flo.get('cpu'), 1)}%), "
                     f"underruns {lv.lat.underruns if lv.lat else '–'}, CPU/call over floor "
                     f"{fmt(lv.per_call.get('cpu_extra_per_floor'), 2)}x the floor's, RSS/call over floor "
                     f"{fmt(lv.per_call.get('rss_over_floor_kib'), 0)} KiB")
    s = out["soak"]
    if s:
        lines.append(f"soak: {s['calls']} calls, RSS {s['rss_before']:.1f} → {s['rss_after']:.1f} MiB, fds "
                     f"{s['fds_before']} → {s['fds_after']}, threads {s['threads_before']} → {s['threads_after']}")
    return lines
