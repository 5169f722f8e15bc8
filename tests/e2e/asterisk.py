"""A real, sandboxed Asterisk for end-to-end tests.

Each ``Asterisk`` gets its own configuration, run, log and spool directories
(asterisk.conf [directories]) and shares only the installed binaries, modules
and data. It runs either inside the Debian sid test bed (``chroot ROOT``) or,
when the machine has Asterisk installed, directly (ROOT = "/").
"""

from __future__ import annotations

import itertools
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

MODULES = [
    "res_timing_timerfd.so",
    "pbx_config.so",
    "res_clioriginate.so",
    "bridge_simple.so",
    "codec_ulaw.so",
    "codec_alaw.so",
    "codec_resample.so",
    "codec_g722.so",
    "format_wav.so",
    "format_pcm.so",
    "format_sln.so",
    "app_playback.so",
    "app_record.so",
    "app_mixmonitor.so",
    "app_dial.so",
    "app_echo.so",
    "app_userevent.so",
    "app_verbose.so",
    "app_stack.so",
    "app_senddtmf.so",
    "res_musiconhold.so",
    "func_callerid.so",
    "func_channel.so",
    "func_strings.so",
    "func_cut.so",
    "func_logic.so",
    "app_elevenlabs_convai.so",
]

_sandbox_ids = itertools.count(1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Asterisk:
    """One sandboxed Asterisk process."""

    def __init__(self, root: str | os.PathLike, moddir: str, *, modules: list[str] | None = None) -> None:
        self.root = Path(root)
        self.moddir = moddir
        self.modules = list(modules if modules is not None else MODULES)
        self.sandbox = f"/tmp/convai-e2e-{os.getpid()}-{next(_sandbox_ids)}-{uuid.uuid4().hex[:6]}"
        self.ami_port = free_port()
        self.process: subprocess.Popen | None = None
        self.returncode: int | None = None
        for sub in ("etc", "lib", "spool", "run", "log", "cache", "rec", "sounds"):
            self.host_path(f"{self.sandbox}/{sub}").mkdir(parents=True, exist_ok=True)
        self._write_base_config()

    # Paths: "inside" is what Asterisk sees; host_path() is where the test reads it.

    def host_path(self, inside: str) -> Path:
        return self.root / inside.lstrip("/")

    def path(self, sub: str) -> str:
        return f"{self.sandbox}/{sub}"

    @property
    def _prefix(self) -> list[str]:
        return [] if self.root == Path("/") else ["chroot", str(self.root)]

    def write_config(self, name: str, text: str) -> None:
        self.host_path(self.path(f"etc/{name}")).write_text(text)

    def _write_base_config(self) -> None:
        s = self.sandbox
        self.write_config(
            "asterisk.conf",
            f"""[directories]
astetcdir => {s}/etc
astmoddir => {self.moddir}
astvarlibdir => {s}/lib
astdbdir => {s}/lib
astkeydir => {s}/lib
astdatadir => /usr/share/asterisk
astagidir => /usr/share/asterisk/agi-bin
astspooldir => {s}/spool
astrundir => {s}/run
astlogdir => {s}/log
astcachedir => {s}/cache
astsbindir => /usr/sbin
[options]
verbose = 3
transmit_silence = no
""",
        )
        self.write_config("logger.conf", "[logfiles]\nfull => notice,warning,error,verbose,debug\n")
        self.write_config(
            "manager.conf",
            f"""[general]
enabled = yes
port = {self.ami_port}
bindaddr = 127.0.0.1
[test]
secret = test
read = all
write = all
""",
        )
        self.write_config("extensions.conf", "[default]\n")
        self.write_module_list()

    def write_module_list(self) -> None:
        lines = ["[modules]", "autoload = no"] + [f"load => {m}" for m in self.modules]
        self.write_config("modules.conf", "\n".join(lines) + "\n")

    # Process control

    def start(self, timeout: float = 30.0, env: dict[str, str] | None = None) -> None:
        out = open(self.host_path(self.path("log/stdout")), "wb")
        self.process = subprocess.Popen(
            self._prefix + ["asterisk", "-f", "-n", "-C", self.path("etc/asterisk.conf")],
            env={**os.environ, **self._sanitizer_env(), **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"asterisk exited at start ({self.process.returncode}):\n{self.stdout_text()[-3000:]}")
            result = self._rx("core waitfullybooted", timeout=5, check=False)
            if result.returncode == 0 and "fully booted" in result.stdout:
                return
            time.sleep(0.2)
        raise TimeoutError("asterisk did not finish booting")

    def _rx(self, command: str, timeout: float, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            self._prefix + ["asterisk", "-C", self.path("etc/asterisk.conf"), "-rx", command],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"asterisk -rx {command!r} failed: {result.stderr or result.stdout}")
        return result

    def cli(self, command: str, timeout: float = 15.0) -> str:
        """Run a CLI command through the remote console; returns its output."""
        return self._rx(command, timeout).stdout

    def stop(self, timeout: float = 10.0) -> int:
        """``core stop now``; the process group is killed only as a last resort."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            try:
                self._rx("core stop now", timeout=5, check=False)
            except subprocess.TimeoutExpired:
                pass
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
                self.returncode = -9
                return self.returncode
        self.returncode = self.process.returncode
        return self.returncode

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _sanitizer_env(self) -> dict[str, str]:
        """Under make asan-test (CONVAI_ASAN), Asterisk runs with libasan preloaded, its
        reports written to log/asan.* (the module is the instrumented part)."""
        if not os.environ.get("CONVAI_ASAN"):
            return {}
        libasan = subprocess.run(self._prefix + ["gcc", "-print-file-name=libasan.so"], capture_output=True,
                                 text=True, check=True).stdout.strip()
        return {"LD_PRELOAD": libasan,
                "ASAN_OPTIONS": f"detect_leaks=0:halt_on_error=0:log_path={self.path('log/asan')}"}

    def sanitizer_reports(self) -> list[str]:
        """AddressSanitizer reports this Asterisk wrote (make asan-test), each as text."""
        logs = self.host_path(self.path("log")).glob("asan.*")
        return [path.read_text(errors="replace") for path in sorted(logs)]

    def cleanup(self) -> None:
        shutil.rmtree(self.host_path(self.sandbox), ignore_errors=True)

    # What happened

    def stdout_text(self) -> str:
        return self.host_path(self.path("log/stdout")).read_text(errors="replace")

    def log_text(self) -> str:
        path = self.host_path(self.path("log/full"))
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_for_log_match(self, pattern: str, timeout: float = 10.0) -> re.Match:
        """The first match of ``pattern`` in the log, once the logger thread has written it
        (a CLI answer can come back before the line it caused is in the file)."""
        deadline = time.monotonic() + timeout
        while not (found := re.search(pattern, self.log_text())):
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not in the Asterisk log within {timeout} s")
            time.sleep(0.1)
        return found

    def wait_for_log(self, needle: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_text()
            if needle in text:
                return text
            time.sleep(0.1)
        raise AssertionError(f"{needle!r} not in the Asterisk log within {timeout} s")

    def recording(self, name: str) -> Path:
        return self.host_path(self.path(f"rec/{name}"))

    def originate(self, agent_exten: str, caller_exten: str, context: str = "e2e", codecs: str | None = None,
                  ami: "AmiClient | None" = None) -> None:
        """Local/agent@context/n runs the app side; its ;1 half runs caller_exten.

        With ``codecs`` (e.g. "alaw") the call goes through AMI so both halves
        of the Local channel have that native format, as a real trunk would.
        """
        if codecs is None:
            self.cli(f"channel originate Local/{agent_exten}@{context}/n extension {caller_exten}@{context}")
            return
        client = ami or self.ami()
        response = client.action("Originate", Channel=f"Local/{agent_exten}@{context}/n", Context=context,
                                 Exten=caller_exten, Priority="1", Async="true", Codecs=codecs)
        if response.get("Response") != "Success":
            raise RuntimeError(f"AMI Originate failed: {response}")

    def channel_count(self) -> int:
        for line in self.cli("core show channels count").splitlines():
            if "active channel" in line:
                return int(line.split()[0])
        raise AssertionError("no channel count in 'core show channels count'")

    def ami(self) -> "AmiClient":
        return AmiClient(self.ami_port)

    def process_stats(self) -> dict[str, int]:
        """Threads, open file descriptors and resident memory of the Asterisk process (host view)."""
        pid = self.process.pid
        with open(f"/proc/{pid}/status") as status:
            rss_kib = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
        return {
            "threads": len(os.listdir(f"/proc/{pid}/task")),
            "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "rss_kib": rss_kib,
        }


@dataclass
class AmiClient:
    """A small Asterisk Manager Interface client; events are collected by a thread."""

    port: int
    username: str = "test"
    secret: str = "test"
    events: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        # Connected: from now on the reader waits for events however long a call is quiet
        # (with the connect timeout left on, 10 s without an event ended the reader).
        self._sock.settimeout(None)
        self._file = self._sock.makefile("rb")
        self._file.readline()  # banner
        self._responses: queue.Queue[dict] = queue.Queue()
        self._events_changed = threading.Condition()
        self._action_ids = itertools.count(1)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        response = self.action("Login", Username=self.username, Secret=self.secret)
        if response.get("Response") != "Success":
            raise RuntimeError(f"AMI login failed: {response}")

    def _read(self) -> None:
        message: dict[str, str] = {}
        while True:
            try:
                line = self._file.readline()
            except OSError:
                return
            if not line:
                return
            text = line.decode(errors="replace").rstrip("\r\n")
            if text:
                key, _, value = text.partition(":")
                message[key.strip()] = value.strip()
                continue
            if "Event" in message:
                message["_at"] = time.monotonic()  # when it arrived, for tests of pacing
                with self._events_changed:
                    self.events.append(message)
                    self._events_changed.notify_all()
            elif message:
                self._responses.put(message)
            message = {}

    def action(self, name: str, timeout: float = 10.0, **headers: str) -> dict:
        return self.raw_action(name, "".join(f"{k}: {v}\r\n" for k, v in headers.items()), timeout)

    def raw_action(self, name: str, headers: str, timeout: float = 10.0) -> dict:
        """An action whose headers are raw ``Header: value\\r\\n`` text (a header may repeat)."""
        action_id = str(next(self._action_ids))
        self._sock.sendall(f"Action: {name}\r\nActionID: {action_id}\r\n{headers}\r\n".encode())
        deadline = time.monotonic() + timeout
        while True:
            response = self._responses.get(timeout=max(0.01, deadline - time.monotonic()))
            if response.get("ActionID") == action_id:
                return response

    def wait_event(self, predicate, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        with self._events_changed:
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("AMI event not seen within timeout")
                self._events_changed.wait(remaining)

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass
