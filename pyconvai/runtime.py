"""What the Asterisk module calls (csrc/embed.c), and the threads behind it.

Threads, once per Asterisk process:

- ``pyconvai-asyncio``: one event loop for every call's WebSocket, signed-URL
  request and caller-audio pump.
- ``pyconvai-playback``: the playback timing thread; every 20 ms, on absolute
  deadlines, it keeps each call's downlink ring a few frames ahead.

The module's threads (load, CLI, PBX channel threads) call the functions at the
bottom of this file with the GIL taken by embed.c and no channel lock held;
each returns quickly and never waits on the network.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import struct
import sys
import threading
import time
from collections.abc import Mapping

from .config import SettingsError, session_settings
from .ring import Ring
from .session import EndStatus, FormatsNegotiated, ConversationStarted, Session, SessionEnded

try:  # Provided by the module that embeds us; absent under plain pytest.
    import _convai_host
except ImportError:  # pragma: no cover - exercised only outside Asterisk
    _convai_host = None

log = logging.getLogger("pyconvai")

FRAME_SECONDS = 0.020
#: Frames kept in a call's downlink ring ahead of the channel thread.
FRAMES_AHEAD = 3
#: Longest play-out of queued audio after the agent ended the call, beyond its length.
DRAIN_SLACK_SECONDS = 1.0

# Control records, Python -> channel thread: mirrors enum convai_control in csrc/embed.h.
CONTROL_FORMATS = 1
CONTROL_END = 2
CONTROL_SETVAR = 3
CONTROL_MANAGER_EVENT = 4
CONTROL_STARTED = 5


class HostLogHandler(logging.Handler):
    """Send pyconvai's log records to Asterisk's logger.

    DEBUG records pass when "elevenlabs debug on" is set, and always from
    pyconvai.session, which logs its per-call detail only for calls whose
    agent (or the global switch at call start) asked for debug.
    """

    debug_all = False

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG or self.debug_all or record.name == "pyconvai.session"

    def emit(self, record: logging.LogRecord) -> None:
        if _convai_host is None:
            return
        if record.levelno >= logging.ERROR:
            level = _convai_host.ERROR
        elif record.levelno >= logging.WARNING:
            level = _convai_host.WARNING
        elif record.levelno >= logging.INFO:
            level = _convai_host.VERBOSE
        else:
            level = _convai_host.DEBUG
        try:
            _convai_host.log(level, self.format(record))
        except Exception:  # noqa: BLE001 - logging must never raise into callers
            self.handleError(record)


def end_reason(ended: SessionEnded) -> str:
    """ELEVENLABS_END_REASON: the reason, with the close code and its reason when there was one."""
    if ended.close_code is None or str(ended.close_code) in ended.reason:
        return ended.reason
    detail = f"close {ended.close_code}"
    if ended.close_reason and ended.close_reason not in ended.reason:
        detail += f" {ended.close_reason}"
    return f"{ended.reason} ({detail})"


class Call:
    """One call: a Session joined to the module's rings, control ring and wake fd.

    Threads: created on a PBX thread (GIL held, no channel lock); the session
    and the listener run on the asyncio thread; playback_tick() runs on the
    playback thread and is the only producer of the downlink ring (the
    session's flush hook, ring.discard, runs under the playback queue's lock
    that transfer() also holds). Control records come from both Python
    threads, serialised by a lock.
    """

    def __init__(self, runtime: "Runtime", settings: Mapping[str, str], uplink: int, downlink: int,
                 control: int, wake_fd: int) -> None:
        self.runtime = runtime
        self.channel = settings.get("channel", "?")
        self.agent = settings.get("agent", "?")
        self.uplink = Ring.attach(uplink)
        self.downlink = Ring.attach(downlink)
        self.control = Ring.attach(control)
        # Our own descriptor: the module may close its copy before we are done.
        self.wake_fd = os.dup(wake_fd)
        self._control_lock = threading.Lock()
        self.frame_bytes = 0
        self.sample_bytes = 1
        self.started_at = time.monotonic()
        self.ended: SessionEnded | None = None
        self.drain_deadline = 0.0
        self.finished = False
        self.underruns = 0
        self.frames_out = 0
        self._was_playing = False
        try:
            self.session = Session(session_settings(settings), listener=self._on_event)
        except SettingsError as exc:
            self.session = None
            log.error("%s: unusable settings for agent %s: %s", self.channel, self.agent, exc)
            self._finish(SessionEnded(EndStatus.CONFIG_ERROR, str(exc), None))
            return
        self.session.playback.set_flush_hook(self.downlink.discard)

    # asyncio thread

    async def run(self) -> None:
        if self.session is None:
            return
        ended = await self.session.run()
        if ended.status is EndStatus.AGENT_ENDED and not self.finished:
            # Let the playback thread play what is queued, within a bound.
            self.session.playback.finish()
            queued = self.session.playback.queued_ms / 1000 + self.downlink.used / max(1, self.frame_bytes) * FRAME_SECONDS
            self.drain_deadline = time.monotonic() + queued + DRAIN_SLACK_SECONDS
            self.ended = ended
        else:
            self._finish(ended)

    def pump_uplink(self) -> None:
        """Move caller audio captured by the framehook into the session."""
        if self.session is None or self.finished:
            return
        data = self.uplink.pop()
        while data:
            self.session.feed_caller_audio(data)
            data = self.uplink.pop()

    def _on_event(self, event: object) -> None:
        if isinstance(event, FormatsNegotiated):
            self.frame_bytes = event.output_format.frame_bytes(FRAME_SECONDS * 1000)
            self.send_control(CONTROL_FORMATS, event.input_format.name, event.output_format.name)
        elif isinstance(event, ConversationStarted):
            self.send_control(CONTROL_STARTED, event.conversation_id)

    # playback thread

    def playback_tick(self) -> None:
        """Keep the downlink FRAMES_AHEAD frames ahead; end the call once drained."""
        if self.finished or self.session is None or not self.frame_bytes:
            return
        playback = self.session.playback
        queued_before = playback.queued_frames
        ahead = self.downlink.used // self.frame_bytes
        if ahead == 0 and queued_before and self._was_playing:
            self.underruns += 1
        if ahead < FRAMES_AHEAD:
            moved = playback.transfer(self.downlink.push, FRAMES_AHEAD - ahead)
            self.frames_out += moved
            self._was_playing = moved > 0 or ahead > 0
        if self.ended is not None:
            drained = playback.queued_frames == 0 and self.downlink.used < self.frame_bytes
            if drained or time.monotonic() > self.drain_deadline:
                self._finish(self.ended)

    # any thread

    def hangup(self, reason: str) -> None:
        """The caller has gone (or Asterisk stops): close the socket with 1000."""
        if self.session is not None:
            self.session.hangup(reason)
        if self.ended is not None:
            self._finish(self.ended)

    def send_control(self, kind: int, *parts: str) -> None:
        payload = "\0".join(parts).encode("utf-8", "replace")[:8192]
        record = struct.pack("<BBH", kind, 0, len(payload)) + payload
        with self._control_lock:
            if not self.control.push(record):
                log.error("%s: control ring full; record %d lost", self.channel, kind)
                return
            try:
                os.write(self.wake_fd, (1).to_bytes(8, sys.byteorder))
            except OSError as exc:  # EAGAIN: the counter is saturated, the module is awake anyway
                log.debug("%s: wake failed: %s", self.channel, exc)

    def _finish(self, ended: SessionEnded) -> None:
        """Tell the channel thread how the call ended; once."""
        with self._control_lock:
            if self.finished:
                return
            self.finished = True
        self.send_control(CONTROL_END, str(ended.status), ended.conversation_id or "", end_reason(ended))
        self.runtime.forget(self)

    def close(self) -> None:
        try:
            os.close(self.wake_fd)
        except OSError:
            pass


class Runtime:
    """The event loop thread, the playback thread and the live calls."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.calls: dict[int, object] = {}
        self.calls_lock = threading.Lock()
        self._stopping = threading.Event()
        self._loop_thread = threading.Thread(target=self._run_loop, name="pyconvai-asyncio", daemon=True)
        self._playback_thread = threading.Thread(target=self._run_playback, name="pyconvai-playback", daemon=True)
        self.started_at = time.monotonic()

    def start(self) -> None:
        self._loop_thread.start()
        self._playback_thread.start()
        asyncio.run_coroutine_threadsafe(self._pump_uplinks(), self.loop)

    def add(self, call: Call) -> None:
        with self.calls_lock:
            self.calls[id(call)] = call
        self.loop.call_soon_threadsafe(self._start_call, call)

    def _start_call(self, call: Call) -> None:
        task = self.loop.create_task(call.run(), name=f"call {call.channel}")
        task.add_done_callback(lambda t: t.cancelled() or t.exception() and log.error(
            "%s: call task failed: %r", call.channel, t.exception()))

    def forget(self, call: Call) -> None:
        with self.calls_lock:
            self.calls.pop(id(call), None)
        call.close()

    async def _pump_uplinks(self) -> None:
        """Every 20 ms, move each call's captured caller audio into its session."""
        next_tick = self.loop.time()
        while not self._stopping.is_set():
            with self.calls_lock:
                calls = list(self.calls.values())
            for call in calls:
                try:
                    call.pump_uplink()
                except Exception:  # noqa: BLE001 - one call must not stop the others
                    log.exception("%s: caller audio pump failed", call.channel)
            next_tick += FRAME_SECONDS
            await asyncio.sleep(max(0.0, next_tick - self.loop.time()))

    def stop(self, timeout: float) -> bool:
        """End every call, stop both threads; True if they stopped in time."""
        deadline = time.monotonic() + timeout
        self._stopping.set()
        with self.calls_lock:
            calls = list(self.calls.values())
        for call in calls:
            call.hangup("Asterisk is shutting down")
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        for thread in (self._loop_thread, self._playback_thread):
            thread.join(max(0.0, deadline - time.monotonic()))
        return not (self._loop_thread.is_alive() or self._playback_thread.is_alive())

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            log.debug("pyconvai: event loop stopped")

    def _run_playback(self) -> None:
        """Top up every call's downlink on absolute 20 ms deadlines (no drift)."""
        next_tick = time.monotonic()
        while not self._stopping.is_set():
            with self.calls_lock:
                calls = list(self.calls.values())
            for call in calls:
                try:
                    call.playback_tick()
                except Exception:  # noqa: BLE001 - one call must not stop the others
                    log.exception("pyconvai: playback of %s failed", getattr(call, "channel", "?"))
            next_tick += FRAME_SECONDS
            delay = next_tick - time.monotonic()
            if delay > 0:
                self._stopping.wait(delay)
            elif delay < -0.2:
                next_tick = time.monotonic()  # stalled (GIL, suspend): resynchronise

    @property
    def threads_alive(self) -> dict[str, bool]:
        return {t.name: t.is_alive() for t in (self._loop_thread, self._playback_thread)}


