"""The bench's runs: calls through a real Asterisk, with or without the module, and their readings.

One ``Run`` is a fresh Asterisk (and, with the module, a fresh simulator
process) that places calls, reads /proc while they last and collects the
module's per-call figures (AMI ElevenLabsConversationStats), the simulator's
records and the recordings of the sampled calls.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from pyconvai.sim import AgentScript

from .analysis import REPLY_HZ, CallStats, RecordingCheck, floor_heard, recording_checks
from .bed import (
    API_KEY,
    BenchAsterisk,
    Pattern,
    ProcSample,
    Sampler,
    memory_map,
    proc_sample,
    ulaw_tone,
)
from tests.e2e.sip import free_udp_port, sipp_command

from .profile import profile
from .simproc import ConvSummary, SimProcess, wait_until

ULAW = {"output_format": "ulaw_8000", "input_format": "ulaw_8000"}
AGENT_ID = "agent_bench"
GREETING_MS = 1000
REPLY_MS = 1600
PATTERN = Pattern(period_s=2.9, second_s=0.9, speech_ms=300, lead_s=1.0)
CALLER_WAIT_S = 0.5
SIPP_CALLER = Path(__file__).parent / "sipp" / "caller.xml"


def bench_script() -> AgentScript:
    """The simulated agent: a 1 s greeting, then a 1.6 s reply to every caller utterance
    (interrupting itself when the caller speaks over it), replies alternating two tones,
    μ-law both ways, audio sent 4x faster than real time in the simulator's default chunk
    sizes, 3 late stale chunks after each interruption."""
    return AgentScript(**ULAW, greeting_ms=GREETING_MS, reply_ms=REPLY_MS, late_stale_chunks=3,
                       reply_tones_hz=REPLY_HZ)


def machine_busy() -> tuple[int, int, int]:
    """(busy, total, steal) jiffies of all CPUs from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields), fields[7] if len(fields) > 7 else 0


