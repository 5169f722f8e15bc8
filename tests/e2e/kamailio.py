"""Kamailio (Debian's package, in the test bed) running contrib/kamailio/kamailio.cfg as shipped,
with only its defines set: where it listens, its dispatcher list, how often it probes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[2] / "contrib" / "kamailio" / "kamailio.cfg"


class Kamailio:
    def __init__(self, root: Path, port: int, nodes: list[int], *, ping_interval: int = 1, fr_timer_ms: int = 2000):
        self.root = root
        self.port = port
        self.dir = f"/tmp/convai-kamailio-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.host_dir = root / self.dir.lstrip("/")
        self.host_dir.mkdir(parents=True)
        (self.host_dir / "kamailio.cfg").write_text(CONFIG.read_text())
        (self.host_dir / "dispatcher.list").write_text("".join(f"1 sip:127.0.0.1:{p}\n" for p in nodes))
        self.defines = [f"LISTEN=udp:127.0.0.1:{port}", f'DISPATCHER_LIST="{self.dir}/dispatcher.list"',
                        f"PING_INTERVAL={ping_interval}", f"FR_TIMER={fr_timer_ms}",
                        f'CTL_SOCKET="unix:{self.dir}/ctl"']
        self.process: subprocess.Popen | None = None

    @property
    def _prefix(self) -> list[str]:
        return [] if self.root == Path("/") else ["chroot", str(self.root)]

    def start(self, timeout: float = 15.0) -> "Kamailio":
        command = self._prefix + ["kamailio", "-f", f"{self.dir}/kamailio.cfg", "-DD", "-E", "--debug=2",
                                  "-Y", self.dir, "-P", f"{self.dir}/kamailio.pid", "-w", self.dir]
        for define in self.defines:
            command += ["-A", define]
        log = open(self.host_dir / "kamailio.log", "wb")
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while not self._listening():
            if self.process.poll() is not None:
                raise RuntimeError(f"kamailio exited ({self.process.returncode}):\n{self.log_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError("kamailio did not start:\n" + self.log_text()[-3000:])
            time.sleep(0.1)
        return self

    def _listening(self) -> bool:
        text = Path("/proc/net/udp").read_text()
        return f":{self.port:04X} " in text

    def log_text(self) -> str:
        try:
            return (self.host_dir / "kamailio.log").read_text(errors="replace")
        except OSError:
            return ""

    def routed(self) -> list[str]:
        """The node port each INVITE was sent to, in order (its xlog lines), retries included."""
        return re.findall(r"(?:INVITE to|next:) sip:127\.0\.0\.1:(\d+)", self.log_text())

    def node_states(self) -> dict[int, str]:
        """Each node's dispatcher flags (A active, I inactive, P probing), from kamcmd."""
        out = subprocess.run(self._prefix + ["kamcmd", "-s", f"unix:{self.dir}/ctl", "dispatcher.list"],
                             capture_output=True, text=True, timeout=10).stdout
        return {int(port): flags for port, flags in
                re.findall(r"URI: sip:127\.0\.0\.1:(\d+)\s+FLAGS: (\w+)", out)}

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        subprocess.run(["rm", "-rf", str(self.host_dir)], check=False)
