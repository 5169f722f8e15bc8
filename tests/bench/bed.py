"""The bench's Asterisk: a sandboxed instance, its dialplan and sounds, /proc readings.

Calls are Local channel pairs, as in the end-to-end tests: ``Local/<agent
side>@e2e/n`` runs the agent side on the ;2 half (``ai-<agent>`` runs the
module; ``floor`` answers and plays a long μ-law tone with no module), the
;1 half runs the caller side ``bc-<tag>-<record>-<wait>-<sound>``: it
answers, optionally records what it hears and says (MixMonitor, on sampled
calls only), waits, plays the caller's audio (a μ-law file: no transcoding
anywhere on the call path) and hangs up when the file ends. Both halves are
native μ-law (AMI Originate with Codecs=ulaw), like a G.711 trunk.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pyconvai.sim import audio
from tests.e2e.asterisk import MODULES, Asterisk
from tests.e2e.calls import API_KEY, agents_conf, dialplan
from tests.e2e.sip import SIP_MODULES, sut_pjsip

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
RATE = 8000
MODULE = "app_elevenlabs_convai.so"


def testbed_root() -> Path:
    value = os.environ.get("CONVAI_TESTBED_ROOT")
    if value is None:
        raise SystemExit("tests.bench needs a prepared Asterisk: run 'make bench' (CONVAI_TESTBED_ROOT unset)")
    root = Path(value) if value else Path("/")
    if root != Path("/") and not os.path.ismount(root / "proc"):
        subprocess.run(["mount", "-t", "proc", "proc", str(root / "proc")], check=True)
    return root


def moddir(root: Path) -> str:
    prefix = [] if root == Path("/") else ["chroot", str(root)]
    conf = subprocess.run(
        prefix + ["sh", "-c", "sed -n 's/^[[:space:]]*astmoddir[[:space:]]*=>*[[:space:]]*//p' /etc/asterisk/asterisk.conf"],
        capture_output=True, text=True,
    ).stdout.strip()
    return conf or "/usr/lib/asterisk/modules"


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit; Asterisk and the simulator inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --- sounds -----------------------------------------------------------------------------------

CALLER_TONE_HZ = 1000.0
CALLER_AMPLITUDE = 12000


def ulaw_tone(freq: float, ms: int, amplitude: int = 8000) -> bytes:
    return audio.ulaw_encode(audio.tone(freq, ms, RATE, amplitude))


def ulaw_silence(ms: int) -> bytes:
    return b"\xff" * (RATE * ms // 1000)


@dataclass(frozen=True)
class Pattern:
    """The caller's side of a conversation, cycled: speak at 0 and at ``second_s`` in every ``period_s``.

    The agent replies to each utterance (``reply_ms``): the first utterance of a
    cycle falls in silence (a reply after silence: a downlink latency sample), the
    second one while the reply plays (a barge-in). ``lead_s`` of quiet comes first.
    """

    period_s: float = 2.9
    second_s: float = 0.9
    speech_ms: int = 300
    lead_s: float = 1.0

    def render(self, seconds: float) -> bytes:
        """μ-law audio of ``seconds`` (caller utterances: a 1000 Hz tone; quiet: digital silence)."""
        total = int(seconds * RATE)
        out = bytearray(ulaw_silence(int(seconds * 1000) + 1000)[:total])
        word = ulaw_tone(CALLER_TONE_HZ, self.speech_ms, CALLER_AMPLITUDE)
        t = self.lead_s
        while t < seconds:
            for offset in (0.0, self.second_s):
                start = int((t + offset) * RATE)
                end = min(total, start + len(word))
                if start < total:
                    out[start:end] = word[: end - start]
            t += self.period_s
        return bytes(out)

    def utterances(self, seconds: float) -> int:
        count, t = 0, self.lead_s
        while t < seconds:
            count += 1 + (t + self.second_s < seconds)
            t += self.period_s
        return count


# --- Asterisk ---------------------------------------------------------------------------------

BENCH_DIALPLAN = """
; floor: the agent side with no module: answer, play a long mu-law tone
exten => floor,1,Answer()
 same => n,Playback({sounds}/floortone)
 same => n,Hangup()

; bc-<tag>-<record 0|1>-<wait s>-<sound>: the bench caller
exten => _bc-.,1,Answer()
 same => n,GotoIf($["${{CUT(EXTEN,-,3)}}" = "0"]?talk)
 same => n,UserEvent(BenchCaller,Tag: ${{CUT(EXTEN,-,2)}},CallerChannel: ${{CHANNEL}})
 same => n,MixMonitor({rec}/${{CUT(EXTEN,-,2)}}-mix.wav,r({rec}/${{CUT(EXTEN,-,2)}}-heard.wav)t({rec}/${{CUT(EXTEN,-,2)}}-said.wav))
 same => n(talk),Wait(${{CUT(EXTEN,-,4)}})
 same => n,Playback({sounds}/${{CUT(EXTEN,-,5)}})
 same => n,UserEvent(BenchCallerDone,Tag: ${{CUT(EXTEN,-,2)}})
 same => n,Hangup()
"""


class BenchAsterisk(Asterisk):
    """A sandboxed Asterisk with the bench dialplan, agents pointed at the simulator, and /proc readings."""

    def __init__(self, root: Path, moddir_: str, *, with_module: bool, agents: dict[str, dict] | None = None,
                 endpoint: str = "", sip_port: int | None = None) -> None:
        modules = [m for m in MODULES if with_module or m != MODULE] + (SIP_MODULES if sip_port else [])
        super().__init__(root, moddir_, modules=modules)
        self.with_module = with_module
        rec, sounds = self.path("rec"), self.path("sounds")
        self.write_config("extensions.conf", dialplan(rec, sounds, BENCH_DIALPLAN.format(rec=rec, sounds=sounds)))
        if sip_port:
            # PJSIP on sip_port; SIPp's calls (From user sipp, μ-law) land in the e2e context.
            self.write_config("pjsip.conf", sut_pjsip(sip_port))
            self.write_config("rtp.conf", "[general]\nrtpstart = 10000\nrtpend = 29999\n")
        if with_module:
            self.write_config("elevenlabs.conf", agents_conf(endpoint, agents or {}, None, self.path("etc")))
        self._ami = None

    def sound(self, name: str, ulaw: bytes) -> None:
        (self.host_path(self.path("sounds")) / f"{name}.ulaw").write_bytes(ulaw)

    @property
    def pid(self) -> int:
        return self.process.pid

    def ami_client(self):
        if self._ami is None:
            self._ami = self.ami()
            # AmiClient's socket keeps the 10 s connect timeout, so its reader thread stops after
            # 10 s without a message: a filtered session is quiet for longer. Block for good
            # instead; the actions below wake the reader so that its next read uses this.
            self._ami._sock.settimeout(None)
            # Only the events the bench reads reach this session (regular-expression filters).
            for name in ("ElevenLabsConversationStats", "UserEvent"):
                response = self._ami.action("Filter", Operation="Add", Filter=f"Event: {name}")
                if response.get("Response") != "Success":
                    raise RuntimeError(f"AMI Filter failed: {response}")
        return self._ami

    def originate(self, agent_exten: str, caller_exten: str, context: str = "e2e", codecs: str | None = "ulaw",
                  ami=None) -> None:
        super().originate(agent_exten, caller_exten, context, codecs, ami or self.ami_client())

    def close(self) -> None:
        if self._ami is not None:
            self._ami.close()
            self._ami = None
        self.stop()
        self.cleanup()


# --- /proc ------------------------------------------------------------------------------------

@dataclass
class ProcSample:
    t: float
    cpu_s: float  # utime + stime, seconds
    rss_kib: int
    threads: int
    fds: int
    tasks: dict[int, tuple[str, float]] = field(default_factory=dict)  # tid -> (comm, cpu seconds)


def _stat_fields(path: str) -> tuple[str, list[str]]:
    text = Path(path).read_text()
    comm = text[text.index("(") + 1 : text.rindex(")")]
    return comm, text[text.rindex(")") + 2 :].split()


def proc_sample(pid: int, tasks: bool = False) -> ProcSample:
    """One reading of a process from /proc (utime+stime, VmRSS, threads, open fds)."""
    t = time.monotonic()
    _, fields = _stat_fields(f"/proc/{pid}/stat")
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)
    threads = int(fields[17])
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        fds = -1
    sample = ProcSample(t, cpu, rss, threads, fds)
    if tasks:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                comm, tf = _stat_fields(f"/proc/{pid}/task/{tid}/stat")
            except OSError:
                continue
            sample.tasks[int(tid)] = (comm, (int(tf[11]) + int(tf[12])) / CLK_TCK)
    return sample


class Sampler:
    """Reads /proc for a set of pids every ``interval`` seconds on a thread."""

    def __init__(self, pids: dict[str, int], interval: float = 1.0) -> None:
        self.pids = pids
        self.interval = interval
        self.samples: dict[str, list[ProcSample]] = {name: [] for name in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def start(self) -> "Sampler":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, pid in list(self.pids.items()):  # a process may join later (add)
                try:
                    self.samples.setdefault(name, []).append(proc_sample(pid))
                except (OSError, ValueError, IndexError):
                    pass
            self._stop.wait(self.interval)

    def add(self, name: str, pid: int) -> None:
        self.pids = {**self.pids, name: pid}

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def between(self, name: str, start: float, end: float) -> list[ProcSample]:
        return [s for s in self.samples[name] if start <= s.t <= end]


ARENA_ALIGN = 64 * 1024 * 1024  # glibc's HEAP_MAX_SIZE on 64-bit: every non-main malloc arena starts on it


def memory_map(pid: int) -> dict[str, float]:
    """Resident memory (MiB) by kind, from /proc/<pid>/smaps: glibc's main heap, its other arenas
    (anonymous mappings on a 64 MiB boundary), 1 MiB anonymous mappings (CPython's object arenas),
    other anonymous memory (thread stacks, large mmap'd blocks), files."""
    out = {"heap": 0.0, "arenas": 0.0, "pymalloc": 0.0, "other_anon": 0.0, "files": 0.0}
    kind = None
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        parts = line.split()
        if parts and "-" in parts[0] and ":" not in parts[0] and len(parts) >= 5:
            start, end = (int(x, 16) for x in parts[0].split("-"))
            name = parts[5] if len(parts) > 5 else ""
            if name == "[heap]":
                kind = "heap"
            elif name.startswith("/"):
                kind = "files"
            elif name:
                kind = "other_anon"
            elif start % ARENA_ALIGN == 0:
                kind = "arenas"
            elif end - start == 1024 * 1024:
                kind = "pymalloc"
            else:
                kind = "other_anon"
        elif parts and parts[0] == "Rss:" and kind:
            out[kind] += int(parts[1]) / 1024
    return out


def cpu_percent(first: ProcSample, last: ProcSample) -> float:
    """CPU of the process over the interval, % of one core."""
    return 100.0 * (last.cpu_s - first.cpu_s) / max(1e-9, last.t - first.t)


def top_threads(first: ProcSample, last: ProcSample, n: int = 4) -> list[tuple[int, str, float]]:
    """The threads that used the most CPU between two task readings: (tid, comm, % of one core)."""
    span = max(1e-9, last.t - first.t)
    rows = []
    for tid, (comm, cpu) in last.tasks.items():
        before = first.tasks.get(tid, (comm, 0.0))[1]
        rows.append((tid, comm, 100.0 * (cpu - before) / span))
    rows.sort(key=lambda r: -r[2])
    return rows[:n]


def machine_info() -> dict[str, str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "?")
    mhz = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("cpu MHz")), "?")
    mem_kib = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                       if line.startswith("MemTotal:")))
    return {
        "cpu": model,
        "mhz": mhz,
        "cores": str(os.cpu_count()),
        "ram": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "kernel": os.uname().release,
        "host_python": ".".join(map(str, sys.version_info[:3])),
    }


VENV_PYTHON = "/opt/app_elevenlabs_convai/venv/bin/python3"
CLIENT_SETUP_PROBE = (
    "import time, httpx\n"
    "n = 20\n"
    "t = time.process_time()\n"
    "for _ in range(n):\n"
    "    httpx.AsyncClient(verify=True)\n"
    "print((time.process_time() - t) / n * 1000)\n"
)


def client_setup_ms(root: Path) -> float | None:
    """CPU ms to build one httpx.AsyncClient(verify=True) (an SSLContext with the CA bundle) with the
    Python and packages the module embeds, as pyconvai.client does once per call."""
    prefix = [] if root == Path("/") else ["chroot", str(root)]
    try:
        result = subprocess.run(prefix + [VENV_PYTHON, "-c", CLIENT_SETUP_PROBE], capture_output=True, text=True,
                                timeout=120)
        return float(result.stdout.strip().splitlines()[-1])
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None


__all__ = ["API_KEY", "BenchAsterisk", "Pattern", "ProcSample", "Sampler", "client_setup_ms", "cpu_percent",
           "machine_info", "memory_map", "moddir", "proc_sample", "raise_fd_limit", "testbed_root", "top_threads",
           "ulaw_tone"]