_runtime: Runtime | None = None


def _module_status(name: str) -> str:
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return f"FAILED ({type(exc).__name__}: {exc})"
    version = getattr(module, "__version__", None) or getattr(module, "OPENSSL_VERSION", None) or ""
    return f"ok {version}".rstrip()


# Entry points called by csrc/embed.c (GIL held, no channel lock).


def start() -> None:
    """Start the threads and route logging to Asterisk. Called once at load."""
    global _runtime
    if _runtime is not None:
        return
    root = logging.getLogger("pyconvai")
    if _convai_host is not None and not any(isinstance(h, HostLogHandler) for h in root.handlers):
        handler = HostLogHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
        root.propagate = False
    root.setLevel(logging.DEBUG)
    threading.excepthook = _log_thread_exception
    _runtime = Runtime()
    _runtime.start()


def stop(timeout: float) -> bool:
    """Stop calls and threads within ``timeout`` seconds. Called at shutdown."""
    return _runtime.stop(timeout) if _runtime is not None else True


def set_debug(on: bool) -> None:
    HostLogHandler.debug_all = bool(on)


def start_call(settings: Mapping[str, str], uplink: int, downlink: int, control: int, wake_fd: int) -> Call:
    """Start one call; returns at once (the session connects on the asyncio thread)."""
    if _runtime is None:
        raise RuntimeError("pyconvai runtime not started")
    call = Call(_runtime, settings, uplink, downlink, control, wake_fd)
    if not call.finished:
        _runtime.add(call)
    return call


