"""The prose of BENCHMARKS.md: the method, and for every missed bar by how much, why, and what would
meet it. Every number quoted there comes from the figures of the run being reported, except in the
design changes and the other runs (``design_changes``, ``other_runs``) and where a missed bar's "why"
quotes a measurement made by hand: those are earlier or separate measurements and say when and how
each was made."""

from __future__ import annotations

from .figures import fmt
from .report import BARS, _thread_name
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
        f"{cfg.capacity_buffer_ms} ms{' (the default)' if cfg.capacity_buffer_ms == 240 else ''}; the {cfg.window_s:g} s window starts {cfg.warmup_s:g} s after "
        "the N calls are connected (the simulator has N conversations; without the module, Asterisk has 2N "
        f"channels; at most {CONNECT_ALLOWANCE_S:g} s is waited), then the bench hangs every call up. "
        f"{cfg.recorded_per_level} calls per level are recorded. The floor: the same callers, the agent side "
        "`Answer()` then `Playback` of a long μ-law tone, in an Asterisk without the module loaded.",
        f"- SIP ({', '.join(map(str, cfg.sip_levels))} calls): the same measurement with SIPp (sip-tester) as the "
        "callers, over PJSIP and RTP on 127.0.0.1, μ-law both ways: SIPp streams the caller's audio "
        "(`rtp_stream`) until Asterisk hangs up. Its floor is the same SIPp calls to `Answer()` + `Playback`.",
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
        "received the message → first frame written, is its own `DownlinkLatencyMs`: the module times a first "
        "frame only when the audio found nothing left to play (the playback queue and the ring empty, decided "
        "under the queue's lock) and the last frame written had finished playing (from the clock records); audio "
        "arriving while a frame still plays continues the stream. A first frame is paired with the last burst "
        "start sent before Python received the audio (the module gives that time); a pair over 1 s apart is "
        "counted as unmatched.",
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
        "- **Underruns**: the module's counter: the playback thread found the call's ring empty while frames "
        "waited in Python, having fed it since the last interruption (after a flush the ring is empty by design). "
        "The ring is kept 500 ms ahead of the channel thread (`FRAMES_AHEAD`).",
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


def _latency_miss(lv, single, add) -> None:
    lat, m, f = lv.lat, lv.mod, lv.flo
    dl, bi = lat.downlink_sim, lat.barge_in
    parts = []
    if dl.get("p99", 0) > 25.0:
        parts.append(f"downlink p99 {fmt(dl['p99'])} ms ({dl['p99'] - 25:.0f} ms over)")
    if bi.get("p99", 0) > 20.0:
        parts.append(f"barge-in p99 {fmt(bi['p99'])} ms ({bi['p99'] - 20:.0f} ms over)")
    add(f"### Latency at {lv.level} calls: " + ", ".join(parts))
    add("")
    add(f"- Where the time goes: the module's own part, Python received the audio → first frame written, has "
        f"p50 {fmt(lat.downlink_module.get('p50'))} ms and p99 {fmt(lat.downlink_module.get('p99'))} ms; the rest "
        "is between the simulator writing the message and the module's asyncio thread reading it. The uplink "
        f"shows the same wait in the other direction: the module holds a chunk p50 "
        f"{fmt(lat.uplink_module.get('p50'))} ms, p99 {fmt(lat.uplink_module.get('p99'))} ms, but the simulator "
        f"has it p50 {fmt(lat.uplink_last.get('p50'))} ms, p99 {fmt(lat.uplink_last.get('p99'))} ms after capture.")
    add(f"- Why: the machine is saturated: {fmt(m.get('machine_busy'), 0)} % of all cores busy. Asterisk takes "
        f"{fmt(m.get('cpu'), 0)} % of one core, of which the same calls without the module take "
        f"{fmt(f.get('cpu'), 0)} % (the floor: two Local channels and a `Playback` per call); the simulator "
        f"takes {fmt(m.get('sim_cpu'), 0)} %. The runtime's Python threads ({_threads(m) or '–'}) are two "
        f"threads among {m.get('threads', '?')}: each message waits for a core, and the simulator's own loop "
        "waits too before it reads a chunk or writes the next message. At 1 call the same path takes p99 "
        f"{fmt(single.downlink_sim.get('p99')) if single else '–'} ms.")
    add("- What would meet it: CPU for the path that serves every call. On this machine the load generator "
        f"(the floor, {fmt(f.get('cpu'), 0)} %) and the simulator ({fmt(m.get('sim_cpu'), 0)} %) take most of "
        "it; on a PBX the callers arrive by RTP and the agent is remote. In the module: run the runtime's two "
        "threads at a higher priority than channel threads (they serve every call), parse `audio` messages and "
        "decode base64 in C, or shard the calls over several event loops in sub-interpreters (a GIL each, "
        "Python ≥ 3.12; the test bed runs 3.14).")
    add("")


