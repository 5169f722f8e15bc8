"""One call: a Session joined to the module's rings, control ring and wake fd.

Threads:

- created on a PBX thread by ``runtime.start_call`` (GIL held, no channel lock);
- the session, its listener and ``pump()`` run on the asyncio thread, which is
  the only consumer of the uplink and clock rings;
- the downlink ring is produced only inside ``PlaybackQueue.transfer()``, by
  ``_top_up()`` from ``playback_tick()`` on the playback thread and on the
  asyncio thread as agent audio arrives; the queue's lock, which the
  interruption flush (``ring.discard``) also holds, keeps them one producer;
  whichever fills an empty ring wakes the channel thread, so that playback
  after silence starts at once, not at its next tick;
- ``hangup()`` may come from any thread.

Control records go to the channel thread through the control ring and a wake
on the eventfd; both Python threads send them, serialised by a lock.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping

import orjson

from .config import SettingsError, call_limits, session_settings
from .ring import Ring
from .session import (
    AgentAudioQueued,
    CallerAudioSent,
    ConversationStarted,
    EndStatus,
    FormatsNegotiated,
    InterruptionHappened,
    Session,
    SessionEnded,
    ToolCall,
    Transcript,
)
from .stats import CallStats

log = logging.getLogger("pyconvai.call")

FRAME_MS = 20
#: Frames kept in the downlink ring ahead of the channel thread: 500 ms, so that the
#: channel thread never runs dry while Python waits for the GIL or a CPU under load.
#: A deep lead costs nothing at a barge-in: the flush discards the ring too.
FRAMES_AHEAD = 25
#: Longest play-out of queued audio after the agent ended the call, beyond its length.
DRAIN_SLACK_SECONDS = 1.0

# Control records, Python -> channel thread: mirrors enum convai_control in csrc/embed.h.
CONTROL_FORMATS = 1
CONTROL_END = 2
CONTROL_STARTED = 3
CONTROL_MAX_PAYLOAD = 8192


def end_reason(ended: SessionEnded) -> str:
    """ELEVENLABS_END_REASON: the reason, with the close code and its reason when there was one."""
    if ended.close_code is None or str(ended.close_code) in ended.reason:
        return ended.reason
    detail = f"close {ended.close_code}"
    if ended.close_reason and ended.close_reason not in ended.reason:
        detail += f" {ended.close_reason}"
    return f"{ended.reason} ({detail})"


def _weakly(method: Callable[[object], None]) -> Callable[[object], None]:
    """``method``, without keeping its object alive."""
    ref = weakref.WeakMethod(method)

    def call(event: object) -> None:
        bound = ref()
        if bound is not None:
            bound(event)

    return call


def ami_value(text: object) -> str:
    """One AMI header value: a single line."""
    return " ".join(str(text).split())


class Call:
    """The Python half of one ElevenLabsConversationalAI() call."""

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
        self.downlink = Ring.attach(rings["downlink"])
        self.control = Ring.attach(rings["control"])
        self.clock = Ring.attach(rings["clock"])
        # Our own descriptors: the module may close its copies before we are done.
        self.wake_fd = os.dup(wake_fd)
        self.doorbell_fd = os.dup(self.uplink.doorbell) if self.uplink.doorbell >= 0 else -1
        self._schedule = schedule  # run a callable on the asyncio thread
        self._forget = forget
        self._manager_event = manager_event
        self._control_lock = threading.Lock()
        self._fd_lock = threading.Lock()  # wake_fd's writes against its close
        self.stats = CallStats()
        self.started_at = time.monotonic()
        self.frame_bytes = 0
        self.input_frame_bytes = 0
        self.caller_bytes = 0
        self.underruns = 0
        self.interruptions = 0
        self.ended: SessionEnded | None = None
        self.task: asyncio.Task[None] | None = None  # run(), set by the runtime
        self.drain_deadline = 0.0
        self.finished = False
        self._playing_since_flush: int | None = None  # the flush count while the ring was fed
        self._drained = False
        try:
            self.limits = call_limits(settings)
            # Through a weak reference: a call must be freed (with its rings) as soon as it
            # ends, by reference counting, not at the cycle collector's next full pass.
            self.session: Session | None = Session(session_settings(settings), listener=_weakly(self._on_event))
        except SettingsError as exc:
            self.session = None
            log.error("%s: unusable settings for agent %s: %s", self.channel, self.agent, exc)
            self._finish(SessionEnded(EndStatus.CONFIG_ERROR, str(exc), None))
            return
        self.session.playback.set_flush_hook(self.downlink.discard)
        self.session.playback.set_consumer_empty(lambda downlink=self.downlink: downlink.used == 0)

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
        if ended.status is EndStatus.AGENT_ENDED and not self.finished:
            # The playback thread plays what is queued (bounded), then asks for _finish.
            queued_ms = self.session.playback.queued_ms + FRAMES_AHEAD * FRAME_MS
            self.drain_deadline = time.monotonic() + queued_ms / 1000 + DRAIN_SLACK_SECONDS
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
                self.uplink.notify_at(wanted)
                # Reached before the level was set: no ring will come for it.
                if wanted is None or self.uplink.used < wanted:
                    break
        self.stats.records(self.clock.pop())
        self.stats.settle(time.monotonic())

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
        match event:
            case AgentAudioQueued(received_at=received_at, after_silence=after_silence):
                if after_silence:
                    self.stats.audio_after_silence(received_at)
                self._top_up()
            case CallerAudioSent(stream_end=stream_end, sent_at=sent_at):
                self.stats.caller_audio_sent(stream_end, sent_at)
            case FormatsNegotiated(input_format=fmt_in, output_format=fmt_out):
                self.frame_bytes = fmt_out.frame_bytes(FRAME_MS)
                self.input_frame_bytes = fmt_in.frame_bytes(FRAME_MS)
                self.send_control(CONTROL_FORMATS, fmt_in.name, fmt_out.name)
            case ConversationStarted(conversation_id=conversation_id):
                self.send_control(CONTROL_STARTED, conversation_id)
                # Once the session has taken the early audio: move what came since and arm
                # the doorbell for the first chunk.
                self._schedule(self.pump)
            case InterruptionHappened(event_id=event_id, dropped_frames=dropped):
                self.interruptions += 1
                self.stats.interrupted(time.monotonic(), self.downlink.counters["pushed"])
                self._event("ElevenLabsInterruption", EventID=event_id, DroppedFrames=dropped)
            case Transcript(final=True, role=role, text=text, event_id=event_id):
                self._event("ElevenLabsTranscript", Role=role, EventID=event_id, Text=text)
            case ToolCall(name=name, tool_call_id=tool_call_id, source=source, parameters=parameters,
                          is_error=is_error):
                self._event("ElevenLabsToolCall", Tool=name, ToolCallID=tool_call_id, Source=source,
                            IsError="yes" if is_error else "no", Parameters=orjson.dumps(parameters).decode())

    # asyncio or playback thread

    def _top_up(self) -> tuple[int, int]:
        """Fill the downlink up to FRAMES_AHEAD frames; returns (frames there before, moved).

        An empty ring may mean a channel thread that stopped at its last tick:
        wake it, and it writes the first frame at once. A ring read as empty
        can only have filled since through the other producer, which then
        woke it too; a spare wake costs one loop turn.
        """
        if not self.frame_bytes or self.finished:
            return 0, 0
        ahead = self.downlink.used // self.frame_bytes
        if ahead >= FRAMES_AHEAD:
            return ahead, 0
        moved = self.session.playback.transfer(self.downlink.push, FRAMES_AHEAD - ahead)
        if moved and not ahead:
            self._wake()
        return ahead, moved

    # playback thread

    def playback_tick(self) -> None:
        """Keep the downlink FRAMES_AHEAD frames ahead; count underruns; ask to end once drained."""
        if self.finished or self.session is None or not self.frame_bytes:
            return
        playback = self.session.playback
        flushes = playback.flushes
        ahead, moved = self._top_up()
        # Dry while audio waited (an empty ring takes whatever was queued), and fed since
        # the last flush: an underrun. After a flush the ring is empty by design.
        if ahead == 0 and moved and self._playing_since_flush == flushes:
            self.underruns += 1
        self._playing_since_flush = flushes if ahead or moved else None
        if self.ended is not None and not self._drained:
            empty = playback.queued_frames == 0 and self.downlink.used < self.frame_bytes
            if empty or time.monotonic() > self.drain_deadline:
                self._drained = True
                self._schedule(lambda: self._finish(self.ended))

    # any thread

    def hangup(self, reason: str) -> None:
        """The caller has gone (or Asterisk stops): close the socket with 1000."""
        if self.session is not None:
            self.session.hangup(reason)
        if self.ended is not None:
            self._schedule(lambda: self._finish(self.ended))

    def send_control(self, kind: int, *parts: str) -> None:
        payload = "\0".join(parts).encode("utf-8", "replace")[:CONTROL_MAX_PAYLOAD]
        record = struct.pack("<BBH", kind, 0, len(payload)) + payload
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
        self._manager_event(name, "".join(f"{k}: {ami_value(v)}\r\n" for k, v in fields.items()))

    # asyncio thread (or the constructor)

    def _finish(self, ended: SessionEnded) -> None:
        """Tell the channel thread how the call ended, publish the figures; once."""
        with self._control_lock:
            if self.finished:
                return
            self.finished = True
        self.send_control(CONTROL_END, str(ended.status), ended.conversation_id or "", end_reason(ended))
        self.stats.records(self.clock.pop())
        self.stats.settle(float("inf"))
        self._event(
            "ElevenLabsConversationStats",
            Status=ended.status,
            FramesIn=self.frames_in,
            CallerAudioDroppedBytes=self.uplink.counters["overflowed"],
            Interruptions=self.interruptions,
            Underruns=self.underruns,
            **self.stats.ami_headers(),
        )
        self._forget(self)  # the doorbell's reader goes first
        with self._fd_lock:
            for fd in (self.wake_fd, self.doorbell_fd):
                if fd >= 0:
                    os.close(fd)
            self.wake_fd = self.doorbell_fd = -1
