"""The SIP test bed: callers arrive over PJSIP and RTP, as they do on a real PBX.

Two sandboxed Asterisks in the test-bed root, both on 127.0.0.1:

- the PBX under test ("sut"): the module, PJSIP with one endpoint per caller codec
  (``phone-ulaw``, ``phone-alaw``, ``phone-g722``, ``phone-opus``, identified by the
  From user) and ``sipp`` for SIPp's calls; every endpoint lands in the e2e context;
- the caller's PBX ("phone"): a PJSIP trunk per codec to the sut, placing the calls
  (AMI Originate) and recording what its caller hears and says with MixMonitor, the
  way a desk phone behind another PBX would.

With a relay (tests/e2e/impair.py) between them, the phone sends its INVITE to the
relay, which rewrites the SDP so that RTP both ways goes through its impairments.
"""

from __future__ import annotations

import itertools
import os
import re
import socket
import subprocess
import time
import uuid
from pathlib import Path

from tests.e2e.asterisk import MODULES
from tests.e2e.calls import CallBed, dialplan

CODECS = ("ulaw", "alaw", "g722", "opus")

SIP_MODULES = [
    "res_pjproject.so",
    "res_sorcery_config.so",
    "res_sorcery_memory.so",
    "res_sorcery_astdb.so",
    "res_pjsip.so",
    "res_pjsip_session.so",
    "res_pjsip_pubsub.so",
    "res_pjsip_endpoint_identifier_user.so",
    "res_pjsip_authenticator_digest.so",
    "res_pjsip_sdp_rtp.so",
    "res_pjsip_caller_id.so",
    "res_pjsip_nat.so",
    "res_pjsip_logger.so",
    "res_rtp_asterisk.so",
    "chan_pjsip.so",
    "codec_opus_open_source.so",
    "res_format_attr_opus.so",
    "func_jitterbuffer.so",
]

# RTP port blocks: each Asterisk of a run gets its own 200 ports (no two instances
# share a range; a port taken by another process is skipped by Asterisk itself).
_rtp_blocks = itertools.count((os.getpid() % 40) * 10)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rtp_conf() -> str:
    start = 20000 + (next(_rtp_blocks) % 200) * 200
    return f"[general]\nrtpstart = {start}\nrtpend = {start + 198}\n"


def _endpoint(name: str, codec: str, context: str, extra: str = "") -> str:
    return f"""
[{name}]
type = endpoint
transport = udp
context = {context}
disallow = all
allow = {codec}
dtmf_mode = rfc4733
direct_media = no
rtp_symmetric = yes
rtcp_mux = yes
timers = no
{extra}"""


def sut_pjsip(port: int) -> str:
    """The PBX under test: its callers are identified by the From user."""
    text = f"""[global]
type = global
user_agent = convai-sut
endpoint_identifier_order = username

[udp]
type = transport
protocol = udp
bind = 127.0.0.1:{port}
"""
    for codec in CODECS:
        text += _endpoint(f"phone-{codec}", codec, "e2e")
    return text + _endpoint("sipp", "ulaw", "e2e")


def phone_pjsip(port: int, sut_port: int) -> str:
    """The caller's PBX: a trunk per codec to the sut (From user phone-<codec>)."""
    text = f"""[global]
type = global
user_agent = convai-phone

[udp]
type = transport
protocol = udp
bind = 127.0.0.1:{port}
"""
    for codec in CODECS:
        text += _endpoint(f"sut-{codec}", codec, "e2e", f"from_user = phone-{codec}\naors = sut-{codec}\n")
        text += f"\n[sut-{codec}]\ntype = aor\ncontact = sip:127.0.0.1:{sut_port}\n"
    return text


