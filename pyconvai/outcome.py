"""How a conversation ended: ELEVENLABS_STATUS and ELEVENLABS_END_REASON, decided from facts.

Pure functions and values, no I/O, any thread: the session gathers the facts
(close code and reason, the last server error, who asked to end) and
:func:`closed` turns them into a :class:`SessionEnded`; :func:`end_reason` is
the text the dialplan and AMI see.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["ClosedBy", "EndStatus", "SessionEnded", "closed", "end_reason"]


class EndStatus(enum.StrEnum):
    AGENT_ENDED = "AGENT_ENDED"
    CALLER_HANGUP = "CALLER_HANGUP"
    FAILED = "FAILED"
    CONFIG_ERROR = "CONFIG_ERROR"
    TRANSFER = "TRANSFER"
    VOICEMAIL = "VOICEMAIL"


@dataclass(frozen=True, slots=True)
class SessionEnded:
    status: EndStatus
    reason: str
    conversation_id: str | None
    close_code: int | None = None
    close_reason: str | None = None


@dataclass(frozen=True, slots=True)
class ClosedBy:
    """What the session knew when its socket closed.

    ``code`` None: the connection dropped with no close frame. ``hangup``: the
    caller's reason, if the caller went first. ``goodbye``: the reason the
    module asked the agent for a goodbye, if it then closed the socket itself.
    ``server_error``: the last ``error`` message's (type, message). ``voicemail``:
    the agent's voicemail_detection tool fired, so its ending is a voicemail's.
    """

    code: int | None
    reason: str
    conversation_id: str | None
    hangup: str | None = None
    goodbye: str | None = None
    end_call_requested: bool = False
    voicemail: bool = False
    server_error: tuple[str, str] | None = None


def closed(facts: ClosedBy) -> SessionEnded:
    """Map the socket's close to how the conversation ended."""
    code, why = facts.code, facts.reason

    def ending(status: EndStatus, reason: str) -> SessionEnded:
        return SessionEnded(status, reason, facts.conversation_id, code, why)

    if facts.hangup is not None:
        return ending(EndStatus.CALLER_HANGUP, facts.hangup)
    if facts.goodbye is not None:
        return ending(EndStatus.AGENT_ENDED, facts.goodbye)
    kind, message = facts.server_error or ("", "")
    detail = why or (f"{kind}: {message}" if facts.server_error else "") or "no reason given"
    if kind not in ("", "unknown") and kind not in detail:
        detail = f"{kind}: {detail}"
    if code == 1000:
        if facts.voicemail:
            return ending(EndStatus.VOICEMAIL, "the agent reached a voicemail")
        if facts.end_call_requested:
            return ending(EndStatus.AGENT_ENDED, "agent ended the call")
        return ending(EndStatus.AGENT_ENDED, f"server closed the conversation: {detail}")
    if code == 1008:
        return ending(EndStatus.CONFIG_ERROR, f"websocket closed 1008: {detail}")
    if code is None:
        when = "mid-call" if facts.conversation_id is not None else "before metadata"
        return ending(EndStatus.FAILED, f"connection lost {when}")
    return ending(EndStatus.FAILED, f"websocket closed {code}: {detail}")


def end_reason(ended: SessionEnded) -> str:
    """ELEVENLABS_END_REASON: the reason, with the close code and its reason when there was one."""
    if ended.close_code is None or str(ended.close_code) in ended.reason:
        return ended.reason
    detail = f"close {ended.close_code}"
    if ended.close_reason and ended.close_reason not in ended.reason:
        detail += f" {ended.close_reason}"
    return f"{ended.reason} ({detail})"
