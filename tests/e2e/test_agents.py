"""Agents, per-call control from the dialplan, and what an administrator sees.

Each test runs a real Asterisk against the simulator; what the agent received
is read from the simulator's records, what Asterisk did from AMI and the CLI.
"""

from __future__ import annotations

import re
import statistics
import time
import urllib.request

import pytest

from pyconvai.sim import AgentScript
from tests.e2e.asterisk import MODULES, free_port
from tests.e2e.calls import API_KEY, tone_frames

ULAW = {"output_format": "ulaw_8000", "input_format": "ulaw_8000"}
SCRIPTS = {
    "agent_plain": AgentScript(**ULAW, greeting_ms=500),
    "agent_listener": AgentScript(**ULAW, greeting_ms=200, vad_threshold=1e9),
    "agent_override": AgentScript(**ULAW, greeting_ms=500, enabled_overrides=frozenset({"agent.first_message"})),
    "agent_limit": AgentScript(**ULAW, greeting_ms=500, reply_ms=1000),
    "agent_slow_url": AgentScript(**ULAW, signed_url_delay_s=5.0),
    "agent_long": AgentScript(**ULAW, greeting_ms=6000),
    "agent_events": AgentScript(**ULAW, greeting_ms=1000, reply_ms=3000, client_tool_name="lookup_account",
                                client_tool_parameters={"account": 7}),
}


@pytest.fixture
def bed(call_bed):
    def factory(agents, **kwargs):
        return call_bed(agents, SCRIPTS, **kwargs)

    return factory


def init_data(sim, agent_id: str, index: int = 0) -> dict:
    records = [r for r in sim.wait_for_conversations(1) if r.agent_id == agent_id]
    deadline = time.monotonic() + 10
    while len(records) <= index and time.monotonic() < deadline:
        time.sleep(0.05)
        records = [r for r in sim.conversations if r.agent_id == agent_id]
    return records[index].init_data or {}


VARS_DIALPLAN = """
exten => vars,1,Set(CALLERID(all)=Alice <5551234>)
 same => n,Set(CUSTOMER_TIER=gold)
 same => n,Set(ELEVENLABS_VAR_account=42)
 same => n,Goto(ai-${AGENT},1)
"""


@pytest.mark.parametrize("send_caller_number", ["yes", "no"])
def test_dynamic_variables_and_caller_number_reach_the_agent(bed, sim, send_caller_number):
    b = bed(
        {"persona": {"elevenlabs_agent_id": "agent_plain", "elevenlabs_send_caller_number": send_caller_number,
                     "dynamic_variable": ["customer_tier=${CUSTOMER_TIER}",
                                          "greeting_name=${CALLERID(name)} from ${CUSTOMER_TIER}"]}},
        extra_dialplan=VARS_DIALPLAN.replace("${AGENT}", "persona"),
    )
    b.ast.originate("vars", "caller-v1-2", ami=b.ami)
    started = b.event("ElevenLabsConversationStarted")
    data = init_data(sim, "agent_plain")
    assert data["dynamic_variables"] == {
        "caller_number": "5551234",
        "caller_name": "Alice",
        "called_number": "ai-persona",
        "call_uniqueid": started["Uniqueid"],
        "customer_tier": "gold",
        "greeting_name": "Alice from gold",
        "account": "42",
    }
    assert data.get("user_id") == ("5551234" if send_caller_number == "yes" else None)


def test_buffer_ms_sets_the_uplink_cadence(bed, sim):
    b = bed({"fine": {"elevenlabs_agent_id": "agent_listener", "elevenlabs_audio_frames_buffer_ms": 20},
             "coarse": {"elevenlabs_agent_id": "agent_listener", "elevenlabs_audio_frames_buffer_ms": 240}})
    b.call("fine", "talk-u1-1-speak1k-1")
    b.call("coarse", "talk-u2-1-speak1k-1")
    b.result(index=1)
    records = sim.wait_for_conversations(2)
    by_size = {}
    for record in records:
        chunks = list(record.audio_chunks)
        gaps = [b_t - a_t for (a_t, _), (b_t, _) in zip(chunks, chunks[1:])]
        by_size[len(chunks[0][1])] = (set(len(c) for _, c in chunks), statistics.median(gaps))
    assert set(by_size) == {160, 1920}  # 20 ms and 240 ms of μ-law
    assert by_size[160][0] == {160} and abs(by_size[160][1] - 0.020) < 0.005
    assert by_size[1920][0] == {1920} and abs(by_size[1920][1] - 0.240) < 0.030