def explanations(out: dict) -> list[str]:
    rows = out["bars"]
    missed = [row for row in rows if row.get("miss")]
    L: list[str] = []
    add = L.append
    add("## Missed bars: by how much, why, and what would meet them" if missed else "## Bars")
    add("")
    if not missed:
        add("Every bar is met.")
        add("")
    single = out.get("single")
    for lv in out["levels"]:
        lat = lv.lat
        if lat is None or lv.level not in (1, 200):
            continue
        if lat.downlink_sim.get("p99", 0) > 25.0 or lat.barge_in.get("p99", 0) > 20.0:
            _latency_miss(lv, single, add)

    under = next((row for row in rows if row["bar"].startswith("Underruns")), None)
    if under and under.get("miss"):
        by_level = [f"latency runs: {single.underruns}"] if single is not None else []
        for lv in out["levels"]:
            if lv.lat is not None:
                by_level.append(f"{lv.level} call{'s' if lv.level > 1 else ''}: {lv.lat.underruns} underrun"
                                f"{'s' if lv.lat.underruns != 1 else ''}, {lv.lat.pacing.get('late', 0)} "
                                "intervals over 21 ms")
        add(f"### Underruns: {under['value']}")
        add("")
        add("- By level: " + "; ".join(by_level) + ". An underrun means the playback thread, which keeps the "
            "ring 500 ms ahead, was late by about that much: the runtime's threads did not get a core or the "
            "GIL for half a second, which happens only with the machine saturated (see the capacity table).")
        add("")

    for lv in out["levels"]:
        value = lv.per_call.get("rss_over_floor_kib")
        bar = BARS["rss_per_call_kib"]
        if value is None or value <= bar or lv.mod.get("calls_up", lv.level) < lv.level:
            continue
        m = lv.mod
        add(f"### RSS per call over the floor at {lv.level} call{'s' if lv.level > 1 else ''}: "
            f"{value / 1024:.2f} MiB, {(value - bar) / 1024:.2f} MiB over the bar")
        add("")
        add(f"- {fmt(m.get('rss_mib'), 1)} MiB in the window against the idle Asterisk before the first call "
            f"({fmt(m.get('idle_rss_mib'), 1)} MiB); after the calls ended {fmt(m.get('after_rss_mib'), 1)} MiB "
            "stayed. Per call: 112 KiB of rings once they have cycled (uplink 64 KiB, downlink 32, clock 16; the "
            "control ring's rare records touch few of its pages), the Python session, the WebSocket and its "
            "buffers, the agent audio queued ahead (sent 4x faster than real time)."
            + (" With one call, what the first call still builds once (the channel threads' malloc arenas) "
               "weighs on the figure; it falls with N (capacity table)." if lv.level == 1 else ""))
        add("- What would meet it: agent audio queued as one buffer per response rather than one bytes "
            "object per 20 ms frame, and the per-call statistics' samples kept in C.")
        add("")

    for row in rows:
        if not row["bar"].startswith("Extra CPU per call") or not row.get("miss"):
            continue
        level = int(row["bar"].rsplit(" at ", 1)[1].split()[0])
        lv = next(lv for lv in out["levels"] if lv.level == level)
        pc, m = lv.per_call, lv.mod
        threads = {_thread_name(comm): cpu for _tid, comm, cpu in m.get("top_threads", [])}
        asyncio_cpu = threads.get("pyconvai-asyncio")
        add(f"### Extra CPU per call at {level} calls: {row['value']} the floor's (bar ≤ "
            f"{BARS['cpu_extra_per_floor']:g}x)")
        add("")
        add(f"- Per call {fmt(pc.get('mod_cpu_per_call'), 3)} % of a core with the module against "
            f"{fmt(pc.get('floor_cpu_per_call'), 3)} % for the floor's `Playback`: "
            f"{fmt(pc.get('cpu_over_floor'), 3)} % more."
            + (f" The runtime's asyncio thread alone takes {asyncio_cpu:.1f} % of a core "
               f"({asyncio_cpu / level:.3f} % per call): the WebSocket reads and writes, JSON and base64 of "
               "every message, the doorbell's wake-ups, queueing the agent's frames." if asyncio_cpu else ""))
        add("- Where its Python time goes: the profile below the capacity table (py-spy, native frames).")
        add("- Why, measured by hand on 2026-12-03 (50 calls, module only, perf and /proc): the asyncio thread "
            "wakes about 500 times a second, once per event (each agent message and each caller chunk's doorbell "
            "comes on its own), and each wake-up costs about 0.35 ms of CPU: 28 % of the thread's samples are in "
            "the kernel (epoll_pwait 9 %, socket writes 6 %, reads 2 %, the rest switching threads), 59 % in "
            "libpython, whose code starts cold at every wake-up. The same Python code in a process of its own, "
            "where one stand-in thread feeds every call's rings in one burst every 20 ms, wakes 142 times a "
            "second for the same 50 calls and takes 6.4 % of a core: what looked like the same code costing "
            "twice as much inside Asterisk is the number of wake-ups. Neither the scheduler nor the allocator "
            "is the cause: the thread at nice -10 was preempted 140 times a second instead of 320 and took "
            "17.7, 16.4 and 16.7 % of a core against 17.5, 18.1 and 16.5 %; mimalloc as Python's allocator, "
            "16.6 and 17.3 %.")
        add("- What would meet it: fewer wake-ups, then less Python per event. Caller chunks picked up on the "
            "wake-ups that happen anyway (the framehook keeping a list of complete chunks, and ringing the "
            "doorbell only for a chunk still waiting one frame later) would save most of the doorbell's 4 "
            "wake-ups per call-second (50 at 20 ms chunks), at the cost of up to 20 ms more on the uplink of a "
            "call with nothing else going on; `audio` messages parsed and decoded into the playback queue in C "
            "would shorten the rest. The clock records are already counted in C (see the design changes).")
        add("")

    s, f = out["soak"], out["soak_floor"]
    soak_row = next((row for row in rows if row["bar"].startswith("No growth")), None)
    if soak_row and soak_row.get("miss") and s:
        add(f"### Growth across the soak: RSS {s['rss_before']:.1f} → {s['rss_after']:.1f} MiB")
        add("")
        grew = s["rss_after"] - s["rss_first_checkpoint"]
        add(f"- From the first checkpoint ({s['first_checkpoint']} calls) to the end: {grew:+.1f} MiB, a slope "
            f"of {fmt(s.get('rss_slope_kib_per_call'), 1)} KiB per call; threads {s['threads_before']} → "
            f"{s['threads_after']} and fds {s['fds_before']} → {s['fds_after']}."
            + (f" Without the module the same calls take Asterisk from {f['rss_before']:.1f} to "
               f"{f['rss_after']:.1f} MiB." if f else ""))
        if "memory_last" in s:
            z, a, b = s["memory_start"], s["memory_first"], s["memory_last"]
            add(f"- Where (at start → first checkpoint → end): glibc malloc arenas other than the main heap "
                f"{z['arenas']:.1f} → {a['arenas']:.1f} → {b['arenas']:.1f} MiB, main heap {z['heap']:.1f} → "
                f"{a['heap']:.1f} → {b['heap']:.1f} MiB, CPython's object arenas {z['pymalloc']:.1f} → "
                f"{a['pymalloc']:.1f} → {b['pymalloc']:.1f} MiB, thread stacks and other mappings "
                f"{z['other_anon']:.1f} → {a['other_anon']:.1f} → {b['other_anon']:.1f} MiB.")
        add("- Why: every call runs on a new channel thread, and glibc gives threads their own malloc arenas "
            "(up to 8 per core); what a call allocates there and frees from another thread returns to that "
            "arena's free lists, not to the system, so the arenas keep pages that later calls only partly "
            "reuse. Calls and their rings are freed when they end (a loopback test checks it by reference "
            "counting alone, and the rings are mmap'd, outside the arenas); threads and descriptors are flat.")
        add("- What would meet it: give the memory back when the module is idle (`malloc_trim(0)` after the "
            "last live call ends), or cap the arenas (`MALLOC_ARENA_MAX`, an Asterisk-wide setting).")
        add("")

    L += design_changes()
    L += other_runs()
    add = L.append
    add("## Other findings")
    add("")
    for lv in out["levels"]:
        m = lv.module
        if m is None:
            continue
        failed = m.statuses.get("FAILED", 0)
        reached = len(m.convs)
        if failed or reached < lv.level:
            add(f"- At {lv.level} calls only {reached} calls reached the simulator and {failed} ended FAILED; "
                f"{lv.mod.get('calls_up', '?')} were up in the window."
                + (f" Without the module this level takes {fmt(lv.flo.get('cpu'), 0)} % of a core (machine busy "
                   f"{fmt(lv.flo.get('machine_busy'), 0)} %)." if lv.flo.get("cpu") else ""))
    if single is not None and single.uplink_last.get("n"):
        add(f"- Uplink at 1 call with 20 ms chunks: the last byte reaches the agent p50 "
            f"{fmt(single.uplink_last.get('p50'))} ms, p99 {fmt(single.uplink_last.get('p99'))} ms after the "
            f"framehook read it, of which the module holds it p50 {fmt(single.uplink_module.get('p50'))} ms, p99 "
            f"{fmt(single.uplink_module.get('p99'))} ms: the uplink ring's doorbell wakes the asyncio thread when "
            "the chunk is complete.")
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


