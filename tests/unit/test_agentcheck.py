"""pyconvai.agentcheck: what an agent's settings mean for a call, line by line."""

from __future__ import annotations

from pyconvai.agentcheck import Mark, checklist, render
from pyconvai.config import CallControl
from pyconvai.sim import AgentScript
from pyconvai.sim.messages import agent_document

GOOD = AgentScript(output_format="ulaw_8000", input_format="ulaw_8000", client_tools=("transfer_call",
                   "play_keypad_touch_tone", "lookup_order"),
                   enabled_overrides=frozenset({"agent.first_message", "agent.prompt.prompt"}))
CONTROL = CallControl(transfer_enabled=True, dialplan_tools=frozenset({"lookup_order"}))


def marks(checks) -> dict[str, Mark]:
    return {c.line.split(":")[0]: c.mark for c in checks}


def check(script: AgentScript, *, auth: bool = True, api_key: bool = True, overrides=("first_message", "prompt"),
          control: CallControl = CONTROL):
    return checklist(agent_document("a", script, auth), api_key=api_key, allowed_overrides=overrides,
                     control=control)


def test_a_well_configured_agent_passes_every_line():
    checks = check(GOOD)
    assert [c.mark for c in checks] == [Mark.OK] * len(checks), render("good", checks)
    text = render("good", checks)
    assert "input audio format ulaw_8000" in text and "output audio format ulaw_8000" in text
    assert "override first_message is enabled" in text and "override prompt is enabled" in text
    assert "client tool transfer_call (transfer_tool) is defined" in text
    assert "client tool lookup_order (client_tool) is defined" in text
    assert text.endswith("0 problem(s), 0 warning(s)\n")


def test_formats_the_module_resamples_warn_and_unknown_ones_fail():
    agent = agent_document("a", AgentScript(output_format="pcm_16000", input_format="pcm_8000"), True)
    agent["conversation_config"]["tts"]["agent_output_audio_format"] = "mp3_44100_128"
    checks = checklist(agent, api_key=True, allowed_overrides=(), control=CallControl())
    assert checks[0].mark is Mark.WARN and "pcm_8000" in checks[0].line
    assert checks[1].mark is Mark.FAIL and "'mp3_44100_128'" in checks[1].line
    agent["conversation_config"]["asr"]["user_input_audio_format"] = "pcm_22050"
    checks = checklist(agent, api_key=True, allowed_overrides=(), control=CallControl())
    assert checks[0].mark is Mark.FAIL and "Asterisk has no 22.05 kHz" in checks[0].line


def test_authentication_against_the_key():
    lines = {(auth, key): next(c for c in check(GOOD, auth=auth, api_key=key) if "authentication" in c.line)
             for auth in (True, False) for key in (True, False)}
    assert lines[True, True].mark is Mark.OK
    assert lines[True, False].mark is Mark.FAIL and "every call fails" in lines[True, False].line
    assert lines[False, True].mark is Mark.WARN
    assert lines[False, False].mark is Mark.OK


def test_an_override_not_enabled_at_elevenlabs_fails():
    checks = check(GOOD, overrides=("first_message", "language", "voice_id"))
    found = {c.line.split(" is ")[0]: c.mark for c in checks if c.line.startswith("override")}
    assert found == {"override first_message": Mark.OK, "override language": Mark.FAIL,
                     "override voice_id": Mark.FAIL}


def test_missing_tools_and_events():
    bare = AgentScript(output_format="ulaw_8000", input_format="ulaw_8000", system_tools=("end_call",
                       "play_keypad_touch_tone"), client_events=("audio", "agent_response", "ping"))
    text = render("bare", check(bare, overrides=()))
    assert "✗ no client tool transfer_call (transfer_tool)" in text
    assert "✗ no client tool lookup_order (client_tool)" in text
    assert "⚠ play_keypad_touch_tone (dtmf_tool) is a system tool" in text
    assert "✗ client events missing: interruption" in text
    assert "⚠ client event client_tool_call is off" in text and "⚠ client event user_transcript is off" in text
    # No transfer context: the transfer tool is not needed.
    text = render("bare", check(bare, overrides=(), control=CallControl()))
    assert "transfer_call" not in text


def test_server_text_stays_on_one_line():
    agent = agent_document("a", GOOD, True)
    agent["conversation_config"]["asr"]["user_input_audio_format"] = "x\r\nEvent: Hangup\x00" + "y" * 5000
    text = render("a", checklist(agent, api_key=True, allowed_overrides=(), control=CallControl()))
    assert "\r" not in text and "\x00" not in text and max(map(len, text.splitlines())) < 320
    assert not any(line.startswith("Event:") for line in text.splitlines())


def test_a_document_of_another_shape_never_raises():
    for agent in ({}, {"conversation_config": []}, {"platform_settings": {"overrides": "x"}},
                  {"conversation_config": {"agent": {"prompt": {"tools": [None, 3, {"type": "client"}]}}}}):
        checks = checklist(agent, api_key=True, allowed_overrides=("prompt",), control=CONTROL)
        assert any(c.mark is Mark.FAIL for c in checks)
