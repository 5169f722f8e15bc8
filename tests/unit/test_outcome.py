"""How a close becomes ELEVENLABS_STATUS and ELEVENLABS_END_REASON (pyconvai/outcome.py), no socket."""

import pytest

from pyconvai.outcome import ClosedBy, EndStatus, SessionEnded, closed, end_reason


def test_the_caller_going_first_wins_whatever_the_close():
    ended = closed(ClosedBy(1011, "boom", "conv_1", hangup="caller hung up"))
    assert (ended.status, ended.reason, ended.conversation_id) == (EndStatus.CALLER_HANGUP, "caller hung up", "conv_1")
    assert (ended.close_code, ended.close_reason) == (1011, "boom")


def test_our_own_close_after_a_goodbye_is_agent_ended():
    ended = closed(ClosedBy(1000, "", "c", goodbye="maximum call duration (60 s) reached"))
    assert (ended.status, ended.reason) == (EndStatus.AGENT_ENDED, "maximum call duration (60 s) reached")


@pytest.mark.parametrize("facts, status, reason", [
    (ClosedBy(1000, "", "c", end_call_requested=True), "AGENT_ENDED", "agent ended the call"),
    (ClosedBy(1000, "max_duration_exceeded", "c"), "AGENT_ENDED",
     "server closed the conversation: max_duration_exceeded"),
    (ClosedBy(1000, "", "c"), "AGENT_ENDED", "server closed the conversation: no reason given"),
    (ClosedBy(1008, "Invalid message received", "c", server_error=("invalid_message", "x")), "CONFIG_ERROR",
     "websocket closed 1008: invalid_message: Invalid message received"),
    (ClosedBy(1008, "", None, server_error=("override_error", "agent.first_message is not allowed")),
     "CONFIG_ERROR", "websocket closed 1008: override_error: agent.first_message is not allowed"),
    (ClosedBy(1008, "Agent not found", None, server_error=("unknown", "?")), "CONFIG_ERROR",
     "websocket closed 1008: Agent not found"),
    (ClosedBy(1011, "Unexpected error", "c"), "FAILED", "websocket closed 1011: Unexpected error"),
    (ClosedBy(None, "", "c"), "FAILED", "connection lost mid-call"),
    (ClosedBy(None, "", None), "FAILED", "connection lost before metadata"),
])
def test_close_codes(facts, status, reason):
    ended = closed(facts)
    assert (ended.status, ended.reason) == (status, reason)


def test_end_reason_adds_the_close_code_once():
    assert end_reason(SessionEnded(EndStatus.AGENT_ENDED, "agent ended the call", "c", 1000, "")) == \
        "agent ended the call (close 1000)"
    assert end_reason(SessionEnded(EndStatus.FAILED, "websocket closed 1011: x", "c", 1011, "x")) == \
        "websocket closed 1011: x"
    assert end_reason(SessionEnded(EndStatus.FAILED, "signed URL: HTTP 401", None)) == "signed URL: HTTP 401"
