"""Client tools the module carries out, and the caller's keys on their way to the agent.

Threads: the asyncio thread only. ``Call`` hands this object, in order, the
client tool calls the session reports, the clock records the channel thread
sends back (keys pressed, digits sent, transfer checks) and a tick on every
pump. Asterisk is reached only through control records the channel thread
carries out (csrc/convai_wire.h): this module never touches a channel.

- Transfer (``transfer_tool``, parameter ``destination``): the channel thread
  checks ``transfer_context,destination,1``; the tool is answered; agent audio
  that starts within ``TRANSFER_GRACE_S`` of the answer plays out (at most
  ``TRANSFER_CAP_S`` in all); then the socket closes with 1000 and the call
  ends as TRANSFER, continuing at that extension.
- Keypad (``dtmf_tool``, parameter ``dtmf_tones``): the channel thread sends the
  digits, then the tool is answered.
- The caller's keys: collected until ``#`` or a pause, then sent as one
  user_message or contextual_update (``dtmf_to_agent``).
- Dialplan tools (``client_tool = name,context``): once the agent audio queued
  before the call has played, the channel thread runs ``Gosub(context,name,1)``
  with the parameters as ``ELEVENLABS_TOOL_*`` variables; ``Return()`` answers.
- AMI tools (``client_tools_via_ami``): announced with ``ElevenLabsToolCall``
  (``IsError: pending``), answered by AMI ``ElevenLabsToolResult`` within
  ``client_tool_timeout_seconds``, else with an error saying so.
- Any other client tool is answered with an error at once, so that the
  agent's turn never stalls.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from .config import CallControl
from .events import ClientToolCalled
from .keypad import KeyCollector, keypad_tones
from .playback import Downlink
from .session import Session
from .wire import CONTROL_MAX_PAYLOAD, ClockKind, Control

__all__ = ["TRANSFER_CAP_S", "TRANSFER_GRACE_S", "Tools"]

log = logging.getLogger("pyconvai.tools")

#: Agent audio that starts this soon after the transfer tool's answer is its "putting you through".
TRANSFER_GRACE_S = 2.0
#: Longest wait, from the answer, for that audio to play out before the call moves on.
TRANSFER_CAP_S = 10.0
_EXTENSION = re.compile(r"[0-9A-Za-z*#+_.-]{1,64}")
_NOT_IN_A_NAME = re.compile(r"[^A-Z0-9_]")
#: Longest wait for the agent audio queued before a dialplan tool to play out.
_PLAY_OUT_CAP_S = 70.0
_UNSUPPORTED = "Client tool {!r} is not supported by app_elevenlabs_convai"


class Tools:
    """The client tools and keys of one call. See the module docstring."""

    def __init__(self, control: CallControl, session: Session, downlink: Downlink,
                 send_control: Callable[..., None], event: Callable[..., None]) -> None:
        self._cfg = control
        self._session = session
        self._downlink = downlink
        self._send_control = send_control
        self._event = event  # an AMI event, as Call._event
        self.keys = KeyCollector(control.dtmf_timeout_seconds)
        self._keypad_waiting: deque[ClientToolCalled] = deque()  # each answered when its digits went out
        self._transfer_waiting: tuple[ClientToolCalled, str] | None = None
        self._handing_over: asyncio.Task[None] | None = None
        self._dialplan_waiting: dict[str, ClientToolCalled] = {}  # tool call id -> call, in the dialplan
        self._ami_waiting: dict[str, tuple[ClientToolCalled, asyncio.TimerHandle]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_agent_audio = 0.0
        self._keys_timer: asyncio.TimerHandle | None = None
        self.transfer_to: str | None = None  # set once the call is being handed over

    # --- inputs (asyncio thread) -----------------------------------------------

    def called(self, call: ClientToolCalled) -> None:
        """The agent called a client tool: carry it out, or refuse it at once."""
        if call.name == self._cfg.transfer_tool:
            self._transfer(call)
        elif call.name == self._cfg.dtmf_tool:
            self._keypad(call)
        elif call.name in self._cfg.dialplan_tools:
            self._dialplan(call)
        elif self._cfg.tools_via_ami:
            self._ami(call)
        else:
            self._answer(call, _UNSUPPORTED.format(call.name), True)

    def dialplan_result(self, tool_call_id: str, result: str, is_error: bool) -> None:
        """The Gosub of a dialplan tool returned."""
        call = self._dialplan_waiting.pop(tool_call_id, None)
        if call is not None:
            self._answer(call, result, is_error)

    def ami_claim(self, tool_call_id: str) -> tuple[ClientToolCalled, asyncio.TimerHandle] | None:
        """Take the tool call an AMI answer is for, if it is still waiting (any thread: one
        dict pop, so of two answers at once, or an answer and the timeout, one wins)."""
        return self._ami_waiting.pop(tool_call_id, None)

    def ami_result(self, claimed: tuple[ClientToolCalled, asyncio.TimerHandle], result: str,
                   is_error: bool) -> None:
        """AMI ElevenLabsToolResult, claimed (on the asyncio thread): the answer."""
        call, timer = claimed
        timer.cancel()
        self._answer(call, result, is_error)

    def record(self, kind: int, position: int, at: float) -> None:
        """A clock record that is not about audio (see csrc/convai_wire.h)."""
        if kind == ClockKind.DTMF:
            self._session.detail("caller pressed %s", chr(position & 0x7F))
            self._tell_agent(self.keys.press(chr(position & 0x7F), at))
            if self._keys_timer is not None:
                self._keys_timer.cancel()
            # The entry ends after a pause: checked then, not by polling.
            self._keys_timer = asyncio.get_running_loop().call_later(self.keys.timeout, self._keys_paused)
        elif kind == ClockKind.DTMF_SENT and self._keypad_waiting:
            call = self._keypad_waiting.popleft()
            sent = keypad_tones(call.parameters.get("dtmf_tones"))
            if position:
                self._answer(call, f"Sent the keys {sent}.", False)
            else:
                self._answer(call, "The keys could not be sent: the call is ending.", True)
        elif kind == ClockKind.TRANSFER_CHECKED and self._transfer_waiting is not None:
            call, destination = self._transfer_waiting
            self._transfer_waiting = None
            if not position:
                self._answer(call, f"There is no extension {destination} to transfer to.", True)
                return
            self._answer(call, f"The caller is being transferred to {destination}.", False)
            self.transfer_to = destination
            self._handing_over = asyncio.ensure_future(self._hand_over(destination, time.monotonic()))

    def agent_audio(self, at: float) -> None:
        self._last_agent_audio = at

    def _keys_paused(self) -> None:
        self._keys_timer = None  # no Tools <-> handle cycle to outlive the call
        self.tick(time.monotonic())

    def tick(self, now: float) -> None:
        """Keys the caller stopped pressing go to the agent (a pause after a key, and every pump)."""
        self._tell_agent(self.keys.due(now))

    def cancel(self) -> None:
        """The call is over."""
        if self._handing_over is not None:
            self._handing_over.cancel()
            self._handing_over = None
        if self._keys_timer is not None:
            self._keys_timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        for _, timer in list(self._ami_waiting.values()):  # AMI threads may claim meanwhile
            timer.cancel()
        self._ami_waiting.clear()

    # --- the tools --------------------------------------------------------------

    def _transfer(self, call: ClientToolCalled) -> None:
        destination = call.parameters.get("destination")
        if not self._cfg.transfer_enabled:
            self._answer(call, "Transfers are not enabled on this line.", True)
        elif not isinstance(destination, str) or not _EXTENSION.fullmatch(destination):
            self._answer(call, "destination must be an extension: letters, digits and * # + _ . -", True)
        elif self._transfer_waiting is not None or self.transfer_to is not None:
            self._answer(call, "A transfer is already under way.", True)
        else:
            self._transfer_waiting = (call, destination)
            self._send_control(Control.TRANSFER_CHECK, destination)

    def _keypad(self, call: ClientToolCalled) -> None:
        tones = keypad_tones(call.parameters.get("dtmf_tones"))
        if tones is None:
            self._answer(call, "dtmf_tones must be keys 0-9, *, #, A-D, with w (0.5 s) or W (1 s) pauses.", True)
            return
        self._keypad_waiting.append(call)
        self._send_control(Control.SEND_DTMF, tones)

    def _dialplan(self, call: ClientToolCalled) -> None:
        variables = [("ELEVENLABS_TOOL_CALL_ID", call.tool_call_id),
                     ("ELEVENLABS_TOOL_PARAMETERS", _json(call.parameters))]
        for name, value in call.parameters.items():
            text = value if isinstance(value, str) else _json(value)
            variables.append((f"ELEVENLABS_TOOL_{_NOT_IN_A_NAME.sub('_', str(name).upper())}", text))
        record = [call.tool_call_id, call.name] + [part for pair in variables for part in pair]
        if len("\0".join(record).encode()) > CONTROL_MAX_PAYLOAD:
            self._answer(call, "The tool's parameters are too large for the dialplan.", True)
            return
        self._dialplan_waiting[call.tool_call_id] = call
        self._spawn(self._run_when_played(record))

    async def _run_when_played(self, record: list[str]) -> None:
        """The caller hears the agent's words before the tool: run it once they have played."""
        await self._played_out(time.monotonic() + _PLAY_OUT_CAP_S)
        self._send_control(Control.RUN_TOOL, *record)

    def _ami(self, call: ClientToolCalled) -> None:
        timeout = self._cfg.ami_tool_timeout_seconds
        timer = asyncio.get_running_loop().call_later(timeout, self._ami_timed_out, call.tool_call_id)
        self._ami_waiting[call.tool_call_id] = (call, timer)
        self._event("ElevenLabsToolCall", Tool=call.name, ToolCallID=call.tool_call_id, Source="client",
                    IsError="pending", Parameters=_json(call.parameters))

    def _ami_timed_out(self, tool_call_id: str) -> None:
        waiting = self._ami_waiting.pop(tool_call_id, None)
        if waiting is not None:
            self._answer(waiting[0], f"No answer from the PBX within {self._cfg.ami_tool_timeout_seconds:g} s.",
                         True)

    def _spawn(self, coroutine) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _hand_over(self, destination: str, answered_at: float) -> None:
        """Let the agent's "I'm putting you through" play, then close: the call moves on."""
        while self._last_agent_audio < answered_at and time.monotonic() - answered_at < TRANSFER_GRACE_S:
            await asyncio.sleep(0.05)
        await self._played_out(answered_at + TRANSFER_CAP_S)
        self._session.hangup(f"transferred to {destination}")

    async def _played_out(self, deadline: float) -> None:
        """Until the downlink has played everything it holds, or ``deadline`` (monotonic)."""
        while not self._downlink.drained and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    def _answer(self, call: ClientToolCalled, result: str, is_error: bool) -> None:
        self._session.answer_client_tool(call.tool_call_id, result, is_error)
        self._session.log.info("client tool %s%s: %s", call.name, " refused" if is_error else "", result)
        self._event("ElevenLabsToolCall", Tool=call.name, ToolCallID=call.tool_call_id, Source="client",
                    IsError="yes" if is_error else "no", Parameters=_json(call.parameters))

    def _tell_agent(self, text: str | None) -> None:
        if text is None or self._cfg.dtmf_to_agent == "no":
            return
        if self._cfg.dtmf_to_agent == "contextual_update":
            self._session.send_contextual_update(text)
        else:
            self._session.send_user_message(text)


def _json(parameters: Mapping[str, Any]) -> str:
    try:
        return orjson.dumps(parameters).decode()
    except TypeError:
        return "{}"
