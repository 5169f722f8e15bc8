"""Where the runtime's Python time goes inside the bench's Asterisk: py-spy, sampling only
the thread that holds the GIL (so idle waits are not counted), in a window of its own
after the measured one (sampling costs CPU, which must not weigh on the figures)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

TOP = 15


def py_spy() -> Path | None:
    """py-spy from the bench's venv (a test dependency), or from PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    found = beside if beside.exists() else shutil.which("py-spy")
    return Path(found) if found else None


def profile(root: Path, pid: int, seconds: float) -> dict | None:
    """Sample the Asterisk process ``pid`` (running in ``root``) for ``seconds``: the top
    functions by own time and by time including callees, as shares of the GIL samples."""
    binary = py_spy()
    if binary is None:
        return None
    inside = "/tmp/py-spy-bench"
    shutil.copy2(binary, root / inside.lstrip("/"))
    output = f"/tmp/convai-profile-{pid}.txt"
    done = subprocess.run(
        ["chroot", str(root), inside, "record", "--pid", str(pid), "--duration", str(round(seconds)),
         "--rate", "100", "--gil", "--nonblocking", "--format", "raw", "--output", output],
        capture_output=True, text=True, timeout=seconds + 60, check=False)
    raw = root / output.lstrip("/")
    if done.returncode != 0 or not raw.exists():
        return {"error": (done.stderr or done.stdout).strip().splitlines()[-1:] or ["py-spy failed"]}
    own, inclusive, total = Counter(), Counter(), 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
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
            "inclusive": [(n / total, name) for name, n in inclusive.most_common(TOP + 10)
                          if not name.startswith(("Thread.", "<module>"))][:TOP]}
