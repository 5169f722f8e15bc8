"""What the Asterisk module calls (csrc/embed.c), and the threads behind it.

Threads, once per Asterisk process:

- ``pyconvai-asyncio``: one event loop for every call's WebSocket, signed-URL
  request and caller audio (read when the uplink ring's doorbell rings).
- ``pyconvai-playback``: the playback timing thread; every 20 ms, on absolute
  deadlines, it keeps each call's downlink ring 500 ms ahead.

The module's threads (load, CLI, PBX channel threads) call the functions at the
bottom of this file with the GIL taken by embed.c and no channel lock held;
each returns quickly and never waits on the network.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping

from . import agentcheck, client, wire
from .call import Call
from .config import (
    SessionSettings,
    SettingsError,
    allowed_overrides,
    call_control,
    connection_timeout,
    session_settings,
)
from .protocol import ConvaiProtocol
from .stats import Totals
from .wire import one_line

try:  # Provided by the module that embeds us; absent under plain pytest.
    import _convai_host
except ImportError:  # pragma: no cover - exercised only outside Asterisk
    _convai_host = None

log = logging.getLogger("pyconvai")

#: The periodic pump; caller audio normally goes at once, on the uplink's doorbell.
SWEEP_SECONDS = 0.100
#: The playback thread's period: the ring holds up to 500 ms (FRAMES_AHEAD), so a top-up
#: every 100 ms keeps it at least 400 ms ahead (every 20 ms cost 5x the CPU for nothing).
PLAYBACK_TICK_SECONDS = 0.100


def safe_log_line(line: str) -> str:
    """A log line as it reaches Asterisk: secrets blanked, one safe line."""
    return one_line(client.redact_secrets(line))


class HostLogHandler(logging.Handler):
    """Send pyconvai's log records to Asterisk's logger.

    DEBUG records pass when "elevenlabs debug on" is set, or when they come
    from a call whose agent has debug on (``convai_debug``, set by the session).
    """

    debug_all = False

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG or self.debug_all or getattr(record, "convai_debug", False)

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
            # A traceback goes line by line: every line Asterisk logs is one safe line.
            for line in self.format(record).splitlines() or [""]:
                _convai_host.log(level, safe_log_line(line))
        except Exception:  # noqa: BLE001 - logging must never raise into callers
            self.handleError(record)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when it is installed (a dependency: its sockets, timers and callbacks
    cost about 15 % less of the asyncio thread in make bench), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        log.info("event loop: asyncio (uvloop is not installed)")
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class Runtime:
    """The event loop thread, the playback thread and the live calls."""

    def __init__(self) -> None:
        self.loop = new_event_loop()
        self.calls: dict[int, Call] = {}
        self.calls_lock = threading.Lock()
        self.totals = Totals()
        self._stopping = threading.Event()
        self._loop_thread = threading.Thread(target=self._run_loop, name="pyconvai-asyncio", daemon=True)
        self._playback_thread = threading.Thread(target=self._run_playback, name="pyconvai-playback", daemon=True)
        self.started_at = time.monotonic()

    def start(self) -> None:
        self._loop_thread.start()
        self._playback_thread.start()
        asyncio.run_coroutine_threadsafe(self._warm_up(), self.loop)
        asyncio.run_coroutine_threadsafe(self._pump(), self.loop)

    async def _warm_up(self) -> None:
        started = time.monotonic()
        try:
            await client.warm_up()
        except Exception as exc:  # noqa: BLE001 - only the first call's cost is at stake
            log.debug("warm-up connection failed (the first call will set up instead): %s", exc)
        else:
            log.debug("warm-up connection done in %.0f ms", (time.monotonic() - started) * 1000)

    def add(self, call: Call) -> None:
        with self.calls_lock:
            self.calls[id(call)] = call
        self.loop.call_soon_threadsafe(self._start_call, call)

    def _start_call(self, call: Call) -> None:
        if call.finished:
            return
        if call.doorbell_fd >= 0:
            self.loop.add_reader(call.doorbell_fd, call.on_doorbell)
        call.task = self.loop.create_task(call.run(), name=f"call {call.channel}")
        call.task.add_done_callback(call.task_done)

    def forget(self, call: Call) -> None:
        """A call has finished: drop it and add its figures to the totals.

        On the asyncio thread, or on the channel thread for a call that never started.
        """
        if call.task is not None and call.doorbell_fd >= 0:
            self.loop.remove_reader(call.doorbell_fd)
        with self.calls_lock:
            self.calls.pop(id(call), None)
            self.totals.add(call.stats, call.frames_in, call.downlink.underruns, call.uplink.counters["overflowed"])
            self.publish_metrics()

    def publish_metrics(self) -> None:
        """Hand the module the counters' text (calls_lock held): a Prometheus scrape reads
        that copy and never waits for the GIL. They change only when a call ends."""
        if _convai_host is not None:
            _convai_host.set_metrics(self.totals.prometheus())

    def _for_each_call(self, action: Callable[[Call], None], what: str) -> None:
        """Run ``action`` on every live call; one failing call must not stop the others."""
        with self.calls_lock:
            calls = list(self.calls.values())
        for call in calls:
            try:
                action(call)
            except Exception:  # noqa: BLE001 - logged, and the loop goes on
                log.exception("%s: %s failed", call.channel, what)

    def schedule(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the asyncio thread (from any thread)."""
        self.loop.call_soon_threadsafe(callback)

    async def _pump(self) -> None:
        """The sweep: caller audio no doorbell announces (before the conversation starts,
        or with no eventfd), and each call's clock records at least every second."""
        next_tick = self.loop.time()
        while not self._stopping.is_set():
            _follow_host_debug()
            self._for_each_call(Call.sweep, "caller audio pump")
            next_tick += SWEEP_SECONDS
            await asyncio.sleep(max(0.0, next_tick - self.loop.time()))

    def stop(self, timeout: float) -> bool:
        """Close every call's WebSocket (1000), stop both threads; True if all was done in time."""
        deadline = time.monotonic() + timeout
        if self.loop.is_running():
            closing = asyncio.run_coroutine_threadsafe(self._close_calls(timeout / 2), self.loop)
            try:
                closing.result(timeout / 2 + 0.5)
            except Exception:  # noqa: BLE001 - shutting down regardless
                log.warning("pyconvai: calls still open at shutdown")
        self._stopping.set()
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        for thread in (self._loop_thread, self._playback_thread):
            thread.join(max(0.0, deadline - time.monotonic()))
        return not (self._loop_thread.is_alive() or self._playback_thread.is_alive())

    async def _close_calls(self, timeout: float) -> None:
        with self.calls_lock:
            calls = list(self.calls.values())
        for call in calls:
            call.hangup("Asterisk is shutting down")
        tasks = [call.task for call in calls if call.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
            # Stopped: what is left (the pump, calls that outlived stop()) is cancelled and let finish.
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        finally:
            log.debug("pyconvai: event loop stopped")

    def _run_playback(self) -> None:
        """Top up every call's downlink on absolute PLAYBACK_TICK_SECONDS deadlines (no
        drift). Audio that arrives tops the ring up at once; this keeps it ahead."""
        next_tick = time.monotonic()
        while not self._stopping.is_set():
            self._for_each_call(Call.playback_tick, "playback")
            next_tick += PLAYBACK_TICK_SECONDS
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


def start(wire_version: int = wire.WIRE_VERSION) -> None:
    """Start the threads and route logging to Asterisk. Called once at load.

    ``wire_version``: the module's CONVAI_WIRE_VERSION; a module built from
    another version of csrc/convai_wire.h is refused (WireVersionMismatch).
    """
    global _runtime
    wire.check_version(wire_version)
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
    client.default_tls_context()  # built now, not during the first call
    _runtime = Runtime()
    _follow_host_debug()
    with _runtime.calls_lock:
        _runtime.publish_metrics()
    _runtime.start()


def stop(timeout: float) -> bool:
    """Stop calls and threads within ``timeout`` seconds. Called at shutdown."""
    return _runtime.stop(timeout) if _runtime is not None else True


def set_debug(on: bool) -> None:
    HostLogHandler.debug_all = bool(on)
    client.set_wire_debug(bool(on))


def _follow_host_debug() -> None:
    """"elevenlabs debug on|off" is a flag in the module, read here on the sweep: the CLI
    and reload threads never wait for the GIL to set it."""
    on = _convai_host.debug() if _convai_host is not None else HostLogHandler.debug_all
    if on != HostLogHandler.debug_all:
        set_debug(on)


def start_call(settings: Mapping[str, str], uplink: int, downlink: int, control: int, clock: int,
               wake_fd: int) -> Call:
    """Start one call; returns at once (the session connects on the asyncio thread)."""
    if _runtime is None:
        raise RuntimeError("pyconvai runtime not started")
    call = Call(
        settings,
        {"uplink": uplink, "downlink": downlink, "control": control, "clock": clock},
        wake_fd,
        schedule=_runtime.schedule,
        forget=_runtime.forget,
        manager_event=_convai_host.manager_event if _convai_host is not None else None,
    )
    if not call.finished:
        _runtime.add(call)
    return call


def send_text(channel: str, kind: str, text: str) -> str:
    """AMI ElevenLabsContextualUpdate/ElevenLabsUserMessage, "elevenlabs send": deliver text to
    the live conversation on ``channel`` (``kind``: contextual_update or user_message).
    Returns "" when it was handed to the conversation, else why not (for the operator)."""
    call = _live_call(channel=channel)
    if isinstance(call, str):
        return call
    return call.send_text(kind, text)


def tool_result(channel: str, conversation_id: str, tool_call_id: str, result: str, is_error: bool) -> str:
    """AMI ElevenLabsToolResult: "" when handed to the waiting tool call, else why not."""
    call = _live_call(channel=channel, conversation_id=conversation_id)
    if isinstance(call, str):
        return call
    return call.ami_tool_result(tool_call_id, result, is_error)


def _live_call(channel: str = "", conversation_id: str = "") -> Call | str:
    """The live call on ``channel`` or with ``conversation_id``, else why there is none."""
    if _runtime is None:
        return "the Python runtime is not running"
    with _runtime.calls_lock:
        call = next((c for c in _runtime.calls.values()
                     if (channel and c.channel == channel) or (conversation_id and c.conversation_id == conversation_id)),
                    None)
    if call is None:
        return f"no ElevenLabs conversation on channel {channel}" if channel else \
            f"no ElevenLabs conversation {conversation_id}"
    return call


def describe_calls() -> str:
    """Text for "elevenlabs show calls"."""
    if _runtime is None:
        return "Runtime not started\n"
    with _runtime.calls_lock:
        calls = list(_runtime.calls.values())
    now = time.monotonic()
    lines = [
        f"{'Channel':<40} {'Agent':<16} {'Conversation':<30} {'Secs':>5} {'FramesIn':>8} {'FramesOut':>9} "
        f"{'Underruns':>9} {'Interrupts':>10} {'Latency':>8}"
    ]
    for call in calls:
        latency = call.stats.last_latency_ms
        lines.append(
            f"{call.channel:<40} {call.agent:<16} {call.conversation_id or '-':<30} {now - call.started_at:5.0f} "
            f"{call.frames_in:8d} {call.stats.frames_written:9d} {call.downlink.underruns:9d} "
            f"{call.stats.interruptions:10d} "
            f"{'-' if latency is None else f'{latency:.0f} ms':>8}"
        )
    lines.append(f"{len(calls)} call(s)")
    return "\n".join(lines) + "\n"


def check_agents(agents: list[Mapping[str, str]]) -> str:
    """Text for "elevenlabs check agent(s)" (CLI thread: the GIL is released while it waits,
    at most the longest connection timeout of the agents)."""
    if _runtime is None:
        return "Runtime not started\n"
    wait = max((connection_timeout(settings) for settings in agents), default=0.0) + 2.0
    future = asyncio.run_coroutine_threadsafe(_check_all(agents), _runtime.loop)
    try:
        return future.result(wait)
    except TimeoutError:
        future.cancel()
        return f"No answer within {wait:g} s\n"


async def _check_all(agents: list[Mapping[str, str]]) -> str:
    texts = await asyncio.gather(*(_check_one(settings) for settings in agents))
    return "\n".join(texts)


async def _check_one(settings: Mapping[str, str]) -> str:
    name = settings.get("agent", "?")
    try:
        session, control = session_settings(settings), call_control(settings)
    except SettingsError as exc:
        return agentcheck.render(name, [agentcheck.Check(agentcheck.Mark.FAIL, f"unusable settings: {exc}")])
    timeout = session.connection_timeout_seconds
    Check, Mark = agentcheck.Check, agentcheck.Mark
    if session.provider != "elevenlabs":
        return agentcheck.render(name, [Check(Mark.WARN, f"provider {session.provider}: only the connection "
                                                         "is checked"), await _open_provider_socket(session)])
    if not session.api_key:
        checks = [Check(Mark.WARN, "no key configured: the agent's settings cannot be read (a public agent "
                                   "is only checked by opening a conversation)")]
        why = await _open_public_conversation(session.agent_id, session.signed_url_endpoint, timeout)
        checks.append(Check(Mark.FAIL, f"no conversation without a key: {why} (is authentication on? then "
                                       "configure elevenlabs_api_key)") if why
                      else Check(Mark.OK, "a conversation starts with the public URL (and was closed at once)"))
        return agentcheck.render(name, checks)
    try:
        agent, no_signed_url = await client.read_agent(agent_id=session.agent_id, api_key=session.api_key,
                                                       signed_url_endpoint=session.signed_url_endpoint,
                                                       timeout=timeout)
    except client.ConnectFailed as exc:
        return agentcheck.render(name, [Check(Mark.FAIL, f"the agent could not be read: {exc.reason}")])
    checks = agentcheck.checklist(agent, api_key=True, allowed_overrides=allowed_overrides(settings),
                                  control=control)
    checks.append(Check(Mark.FAIL, f"no signed URL: {no_signed_url}") if no_signed_url
                  else Check(Mark.OK, "a signed URL is issued for the key"))
    return agentcheck.render(name, checks)


async def _open_provider_socket(session: SessionSettings) -> agentcheck.Check:
    """Another provider's agent: open its socket with its key or token, close it at once."""
    agent = session.direct
    assert agent is not None
    url = agent.socket_url
    try:
        conn = await client.open_direct(url=url, headers=agent.headers, timeout=session.connection_timeout_seconds,
                                        attempts=1)
    except client.ConnectFailed as exc:
        return agentcheck.Check(agentcheck.Mark.FAIL, f"no connection to {client.redact_url(url)}: {exc.reason}")
    await conn.close(1000, "check")
    return agentcheck.Check(agentcheck.Mark.OK, f"{client.redact_url(url)} accepts a connection "
                                                "(closed at once)")


async def _open_public_conversation(agent_id: str, endpoint: str, timeout: float) -> str:
    """Start a conversation with no key, up to its metadata, and close it: "" or why not."""
    protocol = ConvaiProtocol()
    protocol.init_data()
    try:
        async with asyncio.timeout(timeout):
            conn = await client.open_connection(agent_id=agent_id, api_key=None, signed_url_endpoint=endpoint,
                                                timeout=timeout, attempts=1)
            try:
                for message in protocol.messages_to_send():
                    conn.send(message)
                while protocol.metadata is None:
                    frame = await conn.recv()
                    if isinstance(frame, str):
                        protocol.receive_text(frame)
            finally:
                await conn.close(1000, "check")
    except client.ConnectFailed as exc:
        return exc.reason
    except client.ConnectionEnded as exc:
        return f"closed {exc.code} {exc.reason}".rstrip()
    except TimeoutError:
        return f"no conversation_initiation_metadata within {timeout:g} s"
    return ""


def metrics() -> str:
    """pyconvai's counters, as the module last received them (publish_metrics)."""
    if _runtime is None:
        return ""
    with _runtime.calls_lock:
        return _runtime.totals.prometheus()


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
        lines.append(f"Event loop:      {type(_runtime.loop).__module__}.{type(_runtime.loop).__name__}")
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
