"""'elevenlabs check agent(s)' in a real Asterisk, against the simulator's agents endpoint
(GET /v1/convai/agents/{id}), well and badly configured."""

from __future__ import annotations

import time

import pytest

from pyconvai.sim import AgentScript

ULAW = {"output_format": "ulaw_8000", "input_format": "ulaw_8000"}
TOOLS = ("transfer_call", "play_keypad_touch_tone", "lookup_order")
SCRIPTS = {
    "agent_good": AgentScript(**ULAW, enable_auth=True, client_tools=TOOLS,
                              enabled_overrides=frozenset({"agent.first_message", "agent.language"})),
    "agent_wide": AgentScript(output_format="pcm_16000", input_format="pcm_16000", enable_auth=False,
                              client_tools=("play_keypad_touch_tone",),
                              client_events=("audio", "agent_response", "ping", "user_transcript")),
    "agent_locked": AgentScript(**ULAW, enable_auth=True),
    "agent_open": AgentScript(**ULAW, enable_auth=False),
    "agent_slow": AgentScript(**ULAW, signed_url_delay_s=5.0, client_tools=("play_keypad_touch_tone",)),
}
GOOD = {"elevenlabs_agent_id": "agent_good", "allow_overrides": "first_message, language",
        "transfer_context": "e2e", "client_tool": "lookup_order,e2e"}


@pytest.fixture
def bed(call_bed):
    return lambda agents: call_bed(agents, SCRIPTS)


def lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()]


def test_a_well_configured_agent_passes_every_line(bed, sim):
    b = bed({"good": GOOD})
    out = b.ast.cli("elevenlabs check agent good")
    assert "Agent good:" in out and "0 problem(s), 0 warning(s)" in out, out
    for expected in ("✓ input audio format ulaw_8000", "✓ output audio format ulaw_8000",
                     "✓ authentication on, and a key is configured", "✓ override first_message is enabled",
                     "✓ override language is enabled", "✓ client tool transfer_call (transfer_tool) is defined",
                     "✓ client tool play_keypad_touch_tone (dtmf_tool) is defined",
                     "✓ client tool lookup_order (client_tool) is defined",
                     "✓ client events audio, interruption, agent_response, ping are enabled",
                     "✓ a signed URL is issued for the key"):
        assert any(line.startswith(expected) for line in lines(out)), (expected, out)
    assert [r.path for r in sim.http_requests][-2:] in (
        ["/v1/convai/agents/agent_good", "/v1/convai/conversation/get-signed-url"],
        ["/v1/convai/conversation/get-signed-url", "/v1/convai/agents/agent_good"])


def test_a_badly_configured_agent_is_told_line_by_line(bed, sim):
    b = bed({"wide": {"elevenlabs_agent_id": "agent_wide", "allow_overrides": "prompt, voice_id",
                      "transfer_context": "e2e", "client_tool": "lookup_order,e2e"}})
    out = b.ast.cli("elevenlabs check agent wide")
    for expected in ("⚠ input audio format pcm_16000: works, resampled", "⚠ output audio format pcm_16000",
                     "⚠ authentication off: anyone with the agent id", "✗ override prompt is in allow_overrides but "
                     "not enabled", "✗ override voice_id is in allow_overrides", "✗ no client tool transfer_call "
                     "(transfer_tool)", "✗ no client tool lookup_order (client_tool)",
                     "✗ client events missing: interruption", "⚠ client event client_tool_call is off",
                     "✓ a signed URL is issued for the key", "5 problem(s), 5 warning(s)"):
        assert any(line.startswith(expected) for line in lines(out)), (expected, out)


def test_keys_and_agents_that_do_not_match(bed, sim):
    b = bed({"locked": {"elevenlabs_agent_id": "agent_locked", "elevenlabs_api_key": None},
             "open": {"elevenlabs_agent_id": "agent_open", "elevenlabs_api_key": None},
             "wrong_key": {"elevenlabs_agent_id": "agent_good", "elevenlabs_api_key": "sk_wrong_0000000000000000000000"},
             "missing": {"elevenlabs_agent_id": "agent_nobody"}})
    out = b.ast.cli("elevenlabs check agents")
    sections = {block.splitlines()[0]: block for block in out.split("\n\n") if block.strip()}
    assert set(sections) == {"Agent locked:", "Agent open:", "Agent wrong_key:", "Agent missing:"}, out
    assert "✗ no conversation without a key" in sections["Agent locked:"]
    assert "is authentication on? then configure elevenlabs_api_key" in sections["Agent locked:"]
    assert "✓ a conversation starts with the public URL" in sections["Agent open:"]
    assert "✗ the agent could not be read: agent: HTTP 401 invalid_api_key" in sections["Agent wrong_key:"]
    assert "✗ the agent could not be read: agent: HTTP 404 agent_not_found" in sections["Agent missing:"]
    assert "sk_wrong" not in out
    assert "No agent 'ghost' in elevenlabs.conf" in b.ast.cli("elevenlabs check agent ghost")


def test_the_check_waits_no_longer_than_the_connection_timeout(bed, sim):
    b = bed({"slow": {"elevenlabs_agent_id": "agent_slow", "connection_timeout_seconds": 2}})
    out = b.ast.cli("elevenlabs check agent slow")  # the signed URL takes 5 s
    assert "✗ the agent could not be read: no answer within 2 s" in out, out
    assert "Running" in b.ast.cli("module show like elevenlabs")
    while not [r for r in sim.http_requests if "signed" in r.path]:  # let the simulator finish it
        time.sleep(0.1)
