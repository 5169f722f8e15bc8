"""Faults, abuse and operations, inside a real Asterisk: it stays up, no channel is left,
every call ends with a status, and nothing from the network forges a header or a log line."""

from __future__ import annotations

import os
import shutil
import threading
import time

import pytest

from pyconvai.sim import AgentScript
from tests.e2e.calls import API_KEY, assert_one_line_each, tone_frames

FLOOD_SECONDS = int(os.environ.get("CONVAI_FLOOD_SECONDS", "300"))
"""How long the flood test's agent sends 10x real time (the issue asks for 5 minutes)."""
HOSTILE = "\r\nEvent: Hangup\r\nChannel: SIP/victim-0001\x00" + "y" * (1 << 20)
"""Appended to every text field a hostile agent sends: AMI header and log line injection, a
NUL for C strings, and 1 MiB."""
ULAW = {"output_format": "ulaw_8000", "input_format": "ulaw_8000"}
SCRIPTS = {
    "agent_greeting": AgentScript(**ULAW, greeting_ms=2000),
    "agent_long_greeting": AgentScript(**ULAW, greeting_ms=20000, vad_threshold=1e9),
    "agent_bad_id": AgentScript(**ULAW, greeting_ms=8000, reply_ms=1500, vad_scores=True,
                                interruption_event_id=2**53),
    "agent_hostile": AgentScript(
        **ULAW, greeting_ms=6000, reply_ms=500, client_tool_name="crm_lookup",
        client_tool_parameters={"account": "A-1", "note": HOSTILE}, close_after_s=5.0, close_code=1011,
        close_reason="bad", hostile_text=HOSTILE),
    "agent_hostile_url": AgentScript(**ULAW, signed_url_refusal=403, hostile_text=HOSTILE),
    "agent_narrow_in": AgentScript(output_format="pcm_16000", input_format="ulaw_8000", greeting_ms=1000),
    "agent_flood": AgentScript(**ULAW, greeting_ms=(FLOOD_SECONDS + 10) * 10_000, send_speed=10.0,
                               ping_interval_s=0.005),
}


@pytest.fixture
def bed(call_bed):
    return lambda agents, **kwargs: call_bed(agents, SCRIPTS, **kwargs)


def assert_healthy(b) -> None:
    """Asterisk answers, no channel or conversation is left behind."""
    b.wait_idle(timeout=30)
    assert "Running" in b.ast.cli("module show like elevenlabs")
    assert "Runtime:         running" in b.ast.cli("elevenlabs show runtime")


