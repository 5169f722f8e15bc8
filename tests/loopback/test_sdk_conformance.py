"""The official ``elevenlabs`` Python SDK, unmodified, holds a whole conversation with the simulator.

If the SDK accepts the simulator's messages and behaves as documented, the
simulator speaks the protocol the way the real server does, as far as this
SDK can tell.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from pyconvai.sim import audio
from pyconvai.sim import AgentScript, SimConfig, Simulator

elevenlabs = pytest.importorskip("elevenlabs")
from elevenlabs.client import ElevenLabs  # noqa: E402
from elevenlabs.conversational_ai.conversation import (  # noqa: E402
    AudioInterface,
    Conversation,
    DisconnectionDetails,
)

API_KEY = "sk-test-1234"
AGENT = "agent_sdk"
FMT = "pcm_16000"
RATE = 16000
TONES = {440: "greeting", 880: "reply", 660: "goodbye", 1200: "stale"}
CHUNK_S = 0.05

SCRIPT = AgentScript(
    output_format=FMT, input_format=FMT, send_speed=8.0, ping_interval_s=0.4,
    greeting_ms=1000, reply_ms=3000, goodbye_ms=500, end_call_after_turns=2,
)
SPEECH = ((1.4, 1.7), (2.6, 2.9))
"""Caller speech, in seconds after the SDK starts the audio interface: the first turn comes
after the greeting has played (plain turn), the second barges into the 3 s first reply."""


class ScriptedCaller(AudioInterface):
    """Feeds caller audio in real time (silence, loud 300 Hz tone while speaking) and
    collects the agent audio the SDK outputs, classified by tone."""

    def __init__(self, speech: tuple[tuple[float, float], ...]) -> None:
        self._speech = speech
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.output_bytes: dict[str, int] = dict.fromkeys(TONES.values(), 0)
        self.output_after_interrupt: dict[str, int] = dict.fromkeys(TONES.values(), 0)
        self.interrupts = 0

    def start(self, input_callback: Callable[[bytes], None]) -> None:
        self._thread = threading.Thread(target=self._feed, args=(input_callback,), daemon=True)
        self._thread.start()

    def _feed(self, input_callback: Callable[[bytes], None]) -> None:
        loud, quiet = audio.tone(300, CHUNK_S * 1000, RATE, 10000), audio.silence(CHUNK_S * 1000, RATE)
        t0 = time.monotonic()
        sent = 0
        while not self._stop.wait(max(0.0, t0 + sent * CHUNK_S - time.monotonic())):
            t = time.monotonic() - t0
            input_callback(loud if any(a <= t < b for a, b in self._speech) else quiet)
            sent += 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2)

    def output(self, data: bytes) -> None:
        pcm = audio.decode(data, FMT)
        kind = TONES[max(TONES, key=lambda f: audio.goertzel_power(pcm, RATE, f))]
        with self._lock:
            self.output_bytes[kind] += len(data)
            if self.interrupts:
                self.output_after_interrupt[kind] += len(data)

    def interrupt(self) -> None:
        with self._lock:
            self.interrupts += 1


@pytest.mark.parametrize("requires_auth", [True, False], ids=["signed_url", "public_url"])
def test_sdk_conversation(requires_auth: bool) -> None:
    """Greeting, a plain turn, a barge-in, then the agent's end_call and close 1000.

    Deviations forced by the SDK (2.78), not by the simulator:
    - The SDK drops agent audio whose ``event_id`` is <= the last interruption id
      (elevenlabs-python#829), so it drops the reply that follows the barge-in, which
      shares the interruption's id like the real server's. Its amount is therefore
      not asserted (0 with this SDK; the full reply once the SDK uses ``<``).
    - The SDK has no interruption callback; ``AudioInterface.interrupt()`` is the signal.
    - ``requires_auth`` makes the SDK fetch the signed URL itself: it GETs
      ``{base_url}/v1/convai/conversation/get-signed-url`` with ``xi-api-key``, so the
      client only needs ``base_url`` pointed at the simulator.
    """
    config = SimConfig(api_key=API_KEY, agents={AGENT: SCRIPT}, strict=True, require_signature=requires_auth)
    caller = ScriptedCaller(SPEECH)
    responses: list[str] = []
    transcripts: list[str] = []
    corrections: list[tuple[str, str]] = []
    disconnects: list[DisconnectionDetails] = []
    ended = threading.Event()

    def on_disconnect(details: DisconnectionDetails) -> None:
        disconnects.append(details)
        ended.set()

    with Simulator(config) as sim:
        client = ElevenLabs(api_key=API_KEY, base_url=sim.base_url, timeout=5)
        conversation = Conversation(
            client, AGENT, requires_auth=requires_auth, audio_interface=caller,
            callback_agent_response=responses.append,
            callback_user_transcript=transcripts.append,
            callback_agent_response_correction=lambda original, corrected: corrections.append((original, corrected)),
            callback_disconnect=on_disconnect,
        )
        conversation.start_session()
        if not ended.wait(10):
            conversation.end_session()
        conversation_id = conversation.wait_for_session_end()
        assert ended.is_set(), "the SDK did not end the session on the agent's close"

        [record] = sim.conversations
        assert record.closed.wait(3)

    # The session ended because the agent hung up: end_call, then close 1000.
    assert conversation_id == record.conversation_id
    assert [(d.reason, d.close_code) for d in disconnects] == [("agent", 1000)]
    assert (record.close_code, record.closed_by) == (1000, "server")
    assert record.sent_of_type("agent_tool_response")[0]["agent_tool_response"]["tool_name"] == "end_call"

    # How the SDK connected.
    assert record.init_data is not None and record.init_data["source_info"]["source"] == "python_sdk"
    if requires_auth:
        assert [(r.path, r.status) for r in sim.http_requests] == [
            ("/v1/convai/conversation/get-signed-url", 200)]
        assert "conversation_signature=" in record.path
    else:
        assert sim.http_requests == [] and "conversation_signature" not in record.path

    # Pings answered at once, echoing each id.
    assert len(record.pongs) >= 3
    assert record.pongs == record.pings_sent[: len(record.pongs)]

    # Callbacks: greeting, first reply, reply after the barge-in, goodbye.
    assert responses == [SCRIPT.greeting_text, SCRIPT.reply_text, SCRIPT.reply_text, SCRIPT.goodbye_text]
    assert transcripts == ["[caller speech]", "[caller speech]"]
    assert len(corrections) == 1 and corrections[0][0] == SCRIPT.reply_text

    # Audio: the whole greeting and first reply, the barge-in flushed, stale chunks
    # discarded, and the goodbye played.
    per_ms = audio.bytes_per_second(FMT) // 1000
    assert caller.interrupts == 1 and record.interruptions
    assert caller.output_bytes["greeting"] == SCRIPT.greeting_ms * per_ms
    assert caller.output_bytes["reply"] - caller.output_after_interrupt["reply"] == SCRIPT.reply_ms * per_ms
    assert caller.output_after_interrupt["reply"] in (0, SCRIPT.reply_ms * per_ms)
    assert caller.output_bytes["stale"] == 0
    assert caller.output_bytes["goodbye"] == SCRIPT.goodbye_ms * per_ms

    # The simulator heard the caller in real time.
    received_s = audio.duration_ms(len(record.received_audio), FMT) / 1000
    assert 2.0 < received_s < 10
