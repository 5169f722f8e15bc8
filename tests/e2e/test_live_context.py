"""Text for a live conversation from AMI and the CLI, in a real Asterisk with the simulator:
it arrives intact, in the message type asked for, and a wrong channel gets a clear error."""

from __future__ import annotations

import pytest

from pyconvai.sim import AgentScript

SCRIPTS = {"agent_listens": AgentScript(output_format="ulaw_8000", input_format="ulaw_8000", greeting_ms=500,
                                        vad_threshold=1e9)}

# Quotes, backslashes, a literal \r\n, a lone CR, emoji and CJK, 1,000-byte lines.
AWKWARD = ['He said "ship it" \\ then left \\r\\n (literally)', "tab\there and a lone CR\rin the middle",
           "Order 4711: 🚚 shipped — 已发货, 出荷済み", "x" * 1000]


@pytest.fixture
def bed(call_bed):
    return lambda agents: call_bed(agents, SCRIPTS)


def _received(record, kind: str) -> list[str]:
    return [m.get("text") for _, m in record.messages if m.get("type") == kind]


def _send(b, action: str, channel: str, lines: list[str]) -> dict:
    """An AMI action whose Text headers carry ``lines`` in order (sent as raw AMI)."""
    body = "".join(f"Text: {line}\r\n" for line in lines)
    return b.ami.raw_action(action, f"Channel: {channel}\r\n{body}")


@pytest.mark.parametrize("action, kind", [("ElevenLabsContextualUpdate", "contextual_update"),
                                          ("ElevenLabsUserMessage", "user_message")])
def test_ami_text_reaches_the_conversation_intact(bed, sim, action, kind):
    b = bed({"crm": {"elevenlabs_agent_id": "agent_listens"}})
    b.call("crm", "caller-c1-6")
    channel = b.event("ElevenLabsConversationStarted")["Channel"]
    response = _send(b, action, channel, AWKWARD)
    assert response.get("Response") == "Success", response
    long_text = [f"line {i:03d} " + "é" * 245 for i in range(120)]  # 60 KiB: 120 headers of 499 bytes
    assert _send(b, action, channel, long_text).get("Response") == "Success"
    b.result()
    record = sim.wait_for_conversations(1)[0]
    texts = _received(record, kind)
    assert texts[0] == "\n".join(AWKWARD)
    assert texts[1] == "\n".join(long_text) and len(texts[1].encode()) > 59_000
    assert not b.events("Hangup") or all(e.get("Channel", "").startswith("Local/") for e in b.events("Hangup"))


def test_the_cli_sends_context_and_messages(bed, sim):
    b = bed({"crm": {"elevenlabs_agent_id": "agent_listens"}})
    b.call("crm", "caller-c2-6")
    channel = b.event("ElevenLabsConversationStarted")["Channel"]
    assert "Sent to the conversation" in b.ast.cli(f"elevenlabs send context {channel} the supervisor says offer 10 %")
    assert "Sent to the conversation" in b.ast.cli(f"elevenlabs send message {channel} what is my balance")
    completions = b.ast.cli(f'_command matchesarray "elevenlabs send context {channel[:12]}" "{channel[:12]}"')
    assert channel in completions.split()
    b.result()
    record = sim.wait_for_conversations(1)[0]
    assert _received(record, "contextual_update") == ["the supervisor says offer 10 %"]
    assert "what is my balance" in _received(record, "user_message")


def test_a_channel_without_a_conversation_gets_a_clear_error(bed, sim):
    b = bed({"crm": {"elevenlabs_agent_id": "agent_listens"}})
    response = _send(b, "ElevenLabsUserMessage", "PJSIP/nobody-00000001", ["hello"])
    assert response.get("Response") == "Error"
    assert "no ElevenLabs conversation on channel PJSIP/nobody-00000001" in response.get("Message", "")
    assert "Text is required" in b.ami.raw_action("ElevenLabsContextualUpdate", "Channel: x\r\n").get("Message", "")
    assert "no ElevenLabs conversation" in b.ast.cli("elevenlabs send message Local/none-1;2 hi")


def test_a_live_channel_that_runs_no_conversation_gets_a_clear_error(bed, sim):
    b = bed({"crm": {"elevenlabs_agent_id": "agent_listens"}})
    b.call("crm", "caller-c3-4")
    agent_half = b.event("ElevenLabsConversationStarted")["Channel"]
    caller_half = agent_half[:-1] + "1"  # the Local channel's other half: no application of ours
    assert caller_half in b.ast.cli("core show channels concise")
    response = _send(b, "ElevenLabsContextualUpdate", caller_half, ["hello"])
    assert response.get("Response") == "Error"
    assert f"no ElevenLabs conversation on channel {caller_half}" in response.get("Message", "")
    b.result()
