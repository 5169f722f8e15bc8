"""The prose of BENCHMARKS.md: the method, and for every missed bar by how much, why, and what would
meet it. Every number quoted here comes from the figures of the run being reported."""

from __future__ import annotations

from .figures import fmt
from .scenarios import (
    CALLER_WAIT_S,
    CONNECT_ALLOWANCE_S,
    GREETING_MS,
    PATTERN,
    REPLY_MS,
    SOAK_SECONDS,
    SOAK_SOUND,
)


def method_text(raw: dict, cfg) -> list[str]:
    cores = raw["machine"]["cores"]
    return [
        "## Method",
        "",
        "### Set-up",
        "",
        "- Everything on this one machine: Asterisk (a fresh sandboxed instance for every run, its own "
        "configuration, run and log directories), the module, the ElevenLabs simulator (`pyconvai.sim`, in a "
        "separate process so that its CPU is its own) and the bench (AMI client and /proc readings), all on "
        "127.0.0.1.",
        "- A call is an AMI `Originate` of `Local/ai-bench@e2e/n` with `Codecs: ulaw`, so both halves are "
        "native μ-law as on a G.711 trunk. The `;2` half runs `ElevenLabsConversationalAI(bench)`; the `;1` half "
        "is the caller: `Answer()`, `MixMonitor` (sampled calls only: what it hears and what it says), "
        f"`Wait({CALLER_WAIT_S:g})`, `Playback` of the caller's audio (a μ-law file), then hang up. No "
        "transcoding anywhere on the call path; no RTP and no jitter buffer (Local channels).",
        f"- The simulated agent: μ-law 8 kHz both ways; a {GREETING_MS / 1000:g} s greeting (440 Hz), then a "
        f"{REPLY_MS / 1000:g} s reply to every caller utterance, replies alternating 880 and 990 Hz so that on a "
        "recording the end of an interrupted reply and the start of the next are told apart; audio sent 4x "
        "faster than real time in chunks cycling through 20, 60, 100, 250, 40, 500, 120 and 1000 ms; an energy "
        "VAD (RMS above 1000 for 60 ms starts an utterance, 300 ms of quiet ends it). When the caller speaks while "
        "the agent's audio is still playing (by the simulator's own play-out clock) it sends `interruption`, then "
        "3 late 100 ms chunks of the old response (1200 Hz: never to be heard), then the reply. A ping every 2 s.",
        f"- The caller: {CALLER_WAIT_S + PATTERN.lead_s:g} s of quiet, then every {PATTERN.period_s:g} s a "
        f"{PATTERN.speech_ms} ms 1000 Hz \"utterance\" at 0 s, when the agent is silent (its reply is a downlink "
        f"latency sample), and another at {PATTERN.second_s:g} s, while that reply plays (a barge-in). The agent "
        f"speaks about {(PATTERN.second_s + REPLY_MS / 1000) / PATTERN.period_s:.0%} of the time.",
        f"- Latency at 1 call: {cfg.single_calls} calls of {cfg.single_seconds:g} s one after the other, "
        "`elevenlabs_audio_frames_buffer_ms = 20`, all recorded. Uplink with 240 ms: "
        f"{cfg.uplink240_calls} calls of {cfg.uplink240_seconds:g} s.",
        f"- Capacity: N concurrent calls originated at {cfg.ramp_rate:g} per second, buffer "
        f"{cfg.capacity_buffer_ms} ms (the default); the {cfg.window_s:g} s window starts {cfg.warmup_s:g} s after "
        "the N calls are connected (the simulator has N conversations; without the module, Asterisk has 2N "
        f"channels; at most {CONNECT_ALLOWANCE_S:g} s is waited), then the bench hangs every call up. "
        f"{cfg.recorded_per_level} calls per level are recorded. The floor: the same callers, the agent side "
        "`Answer()` then `Playback` of a long μ-law tone, in an Asterisk without the module loaded.",
        f"- Soak: {cfg.soak_calls} calls, {cfg.soak_concurrency} at a time (the next starts when one ends), "
        f"buffer {cfg.soak_buffer_ms} ms; the caller waits 0.2 s, is quiet {SOAK_SOUND.lead_s:g} s, speaks "
        f"{SOAK_SOUND.speech_ms} ms over the greeting and hangs up {SOAK_SECONDS:g} s after it started talking. "
        f"Every {cfg.soak_checkpoint} calls the bench waits until Asterisk has no channel and the runtime no live "
        "call, then reads /proc. The same soak without the module is the control.",
        "",
        "### Definitions and clocks",
        "",
        "The module stamps what it does with `CLOCK_MONOTONIC` in the channel thread and in the framehook "
        "(AMI `ElevenLabsConversationStats`); the simulator stamps with `time.monotonic()`, the same clock of "
        "the same kernel. Differences between them are exact: no clock alignment, no network time.",
        "",
        "- **Downlink latency**: the simulator sent the `audio` message that starts a burst (sent when the caller "
        "had nothing left to hear from what was sent before, by the simulator's play-out clock, interruptions "
        "included) → the module wrote the burst's first frame (`DownlinkFirstFrameNs`). It includes the "
        "simulator's socket write, loopback TCP, the module's asyncio thread reading, parsing and decoding the "
        "message, queueing, waking the channel thread and its `ast_write`. It does not include the agent's own "
        "time to produce audio, the Internet, TLS or the caller's jitter buffer. The module's part, Python "
        "received the message → first frame written, is its own `DownlinkLatencyMs`. A first frame is paired "
        "with the last burst start sent before Python received the audio (the module gives that time); a pair "
        "over 1 s apart is counted as unmatched.",
        "- **Uplink latency, last byte**: the framehook read the caller frame holding a chunk's last byte "
        "(`UplinkCapturedNs`) → the simulator had the chunk (its receive loop decoded it). Chunk i of a call is "
        "the i-th `user_audio_chunk` the simulator received (both in send order; the module time-stamps the first "
        "100 chunks of a call). **First byte**: from the capture of the previous chunk's last frame, i.e. from "
        "when this chunk's first sample began: the last-byte figure plus the chunk's own accumulation (≈ the "
        "buffer). Chunks captured before the conversation started (they waited for the connection) are left "
        "out. The module's part, last byte captured → chunk handed to the socket, is its `UplinkLatencyMs`.",
        "- **Barge-in**: the interruption received by Python → the last frame of the interrupted response "
        "written by the channel thread (`BargeInStopMs`, 0 when none was written after it). **As heard**: on "
        "the recording, the frames of the interrupted response that follow the frame the module had written "
        "last before the interruption arrived (`InterruptedAfterFrames`, counted in agent frames heard).",
        "- **Pacing**: the intervals between consecutive frames the channel thread wrote, up to 60 ms apart "
        "(longer is a new burst; `FrameIntervalsMs`). They include the step from an interrupted response to "
        "the reply, where a longer interval is a wait for the reply's audio, not a fault.",
        "- **Underruns**: the module's counter: the playback thread found the channel's ring empty while audio "
        "was queued in Python.",
        f"- **CPU**: utime + stime of the process from `/proc/<pid>/stat` over the window, in % of one core "
        f"(this machine has {cores}: {100 * int(cores)} % is all of it); per thread from `/proc/<pid>/task`; "
        "machine busy from `/proc/stat` (100 % = every core). **RSS**: `VmRSS`, mean over the window. **Per "
        "call**: (value in the window − the same Asterisk idle before its first call) / N; **over the floor**: "
        "the module's per-call figure minus the floor's.",
        "- Percentiles interpolate linearly between samples; n is given with each, and with n < 100 the p99 is "
        "close to the maximum.",
        "",
    ]


