"""``make demo``: one real call through Asterisk to an ElevenLabs agent, printed as it happens.

A sandboxed Asterisk (tests/e2e/asterisk.py: its own configuration, AMI on
127.0.0.1) runs ``ElevenLabsConversationalAI(demo)`` on one half of a Local
channel; the other half is a synthetic caller that speaks espeak-ng sentences
(8 kHz WAV files played with Playback) and records the call with MixMonitor.
The conversation is printed from the module's AMI events. The caller reacts
to them: it answers once the agent's greeting has been spoken, talks over the
agent's long answer (barge-in), and thanks it; the agent says goodbye and ends
the call (AGENT_ENDED, or TRANSFER with --transfer: exit status 0; anything else exits 1).

The agent is the bundled simulator (pyconvai.sim, speaking espeak-ng, or
tones without it) unless ELEVENLABS_AGENT_ID is set: then elevenlabs.conf
names that agent, with the API key read from ELEVENLABS_API_KEY by Asterisk
itself, and the call goes to the real service. Nothing else changes.

Run by ``make demo`` (CONVAI_TESTBED_ROOT: the test-bed root, empty for the
system Asterisk): ``python -m tests.demo [--out FILE] [--timeout S] [--simulator]``.
It runs unattended and ends by itself within the timeout.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from dataclasses import dataclass
from pathlib import Path

from pyconvai.sim import audio
from pyconvai.sim import AgentScript, SimConfig, Simulator, voice
from tests.e2e.asterisk import Asterisk

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "out" / "demo-call.wav"
AGENT = "demo"
SIM_AGENT_ID = "agent_demo"
SIM_API_KEY = "sk_demo_0123456789abcdef0123456789ab"
RATE = 8000

GREETING = "Hello! This is the ElevenLabs simulator. How can I help you today?"
REPLIES = (
    "Of course. Your current balance is one thousand two hundred and fifty dollars. Your last payment "
    "of two hundred dollars arrived on the third of the month, and your next statement is due on the "
    "first of next month.",
    "No problem: your balance is one thousand two hundred and fifty dollars. "
    "Is there anything else I can do for you?",
    "You are welcome.",
)
GOODBYE = "Thank you for calling. Goodbye!"


@dataclass(frozen=True)
class CallerLine:
    """What the synthetic caller says, and when: after the agent's n-th line has been
    spoken (``barge_in`` False), or a few seconds into it, talking over it."""

    name: str
    text: str
    after_agent_line: int
    barge_in: bool = False
    tone_ms: int = 1500


CALLER = (
    CallerLine("question", "Hi, I would like to know my account balance.", 1),
    CallerLine("bargein", "Sorry, I only need the balance please.", 2, barge_in=True, tone_ms=1200),
    CallerLine("thanks", "No, that is all, thank you.", 3, tone_ms=1000),
)
CALLER_VOICE = "en-us+f3"
PAUSE_S = 0.8
"""The caller answers this long after the agent has finished a line."""
BARGE_IN_S = 3.0
"""The caller talks over the agent's line this far into it (at most 40 % of it)."""
WORDS_PER_S = 2.5
"""To guess how long a real agent's line lasts from its text."""
LINGER_S = 20.0
"""After its last line the caller hangs up if the agent has not ended the call by then."""

SIM_SCRIPT = AgentScript(
    output_format="ulaw_8000",
    input_format="ulaw_8000",
    speech=True,
    greeting_text=GREETING,
    greeting_ms=3000,
    reply_texts=REPLIES,
    reply_ms=6000,
    goodbye_text=GOODBYE,
    goodbye_ms=1500,
    end_call_after_turns=len(CALLER),
    reply_after_utterance=True,
    vad_silence_ms=400,
)


TRANSFER_SCRIPT = AgentScript(
    output_format="ulaw_8000",
    input_format="ulaw_8000",
    speech=True,
    greeting_text="Hello, this is the demo agent. Let me put you through to our sales team.",
    greeting_ms=3500,
    client_tool_name="transfer_call",
    client_tool_parameters={"destination": "200"},
    tool_result_reply_ms=2000,
    vad_threshold=1e9,
)
"""--transfer: the agent greets, calls the transfer tool, says one more line; the call moves on."""


