"""The README's "Two commands", run as written: the demo completes a conversation.

The commands are read from README.md (its fenced blocks in that section), not
repeated here; ``make test`` is left out, since this test runs inside it. The
demo runs unattended (stdin is not a terminal) and must end by itself.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from tests.demo import GREETING

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SECTION = "Two commands"
TIMEOUT_S = 180


def readme_commands(text: str, section: str = SECTION) -> list[str]:
    """The shell commands in the fenced code blocks of a README section (comments dropped)."""
    match = re.search(rf"^##+[ \t]+{re.escape(section)}[ \t]*\n(.*?)(?=^##?[ \t]|\Z)", text, re.M | re.S)
    assert match, f"README.md has no section {section!r}"
    commands = []
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", match.group(1), re.M | re.S):
        for line in block.splitlines():
            command = re.sub(r"(^|\s)#.*$", "", line).strip()
            if command:
                commands.append(command)
    return commands


def test_readme_commands_are_found() -> None:
    text = ("# X\n## Two commands\n\nAs root:\n\n```\nmake demo   # a call\nmake test\n```\n\n"
            "### More\n```\nmake bench\n```\n## Next\n```\nmake other\n```\n")
    assert readme_commands(text) == ["make demo", "make test", "make bench"]


def run_command(command: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``command`` from the repository root; on timeout its whole process group is stopped."""
    process = subprocess.Popen(command, shell=True, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)  # the demo stops its Asterisk on SIGTERM
        try:
            output, _ = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
        pytest.fail(f"{command!r} still running after {TIMEOUT_S} s:\n{output[-4000:]}")
    return subprocess.CompletedProcess(command, process.returncode, output)


def test_the_readme_demo_completes_a_conversation(testbed_root: Path) -> None:
    commands = [c for c in readme_commands((REPO / "README.md").read_text()) if c != "make test"]
    assert any("demo" in c for c in commands), commands
    # The bundled simulator, whatever this machine's environment says; the same test bed.
    env = {k: v for k, v in os.environ.items() if k not in ("ELEVENLABS_API_KEY", "ELEVENLABS_AGENT_ID")}
    if testbed_root != Path("/"):
        env["TESTBED_ROOT"] = str(testbed_root)
    for command in commands:
        result = run_command(command, env)
        assert result.returncode == 0, f"{command!r} exited {result.returncode}:\n{result.stdout[-4000:]}"
        if "demo" not in command:
            continue
        out = result.stdout
        lines = out.splitlines()

        def first(pattern: str) -> int:
            found = [i for i, line in enumerate(lines) if re.search(pattern, line)]
            assert found, f"no line matching {pattern!r} in:\n{out}"
            return found[0]

        greeting = first(r"\] agent: +" + re.escape(GREETING))
        caller = first(r"\] caller: \S")
        interruption = first(r"caller interrupted the agent")
        ended = first(r"\] status: AGENT_ENDED")
        assert greeting < caller < interruption < ended, out
        assert "the conversation completed: AGENT_ENDED" in out
        assert re.search(r"agent audio arrived -> first frame to the caller: median \d", out), out

        recording = Path(re.search(r"^recording .*: (/\S+\.wav)$", out, re.M).group(1))
        with wave.open(str(recording), "rb") as w:
            assert (w.getnchannels(), w.getsampwidth()) == (1, 2)
            rate = w.getframerate()
            samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
        assert len(samples) > 10 * rate, f"the recording lasts {len(samples) / rate:.1f} s"
        seconds = samples[: len(samples) // rate * rate].reshape(-1, rate)
        loud = np.sqrt((seconds**2).mean(axis=1)) > 500
        assert loud.mean() > 0.5, f"speech in only {loud.sum()} of {len(loud)} seconds of the recording"