@dataclass
class RunResult:
    name: str
    with_module: bool
    calls: int
    concurrency: int
    buffer_ms: int
    started: float = 0.0
    ended: float = 0.0
    window: tuple[float, float] | None = None
    idle_before: ProcSample | None = None
    idle_after: ProcSample | None = None
    samples: dict[str, list[ProcSample]] = field(default_factory=dict)
    tasks_start: ProcSample | None = None
    tasks_end: ProcSample | None = None
    machine: tuple[float, float] | None = None  # busy %, steal % of all cores (100 % = every core)
    stats: list[CallStats] = field(default_factory=list)
    convs: dict[str, ConvSummary] = field(default_factory=dict)
    recordings: dict[str, tuple[Path, Path, str]] = field(default_factory=dict)  # tag -> (heard, said, channel)
    statuses: dict[str, int] = field(default_factory=dict)
    checkpoints: list[tuple[int, ProcSample]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    runtime_text: str = ""
    version: str = ""
    idle_cpu: float = 0.0  # % of one core, before the calls
    log_errors: list[str] = field(default_factory=list)
    channels_left: int = 0
    live_calls_left: str = ""
    connected_at: float | None = None
    rec_checks: list[RecordingCheck] = field(default_factory=list)
    channels_in_window: tuple[int, int] | None = None
    memory: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    profile: dict | None = None  # tests/bench/profile.py, from a run of its own (profile_level)
    floor_heard: dict = field(default_factory=dict)
    originated_at: float | None = None
    channels_per_call: int = 2  # a Local pair; 1 for a SIP call
    sipp: str = ""  # SIP levels: SIPp's verdict (its last lines when it failed)

    @property
    def duration(self) -> float:
        return self.ended - self.started


LIVE: list["Run"] = []
"""Runs not closed yet: __main__ closes them if the bench is interrupted."""


class Run:
    """A fresh Asterisk (+ simulator) for one set of calls."""

    def __init__(self, root: Path, moddir: str, out_dir: Path, *, name: str, with_module: bool, buffer_ms: int,
                 caller_seconds: float, sounds: dict[str, bytes] | None = None, sip: bool = False) -> None:
        self.name = name
        self.out_dir = out_dir
        self.sim: SimProcess | None = None
        if with_module:
            self.sim = SimProcess({AGENT_ID: bench_script()}, API_KEY)
        agents = {"bench": {"elevenlabs_agent_id": AGENT_ID, "elevenlabs_audio_frames_buffer_ms": buffer_ms}}
        self.sip_port = free_udp_port() if sip else None
        self.ast = BenchAsterisk(root, moddir, with_module=with_module, agents=agents,
                                 endpoint=self.sim.endpoint if self.sim else "", sip_port=self.sip_port)
        self.ast.sound("talk", PATTERN.render(caller_seconds))
        for sound, data in (sounds or {}).items():
            self.ast.sound(sound, data)
        if not with_module:
            self.ast.sound("floortone", ulaw_tone(440.0, int((caller_seconds + 120) * 1000)))
        self.result = RunResult(name, with_module, 0, 0, buffer_ms, channels_per_call=1 if sip else 2)
        self.agent_exten = "ai-bench" if with_module else "floor"
        self._originated = 0
        self._tags: list[tuple[str, bool]] = []
        LIVE.append(self)

    # --- lifecycle

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, kind, exc, _tb) -> bool:
        """Close the run; an error is reported in BENCHMARKS.md and the bench goes on."""
        if isinstance(exc, Exception):
            self.result.errors.append(f"{type(exc).__name__}: {exc}")
        self.close()
        return isinstance(exc, Exception)

    def start(self) -> None:
        self.ast.start(timeout=60)
        self.ami = self.ast.ami_client()
        if self.result.with_module:
            self.result.runtime_text = self.ast.cli("elevenlabs show runtime")
        self.result.version = self.ast.cli("core show version").strip()
        first = proc_sample(self.ast.pid)
        time.sleep(3.0)
        self.result.idle_before = proc_sample(self.ast.pid)
        self.result.idle_cpu = 100.0 * (self.result.idle_before.cpu_s - first.cpu_s) / (
            self.result.idle_before.t - first.t)
        pids = {"asterisk": self.ast.pid, "bench": __import__("os").getpid()}
        if self.sim:
            pids["sim"] = self.sim.pid
        self.sampler = Sampler(pids, 1.0).start()
        self.result.started = time.monotonic()

    def close(self) -> None:
        try:
            self.sampler.stop()
            self.result.samples = self.sampler.samples
        except AttributeError:
            pass
        try:
            log = self.ast.log_text()
            booted = log.find("Asterisk Ready.")
            counts: dict[str, int] = {}
            for line in log[max(0, booted):].splitlines():
                if " ERROR[" in line or " WARNING[" in line:
                    text = re.sub(r"Local/\S+|conv_sim_\w+|\[C-\w+\]|\d+", "#", line.split("] ", 1)[-1])[:200]
                    counts[text] = counts.get(text, 0) + 1
            self.result.log_errors = [f"{n}× {text}" for text, n in sorted(counts.items(), key=lambda x: -x[1])][:10]
        except OSError:
            pass
        self.result.ended = time.monotonic()
        try:
            self.ast.close()
        finally:
            if self.sim:
                self.sim.stop()
            if self in LIVE:
                LIVE.remove(self)

    # --- calls

    def events(self, name: str, **match: str) -> list[dict]:
        return [e for e in list(self.ami.events)
                if e.get("Event") == name and all(e.get(k) == v for k, v in match.items())]

    def finished(self) -> int:
        """Calls over: the module's figures published (module) or the caller hung up (floor)."""
        if self.result.with_module:
            return len(self.events("ElevenLabsConversationStats"))
        return len(self.events("UserEvent", UserEvent="BenchCallerDone"))

    def originate(self, record: bool, wait_s: float = CALLER_WAIT_S, sound: str = "talk") -> str:
        """One call; the caller side waits ``wait_s``, plays ``sound`` and hangs up."""
        tag = f"{self.name[:1]}{self._originated}"
        self._originated += 1
        self._tags.append((tag, record))
        self.ast.originate(self.agent_exten, f"bc-{tag}-{int(record)}-{wait_s:g}-{sound}")
        return tag

    def place(self, count: int, concurrency: int, rate: float, record: set[int] | None = None,
              on_progress=None, timeout_per_call: float = 120.0, sound: str = "talk",
              wait_s: float = CALLER_WAIT_S) -> None:
        """Originate ``count`` calls, at most ``concurrency`` at once, at most ``rate`` per second."""
        record = record or set()
        interval = 1.0 / rate
        next_at = time.monotonic()
        deadline = time.monotonic() + timeout_per_call * max(1, count / max(1, concurrency)) + 60
        for i in range(count):
            while self._originated - self.finished() >= concurrency:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name}: calls do not finish ({self.finished()} of {self._originated})")
                time.sleep(0.02)
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            next_at = max(next_at + interval, time.monotonic() - 1.0)
            self.originate(i in record, wait_s, sound)
            if on_progress:
                on_progress(i + 1)
        self.result.originated_at = time.monotonic()
        self.result.calls += count
        self.result.concurrency = concurrency

    def place_sip(self, count: int, rate: float, seconds: float) -> subprocess.Popen:
        """``count`` SIPp calls at ``rate`` per second, each streaming the caller's audio (the
        run's talk sound) until the PBX hangs up; SIPp runs in the test bed until then."""
        root = self.ast.root
        scenario = f"{self.ast.path('etc')}/sipp-caller.xml"
        self.ast.host_path(scenario).write_text(
            SIPP_CALLER.read_text().replace("@AUDIO@", f"{self.ast.path('sounds')}/talk.ulaw"))
        sipp = subprocess.Popen(
            sipp_command(root, scenario, self.agent_exten, self.sip_port, "-mi", "127.0.0.1",
                         "-min_rtp_port", "30000", "-max_rtp_port", "39999", "-m", str(count), "-l", str(count),
                         "-r", f"{rate:g}", "-timeout", f"{int(seconds + 180)}s"),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.sampler.add("sipp", sipp.pid)
        self.result.originated_at = time.monotonic()  # SIPp started: it originates at ``rate``
        self.result.calls += count
        self.result.concurrency = count
        return sipp

    def wait_finished(self, count: int, timeout: float) -> bool:
        return wait_until(lambda: self.finished() >= count, timeout, 0.2)

    def wait_connected(self, count: int, timeout: float) -> bool:
        """All calls up: the simulator has them (module), or Asterisk has both halves (floor)."""
        if self.sim:
            ok = wait_until(lambda: self.sim.count() >= count, timeout, 0.25)
        else:
            ok = wait_until(lambda: self.ast.channel_count() >= self.result.channels_per_call * count, timeout, 0.25)
        self.result.connected_at = time.monotonic()
        return ok

    def wait_idle(self, timeout: float = 60.0) -> bool:
        def idle() -> bool:
            if self.ast.channel_count():
                return False
            return not self.result.with_module or "Live calls:      0" in self.ast.cli("elevenlabs show runtime")
        ok = wait_until(idle, timeout, 0.25)
        self.result.channels_left = self.ast.channel_count()
        if self.result.with_module:
            self.result.live_calls_left = next(
                (line for line in self.ast.cli("elevenlabs show runtime").splitlines() if "Live calls" in line), "")
        return ok

    def measure_window(self, seconds: float) -> None:
        """Steady state: task CPU and machine CPU from now for ``seconds``."""
        start = time.monotonic()
        busy0, total0, steal0 = machine_busy()
        self.result.tasks_start = proc_sample(self.ast.pid, tasks=True)
        time.sleep(seconds)
        self.result.tasks_end = proc_sample(self.ast.pid, tasks=True)
        busy1, total1, steal1 = machine_busy()
        self.result.window = (start, time.monotonic())
        span = max(1, total1 - total0)
        self.result.machine = (100.0 * (busy1 - busy0) / span, 100.0 * (steal1 - steal0) / span)

    def collect(self) -> None:
        """The module's figures, the simulator's records, the recordings."""
        r = self.result
        r.stats = [CallStats.parse(e) for e in self.events("ElevenLabsConversationStats")]
        for s in r.stats:
            r.statuses[s.status] = r.statuses.get(s.status, 0) + 1
        recorded = {e.get("Tag"): e.get("CallerChannel", "") for e in self.events("UserEvent", UserEvent="BenchCaller")}
        rec_dir = self.out_dir / "recordings" / self.name
        for tag, channel in recorded.items():
            heard, said = self.ast.recording(f"{tag}-heard.wav"), self.ast.recording(f"{tag}-said.wav")
            if not (wait_until(lambda: heard.exists() and said.exists(), 10)):
                r.errors.append(f"recording of {tag} missing")
                continue
            rec_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy(heard, rec_dir / heard.name)
            shutil.copy(said, rec_dir / said.name)
            r.recordings[tag] = (rec_dir / heard.name, rec_dir / said.name, channel.replace(";1", ";2"))
        if self.sim:
            channels = {path[2] for path in r.recordings.values()}
            detail = [s.conversation_id for s in r.stats if s.channel in channels]
            r.convs = {c.conversation_id: c for c in self.sim.summary(detail)}
            r.rec_checks = recording_checks(r.stats, r.convs, r.recordings, r.buffer_ms)
        else:
            r.floor_heard = floor_heard(r.recordings)


# --- the scenarios ------------------------------------------------------------------------------

@dataclass
class Settings:
    """What ``make bench`` runs; every field can be overridden from the environment (see __main__)."""

    single_calls: int = 6  # one call at a time ...
    single_seconds: float = 48.0  # ... each this long (caller audio): 16 cycles of the pattern
    uplink240_calls: int = 3
    uplink240_seconds: float = 26.0  # 100 chunks of 240 ms are timestamped per call
    levels: tuple[int, ...] = (1, 50, 100, 150, 200, 400)  # the issue's, and 150 to find the knee
    sip_levels: tuple[int, ...] = (50,)  # SIPp calls over PJSIP/RTP, module and floor
    capacity_buffer_ms: int = 240  # the default elevenlabs_audio_frames_buffer_ms
    ramp_rate: float = 20.0  # calls originated per second
    warmup_s: float = 5.0
    window_s: float = 30.0
    profile_level: int = 100  # py-spy in a run of its own at this level (0: never)
    profile_s: float = 15.0
    recorded_per_level: int = 4
    floor: bool = True
    soak_calls: int = 2000
    soak_concurrency: int = 10
    soak_checkpoint: int = 250
    soak_buffer_ms: int = 20


def run_sequential(root: Path, moddir: str, out_dir: Path, name: str, calls: int, seconds: float, buffer_ms: int,
                   record: bool, log=print) -> RunResult:
    """``calls`` calls one after the other through the module; each caller plays the pattern."""
    run = Run(root, moddir, out_dir, name=name, with_module=True, buffer_ms=buffer_ms, caller_seconds=seconds)
    with run:
        run.start()
        started = time.monotonic()
        run.place(calls, 1, 5.0, set(range(calls)) if record else set(), timeout_per_call=seconds + 60,
                  on_progress=lambda n: log(f"  {name}: call {n}/{calls}"))
        if not run.wait_finished(calls, seconds + 60):
            run.result.errors.append(f"only {run.finished()} of {calls} calls finished")
        run.result.window = (started, time.monotonic())
        run.wait_idle()
        run.result.idle_after = proc_sample(run.ast.pid)
        run.collect()
    return run.result


def spread(count: int, n: int) -> set[int]:
    """``n`` call indices spread over ``count`` calls."""
    if n <= 0 or count <= 0:
        return set()
    if n >= count:
        return set(range(count))
    return {round(i * (count - 1) / (n - 1)) for i in range(n)} if n > 1 else {count // 2}


CONNECT_ALLOWANCE_S = 120.0


def caller_seconds(level: int, cfg: Settings, measured_s: float) -> float:
    """How long a level's callers must talk: the ramp, the connection allowance, the warm-up,
    what is measured, and a margin (the bench hangs them up when it is done)."""
    return level / cfg.ramp_rate + CONNECT_ALLOWANCE_S + cfg.warmup_s + measured_s + 30.0


def _connected_and_warm(run: Run, level: int, cfg: Settings, timeout: float, what: str) -> None:
    """Wait for a level's calls to be up (measured anyway if some are not), then the warm-up."""
    if not run.wait_connected(level, timeout):
        run.result.errors.append(f"not all {level} {what} were connected {timeout:g} s after the last was "
                                 "placed; measured anyway")
    time.sleep(cfg.warmup_s)


def _window_then_hang_up(run: Run, level: int, cfg: Settings) -> None:
    """The steady window, then every call hung up and Asterisk left idle."""
    r = run.result
    channels_before = run.ast.channel_count()
    run.measure_window(cfg.window_s)
    r.channels_in_window = (channels_before, run.ast.channel_count())
    run.ast.cli("channel request hangup all")
    if r.with_module and not run.wait_finished(level, 120):
        r.errors.append(f"only {run.finished()} of {level} calls published their figures")
    if not run.wait_idle(120):
        r.errors.append("Asterisk not idle 120 s after the hangup")


def _idle_after(run: Run) -> None:
    """Asterisk's figures once the calls are gone, and everything the run left to collect."""
    time.sleep(2.0)
    run.result.idle_after = proc_sample(run.ast.pid)
    run.collect()


def run_level(root: Path, moddir: str, out_dir: Path, level: int, with_module: bool, cfg: Settings,
              log=print) -> RunResult:
    """``level`` concurrent calls; the steady window starts ``warmup_s`` after all are up; then the
    bench hangs every call up (the callers' audio outlasts the window)."""
    name = f"{'module' if with_module else 'floor'}-{level}"
    run = Run(root, moddir, out_dir, name=name, with_module=with_module, buffer_ms=cfg.capacity_buffer_ms,
              caller_seconds=caller_seconds(level, cfg, cfg.window_s))
    r = run.result
    with run:
        run.start()
        run.place(level, level, cfg.ramp_rate, spread(level, cfg.recorded_per_level))
        _connected_and_warm(run, level, cfg, CONNECT_ALLOWANCE_S, "calls")
        log(f"  {name}: {level} calls up {r.connected_at - r.originated_at:.1f} s after the last originate; "
            f"measuring {cfg.window_s:g} s")
        _window_then_hang_up(run, level, cfg)
        _idle_after(run)
    return r


def profile_level(root: Path, moddir: str, out_dir: Path, level: int, cfg: Settings, log=print) -> dict | None:
    """The asyncio thread's profile with ``level`` calls, in a run of its own: py-spy with native
    frames pauses the process at every sample, which would disturb the measured calls' pacing."""
    run = Run(root, moddir, out_dir, name=f"profile-{level}", with_module=True, buffer_ms=cfg.capacity_buffer_ms,
              caller_seconds=caller_seconds(level, cfg, cfg.profile_s))
    with run:
        run.start()
        run.place(level, level, cfg.ramp_rate, set())
        _connected_and_warm(run, level, cfg, CONNECT_ALLOWANCE_S, "calls")
        log(f"  profile-{level}: profiling the runtime for {cfg.profile_s:g} s (py-spy, the asyncio thread)")
        found = profile(root, run.ast.pid, cfg.profile_s)
        run.ast.cli("channel request hangup all")
        run.wait_idle(120)
    return found


def run_sip_level(root: Path, moddir: str, out_dir: Path, level: int, with_module: bool, cfg: Settings,
                  log=print) -> RunResult:
    """``level`` concurrent SIP calls from SIPp over PJSIP and RTP (μ-law both ways, the
    caller's audio streamed by SIPp), to the module or to the floor; measured as run_level."""
    talk_s = caller_seconds(level, cfg, cfg.window_s)
    name = f"sip-{'module' if with_module else 'floor'}-{level}"
    run = Run(root, moddir, out_dir, name=name, with_module=with_module, buffer_ms=cfg.capacity_buffer_ms,
              caller_seconds=talk_s, sip=True)
    r = run.result
    with run:
        run.start()
        sipp = run.place_sip(level, cfg.ramp_rate, talk_s)
        _connected_and_warm(run, level, cfg, level / cfg.ramp_rate + CONNECT_ALLOWANCE_S, "SIP calls")
        log(f"  {name}: {run.ast.channel_count()} SIP calls up; measuring {cfg.window_s:g} s")
        _window_then_hang_up(run, level, cfg)
        try:
            out, _ = sipp.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            sipp.kill()
            out, _ = sipp.communicate()
        text = out.decode(errors="replace")
        found = re.search(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)", text)
        r.sipp = f"{found.group(1) if found else '?'} of {level} calls successful (SIPp exit {sipp.returncode})"
        if sipp.returncode != 0:
            r.errors.append("SIPp: " + r.sipp + ": " + text[-600:])
        _idle_after(run)
    return r


SOAK_SOUND = Pattern(period_s=100.0, second_s=100.0, speech_ms=300, lead_s=0.6)
SOAK_SECONDS = 1.4


def run_soak(root: Path, moddir: str, out_dir: Path, cfg: Settings, log=print, with_module: bool = True) -> RunResult:
    """Short calls (greeting, a barge-in, the reply cut by the caller's hangup), ``soak_concurrency``
    at a time; at every checkpoint the bench waits for Asterisk to be idle and reads /proc. Without
    the module (the control), the same callers reach the floor extension."""
    name = "soak" if with_module else "soakfloor"
    run = Run(root, moddir, out_dir, name=name, with_module=with_module, buffer_ms=cfg.soak_buffer_ms,
              caller_seconds=1.0, sounds={"short": SOAK_SOUND.render(SOAK_SECONDS)})
    r = run.result
    with run:
        run.start()
        r.checkpoints.append((0, proc_sample(run.ast.pid)))
        r.memory.append((0, memory_map(run.ast.pid)))
        r.tasks_start = proc_sample(run.ast.pid, tasks=True)
        done = 0
        while done < cfg.soak_calls:
            batch = min(cfg.soak_checkpoint, cfg.soak_calls - done)
            run.place(batch, cfg.soak_concurrency, 50.0, sound="short", wait_s=0.2, timeout_per_call=30)
            done += batch
            if not run.wait_finished(done, 120):
                r.errors.append(f"only {run.finished()} of {done} calls finished")
                break
            run.wait_idle(60)
            time.sleep(1.0)
            sample = proc_sample(run.ast.pid)
            r.checkpoints.append((done, sample))
            r.memory.append((done, memory_map(run.ast.pid)))
            log(f"  {name}: {done}/{cfg.soak_calls} calls, RSS {sample.rss_kib / 1024:.1f} MiB, "
                f"{sample.threads} threads, {sample.fds} fds")
        r.tasks_end = proc_sample(run.ast.pid, tasks=True)
        r.window = (r.started, time.monotonic())
        r.idle_after = r.checkpoints[-1][1]
        r.calls = done
        run.collect()
    return r
