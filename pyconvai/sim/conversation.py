"""The agent's side of one WebSocket connection, driven by an AgentScript.

What the agent does is decided here; how it is said on the wire is the
provider's dialect (:mod:`pyconvai.sim.dialects`): ElevenLabs, the generic
bridge protocol or OpenAI's Realtime API.

All of it runs on the simulator's event loop. ``run()`` is the only reader of
the socket; everything the agent does on its own (pings, speaking, timers,
closing) runs in tasks so that reading never stops, which keeps close
handshakes and pongs flowing.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import logging
import secrets
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from . import audio
from . import messages, voice
from .dialects import DIALECTS
from .records import ConversationRecord, EventLog
from .scripts import CLOSE_ERROR_TYPES, AgentScript

log = logging.getLogger("pyconvai.sim")

CALLER_TRANSCRIPT = "[caller speech]"
#: The only audio formats OpenAI's Realtime API offers a telephony client, by session.update name.
_REALTIME_FORMATS = {"audio/pcmu": "ulaw_8000", "audio/pcm": "pcm_24000"}


@dataclass
class _Response:
    """An agent response being spoken."""

    event_id: int
    text: str
    total_ms: float
    sent_ms: float = 0.0


_TOOL_DONE = "\x00tool result"  # OpenAI: a tool result waits for response.create


def _loads(raw: str | bytes) -> dict | None:
    """A client message as a dict, or None when it is not a JSON object in a text frame."""
    if not isinstance(raw, str):
        return None
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return msg if isinstance(msg, dict) else None


def _leaf_paths(tree: dict, prefix: str = "") -> Iterator[str]:
    """Dotted paths of the set (non-None, non-dict) values in a nested dict."""
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _leaf_paths(value, path + ".")
        elif value is not None:
            yield path


def _spoken_part(text: str, fraction: float) -> str:
    """The leading words of ``text`` covering about ``fraction`` of it."""
    words = text.split()
    return " ".join(words[: round(len(words) * min(max(fraction, 0.0), 1.0))])


def _close_reason(reason: str) -> str:
    """``reason`` cut to the 123 bytes a close frame allows."""
    return reason.encode()[:123].decode(errors="ignore")


class AgentConversation:
    """One simulated conversation; create it per connection and await ``run()``."""

    def __init__(
        self,
        ws: ServerConnection,
        script: AgentScript,
        record: ConversationRecord,
        event_log: EventLog,
        *,
        strict: bool,
        init_timeout_s: float,
        dialect: str = "elevenlabs",
    ) -> None:
        self.ws = ws
        self.script = script
        self.dialect = DIALECTS[dialect]
        self.record = record
        self._log = event_log
        self._strict = strict
        self._init_timeout_s = init_timeout_s
        self._vad = voice.Vad(
            audio.sample_rate(script.input_format), script.vad_threshold,
            script.vad_min_speech_ms, script.vad_silence_ms,
        )
        self._event_id = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._speaker: asyncio.Task[None] | None = None
        self._response: _Response | None = None
        self._playout_end = 0.0
        """Monotonic time at which the client finishes playing what it was sent."""
        self._turns = 0
        self._ending = False
        self._closing = False
        self._dropped = False
        self._ping_times: dict[int, float] = {}
        self._rtt_ms: int | None = None
        self._last_audio = time.monotonic()
        self._greeted = False
        self._pending_text: str | None = None  # OpenAI: a user item waiting for response.create

    @property
    def _cid(self) -> str:
        return self.record.conversation_id

    # --- lifecycle -------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until it is closed; then complete the record."""
        try:
            if self.dialect.on_request:
                await self._send({"type": "session.created", "event_id": "event_sim",
                                  "session": {"id": self._cid, "type": "realtime", "object": "realtime.session"}})
            early = await self._receive_init()
            for msg in self.dialect.started(self._cid, self.script.output_format, self.script.input_format):
                await self._send(msg)
            violation = self._override_violation()
            if violation:
                self._spawn(self._close(1008, violation, "override_error"))
            else:
                self._start_behaviour()
                for raw in early:
                    await self._on_message(raw)
            async for raw in self.ws:
                await self._on_message(raw)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("%s: simulator error", self._cid)
            await self.ws.close(1011, "Internal simulator error")
        finally:
            await self._cancel_tasks()
            self._finish_record()

    async def reject(self, reason: str) -> None:
        """Close the just-opened connection with 1008 (bad agent or signature)."""
        log.info("%s: rejecting: %s", self._cid, reason)
        self._log.write("close", self._cid, code=1008, reason=reason)
        await self.ws.close(1008, _close_reason(reason))
        self._finish_record()

    async def _receive_init(self) -> list[str | bytes]:
        """Wait briefly for the client's opening message (ElevenLabs' client data, the bridge's
        session.init, OpenAI's session.update); return other early messages."""
        try:
            raw = await asyncio.wait_for(self.ws.recv(), self._init_timeout_s)
        except TimeoutError:
            return []
        msg = _loads(raw)
        if msg is None or msg.get("type") != self.dialect.start_message:
            return [raw]
        self._note_received(msg)
        self.record.init_data = msg
        if self.dialect.on_request:
            self._adopt_realtime_formats(msg)
        return []

    def _adopt_realtime_formats(self, update: dict) -> None:
        """Speak and hear the formats the client's session.update asked for (OpenAI offers
        μ-law or 24 kHz PCM, whatever the script says)."""
        audio_cfg = (update.get("session") or {}).get("audio") or {}

        def chosen(direction: str) -> str:
            fmt = ((audio_cfg.get(direction) or {}).get("format") or {}).get("type", "audio/pcm")
            return _REALTIME_FORMATS.get(fmt, "pcm_24000")

        self.script = dataclasses.replace(self.script, output_format=chosen("output"), input_format=chosen("input"))
        s = self.script
        self._vad = voice.Vad(audio.sample_rate(s.input_format), s.vad_threshold, s.vad_min_speech_ms,
                              s.vad_silence_ms)

    def _override_violation(self) -> str | None:
        """Why the client's overrides are not allowed, or None when they are."""
        init = self.record.init_data or {}
        override = init.get("conversation_config_override") or {}
        if not isinstance(override, dict):
            return "conversation_config_override must be an object."
        paths = list(_leaf_paths(override))
        if init.get("custom_llm_extra_body"):
            paths.append("custom_llm_extra_body")
        enabled = self.script.enabled_overrides
        for path in paths:
            if not any(path == item or path.startswith(item + ".") for item in enabled):
                return f"Override for field '{path}' is not allowed by config."
        return None

    def _start_behaviour(self) -> None:
        script = self.script
        self._last_audio = time.monotonic()
        if self.dialect.pings:
            self._spawn(self._pinger())
        if not self.dialect.on_request:  # OpenAI speaks when asked (response.create)
            self._greeted = True
            self._speaker = self._spawn(self._greeting_flow())
        if script.fatal_error_after_s is not None:
            self._spawn(self._after(script.fatal_error_after_s, self._fatal_error()))
        if script.close_after_s is not None:
            error_type = script.close_error_type or CLOSE_ERROR_TYPES.get(script.close_code)
            self._spawn(self._after(script.close_after_s, self._close(
                script.close_code, script.close_reason, error_type)))
        if script.drop_tcp_after_s is not None:
            self._spawn(self._after(script.drop_tcp_after_s, self._drop()))
        if script.max_duration_s is not None:
            self._spawn(self._after(script.max_duration_s, self._close(
                1000, "Conversation exceeded its maximum duration.", "max_duration_exceeded")))
        if script.transport_receive_timeout_s is not None:
            self._spawn(self._receive_watchdog(script.transport_receive_timeout_s))

    def _finish_record(self) -> None:
        """Record the close as the server saw it, then signal ``closed``."""
        protocol = self.ws.protocol
        if self._dropped:
            code, reason, closed_by = 1006, "", "drop"
        elif protocol.close_sent is not None and not protocol.close_rcvd_then_sent:
            code, reason, closed_by = protocol.close_sent.code, protocol.close_sent.reason, "server"
        elif protocol.close_rcvd is not None:
            code, reason, closed_by = protocol.close_rcvd.code, protocol.close_rcvd.reason, "client"
        else:
            code, reason, closed_by = 1006, "", "lost"
        rec = self.record
        rec.close_code, rec.close_reason, rec.closed_by = code, reason, closed_by
        self._log.write("closed", self._cid, code=code, reason=reason, closed_by=closed_by)
        log.info("%s: closed %s by %s %r", self._cid, code, closed_by, reason)
        rec.closed.set()

    # --- tasks -----------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not isinstance(exc, ConnectionClosed):
            log.error("%s: task failed", self._cid, exc_info=exc)

    async def _cancel_tasks(self) -> None:
        """Cancel every task but the calling one and wait for them."""
        others = [task for task in self._tasks if task is not asyncio.current_task()]
        for task in others:
            task.cancel()
        if others:
            await asyncio.wait(others)

    async def _cancel_speaker(self) -> None:
        speaker, self._speaker = self._speaker, None
        if speaker is not None and speaker is not asyncio.current_task() and not speaker.done():
            speaker.cancel()
            await asyncio.wait([speaker])

    @staticmethod
    async def _after(delay: float, action: Coroutine[Any, Any, None]) -> None:
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            action.close()
            raise
        await action

    # --- sending ---------------------------------------------------------

    def _next_id(self) -> int:
        self._event_id += 1
        return self._event_id

    async def _send(self, msg: dict) -> None:
        if self.script.hostile_text:
            msg = messages.with_text_appended(msg, self.script.hostile_text)
        self.record.sent.append((time.monotonic(), msg))
        self._log.write("send", self._cid, message=msg)
        await self.ws.send(orjson.dumps(msg), text=True)

    async def _send_audio(self, event_id: int, chunk: bytes, *, playing: bool = True) -> None:
        """Send one audio chunk; ``playing`` chunks extend the client's playout clock."""
        ms = audio.duration_ms(len(chunk), self.script.output_format)
        self.record.audio_sent_ms[event_id] = self.record.audio_sent_ms.get(event_id, 0.0) + ms
        if playing:
            self._playout_end = max(self._playout_end, time.monotonic()) + ms / 1000
            if self._response is not None and self._response.event_id == event_id:
                self._response.sent_ms += ms
        await self._send(self.dialect.audio(event_id, chunk))

    async def _render(self, text: str, tone_hz: float, ms: int) -> bytes:
        s = self.script
        return await asyncio.to_thread(
            voice.render, text, tone_hz, ms, s.output_format, s.tone_amplitude, s.speech)

    async def _speak(self, event_id: int, text: str, data: bytes, first_bytes: int = 0) -> None:
        """``agent_response`` then the audio in chunks, faster than real time."""
        s = self.script
        self._response = _Response(event_id, text, audio.duration_ms(len(data), s.output_format))
        for msg in self.dialect.response_start(event_id, text):
            await self._send(msg)
        for chunk in voice.split(data, s.output_format, s.chunk_pattern_ms, first_bytes, s.odd_split):
            await self._send_audio(event_id, chunk)
            await asyncio.sleep(audio.duration_ms(len(chunk), s.output_format) / 1000 / s.send_speed)
        for msg in self.dialect.response_end(event_id, text, cancelled=False):
            await self._send(msg)

    async def _pinger(self) -> None:
        while True:
            event_id = self._next_id()
            self._ping_times[event_id] = time.monotonic()
            self.record.pings_sent.append(event_id)
            await self._send(messages.ping(event_id, self._rtt_ms))
            await asyncio.sleep(self.script.ping_interval_s)

    # --- agent behaviour -------------------------------------------------

    async def _greeting_flow(self) -> None:
        s = self.script
        if s.greeting_ms > 0:
            data = await self._render(s.greeting_text, s.greeting_tone_hz, s.greeting_ms)
            first_bytes = 0
            if s.large_frame:
                first_bytes = voice.LARGE_FRAME_BYTES
                data = voice.pad(data, first_bytes, s.output_format)
            await self._speak(self._next_id(), s.greeting_text, data, first_bytes)
        if s.client_tool_name:
            for name, parameters in ((s.client_tool_name, s.client_tool_parameters), *s.more_client_tools):
                for msg in self.dialect.tool_call(self._next_id(), name, f"call_{secrets.token_hex(6)}", parameters,
                                                  s.client_tool_expects_response):
                    await self._send(msg)
        if s.end_call_after_turns == 0:
            await self._end_call()

    async def _reply_flow(self, event_id: int) -> None:
        s = self.script
        text = s.reply_texts[min(self._turns, len(s.reply_texts)) - 1] if s.reply_texts else s.reply_text
        tone = s.reply_tones_hz[(self._turns - 1) % len(s.reply_tones_hz)] if s.reply_tones_hz else s.reply_tone_hz
        data = await self._render(text, tone, s.reply_ms)
        await self._speak(event_id, text, data)
        if s.end_call_after_turns is not None and self._turns >= s.end_call_after_turns:
            await self._end_call()

    async def _tool_result_reply(self) -> None:
        """What the agent says once a client tool succeeded ("I'm putting you through")."""
        s = self.script
        data = await self._render("One moment, I'm putting you through.", s.tool_result_reply_tone_hz,
                                  s.tool_result_reply_ms)
        await self._speak(self._next_id(), "One moment, I'm putting you through.", data)

    async def _end_call(self) -> None:
        """Goodbye, the ``end_call`` system tool, then close 1000 while the client still plays."""
        s = self.script
        self._ending = True
        event_id = self._next_id()
        if s.goodbye_ms > 0:
            data = await self._render(s.goodbye_text, s.goodbye_tone_hz, s.goodbye_ms)
            await self._speak(event_id, s.goodbye_text, data)
        for msg in self.dialect.end_call(event_id, s.end_tool_name, f"tool_{secrets.token_hex(6)}"):
            await self._send(msg)
        await self._close(1000, "")

    async def _on_caller_turn(self, transcript: str) -> None:
        """The caller said something: interrupt the agent if it is still audible, then reply."""
        if self._ending:
            return
        event_id = await self._stop_speaking()
        for msg in self.dialect.user_transcript(event_id, transcript):
            await self._send(msg)
        self._turns += 1
        self._speaker = self._spawn(self._reply_flow(event_id))

    async def _stop_speaking(self) -> int:
        """Stop the current response (an interruption if it is still audible); the next event id."""
        now = time.monotonic()
        interrupted = self._response if now < self._playout_end else None
        unplayed_ms = (self._playout_end - now) * 1000
        await self._cancel_speaker()
        event_id = self._next_id()
        if interrupted is not None:
            self._playout_end = now
            self.record.interruptions.append(event_id)
            log.info("%s: barge-in: interruption %d of response %d", self._cid, event_id, interrupted.event_id)
            # A faulty server may send an id of its own (AgentScript.interruption_event_id).
            for msg in self.dialect.interruption(
                    event_id if self.script.interruption_event_id is None else self.script.interruption_event_id,
                    interrupted.event_id):
                await self._send(msg)
            s = self.script
            stale = await self._render("", s.stale_tone_hz, s.stale_chunk_ms)
            for _ in range(s.late_stale_chunks):
                await self._send_audio(interrupted.event_id, stale, playing=False)
            played = (interrupted.sent_ms - unplayed_ms) / interrupted.total_ms if interrupted.total_ms else 0.0
            for msg in [*self.dialect.correction(interrupted.event_id, interrupted.text,
                                                 _spoken_part(interrupted.text, played)),
                        *self.dialect.response_end(interrupted.event_id, interrupted.text, cancelled=True)]:
                await self._send(msg)
        return event_id

    # --- endings ---------------------------------------------------------

    async def _close(self, code: int, reason: str, error_type: str | None = None) -> None:
        """Stop everything else, send ``error`` when given a type, then close the socket."""
        if self._closing:
            return
        self._closing = self._ending = True
        await self._cancel_tasks()
        reason += self.script.hostile_text
        if error_type is not None:
            for msg in self.dialect.error(code, error_type, reason or error_type, False):
                await self._send(msg)
        self._log.write("close", self._cid, code=code, reason=reason)
        log.info("%s: closing %d %r", self._cid, code, reason)
        await self.ws.close(code, _close_reason(reason))

    async def _fatal_error(self) -> None:
        """An error the server says ends the conversation; the client is to close."""
        for msg in self.dialect.error(1011, "server_error", "The AI backend failed.", True):
            await self._send(msg)
        self._ending = True
        await self._cancel_speaker()

    async def _drop(self) -> None:
        """Abort the TCP connection without a close frame."""
        if self._closing:
            return
        self._closing = self._ending = self._dropped = True
        await self._cancel_tasks()
        self._log.write("drop", self._cid)
        log.info("%s: dropping the TCP connection", self._cid)
        self.ws.transport.abort()

    async def _receive_watchdog(self, timeout: float) -> None:
        while (idle := time.monotonic() - self._last_audio) < timeout:
            await asyncio.sleep(timeout - idle)
        await self._close(1002, "No user audio received in time.", "transport_receive_timeout")

    # --- receiving -------------------------------------------------------

    def _note_received(self, msg: dict) -> None:
        self.record.messages.append((time.monotonic(), msg))
        self._log.write("recv", self._cid, message=msg)

    async def _on_message(self, raw: str | bytes) -> None:
        msg = _loads(raw)
        if msg is None:
            self._log.write("recv", self._cid, invalid=repr(raw[:200]))
            self._invalid(f"not a JSON object in a text frame: {raw[:80]!r}")
            return
        self._note_received(msg)
        if self._closing:
            return
        heard = self.dialect.hear(msg)
        match heard.kind:
            case "audio":
                await self._on_audio(heard.text)
            case "pong":
                self._on_pong(heard.number)
            case "tool_result":
                self.record.tool_results.append(dict(heard.result or {}))
                if self.script.tool_result_reply_ms and not (heard.result or {}).get("is_error"):
                    if not self.dialect.on_request:
                        self._speaker = self._spawn(self._tool_result_reply())
                    else:
                        self._pending_text = _TOOL_DONE
            case "user_message":
                if self.dialect.on_request:
                    self._pending_text = heard.text  # answered on response.create
                else:
                    await self._on_caller_turn(heard.text)
            case "respond":
                await self._on_response_create()
            case "truncate":
                self.record.truncations.append((heard.text, heard.number or 0))
                await self._send({"type": "conversation.item.truncated", "item_id": heard.text,
                                  "content_index": 0, "audio_end_ms": heard.number})
            case "session":
                await self._send(self.dialect.started(self._cid, self.script.output_format,
                                                      self.script.input_format)[0])
            case "invalid":
                self._invalid(heard.text)

    async def _on_response_create(self) -> None:
        """OpenAI: the client asks for a response: the greeting first, then what it sent."""
        text, self._pending_text = self._pending_text, None
        if not self._greeted:
            self._greeted = True
            self.record.first_user_text = text
            self._speaker = self._spawn(self._greeting_flow())
        elif text == _TOOL_DONE:
            self._speaker = self._spawn(self._tool_result_reply())
        elif text is not None:
            await self._on_caller_turn(text)

    async def _on_audio(self, payload: object) -> None:
        try:
            data = base64.b64decode(payload, validate=True)  # type: ignore[arg-type]
        except (binascii.Error, TypeError, ValueError):
            self._invalid("user_audio_chunk is not base64")
            return
        now = time.monotonic()
        self.record.audio_chunks.append((now, data))
        self._last_audio = now
        ended_before = self._vad.utterances_ended
        onset = self._vad.feed(audio.decode(data, self.script.input_format))
        if self.script.vad_scores:
            await self._send(messages.vad_score(round(self._vad.last_score, 3)))
        if not self.script.reply_after_utterance:
            if onset:
                await self._on_caller_turn(CALLER_TRANSCRIPT)
            return
        if onset and not self._ending:
            await self._stop_speaking()
        if self._vad.utterances_ended > ended_before:
            await self._on_caller_turn(CALLER_TRANSCRIPT)

    def _on_pong(self, event_id: int | None) -> None:
        if not isinstance(event_id, int):
            self._invalid(f"pong without an integer event_id: {event_id!r}")
            return
        self.record.pongs.append(event_id)
        sent_at = self._ping_times.pop(event_id, None)
        if sent_at is None:
            self._invalid(f"pong for unknown ping {event_id}")
        else:
            self._rtt_ms = round((time.monotonic() - sent_at) * 1000)

    def _invalid(self, what: str) -> None:
        """A message the real server would refuse: log it; in strict mode close 1008."""
        log.warning("%s: %s", self._cid, what)
        if self._strict:
            self._spawn(self._close(1008, f"Invalid message received: {what}", "invalid_message"))
