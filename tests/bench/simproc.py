"""The simulator in a child process, so that its CPU is its own and not the bench's.

The child runs :class:`pyconvai.sim.Simulator` and answers commands on a pipe;
``summary()`` returns, per conversation, only what the analysis needs (times
are ``time.monotonic()``: CLOCK_MONOTONIC, the clock the module stamps with):
the audio messages sent (time, event_id, bytes), interruptions sent, the
metadata time, and the caller chunks received (time, bytes, and for the
conversations asked for, the first loud 20 ms frame of each chunk).
"""

from __future__ import annotations

import multiprocessing as mp
import time
from dataclasses import dataclass, field

from pyconvai.sim import audio


@dataclass
class ConvSummary:
    conversation_id: str
    agent_id: str
    metadata_at: float | None = None
    audio: list[tuple[float, int, int]] = field(default_factory=list)  # (sent at, event_id, bytes)
    interruptions: list[tuple[float, int]] = field(default_factory=list)  # (sent at, event_id)
    chunks: list[tuple[float, int]] = field(default_factory=list)  # (received at, bytes)
    loud: list[int] = field(default_factory=list)  # per chunk: first frame with RMS > threshold, -1 none
    close_code: int | None = None
    init_late: bool = False  # the client's initiation data came after the simulator's 1 s wait


def _summarise(record, detail: bool, frame_bytes: int, threshold: float) -> ConvSummary:
    out = ConvSummary(record.conversation_id, record.agent_id)
    for t, msg in list(record.sent):
        kind = msg.get("type")
        if kind == "audio":
            event = msg["audio_event"]
            b64 = event["audio_base_64"]
            size = len(b64) * 3 // 4 - b64[-2:].count("=")
            out.audio.append((t, int(event.get("event_id") or 0), size))
        elif kind == "interruption":
            out.interruptions.append((t, int(msg["interruption_event"]["event_id"])))
        elif kind == "conversation_initiation_metadata" and out.metadata_at is None:
            out.metadata_at = t
    for t, data in list(record.audio_chunks):
        out.chunks.append((t, len(data)))
        if detail:
            first = -1
            for i in range(0, len(data) - frame_bytes + 1, frame_bytes):
                if audio.rms(audio.ulaw_decode(data[i : i + frame_bytes])) > threshold:
                    first = i // frame_bytes
                    break
            out.loud.append(first)
    out.close_code = record.close_code
    out.init_late = record.init_data is None
    return out


def _child(conn, scripts, api_key: str) -> None:
    import logging

    from pyconvai.sim import SimConfig, Simulator

    logging.getLogger("pyconvai.sim").setLevel(logging.ERROR)  # counted in the summaries instead

    sim = Simulator(SimConfig(api_key=api_key, agents=scripts)).start()
    conn.send(("ready", sim.signed_url_endpoint))
    while True:
        try:
            command, arg = conn.recv()
        except EOFError:
            break
        if command == "summary":
            detail = set(arg or ())
            records = sim.conversations
            conn.send([_summarise(r, r.conversation_id in detail or "*" in detail, 160, 1000.0) for r in records])
        elif command == "count":
            conn.send(len(sim.conversations))
        elif command == "open":
            conn.send(sum(1 for r in sim.conversations if not r.closed.is_set()))
        elif command == "stop":
            sim.stop()
            conn.send("stopped")
            break


class SimProcess:
    """``with SimProcess(scripts, api_key) as sim:`` -- ``sim.endpoint``, ``sim.pid``, ``sim.summary()``."""

    def __init__(self, scripts: dict, api_key: str) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_child, args=(child, scripts, api_key), name="bench-sim", daemon=True)
        self.process.start()
        child.close()
        if not self._conn.poll(30):
            self.process.kill()
            raise RuntimeError("the simulator did not start")
        status, self.endpoint = self._conn.recv()
        assert status == "ready"

    @property
    def pid(self) -> int:
        return self.process.pid

    def _ask(self, command: str, arg=None, timeout: float = 120.0):
        self._conn.send((command, arg))
        if not self._conn.poll(timeout):
            raise TimeoutError(f"simulator: no answer to {command}")
        return self._conn.recv()

    def summary(self, detail=()) -> list[ConvSummary]:
        return self._ask("summary", list(detail), timeout=600)

    def count(self) -> int:
        return self._ask("count")

    def open_conversations(self) -> int:
        return self._ask("open")

    def stop(self) -> None:
        if self.process.is_alive():
            try:
                self._ask("stop", timeout=20)
            except (TimeoutError, OSError, EOFError):
                pass
            self.process.join(10)
            if self.process.is_alive():
                self.process.kill()  # our own child, by its handle
                self.process.join(5)
        self._conn.close()

    def __enter__(self) -> "SimProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_until(predicate, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


__all__ = ["ConvSummary", "SimProcess", "wait_until"]
