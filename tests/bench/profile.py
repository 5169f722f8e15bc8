"""Where the runtime's asyncio thread spends its time inside the bench's Asterisk: py-spy with
native frames (the event loop's C, the socket calls and the interpreter's own work are named,
not folded into the Python frame that called them), idle waits left out, in a run of its own
(sampling pauses the process, which must not weigh on the measured calls' figures).

Sampling only the thread that holds the GIL (``--gil``) misled: uvloop reads and writes sockets
with the GIL released, so that time went to whichever Python frame was last seen."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

TOP = 15
THREAD = "pyconvai-asyncio"


def _waiting(frames: list[str]) -> bool:
    """A sample of the event loop waiting in epoll (py-spy's idle test misses some)."""
    return any(frame.startswith("epoll_pwait") for frame in frames) and frames[-1].startswith("0x")


def py_spy() -> Path | None:
    """py-spy from the bench's venv (a test dependency), or from PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    found = beside if beside.exists() else shutil.which("py-spy")
    return Path(found) if found else None


def profile(root: Path, pid: int, seconds: float) -> dict | None:
    """Sample the asyncio thread of the Asterisk process ``pid`` (running in ``root``) for
    ``seconds``: the top functions by own time and by time including callees, as shares of
    its busy samples."""
    binary = py_spy()
    if binary is None:
        return None
    inside = "/tmp/py-spy-bench"
    shutil.copy2(binary, root / inside.lstrip("/"))
    output = f"/tmp/convai-profile-{pid}.txt"
    done = subprocess.run(
        ["chroot", str(root), inside, "record", "--pid", str(pid), "--duration", str(round(seconds)),
         "--rate", "100", "--native", "--threads", "--format", "raw", "--output", output],
        capture_output=True, text=True, timeout=seconds + 60, check=False)
    raw = root / output.lstrip("/")
    if done.returncode != 0 or not raw.exists():
        return {"error": (done.stderr or done.stdout).strip().splitlines()[-1:] or ["py-spy failed"]}
    own, inclusive, total = Counter(), Counter(), 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        thread, *frames = stack.split(";")
        if THREAD not in thread or not frames or _waiting(frames):
            continue
        n = int(count)
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    raw.unlink()
    if not total:
        return {"error": ["no samples"]}
    return {"samples": total, "seconds": seconds,
            "own": [(n / total, name) for name, n in own.most_common(TOP)],
            # the loop's trunk (in nearly every sample) and unnamed addresses say nothing
            "inclusive": [(n / total, name) for name, n in inclusive.most_common(TOP + 40)
                          if n < 0.95 * total and not name.startswith("0x")][:TOP]}
