"""One conversation with an agent: connect, stream caller audio, hand agent audio on, end cleanly.

Asyncio orchestration only: the protocol is the agent's provider core
(:mod:`pyconvai.providers`; ElevenLabs' is :mod:`pyconvai.protocol`, sans-I/O),
the socket :mod:`pyconvai.client`, caller chunking :mod:`pyconvai.chunker`,
how a close maps to a status :mod:`pyconvai.outcome`. What happens reaches the
listener as :mod:`pyconvai.events`, in order; agent audio and interruptions
among them, which the call applies to its downlink.

Threads: a :class:`Session` lives on the asyncio thread. :meth:`Session.run`,
:meth:`Session.feed_caller_audio` and the listener run there;
:meth:`Session.hangup` may be called from any thread.

Contract of :meth:`Session.run`: it never raises for network or server
conditions and never hangs. Connecting is bounded by
``max_connection_attempts × connection_timeout_seconds`` plus backoff, the wait
for ``conversation_initiation_metadata`` by ``connection_timeout_seconds``, a
dead socket by the WebSocket keepalive (~40 s) and closing by
``client.CLOSE_TIMEOUT``. It returns a :class:`SessionEnded`:

* ``AGENT_ENDED``: the server closed with 1000 (end_call, max duration...).
  The agent audio already emitted is for the listener to play out.
* ``CALLER_HANGUP``: :meth:`hangup` was called; the socket was closed with 1000.
* ``CONFIG_ERROR``: close 1008 (bad override, unknown agent, missing dynamic
  variable...) or an unusable audio format. Do not retry.
* ``FAILED``: signed URL or connect failure, close 1002/1011/other, or the
  connection dropped.

Logging: ``pyconvai.session``. Lifecycle at INFO, failures at WARNING/ERROR,
nothing per frame above DEBUG. Per-event detail (VAD scores, interruptions,
tools, ignored messages) is logged at DEBUG only when ``settings.debug``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from . import client, providers
from .chunker import CallerChunker
from .client import ConnectFailed, Connection, ConnectionEnded
from .config import SessionSettings
from .events import (
    AgentAudioReceived,
    AgentCorrection,
    CallerAudioSent,
    ClientToolCalled,
    ConversationStarted,
    FormatsNegotiated,
    InterruptionReceived,
    ToolCall,
    Transcript,
)
from .outcome import ClosedBy, EndStatus, SessionEnded, closed
from .protocol import (
    AgentAudio,
    AgentResponse,
    AgentResponseCorrection,
    AgentToolRequest,
    AgentToolResponse,
    AudioFormat,
    ClientToolCall,
    Interruption,
    Metadata,
    Ping,
    ProtocolError,
    ServerError,
    TentativeUserTranscript,
    Unknown,
    UserTranscript,
    VadScore,
)

__all__ = ["Session", "SessionCounters", "SessionState"]

log = logging.getLogger("pyconvai.session")

_MAX_AUDIO_BACKLOG_MS = 2000  # caller audio waiting for a slow socket before dropping
_MAX_CONTROL_BACKLOG = 64  # messages waiting for the socket before pongs are shed
_PONG_PREFIX = '{"type":"pong"'
_PROTOCOL_WARNINGS = 10  # protocol errors logged at WARNING, the rest at DEBUG
_END_LOG_LEVEL = {"FAILED": logging.WARNING, "CONFIG_ERROR": logging.ERROR}
GOODBYE_TIMEOUT = 15.0  # longest wait for the agent's goodbye before closing anyway
GOODBYE_QUIET = 1.0  # the goodbye is over when no agent audio came for this long


class SessionState(enum.Enum):
    CONNECTING = "connecting"  # until conversation_initiation_metadata
    ACTIVE = "active"
    CLOSING = "closing"
    ENDED = "ended"


@dataclass
class SessionCounters:
    """Per-call statistics, updated on the asyncio thread."""

    audio_chunks_in: int = 0
    audio_bytes_in: int = 0
    caller_bytes_out: int = 0
    caller_bytes_dropped: int = 0
    user_chunks_sent: int = 0
    pings: int = 0
    pongs_shed: int = 0
    last_ping_ms: int | None = None
    protocol_errors: int = 0
    server_errors: int = 0
    connect_seconds: float | None = None
    first_audio_seconds: float | None = None


class _Log(logging.LoggerAdapter):
    """Prefixes every line with the agent name and, once known, the conversation id.

    Records carry ``convai_debug`` (this call's debug setting) so that a host
    handler can pass DEBUG lines for the calls that asked for them.
    """

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        session: Session | None = self.extra["session"]()  # type: ignore[index]
        if session is None:
            return msg, kwargs
        who = session.settings.agent_name or session.settings.agent_id
        if session.conversation_id:
            who = f"{who} {session.conversation_id}"
        kwargs.setdefault("extra", {})["convai_debug"] = session.settings.debug
        return f"[{who}] {msg}", kwargs


class Session:
    """One conversation with an ElevenLabs agent. See the module docstring for the contract."""

    def __init__(
        self, settings: SessionSettings, listener: Callable[[object], None] | None = None
    ) -> None:
        self.settings = settings
        self.counters = SessionCounters()
        self.conversation_id: str | None = None
        self.input_format: AudioFormat | None = None
        self.output_format: AudioFormat | None = None
        self.end_call_requested = False
        self.voicemail_detected = False
        self._listener = listener
        self._log = _Log(log, {"session": weakref.ref(self)})  # no cycle: freed when the call ends
        self._protocol = providers.new_protocol(settings)
        self._state = SessionState.CONNECTING
        self._handoff = threading.Lock()  # orders hangup() against run() picking its loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._hangup_reason: str | None = None
        self._run_called = False
        self._started = 0.0
        self._conn: Connection | None = None
        self._connect_task: asyncio.Task[Connection] | None = None
        self._close_task: asyncio.Task[None] | None = None
        self._outcome: asyncio.Future[SessionEnded] | None = None  # set while receiving
        self._control_out: deque[str] = deque()
        self._audio_out: deque[tuple[str, int]] = deque()  # (message, caller stream end)
        self._max_audio_backlog = max(4, _MAX_AUDIO_BACKLOG_MS // settings.buffer_ms)
        self._chunker = CallerChunker(settings.buffer_ms)
        self._server_error: ServerError | None = None
        self._goodbye_reason: str | None = None
        self._goodbye_task: asyncio.Task[None] | None = None
        self._goodbye_closing = False
        self._last_audio_at = 0.0

    @property
    def state(self) -> SessionState:
        return self._state

    # --- API ----------------------------------------------------------------------

    async def run(self) -> SessionEnded:
        """Hold the whole conversation; return how it ended. Call once."""
        if self._run_called:
            raise RuntimeError("Session.run() may only be called once")
        self._run_called = True
        self._started = time.monotonic()
        with self._handoff:
            self._loop = asyncio.get_running_loop()
        ended = self._ending(EndStatus.FAILED, "session cancelled")
        try:
            ended = await self._converse()
        except Exception as exc:  # a bug here must still end the call cleanly
            self._log.exception("session failed")
            ended = self._ending(EndStatus.FAILED, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            await self._teardown()
            self._state = SessionState.ENDED
            self._log.log(
                _END_LOG_LEVEL.get(ended.status, logging.INFO),
                "conversation ended: %s (%s)",
                ended.status,
                ended.reason,
            )
            self._emit(ended)
        return ended

    def hangup(self, reason: str = "caller hangup") -> None:
        """End the conversation: close the socket with 1000. Any thread; idempotent."""
        with self._handoff:
            loop = self._loop
            if loop is None:  # run() not started yet: it will return at once
                self._hangup_reason = self._hangup_reason or reason
                return
        try:
            loop.call_soon_threadsafe(self._on_hangup, reason)
        except RuntimeError:  # loop closed: the session is long over
            pass

    def feed_caller_audio(self, data: bytes) -> None:
        """Queue caller audio (already in the agent's input format). Asyncio thread only.

        Sent in chunks of ``buffer_ms``. Before the metadata at most the last
        ~300 ms is kept; after the session stops being active audio is ignored.
        """
        if self._state in (SessionState.CONNECTING, SessionState.ACTIVE):
            self._send_caller_chunks(self._chunker.feed(data))

    @property
    def caller_bytes_wanted(self) -> int | None:
        """Caller audio bytes that complete the next chunk; None while no chunk is built."""
        return self._chunker.wanted if self._state is SessionState.ACTIVE else None

    def end_with_goodbye(self, message: str, reason: str, timeout: float = GOODBYE_TIMEOUT) -> None:
        """Ask the agent to say goodbye (a ``user_message``), then close with 1000. Asyncio thread.

        The socket closes once the agent's answer has stopped arriving for
        ``GOODBYE_QUIET`` seconds, or after ``timeout``; run() then returns
        AGENT_ENDED with ``reason``; the goodbye was emitted like any agent audio.
        """
        if self._state is not SessionState.ACTIVE or self._goodbye_reason is not None:
            return
        self._goodbye_reason = reason
        self._log.info("%s: asking the agent to say goodbye", reason)
        self._protocol.user_message(message)
        self._queue_control()
        self._goodbye_task = asyncio.ensure_future(self._close_after_goodbye(time.monotonic(), timeout))

    async def _close_after_goodbye(self, asked_at: float, timeout: float) -> None:
        deadline = asked_at + timeout
        while time.monotonic() < deadline:
            answered = self._last_audio_at > asked_at
            if answered and time.monotonic() - self._last_audio_at >= GOODBYE_QUIET:
                break
            await asyncio.sleep(0.1)
        if self._state is SessionState.ACTIVE and self._conn is not None:
            self._goodbye_closing = True
            self._begin_close(self._goodbye_reason or "goodbye")

    # --- conversation -------------------------------------------------------------

    async def _converse(self) -> SessionEnded:
        if self._hangup_reason is not None:
            return self._ending(EndStatus.CALLER_HANGUP, self._hangup_reason)
        self._connect_task = asyncio.ensure_future(self._connect())
        await asyncio.wait({self._connect_task})
        if self._connect_task.cancelled():  # only _on_hangup cancels it
            return self._ending(EndStatus.CALLER_HANGUP, self._hangup_reason or "caller hangup")
        exc = self._connect_task.exception()
        if isinstance(exc, ConnectFailed):
            return self._ending(EndStatus.FAILED, exc.reason)
        if exc is not None:
            raise exc
        self._conn = self._connect_task.result()
        self.counters.connect_seconds = time.monotonic() - self._started
        self._log.debug("websocket open after %.3f s", self.counters.connect_seconds)
        if self._hangup_reason is not None:
            self._begin_close(self._hangup_reason)
        else:
            self._conn.on_writable = self._flush
            self._protocol.begin()
            self._queue_control()
        return await self._receive_loop(self._conn)

    def _connect(self) -> Awaitable[Connection]:
        """Open the agent's socket: ElevenLabs through a signed URL, the others directly."""
        s = self.settings
        agent = s.direct
        if agent is None:
            self._log.info("connecting to agent %s (%s URL)", s.agent_id, "signed" if s.api_key else "public")
            return client.open_connection(agent_id=s.agent_id, api_key=s.api_key,
                                          signed_url_endpoint=s.signed_url_endpoint,
                                          timeout=s.connection_timeout_seconds,
                                          attempts=s.max_connection_attempts, ssl_context=s.ssl_context)
        self._log.info("connecting to %s agent at %s", s.provider, client.redact_url(agent.socket_url))
        return client.open_direct(url=agent.socket_url, headers=agent.headers, timeout=s.connection_timeout_seconds,
                                  attempts=s.max_connection_attempts, ssl_context=s.ssl_context)

    async def _receive_loop(self, conn: Connection) -> SessionEnded:
        """Handle each message as the socket reads it (no task switch per message) until one
        ends the conversation, the start message is late, or the socket closes."""
        loop = asyncio.get_running_loop()
        self._outcome = loop.create_future()
        timeout = self.settings.connection_timeout_seconds
        late = loop.call_later(timeout, self._no_start, timeout)
        conn.deliver_to(self._receive)
        try:
            await asyncio.wait({self._outcome, conn.lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            late.cancel()
            conn.deliver_to(None)
        if self._outcome.done():
            return self._outcome.result()  # or raises what handling a message raised
        return self._closed(conn.ended())

    def _receive(self, message: str | bytes) -> None:
        """One message from the socket (asyncio thread, the socket's read callback)."""
        if self._outcome.done():
            return
        try:
            if isinstance(message, str):
                self._protocol.receive_text(message)
            else:
                self._protocol.receive_bytes(message)
            self._queue_control()
            for event in self._protocol.events_received():
                ended = self._handle(event)
                if ended is not None:
                    self._outcome.set_result(ended)
                    return
        except Exception as exc:  # a bug: run() ends the call FAILED with it
            self._outcome.set_exception(exc)

    def _no_start(self, timeout: float) -> None:
        if self._state is SessionState.CONNECTING and not self._outcome.done():
            started = " or ".join(sorted(self._protocol.START_TYPES))
            self._outcome.set_result(self._ending(EndStatus.FAILED, f"no {started} within {timeout:g} s"))

    def _handle(self, event: object) -> SessionEnded | None:
        """Apply one protocol event; a SessionEnded means: stop now."""
        match event:
            case AgentAudio(audio=audio, event_id=event_id):
                self._on_agent_audio(audio, event_id)
            case Ping(ping_ms=ping_ms):
                self.counters.pings += 1
                if ping_ms is not None:
                    self.counters.last_ping_ms = ping_ms
            case Metadata():
                self._on_metadata(event)
            case VadScore(score=score):
                self.detail("vad score %.2f", score)
                self._emit(event)
            case Interruption(event_id=event_id):
                self._emit(InterruptionReceived(event_id, time.monotonic()))
            case AgentResponse(text=text, event_id=event_id):
                self._emit(Transcript("agent", text, True, event_id))
            case AgentResponseCorrection(original=original, corrected=corrected, event_id=eid):
                self._emit(AgentCorrection(original, corrected, eid))
            case UserTranscript(text=text, event_id=event_id):
                self._emit(Transcript("user", text, True, event_id))
            case TentativeUserTranscript(text=text, event_id=event_id):
                self._emit(Transcript("user", text, False, event_id))
            case ClientToolCall():
                self._on_client_tool_call(event)
            case AgentToolRequest(tool_name=name, tool_type=tool_type):
                self.detail("agent tool request %s (%s)", name, tool_type)
            case AgentToolResponse():
                self._on_agent_tool_response(event)
            case ServerError(code=code, error_type=error_type, message=message, fatal=fatal):
                self._server_error = event
                self.counters.server_errors += 1
                self._log.warning("server error %s (code %s): %s", error_type, code, message)
                if fatal:
                    self._begin_close("fatal server error")
                    return self._ending(EndStatus.FAILED, f"fatal server error: {error_type}: {message}")
            case Unknown(type=kind):
                self.detail("ignoring message type %s", kind)
            case ProtocolError():
                return self._on_protocol_error(event)
        return None

    def _on_metadata(self, meta: Metadata) -> None:
        self.conversation_id = meta.conversation_id
        self.input_format = meta.input_format
        self.output_format = meta.output_format
        if self._state is SessionState.CONNECTING:
            self._state = SessionState.ACTIVE
        self._log.info(
            "conversation started: input %s, output %s, connect %.2f s",
            meta.input_format,
            meta.output_format,
            self.counters.connect_seconds or 0.0,
        )
        self._emit(FormatsNegotiated(meta.input_format, meta.output_format))
        self._emit(ConversationStarted(meta.conversation_id))
        self._send_caller_chunks(self._chunker.start(meta.input_format))

    def _on_agent_audio(self, audio: bytes, event_id: int | None) -> None:
        self._last_audio_at = time.monotonic()
        self.counters.audio_chunks_in += 1
        self.counters.audio_bytes_in += len(audio)
        if self.counters.first_audio_seconds is None:
            self.counters.first_audio_seconds = time.monotonic() - self._started
        self._emit(AgentAudioReceived(audio, event_id, self._last_audio_at))

    def _on_client_tool_call(self, call: ClientToolCall) -> None:
        self.detail("client tool call %s (%s)", call.tool_name, call.tool_call_id)
        self._emit(ClientToolCalled(call.tool_name, call.tool_call_id, call.parameters))

    def answer_client_tool(self, tool_call_id: str, result: str, is_error: bool) -> None:
        """Send a client tool's result (asyncio thread). The agent's turn waits for it."""
        if self._state is SessionState.ACTIVE:
            self._protocol.client_tool_result(tool_call_id, result, is_error)
            self._queue_control()

    def send_user_message(self, text: str) -> None:
        """Tell the agent something as if the caller had said it (asyncio thread)."""
        if self._state is SessionState.ACTIVE:
            self._protocol.user_message(text)
            self._queue_control()

    def interrupted(self, event_id: int | None, heard_bytes: int) -> None:
        """The downlink was flushed while audio ``event_id`` played, ``heard_bytes`` of it
        written to the caller (asyncio thread): the provider may need to know (OpenAI's
        truncate)."""
        if self._state is SessionState.ACTIVE:
            self._protocol.interrupted(event_id, heard_bytes)
            self._queue_control()

    def send_contextual_update(self, text: str) -> None:
        """Give the agent context without asking for a reply (asyncio thread)."""
        if self._state is SessionState.ACTIVE:
            self._protocol.contextual_update(text)
            self._queue_control()

    def _on_agent_tool_response(self, response: AgentToolResponse) -> None:
        if response.is_end_call:
            self.end_call_requested = True
            self._log.info("agent is ending the call (end_call)")
        elif response.tool_name == "voicemail_detection":
            self.voicemail_detected = True
            self._log.info("the agent reached a voicemail (voicemail_detection)")
        else:
            self.detail("agent tool %s done (error=%s)", response.tool_name, response.is_error)
        self._emit(
            ToolCall(response.tool_name, response.tool_call_id, "agent", {}, response.is_error)
        )

    def _on_protocol_error(self, error: ProtocolError) -> SessionEnded | None:
        self.counters.protocol_errors = self._protocol.errors
        level = logging.WARNING if self._protocol.errors <= _PROTOCOL_WARNINGS else logging.DEBUG
        self._log.log(level, "protocol error: %s (%r)", error.description, error.raw[:80])
        if (
            self._state is SessionState.CONNECTING
            and error.message_type in self._protocol.START_TYPES
        ):
            return self._ending(EndStatus.CONFIG_ERROR, f"unusable {error.description}")
        return None

    def _closed(self, ended: ConnectionEnded) -> SessionEnded:
        """The socket closed: how the conversation ended follows from what we knew."""
        self._log.debug("websocket closed: code %s reason %r", ended.code, ended.reason)
        err = self._server_error
        return closed(ClosedBy(
            code=ended.code,
            reason=ended.reason,
            conversation_id=self.conversation_id,
            hangup=self._hangup_reason,
            goodbye=(self._goodbye_reason or "goodbye") if self._goodbye_closing else None,
            end_call_requested=self.end_call_requested,
            voicemail=self.voicemail_detected,
            server_error=(err.error_type, err.message) if err is not None else None,
        ))

    # --- sending ------------------------------------------------------------------

    def _queue_control(self) -> None:
        """Move protocol output (init, pongs, tool results) to the priority lane.

        A ping flood into a stalled socket must not grow it without bound: past
        ``_MAX_CONTROL_BACKLOG`` messages the oldest pongs go (a late pong
        answers nothing anyway); other messages are always kept.
        """
        messages = self._protocol.messages_to_send()
        if not messages:
            return
        self._control_out.extend(messages)
        if len(self._control_out) > _MAX_CONTROL_BACKLOG:
            excess = len(self._control_out) - _MAX_CONTROL_BACKLOG
            kept = deque()
            for message in self._control_out:
                if excess and message.startswith(_PONG_PREFIX):
                    excess -= 1
                    self.counters.pongs_shed += 1
                else:
                    kept.append(message)
            self._control_out = kept
        self._flush()

    def _send_caller_chunks(self, chunks: list[tuple[bytes, int]]) -> None:
        self.counters.caller_bytes_dropped += self._chunker.dropped
        self._chunker.dropped = 0
        for chunk, stream_end in chunks:
            self._protocol.user_audio(chunk)
            self.counters.user_chunks_sent += 1
            self.counters.caller_bytes_out += len(chunk)
            for message in self._protocol.messages_to_send():
                self._audio_out.append((message, stream_end))
        if not self._audio_out:
            return
        while len(self._audio_out) > self._max_audio_backlog:  # socket stalled: shed oldest
            self._audio_out.popleft()
            self.counters.caller_bytes_dropped += self._chunker.chunk_bytes
        self._flush()

    def _flush(self) -> None:
        """Write what is queued, control messages first, caller audio only while ACTIVE.

        Synchronous: each message goes to the transport at once. While the
        socket's buffer is full (``writable`` False) the rest waits here, shed
        as the queues' bounds say, until the connection calls again."""
        conn = self._conn
        if conn is None or self._state is SessionState.CLOSING or self._state is SessionState.ENDED:
            return
        while conn.writable and (self._control_out or self._audio_out):
            stream_end = None
            if self._control_out:
                message = self._control_out.popleft()
            elif self._state is SessionState.ACTIVE:
                message, stream_end = self._audio_out.popleft()
            else:
                break  # caller audio waits for the metadata
            try:
                conn.send(message)
            except ConnectionEnded:
                self._control_out.clear()
                self._audio_out.clear()
                return
            if stream_end is not None:
                self._emit(CallerAudioSent(stream_end, time.monotonic()))

    # --- ending -------------------------------------------------------------------

    def _on_hangup(self, reason: str) -> None:
        """Asyncio thread: the hangup() request arrives here."""
        if self._state is SessionState.ENDED or self._hangup_reason is not None:
            return
        self._hangup_reason = reason
        self._log.info("hangup requested: %s", reason)
        if self._conn is not None:
            self._begin_close(reason)
        elif self._connect_task is not None:
            self._connect_task.cancel()

    def _begin_close(self, reason: str) -> None:
        assert self._conn is not None
        self._state = SessionState.CLOSING
        self._audio_out.clear()
        self._close_task = asyncio.ensure_future(self._conn.close(1000, reason))

    async def _teardown(self) -> None:
        """Cancel what is pending and close the socket; every wait bounded."""
        self._state = SessionState.CLOSING
        bound = client.CLOSE_TIMEOUT + 1.0
        pending = [t for t in (self._connect_task, self._goodbye_task) if t is not None and not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=bound)
        conn = self._conn
        task = self._connect_task
        if conn is None and task is not None and task.done() and not task.cancelled():
            conn = task.result() if task.exception() is None else None
        if self._close_task is not None:
            await asyncio.wait({self._close_task}, timeout=bound)
        if conn is not None:
            conn.on_writable = None  # the connection <-> session cycle
            try:
                await asyncio.wait_for(conn.close(1000, "conversation ended"), bound)
            except (TimeoutError, OSError) as exc:
                self._log.debug("close failed: %r", exc)
        # A finished task keeps its exception, whose traceback holds a frame holding this
        # session: drop them so that the session is freed when the call ends, not by the
        # cycle collector.
        self._connect_task = self._goodbye_task = self._close_task = None

    # --- helpers ------------------------------------------------------------------

    def _ending(
        self,
        status: EndStatus,
        reason: str,
        close_code: int | None = None,
        close_reason: str | None = None,
    ) -> SessionEnded:
        return SessionEnded(status, reason, self.conversation_id, close_code, close_reason)

    def _emit(self, event: object) -> None:
        if self._listener is None:
            return
        try:
            self._listener(event)
        except Exception:
            self._log.exception("listener failed on %s", type(event).__name__)

    @property
    def log(self) -> logging.LoggerAdapter:
        """This conversation's logger: lines carry the agent and conversation id."""
        return self._log

    def detail(self, msg: str, *args: object) -> None:
        """Per-event detail, logged (at DEBUG) only when this call's debug is on."""
        if self.settings.debug:
            self._log.debug(msg, *args)