def test_reloads_at_once_never_race(bed, sim):
    """'elevenlabs reload' goes through the loader's reload lock, as 'module reload' does."""
    b = bed({"greeter": {"elevenlabs_agent_id": "agent_greeting"}})
    answers: list[str] = []

    def reload(command: str) -> None:
        for _ in range(10):
            answers.append(b.ast.cli(command))

    threads = [threading.Thread(target=reload, args=(command,))
               for command in ("elevenlabs reload", "elevenlabs reload", "module reload app_elevenlabs_convai")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    mine = [a for a in answers if "elevenlabs.conf" in a or "reload is in progress" in a]
    assert mine and all(("reloaded" in a) or ("reload is in progress" in a) for a in mine), mine
    assert "greeter" in b.ast.cli("elevenlabs show agents")
    b.call("greeter", "caller-r1-3")
    assert b.result()["Status"] == "CALLER_HANGUP"
    assert_healthy(b)


def test_a_rotated_key_file_is_read_again_by_reload(bed, sim):
    b = bed({"filed": {"elevenlabs_agent_id": "agent_greeting", "elevenlabs_api_key": None,
                       "elevenlabs_api_key_file": "{etc}/key", "max_connection_attempts": 1}})
    key = b.ast.host_path(b.ast.path("etc")) / "key"
    key.write_text("sk_revoked_key_000000000000000\n")
    key.chmod(0o600)
    assert "elevenlabs.conf reloaded" in b.ast.cli("elevenlabs reload")
    b.call("filed", "caller-k1-3")
    assert b.result()["Status"] == "FAILED"  # the revoked key: HTTP 401
    key.write_text(API_KEY + "\n")  # elevenlabs.conf itself does not change
    assert "elevenlabs.conf reloaded" in b.ast.cli("elevenlabs reload")
    b.call("filed", "caller-k2-3")
    # A FAILED call reports twice (dialplan, then h); the next one's report says it connected.
    assert b.event("UserEvent", UserEvent="ConvaiResult", Status="CALLER_HANGUP")["Channel"] != \
        b.result()["Channel"]
    assert "sk_revoked" not in b.ast.log_text() and API_KEY not in b.ast.log_text()


def test_a_key_file_others_can_read_is_warned_about(bed, sim):
    b = bed({"filed": {"elevenlabs_agent_id": "agent_greeting", "elevenlabs_api_key": None,
                       "elevenlabs_api_key_file": "{etc}/key"}})
    key = b.ast.host_path(b.ast.path("etc")) / "key"
    key.write_text(API_KEY)
    key.chmod(0o644)
    b.ast.cli("elevenlabs reload")
    b.ast.wait_for_log_match(r"elevenlabs_api_key_file \S+/key can be read by others \(mode 644\)")


def test_a_clear_text_endpoint_beyond_this_machine_is_refused(make_asterisk):
    ast = make_asterisk({"elevenlabs.conf": "[a]\nelevenlabs_agent_id = x\n"
                         "elevenlabs_get_signed_url_endpoint = http://api.example.com/v1/get-signed-url\n"})
    ast.wait_for_log_match(r"\[a\] elevenlabs_get_signed_url_endpoint must be an https:// URL")
    assert "No configuration loaded" in ast.cli("elevenlabs show agents")


def test_server_text_cannot_forge_ami_headers_variables_or_log_lines(bed, sim):
    """CR/LF/NUL and 1 MiB in every text field the agent sends (conversation id, transcripts,
    correction, tool name, call id and parameters, error message, close reason) and in the
    signed-URL endpoint's error body."""
    b = bed({"hostile": {"elevenlabs_agent_id": "agent_hostile", "client_tools_via_ami": "yes"},
             "refused": {"elevenlabs_agent_id": "agent_hostile_url", "max_connection_attempts": 1}})
    b.call("hostile", "talk-h1-2-speak1k-6")
    result = b.result()
    assert result["Status"] == "FAILED"
    assert "1011: unknown Event: Hangup Channel: SIP/victim-0001 yyy" in result["Reason"]  # kept, on one line
    record = sim.wait_for_conversations(1)[0]
    assert record.interruptions and record.sent_of_type("agent_response_correction")
    assert result["Conversation"].startswith(f"{record.conversation_id} Event: Hangup Channel: SIP/victim-0001 yyy")
    ours = [e for e in b.ami.events if e.get("Event", "").startswith("ElevenLabs")]
    kinds = {e["Event"] for e in ours}
    assert {"ElevenLabsConversationStarted", "ElevenLabsTranscript", "ElevenLabsToolCall",
            "ElevenLabsConversationEnded"} <= kinds, kinds
    assert_one_line_each(ours + b.events("UserEvent"))

    b.call("refused", "caller-h2-3")
    refused = b.event("UserEvent", index=1, UserEvent="ConvaiResult", Where="dialplan")
    assert refused["Status"] == "FAILED" and "HTTP 403" in refused["Reason"], refused
    assert_one_line_each(b.events("UserEvent"))

    assert not [e for e in b.events("Hangup") if e.get("Channel", "").startswith("SIP/victim")]
    lines = b.ast.log_text().splitlines()
    assert not [line for line in lines if line.startswith(("Event:", "Channel: SIP/victim"))]
    assert [line for line in lines if "yyyy" in line]
    assert all(len(line) < 2300 for line in lines if "yyyy" in line)
    assert_healthy(b)


def test_an_interruption_id_from_nowhere_does_not_silence_the_call(bed, sim):
    b = bed({"barge": {"elevenlabs_agent_id": "agent_bad_id", "elevenlabs_audio_frames_buffer_ms": 20}})
    b.call("barge", "talk-b1-2-speak1k-4")
    b.result()
    record = sim.wait_for_conversations(1)[0]
    assert record.interruptions, "the simulator saw no barge-in"
    heard, rate = b.heard("b1")
    greeting, reply = tone_frames(heard, rate, 440.0), tone_frames(heard, rate, 880.0)
    assert greeting.frames < 8000 // 20 - 100, "the greeting was not interrupted"
    assert abs(reply.frames - 1500 // 20) <= 1, "the reply after the bad id was not heard"
    assert "interruption event_id 9007199254740992 is far beyond" in b.ast.log_text()
    assert_healthy(b)


def test_audio_and_pings_far_faster_than_real_time_stay_bounded(bed, sim):
    """For FLOOD_SECONDS (5 minutes) the agent sends 10x real time and pings every 5 ms. The
    call holds at most MAX_QUEUED_MS of audio (the oldest dropped and counted), so Asterisk's
    memory stops growing once that much is held; the pings are answered; the call ends cleanly."""
    b = bed({"flood": {"elevenlabs_agent_id": "agent_flood"}})
    b.call("flood", f"caller-x1-{FLOOD_SECONDS}")
    b.event("ElevenLabsConversationStarted")
    before = b.ast.process_stats()["rss_kib"]
    rss_kib = []
    while not b.events("UserEvent"):
        rss_kib.append(b.ast.process_stats()["rss_kib"])
        time.sleep(1)
    assert b.result()["Status"] == "CALLER_HANGUP"
    stats = b.stats()
    assert int(stats["AgentAudioDroppedFrames"]) > 0
    assert "dropping the oldest" in b.ast.log_text()
    record = sim.wait_for_conversations(1)[0]
    assert len(record.pongs) > FLOOD_SECONDS * 30 and record.close_code == 1000
    # The cap (60 s of μ-law is 480 KB, more as Python frames) is reached in 6 s at 10x;
    # from then on, minutes more of flooding must not grow the process.
    if not os.environ.get("CONVAI_ASAN"):  # ASan's quarantine keeps freed memory resident
        assert max(rss_kib) - before < 8 * 1024, (before, rss_kib)
        settled = rss_kib[len(rss_kib) // 4:]
        assert max(settled) - settled[0] < 2 * 1024, (before, rss_kib[::10])
    assert_healthy(b)


def test_forced_unloads_leave_live_calls_and_asterisk_alone(bed, sim):
    b = bed({"greeter": {"elevenlabs_agent_id": "agent_greeting"}})
    b.call("greeter", "caller-u1-6")
    b.event("ElevenLabsConversationStarted")
    b.ast.cli("module unload -f app_elevenlabs_convai.so")
    assert "Running" in b.ast.cli("module show like elevenlabs")
    b.ast.cli("module unload -h app_elevenlabs_convai.so")
    assert b.result()["Status"] == "CALLER_HANGUP"  # the live call was not hung up by either
    heard, rate = b.heard("u1")
    assert abs(tone_frames(heard, rate, 440.0).frames - 100) <= 1
    b.call("greeter", "caller-u2-3")  # the application and its CLI still work, nothing freed under them
    assert b.result(index=1)["Status"] == "CALLER_HANGUP"
    assert "Live calls" in b.ast.cli("elevenlabs show runtime")
    b.wait_idle()


def test_a_venv_missing_a_package_says_so_and_recovers_on_reload(make_asterisk):
    ast = make_asterisk(start=False)
    venv = ast.path("lib") + "/venv-incomplete"
    shutil.copytree(ast.host_path("/opt/app_elevenlabs_convai/venv"), ast.host_path(venv), symlinks=True)
    (orjson,) = ast.host_path(venv).glob("lib/python3*/site-packages/orjson")
    aside = orjson.with_name("orjson-aside")
    orjson.rename(aside)
    ast.write_config("elevenlabs.conf", f"[general]\npython_venv = {venv}\n[a]\nelevenlabs_agent_id = x\n")
    ast.start()
    assert "No module named 'orjson'" in ast.wait_for_log("import pyconvai.runtime failed")
    assert "Runtime:         not running" in ast.cli("elevenlabs show runtime")
    aside.rename(orjson)  # the administrator installs it, then two consoles reload at once
    reloads = [threading.Thread(target=ast.cli, args=(command,)) for command in
               ("elevenlabs reload", "elevenlabs reload", "module reload app_elevenlabs_convai.so")]
    for thread in reloads:
        thread.start()
    for thread in reloads:
        thread.join(30)
    assert "Runtime:         running" in ast.cli("elevenlabs show runtime")
    log = ast.log_text()
    assert "another module already embeds Python" not in log
    assert log.count("ElevenLabs Python runtime started from") == 1, "started more than once"


@pytest.mark.parametrize("how", ["now", "gracefully"])
def test_shutdown_with_live_wss_calls_closes_each_with_1000(call_bed, sim, tmp_path, how):
    from tests.loopback.loopback_helpers import self_signed_cert

    calls = 100
    b = call_bed({"greeter": {"elevenlabs_agent_id": "agent_greeting"}}, SCRIPTS, tls=self_signed_cert(tmp_path))
    assert sim.signed_url_endpoint.startswith("https://")
    for i in range(calls):
        b.call("greeter", f"caller-s{i}-60")
    for i in range(calls):
        b.event("ElevenLabsConversationStarted", index=i, timeout=120)
    if how == "gracefully":
        b.ast.cli("channel request hangup all")
        b.ast.cli("core stop gracefully")
        assert b.ast.process.wait(60) == 0
    else:
        assert b.ast.stop(timeout=30) == 0
    records = sim.wait_for_conversations(calls)
    assert all(r.closed.wait(10) for r in records)
    assert [(r.close_code, r.closed_by) for r in records] == [(1000, "client")] * calls
    assert "Segmentation" not in b.ast.stdout_text()


def test_no_translation_path_for_the_callers_codec_ends_the_call_once(bed, sim):
    """A caller whose codec cannot reach the agent's input: slin16 to μ-law with no resampler
    loaded (as G.729 with no codec module). The agent speaks slin16, so only capture fails."""
    from pyconvai.sim import audio
    from tests.e2e.asterisk import MODULES

    b = bed({"wide_out": {"elevenlabs_agent_id": "agent_narrow_in"}},
            modules=[m for m in MODULES if m not in ("codec_resample.so", "codec_g722.so")])  # g722 resamples too
    sound = b.ast.host_path(b.ast.path("sounds")) / "speak16k.sln16"
    sound.write_bytes(audio.tone(1000.0, 1000, 16000, 12000) + audio.silence(300, 16000))
    b.call("wide_out", "talk-t1-1-speak16k-3", codecs="slin16")
    result = b.result()
    assert result["Status"] == "FAILED" and "cannot be translated" in result["Reason"], result
    errors = [line for line in b.ast.log_text().splitlines() if "no translation path" in line]
    assert len(errors) == 1, errors
    assert_healthy(b)


def test_module_reload_while_100_calls_talk(bed, sim):
    b = bed({"greeter": {"elevenlabs_agent_id": "agent_long_greeting"}})
    before = b.baseline("greeter")
    calls = 100
    for i in range(calls):
        b.call("greeter", f"caller-m{i}-8")
    for i in range(calls):
        b.event("ElevenLabsConversationStarted", index=i + 1, timeout=120)
    for _ in range(5):
        assert "reloaded" in b.ast.cli("elevenlabs reload")
        b.ast.cli("module reload app_elevenlabs_convai")
    statuses = [b.result(index=i + 1, timeout=120)["Status"] for i in range(calls)]
    assert statuses == ["CALLER_HANGUP"] * calls
    assert all(r.closed.wait(10) and r.close_code == 1000 for r in sim.wait_for_conversations(calls + 1))
    b.wait_idle(timeout=60)
    after = b.ast.process_stats()
    assert after["threads"] <= before["threads"] + 2 and after["fds"] <= before["fds"] + 2, (before, after)
