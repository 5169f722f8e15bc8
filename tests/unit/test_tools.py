"""Client tools and keys (pyconvai/tools.py), against a stand-in session: no socket, no Asterisk."""

from __future__ import annotations

import asyncio
import logging
import time

from pyconvai.config import CallControl
from pyconvai.events import ClientToolCalled
from pyconvai.playback import Downlink
from pyconvai.protocol import AudioFormat
from pyconvai.ring import Ring
from pyconvai.tools import Tools
from pyconvai.wire import ClockKind, Control


class Session:
    """What Tools uses of a Session, recorded."""

    def __init__(self) -> None:
        self.answers: list[tuple[str, str, bool]] = []
        self.sent: list[tuple[str, str]] = []
        self.hung_up: list[str] = []
        self.details: list[str] = []
        self.log = logging.getLogger("test.tools")

    def detail(self, msg, *args):
        self.details.append(msg % args)

    def answer_client_tool(self, tool_call_id, result, is_error):
        self.answers.append((tool_call_id, result, is_error))

    def send_user_message(self, text):
        self.sent.append(("user_message", text))

    def send_contextual_update(self, text):
        self.sent.append(("contextual_update", text))

    def hangup(self, reason):
        self.hung_up.append(reason)


def tools(**control):
    session, controls, events = Session(), [], []
    ring = Ring.allocate(65536)
    downlink = Downlink(ring, lambda: None)
    downlink.configure(AudioFormat("ulaw", 8000))
    t = Tools(CallControl(**control), session, downlink, lambda *r: controls.append(r),
              lambda name, **h: events.append((name, h)))
    return t, session, controls, events, ring


def test_an_unknown_tool_is_refused_at_once():
    t, session, controls, events, _ = tools()
    t.called(ClientToolCalled("lookup_order", "c1", {"id": 5}))
    assert session.answers == [("c1", "Client tool 'lookup_order' is not supported by app_elevenlabs_convai", True)]
    assert controls == [] and events[0][1]["IsError"] == "yes"


def test_the_keypad_tool_answers_once_the_digits_went_out():
    t, session, controls, _, _ = tools()
    t.called(ClientToolCalled("play_keypad_touch_tone", "k1", {"dtmf_tones": "1w2#"}))
    assert controls == [(Control.SEND_DTMF, "1w2#")] and session.answers == []
    t.record(ClockKind.DTMF_SENT, 4, 1.0)
    assert session.answers == [("k1", "Sent the keys 1w2#.", False)]
    t.called(ClientToolCalled("play_keypad_touch_tone", "k2", {"dtmf_tones": "1x"}))
    assert session.answers[-1][0] == "k2" and session.answers[-1][2] is True and len(controls) == 1


def test_a_transfer_needs_a_context_and_an_existing_extension():
    t, session, controls, _, _ = tools()
    t.called(ClientToolCalled("transfer_call", "t1", {"destination": "200"}))
    assert session.answers[-1] == ("t1", "Transfers are not enabled on this line.", True) and controls == []
    t, session, controls, _, _ = tools(transfer_enabled=True)
    t.called(ClientToolCalled("transfer_call", "t2", {"destination": "200,1(x)"}))
    assert session.answers[-1][2] is True and controls == []  # not an extension: nothing asked
    t.called(ClientToolCalled("transfer_call", "t3", {"destination": "999"}))
    assert controls == [(Control.TRANSFER_CHECK, "999")]
    t.record(ClockKind.TRANSFER_CHECKED, 0, 1.0)
    assert session.answers[-1] == ("t3", "There is no extension 999 to transfer to.", True)
    assert t.transfer_to is None


def test_a_transfer_lets_the_agent_finish_then_closes():
    async def scenario():
        t, session, controls, _, ring = tools(transfer_enabled=True)
        t.called(ClientToolCalled("transfer_call", "t1", {"destination": "200"}))
        t.record(ClockKind.TRANSFER_CHECKED, 1, 1.0)
        assert session.answers[-1] == ("t1", "The caller is being transferred to 200.", False)
        assert t.transfer_to == "200" and session.hung_up == []
        await asyncio.sleep(0.1)
        t.agent_audio(time.monotonic())
        t._downlink.add(b"\x01" * 1600, 9)  # "I'm putting you through": 200 ms in the ring
        await asyncio.sleep(0.2)
        assert session.hung_up == []  # still playing
        ring.pop()  # the channel thread played it
        await asyncio.sleep(0.1)
        assert session.hung_up == ["transferred to 200"]

    asyncio.run(scenario())


def test_the_callers_keys_reach_the_agent_as_configured():
    async def scenario() -> None:
        for mode, expected in (("user_message", [("user_message", "The caller pressed the keys 4711#")]),
                               ("contextual_update", [("contextual_update", "The caller pressed the keys 4711#")]),
                               ("no", [])):
            t, session, _, _, _ = tools(dtmf_to_agent=mode)
            for i, digit in enumerate("4711#"):
                t.record(ClockKind.DTMF, ord(digit), 1.0 + i / 10)
            assert session.sent == expected, mode
            assert session.details == [f"caller pressed {d}" for d in "4711#"]  # under elevenlabs debug on
            t.cancel()
        t, session, _, _, _ = tools(dtmf_timeout_seconds=0.05)
        pressed = time.monotonic()
        t.record(ClockKind.DTMF, ord("1"), pressed)
        t.record(ClockKind.DTMF, ord("2"), pressed)
        t.tick(pressed + 0.04)
        assert session.sent == []
        # The pause ends the entry by itself (a timer), with no pump or tick.
        while not session.sent:
            await asyncio.sleep(0.01)
        assert session.sent == [("user_message", "The caller pressed the keys 12")]

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_of_two_ami_answers_at_once_exactly_one_is_taken():
    """Two AMI clients (or one twice) answer the same tool call before the asyncio thread
    ran: the first claim takes it, the second is refused at once; the timeout finds nothing."""
    async def scenario() -> None:
        t, session, _, events, _ = tools(tools_via_ami=True, ami_tool_timeout_seconds=0.05)
        t.called(ClientToolCalled("crm_lookup", "c1", {"account": "A-1"}))
        assert events[-1][1]["IsError"] == "pending"
        first, second = t.ami_claim("c1"), t.ami_claim("c1")
        assert first is not None and second is None
        t.ami_result(first, "Gold customer", False)
        await asyncio.sleep(0.1)  # past the timeout: it was cancelled with the answer
        assert session.answers == [("c1", "Gold customer", False)]
        t.cancel()

    asyncio.run(scenario())
