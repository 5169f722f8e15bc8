"""The simulator against a raw ``websockets`` client and httpx, on 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from loopback_helpers import self_signed_cert

from pyconvai.sim import audio
from pyconvai.sim import PRESETS, AgentScript, SimConfig, Simulator
from pyconvai.sim.voice import LARGE_FRAME_BYTES, Vad, split

API_KEY = "sk-test-1234"
AGENT = "agent_test"
KEY = {"xi-api-key": API_KEY}
INIT = {"type": "conversation_initiation_client_data", "conversation_config_override": {},
        "dynamic_variables": {"caller_id": "+15550100"}}
TONES = (440, 660, 880, 1200)
FAST = {"send_speed": 20.0, "greeting_ms": 300, "reply_ms": 300, "goodbye_ms": 200}


@contextmanager
def running(script: AgentScript | None = None, **config: object) -> Iterator[Simulator]:
    agents = {AGENT: script} if script is not None else {}
    sim = Simulator(SimConfig(api_key=API_KEY, agents=agents, **config))  # type: ignore[arg-type]
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


@dataclass
class ClientRun:
    """What a raw client saw."""

    received: list[dict]
    close_code: int | None
    close_reason: str | None
    close_frame_received: bool

    def of_type(self, kind: str) -> list[dict]:
        return [m for m in self.received if m["type"] == kind]

    def index(self, msg: dict) -> int:
        return next(i for i, m in enumerate(self.received) if m is msg)


def silent(_t: float) -> bool:
    return False


def speaks(start: float, end: float) -> Callable[[float], bool]:
    return lambda t: start <= t < end


async def _talk(
    url: str,
    *,
    speaking: Callable[[float], bool] | None = silent,
    fmt: str = "pcm_16000",
    init: dict | None = INIT,
    hangup_after: float | None = None,
    answer_pings: bool = True,
    reply: Callable[[dict], dict | None] = lambda _m: None,
    subprotocols: list[str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 6.0,
) -> ClientRun:
    """Run one conversation: caller audio in 20 ms chunks (none if ``speaking`` is None)."""
    received: list[dict] = []
    rate = audio.sample_rate(fmt)
    speech = audio.encode(audio.tone(300, 20, rate, 10000), fmt)
    quiet = audio.encode(audio.silence(20, rate), fmt)
    async with connect(url, subprotocols=subprotocols, ssl=ssl_context, max_size=16 * 2**20,
                       open_timeout=3, close_timeout=2) as ws:
        t0 = time.monotonic()

        async def feed() -> None:
            while hangup_after is None or time.monotonic() - t0 < hangup_after:
                if speaking is not None:
                    chunk = speech if speaking(time.monotonic() - t0) else quiet
                    await ws.send(json.dumps({"user_audio_chunk": base64.b64encode(chunk).decode()}))
                await asyncio.sleep(0.02)
            await ws.close(1000, "User ended conversation")

        async def read() -> None:
            async for raw in ws:
                msg = json.loads(raw)
                received.append(msg)
                if answer_pings and msg["type"] == "ping":
                    await ws.send(json.dumps({"type": "pong", "event_id": msg["ping_event"]["event_id"]}))
                answer = reply(msg)
                if answer is not None:
                    await ws.send(json.dumps(answer))

        try:
            if init is not None:
                await ws.send(json.dumps(init))
            feeder = asyncio.create_task(feed())
            async with asyncio.timeout(timeout):
                await read()
            feeder.cancel()
        except ConnectionClosed:
            pass
        except TimeoutError:
            raise AssertionError(f"conversation still open after {timeout} s") from None
    return ClientRun(received, ws.close_code, ws.close_reason, ws.protocol.close_rcvd is not None)


def talk(url: str, **kwargs: object) -> ClientRun:
    return asyncio.run(_talk(url, **kwargs))  # type: ignore[arg-type]


def agent_url(sim: Simulator, agent_id: str = AGENT) -> str:
    return f"{sim.ws_url}?agent_id={agent_id}"


def closed_record(sim: Simulator, index: int = 0):
    record = sim.wait_for_conversations(index + 1, timeout=3)[index]
    assert record.closed.wait(3)
    return record


def dominant_tone(data: bytes, fmt: str) -> int:
    pcm = audio.decode(data, fmt)
    rate = audio.sample_rate(fmt)
    return max(TONES, key=lambda f: audio.goertzel_power(pcm, rate, f))


def audio_bytes(msg: dict) -> bytes:
    return base64.b64decode(msg["audio_event"]["audio_base_64"])


# --- signed URL ----------------------------------------------------------------


def test_signed_url_endpoint() -> None:
    with running(AgentScript(), strict=True) as sim:
        endpoint = sim.signed_url_endpoint
        assert endpoint == f"http://127.0.0.1:{sim.port}/v1/convai/conversation/get-signed-url"
        missing_key = httpx.get(endpoint, params={"agent_id": AGENT}, timeout=3)
        assert missing_key.status_code == 401
        assert missing_key.json() == {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}}
        bad_key = httpx.get(endpoint, params={"agent_id": AGENT}, headers={"xi-api-key": "nope"}, timeout=3)
        assert bad_key.status_code == 401
        no_agent = httpx.get(endpoint, headers=KEY, timeout=3)
        assert no_agent.status_code == 422
        assert no_agent.json() == {"detail": [{"loc": ["query", "agent_id"], "msg": "field required",
                                               "type": "value_error.missing"}]}
        for path in ("get-signed-url", "get_signed_url"):
            ok = httpx.get(f"{sim.base_url}/v1/convai/conversation/{path}", params={"agent_id": AGENT},
                           headers=KEY, timeout=3)
            assert ok.status_code == 200 and ok.headers["content-type"] == "application/json"
            signed = urlsplit(ok.json()["signed_url"])
            assert (signed.scheme, signed.netloc, signed.path) == ("ws", f"127.0.0.1:{sim.port}",
                                                                   "/v1/convai/conversation")
            query = parse_qs(signed.query)
            assert query["agent_id"] == [AGENT] and len(query["conversation_signature"][0]) >= 16
        unknown = httpx.get(endpoint, params={"agent_id": "agent_other"}, headers=KEY, timeout=3)
        assert unknown.status_code == 404
        assert httpx.get(f"{sim.base_url}/v1/other", timeout=3).status_code == 404
        assert [r.status for r in sim.http_requests] == [401, 401, 422, 200, 200, 404, 404]


def test_unknown_agent_falls_back_to_default_script_unless_strict() -> None:
    with running(default_script=AgentScript(output_format="pcm_24000", **FAST)) as sim:
        ok = httpx.get(sim.signed_url_endpoint, params={"agent_id": "agent_any"}, headers=KEY, timeout=3)
        assert ok.status_code == 200
        run = talk(ok.json()["signed_url"], hangup_after=0.2)
        meta = run.received[0]["conversation_initiation_metadata_event"]
        assert meta["agent_output_audio_format"] == "pcm_24000"
    with running(AgentScript(), strict=True) as sim:
        run = talk(agent_url(sim, "agent_other"), init=None)
        assert run.received == [] and run.close_code == 1008 and run.close_reason == "Agent not found"


def test_slow_signed_url_lets_clients_time_out() -> None:
    with running(AgentScript(signed_url_delay_s=0.8)) as sim:
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(sim.signed_url_endpoint, params={"agent_id": AGENT}, headers=KEY, timeout=0.2)
        t0 = time.monotonic()
        ok = httpx.get(sim.signed_url_endpoint, params={"agent_id": AGENT}, headers=KEY, timeout=3)
        assert ok.status_code == 200 and time.monotonic() - t0 >= 0.75


# --- handshake -------------------------------------------------------------------


def test_metadata_first_with_configured_formats_and_caller_audio_recorded() -> None:
    script = AgentScript(output_format="ulaw_8000", input_format="pcm_8000", **FAST)
    with running(script, init_timeout_s=0.3) as sim:
        run = talk(agent_url(sim), fmt="pcm_8000", hangup_after=0.3, subprotocols=["convai"])
        first = run.received[0]
        assert first["type"] == "conversation_initiation_metadata"
        meta = first["conversation_initiation_metadata_event"]
        assert meta["agent_output_audio_format"] == "ulaw_8000"
        assert meta["user_input_audio_format"] == "pcm_8000"
        assert meta["conversation_id"].startswith("conv_sim_")
        assert len(run.of_type("conversation_initiation_metadata")) == 1
        record = closed_record(sim)
        assert record.conversation_id == meta["conversation_id"] and record.agent_id == AGENT
        assert record.subprotocol == "convai" and record.init_data == INIT
        assert (record.close_code, record.close_reason, record.closed_by) == (1000, "User ended conversation",
                                                                              "client")
        chunks = [base64.b64decode(m["user_audio_chunk"]) for _, m in record.messages if "user_audio_chunk" in m]
        assert chunks and record.received_audio == b"".join(chunks) == bytes(len(record.received_audio))

        # Without an init message (nor anything else) or a subprotocol, the metadata still comes
        # first, once the server gave up waiting for the init message.
        t0 = time.monotonic()
        run = talk(agent_url(sim), speaking=None, init=None, hangup_after=0.6)
        assert run.received[0]["type"] == "conversation_initiation_metadata"
        record = closed_record(sim, 1)
        assert record.subprotocol is None and record.init_data is None
        assert record.sent[0][0] - t0 >= 0.25


def test_pings_are_periodic_and_pongs_recorded() -> None:
    with running(AgentScript(ping_interval_s=0.1, greeting_ms=0)) as sim:
        run = talk(agent_url(sim), hangup_after=0.55)
        pings = [m["ping_event"] for m in run.of_type("ping")]
        assert len(pings) >= 4
        assert pings[0]["ping_ms"] is None
        assert all(isinstance(p["ping_ms"], int) for p in pings[1:])
        record = closed_record(sim)
        assert record.pings_sent == [p["event_id"] for p in pings]
        assert record.pongs == record.pings_sent

        run = talk(agent_url(sim), hangup_after=0.35, answer_pings=False)
        assert all(m["ping_event"]["ping_ms"] is None for m in run.of_type("ping"))
        assert closed_record(sim, 1).pongs == []


# --- turns -------------------------------------------------------------------------


def test_barge_in_sends_interruption_stale_chunks_and_reply_with_the_same_id() -> None:
    fmt = "ulaw_8000"
    script = AgentScript(output_format=fmt, input_format=fmt, greeting_ms=2000, reply_ms=400, send_speed=10.0)
    with running(script) as sim:
        run = talk(agent_url(sim), fmt=fmt, speaking=speaks(0.4, 0.7), hangup_after=1.3)
        greeting = run.of_type("agent_response")[0]["agent_response_event"]
        n = greeting["event_id"]
        [interruption] = run.of_type("interruption")
        m = interruption["interruption_event"]["event_id"]
        assert m > n
        at = run.index(interruption)
        before, after = run.received[:at], run.received[at + 1:]
        assert {dominant_tone(audio_bytes(x), fmt) for x in before if x["type"] == "audio"} == {440}

        stale = [x for x in after if x["type"] == "audio" and x["audio_event"]["event_id"] == n]
        assert len(stale) == script.late_stale_chunks
        assert all(dominant_tone(audio_bytes(x), fmt) == 1200 for x in stale)
        assert run.received[at + 1: at + 1 + len(stale)] == stale

        kinds = [x["type"] for x in after[len(stale):]]
        assert kinds[:3] == ["agent_response_correction", "user_transcript", "agent_response"]
        correction = after[len(stale)]["agent_response_correction_event"]
        assert correction["event_id"] == n
        assert correction["original_agent_response"] == greeting["agent_response"]
        assert greeting["agent_response"].startswith(correction["corrected_agent_response"])
        assert correction["corrected_agent_response"] != greeting["agent_response"]
        transcript = after[len(stale) + 1]["user_transcription_event"]
        assert transcript == {"user_transcript": "[caller speech]", "event_id": m}
        assert after[len(stale) + 2]["agent_response_event"]["event_id"] == m
        reply_audio = [x for x in after if x["type"] == "audio" and x["audio_event"]["event_id"] == m]
        assert reply_audio and all(dominant_tone(audio_bytes(x), fmt) == 880 for x in reply_audio)

        record = closed_record(sim)
        assert record.interruptions == [m]
        assert record.audio_sent_ms[m] == pytest.approx(400)
        assert record.audio_sent_ms[n] == pytest.approx(2000 + 3 * script.stale_chunk_ms)


def test_plain_turn_after_the_greeting_has_played() -> None:
    with running(AgentScript(**FAST)) as sim:
        run = talk(agent_url(sim), speaking=speaks(0.6, 0.9), hangup_after=1.3)
        assert run.of_type("interruption") == []
        [transcript] = run.of_type("user_transcript")
        responses = [x["agent_response_event"]["event_id"] for x in run.of_type("agent_response")]
        m = transcript["user_transcription_event"]["event_id"]
        assert len(responses) == 2 and m == responses[1] > responses[0]
        assert closed_record(sim).interruptions == []


def test_user_message_triggers_a_reply() -> None:
    def send_text(msg: dict) -> dict | None:
        if msg["type"] == "conversation_initiation_metadata":
            return {"type": "user_message", "text": "I need help"}
        return None

    with running(AgentScript(**FAST)) as sim:
        run = talk(agent_url(sim), reply=send_text, hangup_after=0.6)
        transcripts = [x["user_transcription_event"]["user_transcript"] for x in run.of_type("user_transcript")]
        assert transcripts == ["I need help"]


def test_end_call_after_greeting_then_close_1000() -> None:
    with running(AgentScript(end_call_after_turns=0, **FAST)) as sim:
        run = talk(agent_url(sim))
        assert (run.close_code, run.close_frame_received) == (1000, True)
        [tool_msg] = run.of_type("agent_tool_response")
        assert [m for m in run.received if m["type"] != "ping"][-1] is tool_msg
        tool = tool_msg["agent_tool_response"]
        assert (tool["tool_name"], tool["tool_type"], tool["is_error"]) == ("end_call", "system", False)
        goodbye = run.of_type("agent_response")[-1]["agent_response_event"]
        assert goodbye["agent_response"] == AgentScript().goodbye_text and tool["event_id"] == goodbye["event_id"]
        goodbye_audio = b"".join(audio_bytes(m) for m in run.of_type("audio")
                                 if m["audio_event"]["event_id"] == goodbye["event_id"])
        assert len(goodbye_audio) == 200 * 32 and dominant_tone(goodbye_audio, "pcm_16000") == 660
        record = closed_record(sim)
        assert (record.close_code, record.closed_by) == (1000, "server")


def test_end_call_after_first_reply() -> None:
    with running(AgentScript(end_call_after_turns=1, **FAST)) as sim:
        run = talk(agent_url(sim), speaking=speaks(0.6, 0.8))
        texts = [x["agent_response_event"]["agent_response"] for x in run.of_type("agent_response")]
        script = AgentScript()
        assert texts == [script.greeting_text, script.reply_text, script.goodbye_text]
        assert run.close_code == 1000


# --- endings -------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "error_type", "expected_type"), [
    (1002, "llm_timeout", "llm_timeout"),
    (1008, None, "invalid_message"),
    (1011, None, "unknown"),
    (1000, None, None),
])
def test_scripted_close(code: int, error_type: str | None, expected_type: str | None) -> None:
    script = AgentScript(greeting_ms=2000, close_after_s=0.3, close_code=code, close_error_type=error_type,
                         close_reason="scripted close")
    with running(script) as sim:
        run = talk(agent_url(sim))
        assert (run.close_code, run.close_reason) == (code, "scripted close")
        errors = [m["error_event"] for m in run.of_type("error")]
        if expected_type is None:
            assert errors == []
        else:
            assert [(e["code"], e["error_type"]) for e in errors] == [(code, expected_type)]
            assert run.received[-1]["type"] == "error"
        record = closed_record(sim)
        assert (record.close_code, record.closed_by) == (code, "server")


def test_drop_aborts_tcp_mid_speech() -> None:
    with running(AgentScript(greeting_ms=3000, send_speed=1.0, drop_tcp_after_s=0.3)) as sim:
        run = talk(agent_url(sim))
        assert (run.close_code, run.close_frame_received) == (1006, False)
        assert run.of_type("audio")
        record = closed_record(sim)
        assert (record.close_code, record.closed_by) == (1006, "drop")


def test_transport_receive_timeout() -> None:
    with running(AgentScript(transport_receive_timeout_s=0.3, **FAST)) as sim:
        run = talk(agent_url(sim), speaking=None)
        assert run.close_code == 1002
        assert run.of_type("error")[0]["error_event"]["error_type"] == "transport_receive_timeout"
        # A caller who keeps streaming is not timed out.
        run = talk(agent_url(sim), hangup_after=0.6)
        assert run.close_code == 1000 and run.of_type("error") == []


def test_max_duration_exceeded() -> None:
    with running(AgentScript(max_duration_s=0.3, **FAST)) as sim:
        run = talk(agent_url(sim))
        assert run.close_code == 1000
        error = run.of_type("error")[0]["error_event"]
        assert (error["code"], error["error_type"]) == (1000, "max_duration_exceeded")


def test_overrides_are_checked_against_enabled_ones() -> None:
    script = AgentScript(enabled_overrides=frozenset({"agent.first_message", "tts"}), **FAST)
    allowed = {**INIT, "conversation_config_override": {"agent": {"first_message": "Hi"},
                                                        "tts": {"voice_id": "v1", "speed": 1.1}}}
    with running(script) as sim:
        run = talk(agent_url(sim), init=allowed, hangup_after=0.3)
        assert run.close_code == 1000 and run.of_type("error") == []
        for init in (
            {**INIT, "conversation_config_override": {"agent": {"prompt": {"prompt": "Be rude"}}}},
            {**INIT, "custom_llm_extra_body": {"temperature": 0.1}},
        ):
            run = talk(agent_url(sim), init=init)
            assert [m["type"] for m in run.received][:2] == ["conversation_initiation_metadata", "error"]
            error = run.of_type("error")[0]["error_event"]
            assert (error["code"], error["error_type"]) == (1008, "override_error")
            assert run.close_code == 1008 and "not allowed" in run.close_reason


def test_require_signature() -> None:
    with running(AgentScript(**FAST), require_signature=True) as sim:
        run = talk(agent_url(sim), init=None)
        assert run.received == [] and run.close_code == 1008
        signed = httpx.get(sim.signed_url_endpoint, params={"agent_id": AGENT}, headers=KEY,
                           timeout=3).json()["signed_url"]
        assert talk(signed, hangup_after=0.2).received[0]["type"] == "conversation_initiation_metadata"
        reused = talk(signed, init=None)
        assert reused.received == [] and reused.close_code == 1008
        assert closed_record(sim, 2).closed_by == "server"


def test_strict_mode_refuses_invalid_messages() -> None:
    def junk(msg: dict) -> dict | None:
        return {"type": "bogus"} if msg["type"] == "conversation_initiation_metadata" else None

    with running(AgentScript(**FAST)) as sim:
        run = talk(agent_url(sim), reply=junk, hangup_after=0.4)
        assert run.close_code == 1000 and run.of_type("error") == []
    with running(AgentScript(**FAST), strict=True) as sim:
        run = talk(agent_url(sim), reply=junk)
        assert run.close_code == 1008
        assert run.of_type("error")[0]["error_event"]["error_type"] == "invalid_message"


# --- extras -----------------------------------------------------------------------------


def test_client_tool_call_result_is_recorded() -> None:
    def answer(msg: dict) -> dict | None:
        if msg["type"] != "client_tool_call":
            return None
        call = msg["client_tool_call"]
        return {"type": "client_tool_result", "tool_call_id": call["tool_call_id"], "result": "ok",
                "is_error": False}

    script = AgentScript(client_tool_name="lookup", client_tool_parameters={"n": 1}, **FAST)
    with running(script) as sim:
        run = talk(agent_url(sim), reply=answer, hangup_after=0.6)
        [call] = [m["client_tool_call"] for m in run.of_type("client_tool_call")]
        assert (call["tool_name"], call["parameters"], call["expects_response"]) == ("lookup", {"n": 1}, True)
        assert closed_record(sim).tool_results == [answer({"type": "client_tool_call", "client_tool_call": call})]


def test_large_frame_over_one_mebibyte() -> None:
    with running(AgentScript(output_format="pcm_48000", large_frame=True, send_speed=50.0)) as sim:
        run = talk(agent_url(sim), hangup_after=0.4)
        first = run.of_type("audio")[0]
        assert len(audio_bytes(first)) >= LARGE_FRAME_BYTES
        assert len(orjson.dumps(first)) > 2**20


def test_odd_split_and_chunk_pattern() -> None:
    data = audio.tone(440, 1000, 16000)
    chunks = split(data, "pcm_16000", (20, 100))
    assert [len(c) for c in chunks[:3]] == [640, 3200, 640] and b"".join(chunks) == data
    odd = split(data, "pcm_16000", (20, 100), odd=True)
    assert len(odd[0]) == 641 and b"".join(odd) == data
    assert len(split(b"\xff" * 8000, "ulaw_8000", (100,), first_bytes=5000)[0]) == 5000


def test_vad_reports_one_onset_per_utterance() -> None:
    vad = Vad(8000, threshold=1000, min_speech_ms=60, silence_ms=100)
    loud, quiet = audio.tone(300, 20, 8000, 8000), audio.silence(20, 8000)
    assert [vad.feed(loud) for _ in range(5)] == [False, False, True, False, False]
    assert not any(vad.feed(quiet) for _ in range(5))
    assert vad.feed(loud * 3)
    assert not vad.feed(loud + quiet + loud)  # a short gap does not end the utterance


def test_log_file_has_traffic_without_audio(tmp_path: Path) -> None:
    log_path = tmp_path / "sim.jsonl"
    with running(AgentScript(**FAST), log_path=str(log_path)) as sim:
        httpx.get(sim.signed_url_endpoint, params={"agent_id": AGENT}, headers=KEY, timeout=3)
        talk(agent_url(sim), hangup_after=0.3)
        closed_record(sim)
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    kinds = {line["kind"] for line in lines}
    assert {"http", "open", "recv", "send", "closed"} <= kinds
    sent_audio = [x["message"]["audio_event"]["audio_base_64"] for x in lines
                  if x["kind"] == "send" and x["message"]["type"] == "audio"]
    assert sent_audio[0] == "<640 bytes>"
    received_audio = [x["message"]["user_audio_chunk"] for x in lines
                      if x["kind"] == "recv" and "user_audio_chunk" in x["message"]]
    assert set(received_audio) == {"<640 bytes>"}


def test_tls(tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path)
    context = ssl.create_default_context(cafile=cert)
    with running(AgentScript(**FAST), tls_cert=cert, tls_key=key) as sim:
        assert sim.signed_url_endpoint.startswith("https://") and sim.ws_url.startswith("wss://")
        with pytest.raises(httpx.ConnectError):
            httpx.get(sim.signed_url_endpoint, params={"agent_id": AGENT}, headers=KEY, timeout=3)
        signed = httpx.get(sim.signed_url_endpoint, params={"agent_id": AGENT}, headers=KEY, verify=context,
                           timeout=3).json()["signed_url"]
        assert signed.startswith("wss://")
        run = talk(signed, ssl_context=context, hangup_after=0.2)
        assert run.received[0]["type"] == "conversation_initiation_metadata"


def test_async_api() -> None:
    config = SimConfig(api_key=API_KEY, default_script=AgentScript(**FAST))

    async def with_context_manager() -> ClientRun:
        async with Simulator(config) as sim:
            return await _talk(agent_url(sim), hangup_after=0.2)

    async def with_serve_async() -> ClientRun:
        sim = Simulator(config)
        server = asyncio.create_task(sim.serve_async())
        async with asyncio.timeout(5):
            while not sim.conversations:
                await asyncio.sleep(0.01)
                try:
                    run = await _talk(agent_url(sim), hangup_after=0.2)
                except RuntimeError:  # no port yet
                    continue
            await asyncio.to_thread(sim.stop)  # from another thread, serve_async() returns
            await server
        return run

    assert asyncio.run(with_context_manager()).received[0]["type"] == "conversation_initiation_metadata"
    assert asyncio.run(with_serve_async()).received[0]["type"] == "conversation_initiation_metadata"


def test_speech_with_espeak() -> None:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    with running(AgentScript(speech=True, greeting_ms=100, send_speed=50.0)) as sim:
        run = talk(agent_url(sim), hangup_after=0.5)
        greeting = b"".join(audio_bytes(m) for m in run.of_type("audio"))
        assert audio.duration_ms(len(greeting), "pcm_16000") > 1000
        assert audio.rms(greeting) > 500


def test_stop_is_bounded_with_a_client_still_connected() -> None:
    sim = Simulator(SimConfig(default_script=AgentScript(**FAST))).start()

    async def linger() -> int | None:
        async with connect(agent_url(sim, "agent_x"), close_timeout=2) as ws:
            await ws.recv()
            await asyncio.to_thread(sim.stop)
            with pytest.raises(ConnectionClosed):
                while True:
                    await ws.recv()
            return ws.close_code

    t0 = time.monotonic()
    assert asyncio.run(linger()) == 1001
    assert time.monotonic() - t0 < 5
    record = sim.conversations[0]
    assert record.closed.is_set() and (record.close_code, record.closed_by) == (1001, "server")
    sim.stop()


def test_cli(tmp_path: Path) -> None:
    help_text = subprocess.run([sys.executable, "-m", "pyconvai.sim", "--help"], capture_output=True,
                               text=True, timeout=30, check=True).stdout
    assert "--agent ID=PRESET" in help_text and all(name in help_text for name in PRESETS)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyconvai.sim", "--port", "0", "--api-key", API_KEY, "--agent",
         f"{AGENT}=end_call", "--output-format", "ulaw_8000", "--log", str(tmp_path / "log.jsonl")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert proc.stdout is not None
        endpoint = proc.stdout.readline().split(": ", 1)[1].strip()
        signed = httpx.get(endpoint, params={"agent_id": AGENT}, headers=KEY, timeout=3).json()["signed_url"]
        run = talk(signed, hangup_after=0.3)
        meta = run.received[0]["conversation_initiation_metadata_event"]
        assert meta["agent_output_audio_format"] == "ulaw_8000"
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    assert (tmp_path / "log.jsonl").stat().st_size > 0