def dialplan(sounds: str, rec: str) -> str:
    """``agent``: the application; ``caller``: plays what the demo sets in SAY, silence otherwise.

    During Wait() a Local channel sends no audio at all; the caller plays 200 ms of
    silence in a loop instead, so the agent's voice detection hears its pauses.
    """
    return f"""[demo]
exten => agent,1,ElevenLabsConversationalAI({AGENT})
 same => n,UserEvent(DemoResult,Status: ${{ELEVENLABS_STATUS}},Reason: ${{ELEVENLABS_END_REASON}})
 same => n,Hangup()

; --transfer: where the call goes (a real line would Queue or Dial here)
exten => 200,1,UserEvent(DemoTransferred,Status: ${{ELEVENLABS_STATUS}},Destination: ${{ELEVENLABS_TRANSFER_DESTINATION}})
 same => n,Wait(1)
 same => n,Hangup()

exten => caller,1,Answer()
 same => n,MixMonitor({rec}/demo-call.wav)
 same => n,Set(SAY=)
 same => n,UserEvent(DemoCallerReady)
 same => n(listen),GotoIf($["${{SAY}}" != ""]?say)
 same => n,Playback({sounds}/quiet200)
 same => n,Goto(listen)
 same => n(say),Set(LINE=${{SAY}})
 same => n,Set(SAY=)
 same => n,UserEvent(DemoCallerSays,Line: ${{LINE}})
 same => n,Playback({sounds}/${{LINE}})
 same => n,Goto(listen)
"""


# --- audio -----------------------------------------------------------------------------


def write_wav(path: Path, pcm16: bytes, rate: int = RATE) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm16)


def _lowpass(pcm16: bytes, rate: int, cutoff_hz: float) -> bytes:
    """A windowed-sinc low-pass, so resampling to 8 kHz does not fold high frequencies back."""
    import numpy as np

    taps = 63
    n = np.arange(taps) - (taps - 1) / 2
    kernel = np.sinc(2 * cutoff_hz / rate * n) * np.hamming(taps)
    kernel /= kernel.sum()
    samples = np.frombuffer(pcm16, dtype="<i2").astype(np.float64)
    return np.clip(np.convolve(samples, kernel, mode="same"), -32768, 32767).astype("<i2").tobytes()


def speak(text: str) -> bytes:
    """``text`` in the caller's espeak-ng voice, as 8 kHz PCM16."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "line.wav"
        subprocess.run(["espeak-ng", "-v", CALLER_VOICE, "-w", str(path), text], check=True,
                       capture_output=True, timeout=30)
        with wave.open(str(path), "rb") as w:
            rate, pcm = w.getframerate(), w.readframes(w.getnframes())
    return audio.resample(_lowpass(pcm, rate, 3600.0), rate, RATE)


def speech_seconds(pcm16: bytes, level: float = 300.0) -> float:
    """Where the speech in ``pcm16`` ends (espeak-ng adds trailing silence), in seconds."""
    frame = RATE // 50 * 2
    loud = [pos for pos in range(0, len(pcm16), frame) if audio.rms(pcm16[pos : pos + frame]) > level]
    return (loud[-1] + frame) / 2 / RATE if loud else 0.0


def caller_sounds(directory: Path, spoken: bool) -> dict[str, float]:
    """Write the caller's lines (and 200 ms of silence) as 8 kHz WAV; how long each one speaks."""
    write_wav(directory / "quiet200.wav", audio.silence(200, RATE))
    durations = {}
    for line in CALLER:
        pcm = speak(line.text) if spoken else audio.tone(1000.0, line.tone_ms, RATE, 12000)
        write_wav(directory / f"{line.name}.wav", pcm)
        durations[line.name] = speech_seconds(pcm)
    return durations


def agent_durations(script: AgentScript) -> dict[str, float]:
    """How long the simulator speaks each of its lines. Rendering them here, with the
    arguments the simulator uses, also fills its cache, so it answers at once."""
    lines = [(script.greeting_text, script.greeting_tone_hz, script.greeting_ms),
             *((text, script.reply_tone_hz, script.reply_ms) for text in script.reply_texts),
             (script.goodbye_text, script.goodbye_tone_hz, script.goodbye_ms)]
    return {
        text: audio.duration_ms(len(voice.render(text, hz, ms, script.output_format, script.tone_amplitude,
                                                 script.speech)), script.output_format) / 1000
        for text, hz, ms in lines
    }


