"""Calls through the module in a real Asterisk, against the simulator."""

from __future__ import annotations

import pytest

from pyconvai.sim import AgentScript, SimConfig, Simulator
from tests.e2e.calls import dialplan, read_wav, tone_frames, tone_wav

API_KEY = "sk_test_0123456789abcdef0123456789abcd"


@pytest.fixture
def sim():
    scripts = {
        "agent_greeting": AgentScript(output_format="ulaw_8000", input_format="ulaw_8000", greeting_ms=3000),
    }
    with Simulator(SimConfig(api_key=API_KEY, agents=scripts)) as simulator:
        yield simulator


def agents_conf(sim, **agents: dict) -> str:
    text = "[general]\n"
    for name, keys in agents.items():
        text += f"\n[{name}]\nelevenlabs_api_key = {API_KEY}\nelevenlabs_get_signed_url_endpoint = {sim.signed_url_endpoint}\n"
        text += "".join(f"{k} = {v}\n" for k, v in keys.items())
    return text


@pytest.fixture
def call_bed(make_asterisk, sim):
    """An Asterisk with the e2e dialplan and an AMI client."""

    def factory(agents: dict[str, dict], **kwargs):
        ast = make_asterisk(start=False, **kwargs)
        ast.write_config("elevenlabs.conf", agents_conf(sim, **agents))
        ast.write_config("extensions.conf", dialplan(ast.path("rec"), ast.path("sounds")))
        ast.start()
        ami = ast.ami()
        return ast, ami

    return factory


def result_event(ami, timeout=30.0):
    return ami.wait_event(lambda e: e.get("Event") == "UserEvent" and e.get("UserEvent") == "ConvaiResult", timeout)


def test_greeting_is_heard_complete_and_at_real_time(call_bed, sim):
    ast, ami = call_bed({"greeter": {"elevenlabs_agent_id": "agent_greeting"}})
    ast.originate("ai-greeter", "caller-g1-6")
    event = result_event(ami)
    samples, rate = read_wav(ast.recording("g1-heard.wav"))
    span = tone_frames(samples, rate, 440.0)
    assert span.first is not None, "greeting not heard"
    assert span.gaps == 0, f"{span.gaps} silent frames inside the greeting"
    assert abs(span.frames - 150) <= 2, f"greeting lasted {span.frames * 20} ms, expected 3000 ms"
    assert event["Status"] == "CALLER_HANGUP"