class SipBed:
    """The sut and the phone that calls it, each a CallBed (AMI events, recordings)."""

    def __init__(self, sut: CallBed, phone: CallBed, sut_port: int) -> None:
        self.sut = sut
        self.phone = phone
        self.sut_port = sut_port

    def call(self, agent_exten: str, caller_exten: str, codec: str) -> None:
        """The phone dials ai-<agent...> at the sut in ``codec``; its side runs caller_exten."""
        response = self.phone.ami.action("Originate", Channel=f"PJSIP/{agent_exten}@sut-{codec}",
                                         Context="e2e", Exten=caller_exten, Priority="1", Async="true")
        if response.get("Response") != "Success":
            raise RuntimeError(f"AMI Originate failed: {response}")

    def heard(self, tag: str):
        """What the phone's caller heard, at 16 kHz (MixMonitor's receive feed)."""
        return self.phone.heard(tag, timeout=15.0)

    def sut_channel(self, timeout: float = 15.0) -> str:
        """The name of the sut's first live PJSIP channel (waited for)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.sut.ast.cli("core show channels concise").splitlines():
                if line.startswith("PJSIP/"):
                    return line.split("!", 1)[0]
            time.sleep(0.05)
        raise AssertionError("no PJSIP channel on the PBX under test")

    def sut_channel_once(self, pattern: str, timeout: float = 15.0) -> str:
        """``core show channel`` of the sut's PJSIP channel, once it matches ``pattern``
        (say, once the module has set its write format)."""
        channel = self.sut_channel(timeout)
        deadline = time.monotonic() + timeout
        while True:
            shown = self.sut.ast.cli(f"core show channel {channel}")
            if re.search(pattern, shown) or time.monotonic() > deadline:
                return shown
            time.sleep(0.05)

    def wait_idle(self, timeout: float = 15.0) -> None:
        self.sut.wait_idle(timeout)
        deadline = time.monotonic() + timeout
        while self.phone.ast.channel_count():
            if time.monotonic() > deadline:
                raise AssertionError("phone channels left:\n" + self.phone.ast.cli("core show channels"))
            time.sleep(0.1)


# jb-<exten>: the same extension behind Asterisk's adaptive jitter buffer, as on a trunk.
JITTER_BUFFERED = """exten => _jb-.,1,Set(JITTERBUFFER(adaptive)=default)
 same => n,Goto(${EXTEN:3},1)
"""


def start_phone(make_asterisk, sut_port: int) -> CallBed:
    """The caller's PBX, trunked to sut_port (the sut's, or a relay's); records at 16 kHz."""
    port = free_udp_port()
    phone = make_asterisk({"pjsip.conf": phone_pjsip(port, sut_port), "rtp.conf": rtp_conf()},
                          modules=[m for m in MODULES if m != "app_elevenlabs_convai.so"] + SIP_MODULES,
                          start=False)
    phone.write_config("extensions.conf", dialplan(phone.path("rec"), phone.path("sounds"), JITTER_BUFFERED,
                                                    recording="wav16"))
    bed = CallBed(phone, None, recording="wav16")
    phone.start()
    bed.ami = phone.ami()
    return bed


def sipp_command(root: Path, scenario: str, service: str, target_port: int, *options: str) -> list[str]:
    """SIPp in the test bed, calling ``service`` at 127.0.0.1:target_port from a free port, run
    from /tmp (it writes its error log where it runs, not into the root's /)."""
    prefix = [] if root == Path("/") else ["chroot", str(root)]
    return prefix + ["sh", "-c", 'cd /tmp && exec "$0" "$@"', "sipp", "-sf", scenario, "-s", service,
                     f"127.0.0.1:{target_port}", "-i", "127.0.0.1", "-p", str(free_udp_port()), "-nostdin",
                     "-trace_err", *options]


class Sipp:
    """A SIPp (sip-tester) run in the test bed against 127.0.0.1:target_port; its own ports are
    free ones. ``values`` fills the scenario's @NAME@ placeholders."""

    def __init__(self, root: Path, scenario: Path, target_port: int, *, service: str, calls: int = 1,
                 rate: float = 1.0, timeout: float = 60.0, values: dict[str, str] | None = None) -> None:
        self.root = root
        self.timeout = timeout
        self.inside = f"/tmp/convai-sipp-{os.getpid()}-{uuid.uuid4().hex[:6]}-{scenario.name}"
        text = scenario.read_text()
        for name, value in (values or {}).items():
            text = text.replace(f"@{name}@", value)
        (root / self.inside.lstrip("/")).write_text(text)
        self.process = subprocess.Popen(
            sipp_command(root, self.inside, service, target_port, "-mi", "127.0.0.1", "-mp",
                         str(free_udp_port() & ~1), "-m", str(calls), "-r", f"{rate:g}", "-l", str(calls),
                         "-timeout", f"{int(timeout)}s", "-timeout_error"),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.output = ""

    def wait(self) -> "Sipp":
        try:
            self.output, _ = self.process.communicate(timeout=self.timeout + 30)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.communicate()
            scenario = self.root / self.inside.lstrip("/")
            scenario.unlink(missing_ok=True)
            if self.process.returncode == 0:  # a failed run's error log stays, to be read
                for log in scenario.parent.glob(f"{scenario.stem}_*_errors.log"):
                    log.unlink()
        return self

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def count(self, what: str) -> int:
        """SIPp's cumulative 'Successful call' or 'Failed call' figure."""
        found = re.findall(rf"{what}\s*\|\s*\d+\s*\|\s*(\d+)", self.output)
        return int(found[-1]) if found else -1