# --- the call --------------------------------------------------------------------------


def _numbers(value: str | None) -> list[float]:
    return [float(x) for x in (value or "").split(",") if x.strip()]


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


class Demo:
    """Places the call, prints its events, and drives the caller."""

    def __init__(self, ast: Asterisk, agent_seconds: dict[str, float], caller_seconds: dict[str, float]) -> None:
        self.ast = ast
        self.ami = ast.ami()
        self.agent_seconds = agent_seconds
        self.caller_seconds = caller_seconds
        self.t0 = 0.0
        self.caller_channel: str | None = None
        self.agent_lines = 0
        self.pending: list[tuple[float, CallerLine]] = []
        self.spoken: list[tuple[float, CallerLine]] = []
        self.agent_starts: list[float] = []
        self.ended: dict | None = None
        self.stats: dict | None = None
        self.interruptions = 0

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:5.1f} s] {text}", flush=True)

    def line_seconds(self, text: str) -> float:
        known = self.agent_seconds.get(text)
        return known if known is not None else len(text.split()) / WORDS_PER_S

    def run(self, timeout: float) -> str | None:
        """The call, start to end; returns ELEVENLABS_STATUS (None if it never ended)."""
        self.t0 = time.monotonic()
        deadline = self.t0 + timeout
        self.say(f"calling: Local/agent@demo runs ElevenLabsConversationalAI({AGENT}), "
                 "Local/caller@demo is the caller")
        self.ast.originate("agent", "caller", context="demo", ami=self.ami)
        seen = 0
        hung_up = False
        while True:
            events = self.ami.events[seen:]
            seen += len(events)
            for event in events:
                self.on_event(event)
            now = time.monotonic()
            for item in [p for p in self.pending if p[0] <= now and self.caller_channel]:
                self.pending.remove(item)
                self.ami.action("Setvar", Channel=self.caller_channel, Variable="SAY", Value=item[1].name)
            if self.ended is not None:
                break
            last_line_done = len(self.spoken) == len(CALLER) and now - self.spoken[-1][0] > LINGER_S
            if not hung_up and (now > deadline or last_line_done):
                self.say("the caller hangs up (the agent did not end the call)" if last_line_done
                         else f"no end after {timeout:.0f} s: hanging up")
                self.ami.action("Hangup", Channel=self.caller_channel or "/^Local\\/agent@demo-/")
                hung_up = True
                deadline = now + 10
            elif hung_up and now > deadline:
                return None
            time.sleep(0.02)
        # The figures follow the end; then the channels go and MixMonitor closes the file.
        stop = time.monotonic() + 5
        while time.monotonic() < stop and (self.stats is None or self.ast.channel_count()):
            events = self.ami.events[seen:]
            seen += len(events)
            for event in events:
                self.on_event(event)
            time.sleep(0.05)
        self.ami.close()
        return self.ended.get("Status")

    def on_event(self, event: dict) -> None:
        name = event.get("Event")
        if name == "UserEvent":
            kind = event.get("UserEvent")
            if kind == "DemoCallerReady":
                self.caller_channel = event.get("Channel")
            elif kind == "DemoTransferred":
                self.say(f"transferred: the call continues at extension {event.get('Destination')} "
                         f"(ELEVENLABS_STATUS={event.get('Status')})")
            elif kind == "DemoCallerSays":
                line = next(c for c in CALLER if c.name == event.get("Line"))
                self.spoken.append((time.monotonic(), line))
                self.say(f'(the caller says "{line.text}")')
            return
        if event.get("Agent") != AGENT:
            return
        if name == "ElevenLabsConversationStarted":
            self.say(f"conversation started: {event.get('ConversationID')}")
        elif name == "ElevenLabsTranscript" and event.get("Role") == "agent":
            text = event.get("Text", "")
            self.say(f"agent:  {text}")
            self.agent_lines += 1
            self.agent_starts.append(time.monotonic())
            for line in CALLER:
                if line.after_agent_line == self.agent_lines:
                    seconds = self.line_seconds(text)
                    delay = min(BARGE_IN_S, 0.4 * seconds) if line.barge_in else seconds + PAUSE_S
                    self.pending.append((time.monotonic() + delay, line))
        elif name == "ElevenLabsTranscript":
            self.say(f"caller: {event.get('Text', '')}")
        elif name == "ElevenLabsInterruption":
            self.interruptions += 1
            self.say(f"— caller interrupted the agent (event {event.get('EventID')}, "
                     f"{event.get('DroppedFrames')} queued frames dropped) —")
        elif name == "ElevenLabsToolCall":
            who = "agent" if event.get("Source") == "agent" else "client"
            self.say(f"— {who} tool call: {event.get('Tool')}"
                     f"{' (refused: this module runs no client tools)' if who == 'client' else ''} —")
        elif name == "ElevenLabsConversationEnded":
            self.ended = event
            self.say(f"status: {event.get('Status')}: {event.get('Reason')}, "
                     f"after {float(event.get('Duration') or 0):.1f} s")
        elif name == "ElevenLabsConversationStats":
            self.stats = event

    def summary(self) -> list[str]:
        """A few lines on latency, from the module's figures and the event times."""
        stats = self.stats or {}
        down, up, barge = (_numbers(stats.get(k)) for k in ("DownlinkLatencyMs", "UplinkLatencyMs", "BargeInStopMs"))
        lines = []
        if down:
            lines.append(f"  agent audio arrived -> first frame to the caller: median {statistics.median(down):.2f} "
                         f"ms, max {max(down):.2f} ms ({plural(len(down), 'response')})")
        if up:
            lines.append(f"  caller audio captured -> sent to the agent: median {statistics.median(up):.2f} ms, "
                         f"max {max(up):.2f} ms ({plural(len(up), 'chunk')})")
        if barge:
            lines.append("  interruption arrived -> old answer silenced: " + ", ".join(f"{v:.2f} ms" for v in barge))
        turns = []
        for said_at, line in self.spoken:
            answer = next((t for t in self.agent_starts if t > said_at), None)
            if not line.barge_in and answer is not None:
                turns.append(answer - said_at - self.caller_seconds.get(line.name, 0.0))
        if turns:
            lines.append("  caller stopped talking -> agent's answer began: "
                         + ", ".join(f"{t:.2f} s" for t in turns) + " (the agent's turn-taking)")
        if stats:
            interruptions = plural(int(stats.get("Interruptions") or 0), "interruption")
            lines.append(f"  frames: {stats.get('FramesOut')} played to the caller, {stats.get('FramesIn')} "
                         f"captured from it, {stats.get('Underruns')} underruns, {interruptions}")
        return lines


