"""The bench's runs: calls through a real Asterisk, with or without the module, and their readings.

One ``Run`` is a fresh Asterisk (and, with the module, a fresh simulator
process) that places calls, reads /proc while they last and collects the
module's per-call figures (AMI ElevenLabsConversationStats), the simulator's
records and the recordings of the sampled calls.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from pyconvai.sim import AgentScript

from .analysis import CallStats
from .bed import (
    API_KEY,
    BenchAsterisk,
    Pattern,
    ProcSample,
    Sampler,
    proc_sample,
    ulaw_tone,
)
from .simproc import ConvSummary, SimProcess, wait_until

ULAW = {"output_format": "ulaw_8000", "input_format": "ulaw_8000"}
AGENT_ID = "agent_bench"
GREETING_MS = 1000
REPLY_MS = 1600
PATTERN = Pattern(period_s=2.9, second_s=0.9, speech_ms=300, lead_s=1.0)
CALLER_WAIT_S = 0.5


def bench_script() -> AgentScript:
    """The simulated agent: a 1 s greeting, then a 1.6 s reply to every caller utterance
    (interrupting itself when the caller speaks over it), μ-law both ways, audio sent 4x
    faster than real time in the simulator's default chunk sizes, 3 late stale chunks
    after each interruption."""
    return AgentScript(**ULAW, greeting_ms=GREETING_MS, reply_ms=REPLY_MS, late_stale_chunks=3)


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


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
    machine: tuple[float, float] | None = None  # busy %, of total (100 % = all cores)
    stats: list[CallStats] = field(default_factory=list)
    convs: dict[str, ConvSummary] = field(default_factory=dict)
    recordings: dict[str, tuple[Path, Path, str]] = field(default_factory=dict)  # tag -> (heard, said, channel)
    statuses: dict[str, int] = field(default_factory=dict)
    checkpoints: list[tuple[int, ProcSample]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    runtime_text: str = ""
    log_errors: list[str] = field(default_factory=list)
    channels_left: int = 0
    live_calls_left: str = ""
    connected_at: float | None = None
    originated_at: float | None = None

    @property
    def duration(self) -> float:
        return self.ended - self.started


class Run:
    """A fresh Asterisk (+ simulator) for one set of calls."""

    def __init__(self, root: Path, moddir: str, out_dir: Path, *, name: str, with_module: bool, buffer_ms: int,
                 caller_seconds: float, record_dir_keep: bool = True) -> None:
        self.name = name
        self.out_dir = out_dir
        self.sim: SimProcess | None = None
        if with_module:
            self.sim = SimProcess({AGENT_ID: bench_script()}, API_KEY)
        agents = {"bench": {"elevenlabs_agent_id": AGENT_ID, "elevenlabs_audio_frames_buffer_ms": buffer_ms}}
        self.ast = BenchAsterisk(root, moddir, with_module=with_module, agents=agents,
                                 endpoint=self.sim.endpoint if self.sim else "")
        self.ast.sound("talk", PATTERN.render(caller_seconds))
        if not with_module:
            self.ast.sound("floortone", ulaw_tone(440.0, int((caller_seconds + 120) * 1000)))
        self.result = RunResult(name, with_module, 0, 0, buffer_ms)
        self.agent_exten = "ai-bench" if with_module else "floor"
        self._originated = 0
        self._tags: list[tuple[str, bool]] = []

    # --- lifecycle

    def start(self) -> None:
        self.ast.start(timeout=60)
        self.ami = self.ast.ami_client()
        if self.result.with_module:
            self.result.runtime_text = self.ast.cli("elevenlabs show runtime")
        time.sleep(2.0)
        self.result.idle_before = proc_sample(self.ast.pid)
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
            self.result.log_errors = [line for line in log.splitlines() if " ERROR[" in line or " WARNING[" in line][:50]
        except OSError:
            pass
        self.result.ended = time.monotonic()
        try:
            self.ast.close()
        finally:
            if self.sim:
                self.sim.stop()

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
        tag = f"{self.name[:1]}{self._originated}"
        self._originated += 1
        self._tags.append((tag, record))
        self.ast.originate(self.agent_exten, f"bc-{tag}-{int(record)}-{wait_s:g}-{sound}")
        return tag

    def place(self, count: int, concurrency: int, rate: float, record: set[int] | None = None,
              on_progress=None, timeout_per_call: float = 120.0) -> None:
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
            self.originate(i in record)
            if on_progress:
                on_progress(i + 1)
        self.result.originated_at = time.monotonic()
        self.result.calls = count
        self.result.concurrency = concurrency

    def wait_finished(self, count: int, timeout: float) -> bool:
        return wait_until(lambda: self.finished() >= count, timeout, 0.2)

    def wait_connected(self, count: int, timeout: float) -> bool:
        """All calls up: the simulator has them (module), or Asterisk has both halves (floor)."""
        if self.sim:
            ok = wait_until(lambda: self.sim.count() >= count, timeout, 0.25)
        else:
            ok = wait_until(lambda: self.ast.channel_count() >= 2 * count, timeout, 0.25)
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
        busy0, total0 = machine_busy()
        self.result.tasks_start = proc_sample(self.ast.pid, tasks=True)
        time.sleep(seconds)
        self.result.tasks_end = proc_sample(self.ast.pid, tasks=True)
        busy1, total1 = machine_busy()
        self.result.window = (start, time.monotonic())
        self.result.machine = (100.0 * (busy1 - busy0) / max(1, total1 - total0), 0.0)

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