@pytest.mark.parametrize("attempts, timeout", [(3, 1), (1, 2)])
def test_connection_attempts_and_timeout_are_honoured(bed, sim, attempts, timeout):
    b = bed({"slow": {"elevenlabs_agent_id": "agent_slow_url", "max_connection_attempts": attempts,
                      "connection_timeout_seconds": timeout}})
    b.call("slow", "caller-t1-20")
    result = b.result(timeout=30)
    failed_at = time.monotonic()
    assert result["Status"] == "FAILED" and re.search(r"time", result["Reason"], re.I), result["Reason"]
    deadline = time.monotonic() + 10  # the simulator records a request once it has answered it
    while len(requests := [r for r in sim.http_requests if r.params.get("agent_id") == "agent_slow_url"]) < attempts:
        assert time.monotonic() < deadline, requests
        time.sleep(0.1)
    time.sleep(0.5)
    assert len([r for r in sim.http_requests if r.params.get("agent_id") == "agent_slow_url"]) == attempts
    # Each attempt lasts the timeout; the client backs off 0.25 s, 0.5 s... between attempts.
    expected = attempts * timeout + sum(0.25 * 2**n for n in range(attempts - 1))
    elapsed = failed_at - requests[0].t
    assert abs(elapsed - expected) <= 0.1 * expected, (elapsed, expected)


OVERRIDE_DIALPLAN = """
exten => ov1,1,Set(ELEVENLABS_FIRST_MESSAGE=Hello from the dialplan)
 same => n,Set(ELEVENLABS_PROMPT=Be a pirate)
 same => n,Goto(ai-persona,1)
exten => ov2,1,Goto(ai-persona,1)
exten => ov3,1,Set(ELEVENLABS_FIRST_MESSAGE=Not allowed here)
 same => n,Goto(ai-closed,1)
"""


def test_overrides_are_sent_only_when_allowed(bed, sim):
    b = bed({"persona": {"elevenlabs_agent_id": "agent_override", "allow_overrides": "first_message",
                         "override_first_message": "Hello from the config", "override_prompt": "Config prompt"},
             "closed": {"elevenlabs_agent_id": "agent_plain"}},
            extra_dialplan=OVERRIDE_DIALPLAN)
    assert "override_prompt is set but 'prompt' is not in allow_overrides" in b.ast.log_text()
    for i, exten in enumerate(("ov1", "ov2", "ov3")):
        b.ast.originate(exten, f"caller-o{i}-1", ami=b.ami)
        assert b.result(index=i)["Status"] == "CALLER_HANGUP"  # the simulator accepted what was sent
    assert init_data(sim, "agent_override", 0)["conversation_config_override"] == {
        "agent": {"first_message": "Hello from the dialplan"}}
    assert init_data(sim, "agent_override", 1)["conversation_config_override"] == {
        "agent": {"first_message": "Hello from the config"}}
    assert "conversation_config_override" not in init_data(sim, "agent_plain", 0)
    log = b.ast.log_text()
    assert "ELEVENLABS_PROMPT is set but agent 'persona' does not allow the prompt override" in log
    assert "ELEVENLABS_FIRST_MESSAGE is set but agent 'closed' does not allow the first_message override" in log


def test_duration_limit_ends_the_call_after_the_agents_goodbye(bed, sim):
    b = bed({"limited": {"elevenlabs_agent_id": "agent_limit", "max_call_duration_seconds": 2}})
    started = time.monotonic()
    b.call("limited", "caller-l1-15")
    result = b.result(timeout=20)
    assert result["Status"] == "AGENT_ENDED"
    assert "maximum call duration (2 s) reached" in result["Reason"]
    assert time.monotonic() - started < 8
    record = sim.wait_for_conversations(1)[0]
    assert any(m.get("type") == "user_message" for _, m in record.messages)
    heard, rate = b.heard("l1")
    goodbye = tone_frames(heard, rate, 880.0)
    assert abs(goodbye.frames - 50) <= 1 and goodbye.gaps == 0  # the agent's answer, played to its end


def test_api_key_from_a_file_and_from_the_environment(bed, sim):
    b = bed({"filekey": {"elevenlabs_agent_id": "agent_plain", "elevenlabs_api_key": None,
                         "elevenlabs_api_key_file": "{etc}/elevenlabs.key"},
             "envkey": {"elevenlabs_agent_id": "agent_plain", "elevenlabs_api_key": None,
                        "elevenlabs_api_key_env": "CONVAI_TEST_API_KEY"}},
            configs={"elevenlabs.key": API_KEY + "\n"}, env={"CONVAI_TEST_API_KEY": API_KEY})
    assert "(from file)" in b.ast.cli("elevenlabs show agent filekey")
    assert "(from environment)" in b.ast.cli("elevenlabs show agent envkey")
    b.call("filekey", "caller-k1-1")
    b.call("envkey", "caller-k2-1")
    assert [b.result(index=i)["Status"] for i in range(2)] == ["CALLER_HANGUP"] * 2
    assert len([r for r in sim.http_requests if r.status == 200]) == 2  # both signed URLs granted
    assert API_KEY[8:] not in b.ast.log_text()