# --- set-up --------------------------------------------------------------------------


def testbed_root() -> Path:
    value = os.environ.get("CONVAI_TESTBED_ROOT")
    if value is None:
        sys.exit("tests.demo: CONVAI_TESTBED_ROOT is not set; run 'make demo'")
    root = Path(value) if value else Path("/")
    if root != Path("/") and not os.path.ismount(root / "proc"):
        subprocess.run(["mount", "-t", "proc", "proc", str(root / "proc")], check=True)
    return root


def module_dir(root: Path) -> str:
    conf = root / "etc/asterisk/asterisk.conf"
    text = conf.read_text() if conf.exists() else ""
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "astmoddir":
            return value.lstrip(">").strip()
    return "/usr/lib/asterisk/modules"


def elevenlabs_conf(sim: Simulator | None, agent_id: str | None, key_env: bool, transfer: bool) -> str:
    """The demo agent: the simulator, or the real agent (key from the environment)."""
    extra = "transfer_context = demo\n" if transfer else ""
    if sim is not None:
        return (f"[{AGENT}]\nelevenlabs_agent_id = {SIM_AGENT_ID}\nelevenlabs_api_key = {SIM_API_KEY}\n"
                f"elevenlabs_get_signed_url_endpoint = {sim.signed_url_endpoint}\n" + extra)
    return (f"[{AGENT}]\nelevenlabs_agent_id = {agent_id}\n"
            + ("elevenlabs_api_key_env = ELEVENLABS_API_KEY\n" if key_env else "") + extra)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to copy the call's recording")
    parser.add_argument("--timeout", type=float, default=90.0, help="longest call, in seconds (default 90)")
    parser.add_argument("--simulator", action="store_true",
                        help="use the simulator even if ELEVENLABS_AGENT_ID is set")
    parser.add_argument("--transfer", action="store_true",
                        help="the agent puts the caller through to extension 200 (its transfer_call tool)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    agent_id = None if args.simulator else os.environ.get("ELEVENLABS_AGENT_ID") or None
    spoken = voice.espeak_available()
    root = testbed_root()
    ast = Asterisk(root, module_dir(root))
    sim = None
    try:
        if agent_id is None:
            script = TRANSFER_SCRIPT if args.transfer else SIM_SCRIPT
            sim = Simulator(SimConfig(api_key=SIM_API_KEY, agents={SIM_AGENT_ID: script}, strict=True)).start()
            durations = agent_durations(script)
            agent_text = (f"the bundled ElevenLabs simulator on 127.0.0.1:{sim.port}, "
                          + ("speaking with espeak-ng" if spoken else "speaking tones"))
        else:
            durations = {}
            agent_text = f"your ElevenLabs agent {agent_id} (ELEVENLABS_AGENT_ID), at api.elevenlabs.io"
        caller_seconds = caller_sounds(ast.host_path(ast.path("sounds")), spoken)
        key_env = bool(os.environ.get("ELEVENLABS_API_KEY"))
        ast.write_config("elevenlabs.conf", elevenlabs_conf(sim, agent_id, key_env, args.transfer))
        ast.write_config("extensions.conf", dialplan(ast.path("sounds"), ast.path("rec")))
        ast.start(env={k: v for k, v in os.environ.items() if k == "ELEVENLABS_API_KEY"})
        version = ast.cli("core show version").split(" built ")[0].strip()
        where = "the system's Asterisk" if root == Path("/") else f"the test bed {root}"
        print(f"app_elevenlabs_convai demo: {version}, {where} (sandbox {ast.sandbox})")
        print(f"agent:  {agent_text}")
        print("caller: a synthetic caller on a Local channel, "
              + ("speaking with espeak-ng" if spoken else "speaking 1 kHz tones") + ", recorded with MixMonitor")
        if not spoken:
            print("notice: espeak-ng is not installed, so the agent and the caller speak tones instead of words "
                  "(apt-get install espeak-ng)")
        if sim is not None:
            print("note:   the simulator does not transcribe; its caller transcripts read '[caller speech]'")
            if key_env and not args.simulator:
                print("note:   ELEVENLABS_API_KEY is set but ELEVENLABS_AGENT_ID is not: using the simulator")
        print(flush=True)

        demo = Demo(ast, durations, caller_seconds)
        status = demo.run(args.timeout)
        if status is None:
            print("status: the call did not end", flush=True)
        print("\nlatency (the module's own clock inside Asterisk):")
        print("\n".join(demo.summary() or ["  no figures (the call did not complete)"]))

        recording = ast.recording("demo-call.wav")
        if recording.exists():
            args.out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(recording, args.out)
            with wave.open(str(args.out), "rb") as w:
                seconds = w.getnframes() / w.getframerate()
            print(f"\nrecording (what the caller said and heard, 8 kHz WAV, {seconds:.1f} s): {args.out.resolve()}")
        else:
            print("\nno recording was made")
        expected = "TRANSFER" if args.transfer else "AGENT_ENDED"
        if status != expected:
            log = args.out.with_name("demo-asterisk.log")
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(ast.log_text())
            problems = [line for line in ast.log_text().splitlines()
                        if ("WARNING" in line or "ERROR" in line) and re.search("convai|elevenlabs", line, re.I)]
            print(f"\nthe conversation did not complete (status {status}); Asterisk's log: {log.resolve()}\n"
                  + ("\n".join(problems[-15:]) or "(no warnings from the module)"), file=sys.stderr)
            return 1
        print(f"\nthe conversation completed: {expected}")
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted; stopping Asterisk", file=sys.stderr)
        return 130
    finally:
        ast.stop()
        ast.cleanup()
        if sim is not None:
            sim.stop()


if __name__ == "__main__":
    sys.exit(main())