def _threads(res: dict) -> str:
    rows = res.get("top_threads") or []
    named = [f"{comm.replace('pyconvai-asynci', 'pyconvai-asyncio').replace('pyconvai-playba', 'pyconvai-playback')} "
             f"{cpu:.0f} %" for _tid, comm, cpu in rows if comm.startswith("pyconvai")]
    return ", ".join(named)


def explanations(out: dict) -> list[str]:
    rows = out["bars"]
    missed = [row for row in rows if row.get("miss")]
    L: list[str] = []
    add = L.append
    if missed:
        add("## Missed bars: by how much, why, and what would meet them")
        add("")
    else:
        add("## Bars")
        add("")
        add("Every bar is met.")
        add("")
    single = out.get("single")

    # Downlink at load.
    for lv in out["levels"]:
        lat = lv.lat
        if lv.level != 200 or lat is None or not lat.downlink_sim.get("n"):
            continue
        if lat.downlink_sim.get("p99", 0) <= 25.0:
            continue
        m = lv.mod
        add(f"### Downlink latency at {lv.level} calls: p99 {fmt(lat.downlink_sim['p99'])} ms, "
            f"{lat.downlink_sim['p99'] - 25:.0f} ms over the bar")
        add("")
        add(f"- Where the time goes: the module's own part (Python received the audio → first frame written) "
            f"has p99 {fmt(lat.downlink_module.get('p99'))} ms; the rest, p50 "
            f"{fmt(lat.downlink_sim['p50'] - lat.downlink_module['p50'])} ms, is between the simulator writing the "
            "message and the module's asyncio thread reading it.")
        add(f"- Why: the machine was saturated: {fmt(m.get('machine_busy'), 0)} % of both cores busy "
            f"(Asterisk {fmt(m.get('cpu'), 0)} % of one core, the simulator {fmt(m.get('sim_cpu'), 0)} %, other "
            f"processes {fmt(m.get('other_cpu'), 0)} %). Every call's WebSocket traffic, JSON, base64 and the "
            "20 ms caller-audio and clock-record pump run on one Python thread (`pyconvai-asyncio`, "
            f"{_threads(m) or '–'} over the window) that competes as one thread among "
            f"{m.get('threads', '?')} for 2 cores. A message for a silent call waits for that thread to get a "
            "core and to work through the other calls' messages. At 1 call the same path takes "
            f"p99 {fmt(single.downlink_sim.get('p99')) if single else '–'} ms.")
        add(f"- Per call the module costs {fmt(lv.per_call.get('cpu_over_floor'), 2)} % of a core over the "
            f"floor's {fmt(lv.per_call.get('floor_cpu_per_call'), 2)} %: "
            f"{fmt(m.get('cpu'), 0)} % against the floor's {fmt(lv.flo.get('cpu'), 0)} % at {lv.level} calls.")
        add("- What would meet it: (1) less Python work per call and per frame: wake the asyncio loop from "
            "the framehook when a chunk is complete instead of polling every call every 20 ms "
            "(`runtime._pump`), stop sending a clock record per frame to Python (aggregate latencies and "
            "intervals in C, pass only the per-call results), let the asyncio thread push received audio "
            "straight into the ring so that the 50 Hz playback thread has nothing to do; (2) more than one "
            "thread for the audio path: shard calls over several event loops, each in its own "
            "sub-interpreter (per-interpreter GIL, Python ≥ 3.12; the test bed runs 3.14) or on free-threaded "
            "CPython, or parse `audio` messages and decode base64 in C; (3) run the runtime's two threads at a "
            "higher priority than channel threads (they serve every call; e.g. `nice -5`); and (4) for the "
            "benchmark itself, the simulator on another machine: here it took "
            f"{fmt(m.get('sim_cpu'), 0)} % of a core from Asterisk.")
        add("")

    # Underruns.
    under = next((row for row in rows if row["bar"].startswith("Underruns")), None)
    if under and under.get("miss"):
        s = out["soak"]
        add(f"### Underruns: {under['value']}")
        add("")
        quiet = []
        if single is not None:
            quiet.append(f"1 call: {single.underruns}")
        for lv in out["levels"]:
            if lv.lat is not None:
                late = lv.lat.pacing.get("late", 0)
                quiet.append(f"{lv.level} call{'s' if lv.level != 1 else ''}: {lv.lat.underruns} underruns, "
                             f"{late} intervals over 21 ms")
        benign = s.get("benign_underrun_calls") if s else None
        add("- Two different things are counted. Most counts are a race in the counter, not a lost frame: "
            "`Call.playback_tick` counts an underrun when the ring is empty while frames are queued, which is "
            "also true for an instant whenever audio reaches a silent call (after `PlaybackQueue.add` and before "
            "`_start_playback` moves it into the ring), and whenever a chunk arrives while the ring holds 1 or 2 "
            "frames: `_on_event` tops the ring up only when it is completely empty, so the new frames wait for "
            "the playback thread's next tick while the channel thread drains the ring."
            + (f" Evidence: {benign} of the soak's calls counted an underrun although no interval between their "
               "frames exceeded 25 ms and the recordings show no silent frame inside a response." if benign else ""))
        add("- The rest are real: at high load the playback thread (50 Hz, every call, holding the GIL) is "
            "late by more than the 3 frames (60 ms, `FRAMES_AHEAD`) the ring holds, the channel thread finds the "
            "ring empty and a frame is skipped (an interval of 40 ms or more). By level: " + "; ".join(quiet) + ".")
        add("- What would meet it: on every `AgentAudioQueued`, move audio into the ring on the asyncio thread "
            "up to the ring's target, not only when it is empty (closes the race); keep more audio in the "
            "ring: 10–25 frames (200–500 ms; the 64 KiB ring holds 8 s of μ-law) tolerate a Python stall that "
            "long, and barge-in does not suffer because the interruption flush already empties the ring "
            "(`ring.discard`); count an underrun in the channel thread, where a frame is really missed.")
        add("")

    # RSS per call at 1 call.
    for lv in out["levels"]:
        value = lv.per_call.get("rss_over_floor_kib")
        if value is None or value <= 1024 or lv.mod.get("calls_up", lv.level) < lv.level:
            continue
        m = lv.mod
        add(f"### RSS per call over the floor at {lv.level} call{'s' if lv.level > 1 else ''}: "
            f"{value / 1024:.2f} MiB, {value / 1024 - 1:.2f} MiB over the bar")
        add("")
        if lv.level == 1:
            add(f"- One call: the RSS in the window ({fmt(m.get('rss_mib'), 1)} MiB) against the idle Asterisk "
                f"before it ({fmt(m.get('idle_rss_mib'), 1)} MiB); after the call ended "
                f"{fmt(m.get('after_rss_mib'), 1)} MiB stayed. Most of it is paid once, by the first call: the "
                "runtime's lazily built state (the HTTP client and TLS stack, the WebSocket library, malloc "
                "arenas of the first channel threads) stays for the next calls, which is why the per-call "
                "figure falls with N (see the capacity table). It is not a per-call cost; the bar is met from "
                "the first level with more calls on.")
        else:
            add(f"- {fmt(m.get('rss_mib'), 1)} MiB in the window, idle {fmt(m.get('idle_rss_mib'), 1)} MiB. "
                "Per call: 448 KiB of rings allocated and zeroed by `calloc` (uplink 256 KiB, downlink, control "
                "and clock 64 KiB each), the Python session, the WebSocket and its buffers, the queued agent "
                "audio (4x real time: up to a reply ahead).")
            add("- What would meet it: size the rings for the negotiated format (the uplink ring holds 32 s of "
                "μ-law) and allocate them with `mmap` so that a call's memory goes back to the system at its end.")
        add("")

    # Soak.
    s, f = out["soak"], out["soak_floor"]
    soak_row = next((row for row in rows if row["bar"].startswith("No growth")), None)
    if soak_row and soak_row.get("miss") and s:
        add(f"### Growth across the soak: RSS {s['rss_before']:.1f} → {s['rss_after']:.1f} MiB")
        add("")
        grew = s["rss_after"] - s["rss_first_checkpoint"]
        add(f"- From the first checkpoint ({s['first_checkpoint']} calls) to the end: {grew:+.1f} MiB, a slope "
            f"of {fmt(s.get('rss_slope_kib_per_call'), 1)} KiB per call; threads {s['threads_before']} → "
            f"{s['threads_after']} and fds {s['fds_before']} → {s['fds_after']} are flat."
            + (f" Without the module the same calls take Asterisk from {f['rss_before']:.1f} to "
               f"{f['rss_after']:.1f} MiB." if f else ""))
        if "memory_last" in s:
            z, b = s["memory_start"], s["memory_last"]
            add(f"- Where: glibc malloc arenas other than the main heap {z['arenas']:.1f} → {b['arenas']:.1f} MiB, "
                f"main heap {z['heap']:.1f} → {b['heap']:.1f} MiB, while CPython's own object arenas stay at "
                f"{b['pymalloc']:.1f} MiB: Python objects are not accumulating; memory that malloc serves is.")
        add("- Why (from the code): every call `calloc`s 448 KiB of rings on its channel thread, i.e. in one of "
            "glibc's per-thread arenas (up to 8 per core), and the rings are freed only when the Python `Call` "
            "object dies, which is at the next cyclic garbage collection because `Call` and its `Session` "
            "reference each other (the session's listener is the call's bound method). Blocks of 64–256 KiB "
            "freed late and in batches, between the small allocations of later calls, fragment the arenas, "
            "which only give memory back from their top. Every call also builds a new `httpx.AsyncClient` and "
            "with it a TLS context with the CA bundle"
            + (f" ({fmt(out['raw'].get('client_setup_ms'), 1)} ms of CPU each, measured with the embedded "
               "Python's packages)" if out["raw"].get("client_setup_ms") else "")
            + ": OpenSSL allocations on the asyncio thread's arena. The growth slows down (the RSS also falls at "
              "some checkpoints), the signature of fragmentation rather than of a leak of whole objects, but "
              "it does not stop within this soak.")
        add("- What would meet it: allocate the rings with `mmap` (or recycle them from a pool) so they never "
            "enter malloc's arenas; free them when the call ends rather than when Python collects it (release "
            "the rings in `Call._finish`, or make the session's listener a weak reference); build the TLS "
            "context (and the `httpx` client) once per runtime and reuse it for every call.")
        add("")

    # Always: other findings.
    add("## Other findings")
    add("")
    raw = out["raw"]
    if raw.get("single") is not None:
        slow, on_tick = 0, 0
        for st in raw["single"].stats:
            f, lat = st.first_frames, st.downlink_ms
            for k in range(1, min(len(f), len(lat))):
                if lat[k] > 2.0:
                    slow += 1
                    phase = ((f[k] - f[k - 1]) * 1000) % 20
                    on_tick += min(phase, 20 - phase) < 1.0
        if slow:
            add(f"- Downlink at 1 call: {slow} of {single.downlink_module.get('n', 0)} first frames took more than "
                f"2 ms inside the module (the p99 of {fmt(single.downlink_sim.get('p99'))} ms comes from them), and "
                f"{on_tick} of those were written exactly on the channel thread's 20 ms timer phase, i.e. at its next "
                "tick and not on the wake-up meant to start playback at once. A race explains it: when the playback "
                "thread's tick falls between the asyncio thread queueing the audio (`PlaybackQueue.add`) and its own "
                "transfer in `_start_playback`, the playback thread moves the frame into the ring without waking the "
                "channel thread, `_start_playback` then moves nothing and does not wake it either, and the frame waits "
                "up to 20 ms for the timer. Fix: wake the channel thread whenever the ring is not empty and the call "
                "was silent (in `_start_playback` regardless of what it moved, and in `playback_tick` when it fills an "
                "empty ring).")
    for lv in out["levels"]:
        m = lv.module
        if m is None:
            continue
        failed = m.statuses.get("FAILED", 0)
        reached = len(m.convs)
        late_init = sum(1 for c in m.convs.values() if c.init_late)
        if failed or reached < lv.level:
            add(f"- At {lv.level} calls only {reached} calls ever reached the simulator, {failed} ended FAILED and "
                f"{lv.mod.get('calls_up', '?')} were up in the window"
                + (f"; in {late_init} conversations the module sent its initiation data more than 1 s after its "
                   "WebSocket opened" if late_init else "")
                + ". Calls that never connect are not failed by Python's own bounds "
                "(`max_connection_attempts` × `connection_timeout_seconds` = 3 × 10 s): they wait for the C side's "
                "start-up limit (`CONVAI_STARTUP_GRACE_SECONDS` + attempts × (2 × timeout + 2) = 71 s) and end "
                "FAILED \"no response from the Python runtime\" (while Python logs CALLER_HANGUP \"startup "
                "timeout\"). The connection attempts' `asyncio.timeout` not firing for over a minute, while the "
                "established calls keep streaming, points at the connection path (per-call `httpx.AsyncClient`, "
                "its TLS context, its name resolution in worker threads) and deserves a profile (py-spy) under this "
                "load; the cause is not established by this benchmark."
                + (f" Even without the module this level needs {fmt(lv.flo.get('cpu'), 0)} % of a core "
                   f"(machine busy {fmt(lv.flo.get('machine_busy'), 0)} %): 400 Local-channel calls with "
                   "`Playback` on both halves do not fit on 2 cores." if lv.flo.get("cpu") else ""))
    if single is not None and single.uplink_last.get("n"):
        add(f"- Uplink: with 20 ms chunks the last byte reaches the agent p50 {fmt(single.uplink_last.get('p50'))} "
            f"ms, p99 {fmt(single.uplink_last.get('p99'))} ms after the framehook read it, of which the module "
            f"holds it p50 {fmt(single.uplink_module.get('p50'))} ms: caller audio waits in the uplink ring for "
            "the asyncio thread's 20 ms pump (`runtime._pump`), 0 to 20 ms depending on the phase between the "
            "caller's frames and the pump. Waking the loop from the framehook when a chunk is complete would make "
            "it about 1 ms.")
    if out["raw"].get("client_setup_ms"):
        add(f"- Call set-up: each call builds an `httpx.AsyncClient(verify=True)` for its signed URL, i.e. a new "
            f"TLS context with the CA bundle: {fmt(out['raw']['client_setup_ms'], 1)} ms of CPU in the embedded "
            "Python's packages, on the asyncio thread with the GIL held, during which no other call's audio "
            "moves. One context (and client) per runtime would remove it.")
    if single is not None:
        p = single.pacing
        lats = [single] + [lv.lat for lv in out["levels"] if lv.lat is not None]
        worst = max((lat.barge_in.get("max", 0.0) for lat in lats if lat.barge_in.get("n")), default=0.0)
        total = sum(lat.barge_in.get("n", 0) for lat in lats)
        add(f"- Barge-in: the interruption flushes the queue and the ring in one step (`PlaybackQueue.interrupt` "
            f"with `ring.discard` under the queue's lock); over {total} interruptions in the latency and capacity "
            f"runs the longest time from the interruption to the last old frame written was {worst:.2f} ms "
            "(0 = none written after it).")
        if p.get("n"):
            add(f"- Pacing at 1 call: {p['on_time']:.2%} of {p['n']} intervals within 19–21 ms; the others "
                f"from {p['min']:.0f} to {p['max']:.0f} ms.")
    add("")
    return L