def describe_calls() -> str:
    """Text for "elevenlabs show calls"."""
    if _runtime is None:
        return "Runtime not started\n"
    with _runtime.calls_lock:
        calls = list(_runtime.calls.values())
    now = time.monotonic()
    lines = [f"{'Channel':<32} {'Agent':<16} {'Conversation':<28} {'Secs':>5} {'FramesOut':>9} {'Underruns':>9}"]
    for call in calls:
        conversation = (call.session.conversation_id if call.session else None) or "-"
        lines.append(f"{call.channel:<32} {call.agent:<16} {conversation:<28} {now - call.started_at:5.0f} "
                     f"{call.frames_out:9d} {call.underruns:9d}")
    lines.append(f"{len(calls)} call(s)")
    return "\n".join(lines) + "\n"


def describe() -> str:
    """Text for "elevenlabs show runtime"."""
    lines = [
        f"Python:          {sys.version.split()[0]} ({sys.implementation.name})",
        f"Prefix:          {sys.prefix}",
        f"Base prefix:     {sys.base_prefix}",
        f"Virtual env:     {'yes' if sys.prefix != sys.base_prefix else 'no'}",
    ]
    for name in ("ssl", "asyncio", "websockets", "httpx", "orjson", "pyconvai._ring"):
        lines.append(f"{('Module ' + name + ':'):<17}{_module_status(name)}")
    if _runtime is not None:
        for name, alive in _runtime.threads_alive.items():
            lines.append(f"{('Thread ' + name + ':'):<17}{'running' if alive else 'STOPPED'}")
        with _runtime.calls_lock:
            lines.append(f"Live calls:      {len(_runtime.calls)}")
    return "\n".join(lines) + "\n"


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    log.error(
        "pyconvai: uncaught %s in thread %s: %s",
        args.exc_type.__name__,
        args.thread.name if args.thread else "?",
        args.exc_value,
    )
