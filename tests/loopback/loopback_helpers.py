"""Helpers for the loopback tests (simulator on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from pyconvai.config import SessionSettings
from pyconvai.events import AgentAudioReceived, FormatsNegotiated, InterruptionReceived
from pyconvai.outcome import EndStatus, SessionEnded
from pyconvai.playback import Downlink
from pyconvai.ring import Ring
from pyconvai.session import Session
from pyconvai.sim import Simulator, audio

API_KEY = "sk-test-1234"


def settings_for(sim: Simulator, agent_id: str, **kwargs: object) -> SessionSettings:
    values: dict[str, object] = {
        "api_key": API_KEY,
        "signed_url_endpoint": sim.signed_url_endpoint,
        "connection_timeout_seconds": 2.0,
        "debug": True,
    } | kwargs
    return SessionSettings(agent_id, agent_id, **values)  # type: ignore[arg-type]


class Played:
    """A session's listener, standing in for the Call: records every event and applies agent
    audio and interruptions to a real Downlink, whose ring (large enough to take everything
    at once) the test reads as the channel thread would."""

    def __init__(self) -> None:
        self.events: list = []
        self.dropped: list[int] = []  # frames each interruption flushed
        self.ring = Ring.allocate(1 << 22)
        self.downlink = Downlink(self.ring, lambda: None, frames_ahead=1 << 20)

    def __call__(self, event: object) -> None:
        self.events.append(event)
        match event:
            case FormatsNegotiated(output_format=fmt):
                self.downlink.configure(fmt)
            case AgentAudioReceived(audio=data, event_id=event_id):
                self.downlink.add(data, event_id)
            case InterruptionReceived(event_id=event_id):
                self.dropped.append(self.downlink.interrupt(event_id))
            case SessionEnded(status=EndStatus.AGENT_ENDED):
                self.downlink.finish()

    @property
    def queued_frames(self) -> int:
        return self.ring.used // self.downlink.frame_bytes if self.downlink.frame_bytes else 0

    def frames(self) -> list[bytes]:
        """Every whole frame waiting to be played, taken out."""
        size, frames = self.downlink.frame_bytes, []
        while size and (frame := self.ring.pop_exact(size)) is not None:
            frames.append(frame)
        return frames


async def until(predicate: Callable[[], object], timeout: float, step: float = 0.01) -> None:
    """Poll ``predicate`` until true; TimeoutError after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(step)


async def feed_realtime(session: Session, frames: Iterator[bytes], frame_ms: int = 20) -> None:
    """Feed caller frames on absolute 20 ms deadlines, like the uplink would."""
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    for frame in frames:
        session.feed_caller_audio(frame)
        next_at += frame_ms / 1000
        await asyncio.sleep(max(0.0, next_at - loop.time()))


def caller_frames(
    fmt: str, tone_hz: float | None, total_ms: int, frame_ms: int = 20
) -> Iterator[bytes]:
    """``total_ms`` of caller audio in ``fmt``: a loud tone, or silence when tone_hz is None."""
    rate = audio.sample_rate(fmt)
    pcm = audio.tone(tone_hz, frame_ms, rate, 12000) if tone_hz else audio.silence(frame_ms, rate)
    frame = audio.encode(pcm, fmt)
    for _ in range(total_ms // frame_ms):
        yield frame


async def converse(
    session: Session,
    driver: Callable[[Session], Awaitable[None]] | None = None,
    timeout: float = 20.0,
) -> tuple[SessionEnded, float]:
    """Run the session (and a driver coroutine beside it); return how it ended and how long it took.

    The driver is cancelled when the session ends; its own failures fail the test.
    """
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        run = asyncio.ensure_future(session.run())
        drive = asyncio.ensure_future(driver(session)) if driver else None
        waiting = {run} | ({drive} if drive else set())
        while True:
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if drive in done:
                drive.result()  # raise the driver's assertion errors
                waiting.discard(drive)
            if run in done:
                break
        if drive is not None and not drive.done():
            drive.cancel()
            await asyncio.gather(drive, return_exceptions=True)
        return run.result(), time.monotonic() - started


def dominant_tone(frames: list[bytes], fmt: str, candidates: tuple[float, ...]) -> float:
    """The candidate frequency with the most power in ``frames`` (decoded from ``fmt``)."""
    pcm = audio.decode(b"".join(frames), fmt)
    rate = audio.sample_rate(fmt)
    return max(candidates, key=lambda hz: audio.goertzel_power(pcm, rate, hz))


def self_signed_cert(directory: Path) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key (PEM paths); skips the test without openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not available")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )
    return str(cert), str(key)
