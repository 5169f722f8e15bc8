"""Fuzzing what a server controls: any frame, any JSON shape, any ids and sizes.

The protocol core never raises and keeps no state it does not hand back; the
downlink never raises and never holds more than its cap, whatever the audio
and interruption ids. Bounded in ``make test`` (a few hundred examples per
property); ``make fuzz`` runs the same properties with FUZZ_EXAMPLES=20000.
"""

from __future__ import annotations

import base64
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyconvai.playback import MAX_QUEUED_MS, Downlink
from pyconvai.protocol import FORMATS, AgentAudio, AudioFormat, ConvaiProtocol, Interruption, Metadata
from pyconvai.ring import Ring

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TYPES = ["conversation_initiation_metadata", "audio", "agent_response", "agent_response_correction",
         "user_transcript", "tentative_user_transcript", "interruption", "vad_score", "ping",
         "client_tool_call", "agent_tool_request", "agent_tool_response", "error", "internal_tentative_agent_response",
         "contextual_update", "brand_new_type"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False)
    | st.text(max_size=40) | st.sampled_from(FORMATS + ("mp3_44100", "pcm_0", "")),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def server_messages(draw) -> dict:
    """A message shaped like the server's: a known type, its event object with known and random keys."""
    kind = draw(st.sampled_from(TYPES))
    fields = draw(st.dictionaries(
        st.sampled_from(["event_id", "audio_base_64", "conversation_id", "agent_output_audio_format",
                         "user_input_audio_format", "ping_ms", "tool_name", "tool_call_id", "parameters",
                         "agent_response", "user_transcript", "message", "code", "vad_score", "text",
                         "original_agent_response", "corrected_agent_response", "is_error"])
        | st.text(max_size=10),
        json_values | st.binary(max_size=400).map(lambda b: base64.b64encode(b).decode()),
        max_size=8))
    message = {"type": kind, f"{kind}_event": fields}
    if draw(st.booleans()):
        message[draw(st.text(max_size=10))] = draw(json_values)
    return message


def _feed(protocol: ConvaiProtocol, frame) -> list:
    if isinstance(frame, bytes):
        protocol.receive_bytes(frame)
    else:
        protocol.receive_text(frame)
    events = protocol.events_received()
    for message in protocol.messages_to_send():
        assert message.startswith('{"type":"pong"')  # a server can make us answer pings, nothing else
    return events


@FUZZ
@given(st.lists(st.text(max_size=300) | st.binary(max_size=300), max_size=20))
def test_any_frame_never_raises(frames):
    protocol = ConvaiProtocol()
    for frame in frames:
        assert len(_feed(protocol, frame)) == 1  # exactly one event: parsed, unknown or a ProtocolError
    assert protocol._events == [] and protocol._outbox == []


@FUZZ
@given(st.lists(server_messages(), min_size=1, max_size=25))
def test_any_json_shape_never_raises_and_leaves_no_state_behind(messages):
    import orjson

    protocol = ConvaiProtocol()
    for message in messages:
        try:
            text = orjson.dumps(message).decode()
        except TypeError:  # integers beyond 64 bits: the same shape as text
            text = str(message)
        events = _feed(protocol, text)
        assert len(events) == 1
        assert protocol._events == [] and protocol._outbox == []
    assert set(vars(protocol)) == {"_events", "_outbox", "_make_error", "_opening", "errors", "metadata"}


@FUZZ
@given(st.lists(
    st.tuples(st.sampled_from(["audio", "interrupt", "tick", "play"]),
              st.integers(min_value=-(2**64), max_value=2**64) | st.none(),
              st.integers(min_value=0, max_value=48_000)),
    max_size=60),
    st.sampled_from([f for f in FORMATS]))
def test_the_downlink_takes_any_ids_and_sizes_and_stays_bounded(steps, fmt):
    ring = Ring.allocate(1 << 16)
    downlink = Downlink(ring, lambda: None)
    downlink.configure(AudioFormat.parse(fmt))
    for op, event_id, size in steps:
        if op == "audio":
            downlink.add(bytes(size), event_id)
        elif op == "interrupt":
            downlink.interrupt(event_id)
        elif op == "tick":
            downlink.tick()
        else:
            ring.pop(size)
        assert downlink.queued_ms <= MAX_QUEUED_MS + 25 * 20 + 20


@FUZZ
@given(st.lists(server_messages(), max_size=40))
def test_protocol_events_applied_to_a_downlink_never_raise(messages):
    """The path a hostile server drives: parsed events into a call's downlink."""
    import orjson

    protocol = ConvaiProtocol()
    ring = Ring.allocate(1 << 16)
    downlink = Downlink(ring, lambda: None)
    for message in messages:
        try:
            protocol.receive_text(orjson.dumps(message).decode())
        except TypeError:
            continue
        protocol.messages_to_send()
        for event in protocol.events_received():
            if isinstance(event, Metadata) and downlink.frame_bytes == 0:
                downlink.configure(event.output_format)
            elif isinstance(event, AgentAudio):
                downlink.add(event.audio, event.event_id)
            elif isinstance(event, Interruption):
                downlink.interrupt(event.event_id)
        downlink.tick()
    assert downlink.queued_ms <= MAX_QUEUED_MS + 25 * 20 + 20