def design_changes() -> list[str]:
    """What earlier runs of this benchmark changed in the module (their figures are in git history)."""
    return [
        "## Design changes this benchmark led to",
        "",
        "- **Calls are freed when they end.** A call's `Call` and `Session` were kept alive by reference cycles "
        "(the session's listener, its log adapter, finished tasks' tracebacks) until the cycle collector's next "
        "full pass, hundreds of calls later, and with them 448 KiB of rings each: the soak's RSS kept climbing. "
        "Now the listener is a weak reference, the cycles are gone, and a loopback test checks that a finished "
        "call is freed by reference counting alone on every way a call ends.",
        "- **One TLS context for every call** (the system's CA store), instead of one built per call.",
        "- **The uplink has a doorbell.** The framehook rings an eventfd when the uplink ring holds the rest of "
        "the next chunk; the asyncio thread used to poll every call every 20 ms, which added 0–20 ms to the "
        "uplink and took a quarter of that thread's time at 100 calls (py-spy). A 100 ms sweep remains for the clock "
        "records.",
        "- **The ring is kept 500 ms ahead**, not 60 ms: a Python stall under load no longer starves the "
        "channel thread; the interruption flush already empties the ring, so barge-in is unchanged.",
        "- **Playback after silence starts at once whichever thread fills the ring**, and latency samples are "
        "taken only when the audio found nothing left to play (decided under the playback queue's lock): a late "
        "channel-thread tick is no longer mistaken for silence, and no sample is lost to a race.",
        "- **No debug records are built unless debugging is on** (websockets built one per frame and the host "
        "handler dropped it).",
        "- **Cheaper per call (issue 15)**, measured before/after in alternating runs of the same harness "
        "(2026-12-02, `BENCH_PARTS=capacity BENCH_LEVELS=1,50,100`, two runs of each build, floor in every "
        "run): the runtime's two threads took 12.2 and 12.1 % of a core at 50 calls before, 9.0 and 8.8 % after "
        "(100 calls: 25.0 and 22.0 → 19.0 and 18.1 %); the module's extra CPU per call was 0.72 and 0.69x the "
        "floor's at 50 calls, 0.42 and 0.33x after (100 calls: 1.38 and 1.13 → 0.95 and 0.81x). What each "
        "change is: uvloop's event loop (alone, in two runs at 50 calls: the asyncio thread 13.3 and 14.8 → "
        "11.7 and 12.2 %); keys and control answers ring the uplink's doorbell, so a call is swept once a second "
        "instead of every 100 ms (the sweep was 7 % of the GIL holder's samples at 50 calls); the key-entry "
        "pause is a timer, not polled; the playback thread tops the rings up every 100 ms instead of 20 "
        "(its thread: 0.9–1.8 % → 0.5–0.6 % of a core).",
        "- **The WebSocket is websockets' Sans-I/O protocol on the asyncio transport (issue 15).** websockets' "
        "asyncio connection put an assembler, a queue, futures, a send lock and an async context manager "
        "between each frame and the session, and the session a writer task woken for each message. Now the "
        "session handles each message in the socket's read callback and writes each message to the transport "
        "where it is queued (the keepalive, the closing handshake, fragments and UTF-8 checks are ours, on "
        "websockets' protocol; tests against a raw server cover them). A/B in this bench's Asterisk "
        "(2026-12-03, `BENCH_PARTS=capacity BENCH_LEVELS=50 BENCH_NO_FLOOR=1`, three runs of each build, one "
        "after the other): the asyncio thread 21.7, 19.2 and 19.9 % of a core before, 16.3, 16.5 and 17.2 % "
        "after (−18 %); Asterisk's CPU 60.3, 55.5 and 58.1 % → 52.2, 52.5 and 53.7 %. Two smaller cuts the "
        "profile pointed to (base64 through binascii without `base64`'s Python frame; the call's weak "
        "callbacks without `WeakMethod`) were kept as simplifications but did not show: 16.2, 16.8 and "
        "16.6 % against 16.1, 17.4 and 15.8 %. Single runs with a floor swing more than this change: at "
        "50 calls the extra ÷ floor was 0.65x in the run before it and 0.79, 0.76 and 0.82x in three runs after "
        "(the asyncio thread in those runs: 19.1 % before; 19.0, 18.7 and 17.2 % after), so the A/B runs are the "
        "comparison. Memory moved clearly: RSS per call over the floor 233–235 KiB before, 213–226 KiB after "
        "(no assembler or stream reader per socket).",
        "- **Rings sized to what they carry, and a warm-up connection at load (issue 15).** A ring costs every "
        "page it has cycled through; they were 448 KiB per call (uplink 256 KiB) and are 176 KiB (uplink 64, "
        "downlink 32, clock 16, control 64 of which its rare records touch little). RSS per call over the floor: "
        "483 and 487 → 227 and 228 KiB at 50 calls, 435 and 437 → 230 and 231 KiB at 100. The first call cost "
        "5 MiB (lazy imports of the HTTP and WebSocket clients, the asyncio thread's first allocations): the "
        "runtime now opens one conversation at load against a throwaway server on 127.0.0.1, and the first call "
        "costs 358 and 246 KiB.",
        "- **Clock records counted in C (issue 15).** The channel thread reports every frame it writes and "
        "every piece of caller audio it captures, 100 records a second per call, and Python iterated over "
        "each. `csrc/clockstats.c`, built into the cffi binding and called on the asyncio thread, now counts "
        "the frames, the pacing histogram and the captures awaiting their chunk, and hands Python only the "
        "records its rules need (the first frame of new audio, the frames around an interruption, keys and "
        "answers); the figures are the same and so are their unit tests. One call-second of records cost "
        "133 µs of Python before and 19 µs after (by hand, in a process of its own). A/B in this bench's "
        "Asterisk (2026-12-03, `BENCH_PARTS=capacity BENCH_LEVELS=50 BENCH_NO_FLOOR=1`, three runs of each "
        "build in turn): the asyncio thread 15.9, 19.2 and 18.4 % of a core before, 16.6, 16.9 and 16.5 % "
        "after; Asterisk's CPU 52.5, 59.8 and 61.3 % → 55.3, 56.5 and 54.9 %: about one point, within this "
        "machine's swing at 50 calls (with the records not read at all, the most this change could give: "
        "15.0 and 14.5 %).",
        "",
    ]


