"""Helpers for the loopback tests (simulator on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from pyconvai import audio
from pyconvai.session import Session, SessionEnded, SessionSettings
from pyconvai.sim import Simulator

API_KEY = "sk-test-1234"


def settings_for(sim: Simulator, agent_id: str, **kwargs: object) -> SessionSettings:
    values: dict[str, object] = {
        "api_key": API_KEY,
        "signed_url_endpoint": sim.signed_url_endpoint,
        "connection_timeout_seconds": 2.0,
        "debug": True,
    } | kwargs
    return SessionSettings(agent_id, agent_id, **values)  # type: ignore[arg-type]


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
