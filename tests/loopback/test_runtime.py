"""pyconvai.runtime with real rings and the simulator, no Asterisk: what a call leaves behind."""

from __future__ import annotations

import gc
import os
import time
import weakref

import pytest

from pyconvai.ring import Ring
from pyconvai import runtime as runtime_module
from pyconvai.runtime import Runtime
from pyconvai.call import Call
from pyconvai.sim import AgentScript

from loopback_helpers import API_KEY

ULAW = {"output_format": "ulaw_8000", "input_format": "ulaw_8000"}


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


@pytest.fixture
def runtime():
    rt = Runtime()
    rt.start()
    yield rt
    assert rt.stop(5)


ENDINGS = {
    "caller hangs up": (AgentScript(**ULAW, greeting_ms=200), True),
    "agent ends the call": (AgentScript(**ULAW, greeting_ms=200, end_call_after_turns=0), False),
    "server closes 1011": (AgentScript(**ULAW, greeting_ms=5000, close_after_s=0.3, close_code=1011), False),
    "unknown agent": (None, False),
}


@pytest.mark.parametrize("ending", ENDINGS)
def test_a_finished_call_is_freed_by_reference_counting_alone(make_sim, runtime, ending):
    """A call's rings (about half a MiB of C memory) must go when the call ends, not at
    the cycle collector's next full pass: under load that pass comes hundreds of calls later."""
    script, hang_up = ENDINGS[ending]
    sim = make_sim({"agent_a": script} if script else {}, strict=script is None)
    rings = {name: Ring.allocate(65536) for name in ("uplink", "downlink", "control", "clock")}
    rings["uplink"].open_doorbell()
    addresses = {name: ring.address for name, ring in rings.items()}
    wake = os.eventfd(0, os.EFD_NONBLOCK)
    settings = {"channel": "Local/test-0001;2", "agent": "sales", "agent_id": "agent_a", "api_key": API_KEY,
                "signed_url_endpoint": sim.signed_url_endpoint, "buffer_ms": "20",
                "max_call_duration_seconds": "3600", "max_connection_attempts": "1"}
    gc.collect()
    gc.disable()
    try:
        call = Call(settings, addresses, wake, schedule=runtime.schedule, forget=runtime.forget)
        runtime.add(call)
        if script is not None:
            assert wait_for(lambda: call.conversation_id is not None and rings["downlink"].used > 0, 5)
            rings["uplink"].push(b"\xff" * 1600)  # caller audio, on the doorbell
        if hang_up:
            time.sleep(0.1)
            call.hangup("caller hung up")
        assert wait_for(lambda: call.finished and not runtime.calls, 8)
        freed = weakref.ref(call), weakref.ref(call.session)
        del call
        assert wait_for(lambda: all(ref() is None for ref in freed), 2), [
            [type(r).__name__ for r in gc.get_referrers(ref())] for ref in freed if ref() is not None]
    finally:
        gc.enable()
        os.close(wake)


def test_caller_audio_goes_out_when_the_doorbell_rings_not_at_a_sweep(make_sim, monkeypatch):
    """buffer 240 ms: each chunk leaves when its last frame reaches the uplink ring. With the
    periodic sweep pushed out to an hour, only the doorbell can have sent it."""
    monkeypatch.setattr(runtime_module, "SWEEP_SECONDS", 3600.0)
    rt = Runtime()
    rt.start()
    sim = make_sim({"agent_a": AgentScript(**ULAW, greeting_ms=200)})
    rings = {name: Ring.allocate(65536) for name in ("uplink", "downlink", "control", "clock")}
    rings["uplink"].open_doorbell()
    wake = os.eventfd(0, os.EFD_NONBLOCK)
    settings = {"channel": "Local/test-0002;2", "agent": "sales", "agent_id": "agent_a", "api_key": API_KEY,
                "signed_url_endpoint": sim.signed_url_endpoint, "buffer_ms": "240"}
    call = Call(settings, {name: ring.address for name, ring in rings.items()}, wake,
                schedule=rt.schedule, forget=rt.forget)
    try:
        rt.add(call)
        assert wait_for(lambda: call.session.caller_bytes_wanted is not None, 5)
        (record,) = sim.wait_for_conversations(1, timeout=2)
        for n in range(1, 4):
            for _ in range(11):  # 220 ms of a 240 ms chunk: nothing is sent
                rings["uplink"].push(b"\xff" * 160)
            time.sleep(0.1)
            assert len(record.audio_chunks) == n - 1
            rings["uplink"].push(b"\xff" * 160)  # the chunk's last frame
            assert wait_for(lambda: len(record.audio_chunks) == n, 2)
        assert [len(chunk) for _, chunk in record.audio_chunks] == [1920] * 3
        call.hangup("caller hung up")
        assert wait_for(lambda: call.finished, 5)
    finally:
        assert rt.stop(5)
        os.close(wake)