def test_reload_during_a_call_leaves_it_intact_and_applies_to_the_next(bed, sim):
    b = bed({"live": {"elevenlabs_agent_id": "agent_long"}})
    b.call("live", "caller-r1-8")
    b.event("ElevenLabsConversationStarted")
    time.sleep(1.0)
    b.ast.write_config("elevenlabs.conf", b.ast.host_path(b.ast.path("etc/elevenlabs.conf")).read_text()
                       .replace("agent_long", "agent_plain"))
    assert "reloaded" in b.ast.cli("elevenlabs reload")
    assert "agent_plain" in b.ast.cli("elevenlabs show agent live")
    b.result()
    heard, rate = b.heard("r1")
    greeting = tone_frames(heard, rate, 440.0)
    assert abs(greeting.frames - 300) <= 1 and greeting.gaps == 0  # the live call kept its agent
    b.call("live", "caller-r2-1")
    b.result(index=1)
    assert [r.agent_id for r in sim.wait_for_conversations(2)] == ["agent_long", "agent_plain"]


@pytest.mark.parametrize("where", ["agent", "general"])
def test_calls_over_max_concurrent_calls_are_busy_at_once(bed, sim, where):
    agents = {"solo": {"elevenlabs_agent_id": "agent_long"}, "other": {"elevenlabs_agent_id": "agent_long"}}
    general = None
    if where == "agent":
        agents["solo"]["max_concurrent_calls"] = 1
        second = "solo"
    else:
        general = {"max_concurrent_calls": 1}
        second = "other"
    b = bed(agents, general=general)
    b.call("solo", "caller-s1-4")
    b.event("ElevenLabsConversationStarted")
    asked = time.monotonic()
    b.call(second, "caller-s2-4")
    busy = b.result()
    assert time.monotonic() - asked < 1.0
    assert busy["Status"] == "BUSY" and busy["Where"] == "dialplan"
    assert "max_concurrent_calls" in b.event("ElevenLabsConversationEnded", Status="BUSY")["Reason"]
    assert "busy:" in b.ast.log_text()
    assert len(sim.conversations) == 1  # the busy call never reached ElevenLabs
    b.result(index=1)
    b.wait_idle()
    b.call(second, "caller-s3-1")  # the slot is free again
    assert b.result(index=2)["Status"] == "CALLER_HANGUP"


@pytest.mark.parametrize("exten, problem", [("ai-nosuch", "no agent 'nosuch' in elevenlabs.conf"),
                                             ("ai-solo-z", "invalid options 'z'")])
def test_unknown_agent_or_bad_option_is_a_config_error(bed, sim, exten, problem):
    b = bed({"solo": {"elevenlabs_agent_id": "agent_plain"}})
    b.ast.originate(exten, "caller-x1-2", ami=b.ami)
    result = b.result()
    assert result["Status"] == "CONFIG_ERROR" and result["Where"] == "dialplan"
    assert problem in b.ast.log_text()
    assert b.event("ElevenLabsConversationEnded")["Status"] == "CONFIG_ERROR"


TWICE_DIALPLAN = """
exten => twice,1,Answer()
 same => n,Wait(2)
 same => n,Playback(${SOUNDS}/speak1k)
 same => n,Playback(${SOUNDS}/quiet1s)
 same => n,Playback(${SOUNDS}/speak1k)
 same => n,Wait(2)
 same => n,Hangup()
"""


