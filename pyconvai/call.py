"""One call: a Session joined to the module's rings, control ring and wake fd.

The call owns its session, its :class:`~pyconvai.playback.Downlink` and its
:class:`~pyconvai.stats.CallStats`, and applies the session's events to them
in order: protocol -> session -> call -> downlink -> ring -> C.

Threads:

- created on a PBX thread by ``runtime.start_call`` (GIL held, no channel lock);
- the session, its listener and ``pump()`` run on the asyncio thread, which is
  the only consumer of the uplink and clock rings;
- the downlink (queue and ring) is fed on the asyncio thread and kept ahead
  by ``playback_tick()`` on the playback thread; it orders the two itself;
- ``hangup()`` may come from any thread.

Control records (csrc/convai_wire.h) go to the channel thread through the
control ring and a wake on the eventfd; both Python threads send them,
serialised by a lock.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping

import orjson

from .config import SettingsError, call_control, call_limits, session_settings
from .events import (
    AgentAudioReceived,
    CallerAudioSent,
    ClientToolCalled,
    ConversationStarted,
    FormatsNegotiated,
    InterruptionReceived,
    ToolCall,
    Transcript,
)
from .outcome import EndStatus, SessionEnded, end_reason
from .playback import Added, Downlink
from .ring import Ring
from .session import Session
from .stats import CallStats
from .tools import Tools
from .wire import FRAME_MS, Control, control_record, one_line

log = logging.getLogger("pyconvai.call")

#: The runtime pumps a call whose doorbell is armed at least this often (clock records).
SWEPT_EVERY_SECONDS = 1.0
#: The uplink's doorbell rings at most a quarter of the ring's size in: a long chunk of a
#: wide format (1 s of 48 kHz is more than the ring) is gathered in Python.
UPLINK_NOTIFY_FRACTION = 4

#: Longest play-out of queued audio after the agent ended the call, beyond its length.
DRAIN_SLACK_SECONDS = 1.0


def _weakly(method: Callable[..., None]) -> Callable[..., None]:
    """``method``, without keeping its object alive. (Not WeakMethod: its dereference is a
    Python frame and a new bound method, for every event of every call.)"""
    ref, function = weakref.ref(method.__self__), method.__func__

    def call(*args: object, **kwargs: object) -> None:
        obj = ref()
        if obj is not None:
            function(obj, *args, **kwargs)

    return call


class Call:
    """The Python half of one ElevenLabsConversationalAI() (or AIConversation()) call."""

    def __init__(
        self,
        settings: Mapping[str, str],
        rings: Mapping[str, int],
        wake_fd: int,
        *,
        schedule: Callable[[Callable[[], None]], None],
        forget: Callable[["Call"], None],
        manager_event: Callable[[str, str], None] | None = None,
    ) -> None:
        self.channel = settings.get("channel", "?")
        self.uniqueid = settings.get("uniqueid", "")
        self.agent = settings.get("agent", "?")
        self.uplink = Ring.attach(rings["uplink"])
        self.control = Ring.attach(rings["control"])
        self.clock = Ring.attach(rings["clock"])
        # Our own descriptors: the module may close its copies before we are done.
        self.wake_fd = os.dup(wake_fd)
        self.doorbell_fd = os.dup(self.uplink.doorbell) if self.uplink.doorbell >= 0 else -1
        self._uplink_notify_max = self.uplink.capacity // UPLINK_NOTIFY_FRACTION
        self._pumped_at = 0.0
        self._doorbell_armed = False
        self._schedule = schedule  # run a callable on the asyncio thread
        self._forget = forget
        self._manager_event = manager_event
        self._control_lock = threading.Lock()
        self._fd_lock = threading.Lock()  # wake_fd's writes against its close
        self.stats = CallStats()
        self.started_at = time.monotonic()
        self.input_frame_bytes = 0
        self.caller_bytes = 0
        self.ended: SessionEnded | None = None
        self.task: asyncio.Task[None] | None = None  # run(), set by the runtime
        self.drain_deadline = 0.0
        self.finished = False
        self._drained = False
        self._caller_gone = False
        unusable = None
        try:
            self.limits = call_limits(settings)
            control = call_control(settings)
            # Through a weak reference: a call must be freed (with its rings) as soon as it
            # ends, by reference counting, not at the cycle collector's next full pass.
            self.session: Session | None = Session(session_settings(settings), listener=_weakly(self._on_event))
        except SettingsError as exc:
            self.session, unusable = None, str(exc)
        # Weakly too: no Call <-> Downlink cycle to outlive the call.
        self.downlink = Downlink(Ring.attach(rings["downlink"]), _weakly(self._wake),
                                 logger=self.session.log if self.session else log)
        self.tools = None
        if unusable is not None:
            log.error("%s: unusable settings for agent %s: %s", self.channel, self.agent, unusable)
            self._finish(SessionEnded(EndStatus.CONFIG_ERROR, unusable, None))
            return
        self.tools = Tools(control, self.session, self.downlink, _weakly(self.send_control), _weakly(self._event))

    @property
    def conversation_id(self) -> str | None:
        return self.session.conversation_id if self.session else None

    @property
    def frames_in(self) -> int:
        return self.caller_bytes // self.input_frame_bytes if self.input_frame_bytes else 0

    # asyncio thread

    async def run(self) -> None:
        if self.session is None:
            return
        limit = self.limits.max_duration_seconds
        timer = None
        if limit:
            timer = asyncio.get_running_loop().call_later(
                limit, self.session.end_with_goodbye, self.limits.goodbye_message,
                f"maximum call duration ({limit} s) reached")
        ended = await self.session.run()
        if timer is not None:
            timer.cancel()
        if self.tools.transfer_to is not None and ended.status is EndStatus.CALLER_HANGUP and not self._caller_gone:
            ended = SessionEnded(EndStatus.TRANSFER, f"transferred to {self.tools.transfer_to}",
                                 ended.conversation_id, ended.close_code, ended.close_reason)
        if ended.status in (EndStatus.AGENT_ENDED, EndStatus.VOICEMAIL) and not self.finished:
            # The playback thread plays what is queued (bounded), then asks for _finish.
            self.downlink.finish()
            self.drain_deadline = time.monotonic() + self.downlink.queued_ms / 1000 + DRAIN_SLACK_SECONDS
            self.ended = ended
        else:
            self._finish(ended)

    def task_done(self, task: asyncio.Task[None]) -> None:
        """run() is over. If it failed or was cancelled before finishing the call, finish it
        here, so that the channel thread is told and the call is forgotten. (Returning
        without finishing is normal: the agent ended, and the goodbye still plays out.)"""
        if task.cancelled():
            reason = "cancelled"
        elif task.exception() is not None:
            log.error("%s: call task failed: %r", self.channel, task.exception())
            reason = f"internal error: {task.exception()!r}"
        else:
            return
        if not self.finished:
            self._finish(SessionEnded(EndStatus.FAILED, reason, self.conversation_id))

    def sweep(self) -> None:
        """The runtime's periodic visit (every SWEEP_SECONDS): pump a call whose doorbell is
        armed only when nothing rang it for SWEPT_EVERY_SECONDS (its clock records about
        audio can wait: the ring holds seconds of them; keys and answers ring it); any
        other (connecting, or no eventfd) every time."""
        if not self._doorbell_armed or time.monotonic() - self._pumped_at >= SWEPT_EVERY_SECONDS:
            self.pump()

    def pump(self) -> None:
        """Caller audio into the session; the module's clock records into the stats.

        Runs when the uplink's doorbell rings (the framehook has captured the
        rest of the next chunk) and on the runtime's periodic sweep.
        """
        if self.session is not None and not self.finished:
            while True:
                data = self.uplink.pop()
                while data:
                    self.caller_bytes += len(data)
                    self.session.feed_caller_audio(data)
                    data = self.uplink.pop()
                wanted = self.session.caller_bytes_wanted
                if wanted is not None:
                    # A long chunk of a wide format is gathered here, not in the ring.
                    wanted = min(wanted, self._uplink_notify_max)
                self.uplink.notify_at(wanted)
                self._doorbell_armed = wanted is not None and self.doorbell_fd >= 0
                # Reached before the level was set: no ring will come for it.
                if wanted is None or self.uplink.used < wanted:
                    break
        now = self._pumped_at = time.monotonic()
        for kind, position, at in self.stats.records(self.clock.pop()):
            if self.tools is not None:
                self.tools.record(kind, position, at)
        if self.tools is not None and not self.finished:
            self.tools.tick(now)
        self.stats.settle(now)

    def on_doorbell(self) -> None:
        """The uplink's doorbell rang (asyncio thread, reader callback)."""
        try:
            os.eventfd_read(self.doorbell_fd)
        except OSError:  # EAGAIN: a spare wake-up
            pass
        try:
            self.pump()
        except Exception:  # noqa: BLE001 - logged; the sweep keeps the call going
            log.exception("%s: caller audio pump failed", self.channel)

    def _on_event(self, event: object) -> None:
        """Apply the session's events in the order they come (asyncio thread)."""
        match event:
            case AgentAudioReceived(audio=audio, event_id=event_id, received_at=received_at):
                self.tools.agent_audio(received_at)
                added = self.downlink.add(audio, event_id)
                if added is Added.AFTER_SILENCE and audio:
                    self.stats.audio_after_silence(received_at)
                elif not added:
                    self.session.detail("dropped stale audio event_id=%s (%d bytes)", event_id, len(audio))
            case InterruptionReceived(event_id=event_id, received_at=received_at):
                dropped = self.downlink.interrupt(event_id)
                self.session.interrupted(*self.downlink.heard_at_flush)
                self.stats.interrupted(received_at, self.downlink.ring_position)
                self.session.detail("interruption event_id=%s: dropped %d frames", event_id, dropped)
                self._event("ElevenLabsInterruption", EventID=event_id, DroppedFrames=dropped)
            case CallerAudioSent(stream_end=stream_end, sent_at=sent_at):
                self.stats.caller_audio_sent(stream_end, sent_at)
            case ClientToolCalled():
                self.tools.called(event)
            case FormatsNegotiated(input_format=fmt_in, output_format=fmt_out):
                self.downlink.configure(fmt_out)
                self.input_frame_bytes = fmt_in.frame_bytes(FRAME_MS)
                self.send_control(Control.FORMATS, fmt_in.name, fmt_out.name)
            case ConversationStarted(conversation_id=conversation_id):
                self.send_control(Control.STARTED, conversation_id)
                # Once the session has taken the early audio: move what came since and arm
                # the doorbell for the first chunk.
                self._schedule(self.pump)
            case Transcript(final=True, role=role, text=text, event_id=event_id):
                self._event("ElevenLabsTranscript", Role=role, EventID=event_id, Text=text)
            case ToolCall(name=name, tool_call_id=tool_call_id, source=source, parameters=parameters,
                          is_error=is_error):
                self._event("ElevenLabsToolCall", Tool=name, ToolCallID=tool_call_id, Source=source,
                            IsError="yes" if is_error else "no", Parameters=orjson.dumps(parameters).decode())

    # playback thread

    def playback_tick(self) -> None:
        """Keep the downlink ahead; once the agent has ended and it drained, ask to end."""
        if self.finished or self.session is None:
            return
        self.downlink.tick()
        if self.ended is not None and not self._drained:
            if self.downlink.drained or time.monotonic() > self.drain_deadline:
                self._drained = True
                self._schedule(lambda: self._finish(self.ended))

    # any thread

    def hangup(self, reason: str) -> None:
        """The caller has gone (or Asterisk stops, or the channel was redirected): close the
        socket with 1000."""
        self._caller_gone = True
        if self.session is not None:
            self.session.hangup(reason)
        if self.ended is not None:
            self._schedule(lambda: self._finish(self.ended))

    # module threads: the channel thread (dialplan tools), AMI threads

    def tool_result(self, tool_call_id: str, result: str, is_error: bool) -> None:
        """A dialplan tool's Gosub returned (channel thread, GIL held, no channel lock)."""
        tools = self.tools
        if tools is not None:
            self._schedule(lambda: tools.dialplan_result(tool_call_id, result, is_error))

    def ami_tool_result(self, tool_call_id: str, result: str, is_error: bool) -> str:
        """AMI ElevenLabsToolResult; "" when a tool call was waiting for it, else why not."""
        tools = self.tools
        claimed = tools.ami_claim(tool_call_id) if tools is not None else None
        if claimed is None:
            return f"no client tool call {tool_call_id} is waiting for an answer on {self.channel}"
        self._schedule(lambda: tools.ami_result(claimed, result, is_error))
        return ""

    def send_text(self, kind: str, text: str) -> str:
        """Text from AMI or the CLI for the agent, sent on the asyncio thread; "" if handed
        on, else why not. The text goes into the JSON intact (no one_line: it never reaches
        Asterisk)."""
        session = self.session
        if session is None or self.finished or session.conversation_id is None:
            return f"the conversation on {self.channel} has not started or has ended"
        send = session.send_contextual_update if kind == "contextual_update" else session.send_user_message
        self._schedule(lambda: send(text))
        return ""

    def send_control(self, kind: Control, *parts: str) -> None:
        record = control_record(kind, *parts)
        with self._control_lock:
            if not self.control.push(record):
                log.error("%s: control ring full; record %d lost", self.channel, kind)
                return
            self._wake()

    def _wake(self) -> None:
        """Wake the channel thread (control records, or audio to start playing).

        Under ``_fd_lock``: the playback thread may get here while the asyncio
        thread finishes the call, and a closed descriptor's number may already
        belong to another socket."""
        with self._fd_lock:
            if self.wake_fd < 0:
                return
            try:
                os.write(self.wake_fd, (1).to_bytes(8, sys.byteorder))
            except OSError as exc:  # EAGAIN: the counter is saturated, the module is awake anyway
                log.debug("%s: wake failed: %s", self.channel, exc)

    def _event(self, name: str, **headers: object) -> None:
        if self._manager_event is None:
            return
        fields = {"Channel": self.channel, "Uniqueid": self.uniqueid, "Agent": self.agent,
                  "ConversationID": self.conversation_id or "", **headers}
        self._manager_event(name, "".join(f"{k}: {one_line(v)}\r\n" for k, v in fields.items()))

    # asyncio thread (or the constructor)

    def _finish(self, ended: SessionEnded) -> None:
        """Tell the channel thread how the call ended, publish the figures; once."""
        with self._control_lock:
            if self.finished:
                return
            self.finished = True
        if self.tools is not None:
            self.tools.cancel()
        transfer = self.tools.transfer_to if self.tools is not None and ended.status is EndStatus.TRANSFER else ""
        self.send_control(Control.END, str(ended.status), ended.conversation_id or "", end_reason(ended),
                          transfer or "")
        self.stats.records(self.clock.pop())
        self.stats.settle(float("inf"))
        self._event(
            "ElevenLabsConversationStats",
            Status=ended.status,
            FramesIn=self.frames_in,
            CallerAudioDroppedBytes=self.uplink.counters["overflowed"],
            Interruptions=self.stats.interruptions,
            Underruns=self.downlink.underruns,
            AgentAudioDroppedFrames=self.downlink.overflow_frames,
            **self.stats.ami_headers(),
        )
        self._forget(self)  # the doorbell's reader goes first
        with self._fd_lock:
            for fd in (self.wake_fd, self.doorbell_fd):
                if fd >= 0:
                    os.close(fd)
            self.wake_fd = self.doorbell_fd = -1