def other_runs() -> list[str]:
    """Runs of other settings than the full bench's, quoted with where they come from."""
    return [
        "## The capacity levels with 20 ms chunks",
        "",
        "Issue 15 asks for the CPU with `elevenlabs_audio_frames_buffer_ms = 20` too (50 caller messages a second "
        "per call instead of about 4), within 0.6x the floor. Run of 2026-12-03 17:45 UTC, module of commit "
        "b5ac545, `BENCH_PARTS=capacity BENCH_LEVELS=50,100 BENCH_CAPACITY_BUFFER_MS=20`, floor in the same run: "
        "extra CPU per call 0.827 % of a core against the floor's 0.626 % at 50 calls (**1.32x**), 0.611 % "
        "against 0.645 % at 100 (**0.95x**; the machine saturated); the asyncio thread 37.6 and 59.4 % of a "
        "core; 0 underruns, barge-in p99 0 ms, downlink p99 6.5 ms at 50 calls (238 ms at 100, saturated); RSS "
        "per call over the floor 219 and 221 KiB. The bar (0.6x) is missed by 0.72x at 50 calls: each caller "
        "message is a doorbell wake-up, a base64 and JSON encoding and a socket write in Python, 50 times a "
        "second per call; what would meet it is the same as above, the caller's messages built and written "
        "from C (the framehook already holds the chunk).",
        "",
    ]