def test_ami_events_carry_the_documented_fields(bed, sim):
    """Greeting and a client tool call, a turn, then the caller talks over the reply.

    The caller plays silence between its two utterances (during Wait() a Local
    channel sends nothing, so the simulator's VAD would never hear the pause).
    """
    b = bed({"events": {"elevenlabs_agent_id": "agent_events", "elevenlabs_audio_frames_buffer_ms": 20}},
            extra_dialplan=TWICE_DIALPLAN)
    b.call("events", "twice")
    b.result()
    record = sim.wait_for_conversations(1)[0]
    common = {"Agent": "events", "ConversationID": record.conversation_id}
    started = b.event("ElevenLabsConversationStarted", **common)
    assert started["Channel"].startswith("Local/ai-events@e2e") and started["Uniqueid"]
    agent_line = b.event("ElevenLabsTranscript", Role="agent", **common)
    assert agent_line["Text"] == SCRIPTS["agent_events"].greeting_text and agent_line["EventID"]
    assert b.event("ElevenLabsTranscript", Role="user", **common)["Text"]
    interruption = b.event("ElevenLabsInterruption", **common)
    assert int(interruption["EventID"]) == record.interruptions[0] and int(interruption["DroppedFrames"]) >= 0
    tool = b.event("ElevenLabsToolCall", **common)
    assert (tool["Tool"], tool["Source"], tool["IsError"]) == ("lookup_account", "client", "yes")
    assert tool["Parameters"] == '{"account":7}' and tool["ToolCallID"]
    ended = b.event("ElevenLabsConversationEnded", **common)
    assert ended["Status"] == "CALLER_HANGUP" and ended["Reason"] and float(ended["Duration"]) > 2
    stats = b.event("ElevenLabsConversationStats", **common)
    assert int(stats["FramesOut"]) > 0 and int(stats["FramesIn"]) > 0 and stats["Interruptions"] == "1"


def test_show_calls_lists_a_live_call_with_moving_counters(bed, sim):
    b = bed({"live": {"elevenlabs_agent_id": "agent_long"}})
    b.call("live", "caller-c1-4")
    b.event("ElevenLabsConversationStarted")
    time.sleep(0.5)
    rows = []
    for _ in range(2):
        out = b.ast.cli("elevenlabs show calls")
        rows.append(next(line for line in out.splitlines() if line.startswith("Local/ai-live@e2e")))
        time.sleep(1.0)
    conversation = sim.conversations[0].conversation_id
    assert all(conversation in row and " live " in row for row in rows)
    frames_out = [int(row.split()[5]) for row in rows]
    assert frames_out[1] - frames_out[0] >= 40, rows  # about 50 frames a second
    assert re.search(r"\d+ ms\s*$", rows[1]), rows[1]  # the last downlink latency
    b.result()
    b.wait_idle()
    assert "0 call(s)" in b.ast.cli("elevenlabs show calls")


def test_metrics_through_res_prometheus_and_the_cli(bed, sim):
    port = free_port()
    b = bed({"plain": {"elevenlabs_agent_id": "agent_plain"}},
            # Debian builds res_prometheus with PJSIP metrics: it needs res_pjsip's symbols.
            modules=["res_pjproject.so", "res_sorcery_config.so", "res_sorcery_memory.so", "res_sorcery_astdb.so",
                     "res_pjsip.so", "res_prometheus.so", *MODULES],
            configs={"http.conf": f"[general]\nenabled = yes\nbindaddr = 127.0.0.1\nbindport = {port}\n",
                     "prometheus.conf": "[general]\nenabled = yes\nuri = metrics\n"})
    b.call("plain", "caller-p1-1")
    b.result()
    b.stats()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        scraped = response.read().decode()
    cli = b.ast.cli("elevenlabs show metrics")
    for text in (scraped, cli):
        assert 'asterisk_elevenlabs_calls_total{status="CALLER_HANGUP"} 1' in text
        assert 'asterisk_elevenlabs_calls_active{agent="plain"} 0' in text
        assert "asterisk_elevenlabs_downlink_latency_seconds_count 1" in text
        assert re.search(r"asterisk_elevenlabs_frames_out_total [1-9]\d*", text)


def test_show_agent_completion_and_debug_for_one_agent(bed, sim):
    b = bed({"persona": {"elevenlabs_agent_id": "agent_plain", "allow_overrides": "first_message, language",
                         "dynamic_variable": "tier=${TIER}"},
             "other": {"elevenlabs_agent_id": "agent_plain"}})
    out = b.ast.cli("elevenlabs show agent persona")
    assert "Agent ID:             agent_plain" in out
    assert "sk_\u2026abcd" in out and API_KEY not in out
    assert "Overrides allowed:    first_message language" in out
    assert "tier = ${TIER}" in out
    assert "No agent 'nobody'" in b.ast.cli("elevenlabs show agent nobody")
    assert set(b.ast.cli('_command matchesarray "elevenlabs show agent " ""').split()) >= {"persona", "other"}
    assert "enabled for agent persona" in b.ast.cli("elevenlabs debug on persona")
    rows = {line.split()[0]: line for line in b.ast.cli("elevenlabs show agents").splitlines()[1:-1]}
    assert rows["persona"].rstrip().endswith("Yes") and rows["other"].rstrip().endswith("No")
