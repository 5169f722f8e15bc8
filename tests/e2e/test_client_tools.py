"""Client tools answered by the PBX, in a real Asterisk with the simulator: a dialplan Gosub
(client_tool) and an AMI client (client_tools_via_ami)."""

from __future__ import annotations

import pytest

from pyconvai.sim import AgentScript
from tests.e2e.calls import tone_frames

ULAW = {"output_format": "ulaw_8000", "input_format": "ulaw_8000", "vad_threshold": 1e9}


def tool(name: str, greeting_ms: int = 300, **parameters) -> AgentScript:
    return AgentScript(**ULAW, greeting_ms=greeting_ms, client_tool_name=name, client_tool_parameters=parameters)


SCRIPTS = {
    "agent_order": tool("lookup_order", greeting_ms=1500, order_id=4711, note={"rush": True}),
    "agent_failing": tool("failing_tool"),
    "agent_ghost": tool("ghost_tool"),
    "agent_crm": tool("crm_lookup", account="A-1"),
    "agent_two": AgentScript(**ULAW, greeting_ms=300, client_tool_name="lookup_order",
                             client_tool_parameters={"order_id": 1, "note": "!"},
                             more_client_tools=(("lookup_order", {"order_id": 2}),)),
    "agent_slow": tool("slow_tool"),
}

TOOLS = """
exten => lookup_order,1,NoOp(${ELEVENLABS_TOOL_PARAMETERS})
 same => n,Return(order ${ELEVENLABS_TOOL_ORDER_ID} shipped ${ELEVENLABS_TOOL_CALL_ID}${ELEVENLABS_TOOL_NOTE})
exten => failing_tool,1,Set(ELEVENLABS_TOOL_ERROR=1)
 same => n,Return(out of stock)
exten => slow_tool,1,Wait(6)
 same => n,Return(too late)
"""


@pytest.fixture
def bed(call_bed):
    return lambda agents: call_bed(agents, SCRIPTS, extra_dialplan=TOOLS)


def results(sim) -> list[dict]:
    record = sim.wait_for_conversations(1)[0]
    return record.tool_results


def test_a_dialplan_tool_answers_after_the_agents_words_have_played(bed, sim):
    b = bed({"shop": {"elevenlabs_agent_id": "agent_order", "client_tool": "lookup_order,e2e"}})
    before = b.baseline("shop")
    b.call("shop", "caller-t1-5")
    b.result(index=1)
    record = sim.wait_for_conversations(2)[1]
    (result,) = record.tool_results
    call_id = record.sent_of_type("client_tool_call")[0]["client_tool_call"]["tool_call_id"]
    assert (result["tool_call_id"], result["is_error"]) == (call_id, False)
    assert result["result"] == f'order 4711 shipped {call_id}{{"rush":true}}'  # nested values as JSON
    heard, rate = b.heard("t1")
    greeting = tone_frames(heard, rate, 440.0)
    assert abs(greeting.frames - 75) <= 1 and greeting.gaps == 0, "the words before the tool were cut"
    b.wait_idle()
    after = b.ast.process_stats()
    assert after["threads"] <= before["threads"] + 2 and after["fds"] <= before["fds"] + 2


def test_a_subroutine_can_mark_its_answer_an_error(bed, sim):
    b = bed({"shop": {"elevenlabs_agent_id": "agent_failing", "client_tool": "failing_tool,e2e"}})
    b.call("shop", "caller-t2-3")
    b.result()
    assert [(r["result"], r["is_error"]) for r in results(sim)] == [("out of stock", True)]


def test_a_missing_extension_is_an_error_naming_it(bed, sim):
    b = bed({"shop": {"elevenlabs_agent_id": "agent_ghost", "client_tool": "ghost_tool,e2e"}})
    b.call("shop", "caller-t3-3")
    b.result()
    ((text, is_error),) = [(r["result"], r["is_error"]) for r in results(sim)]
    assert is_error and "no extension ghost_tool in context e2e" in text
    warnings = [line for line in b.ast.log_text().splitlines() if "WARNING" in line and "no extension ghost_tool" in line]
    assert len(warnings) == 1, warnings


def test_an_unmapped_tool_is_refused_at_once_without_ami(bed, sim):
    b = bed({"shop": {"elevenlabs_agent_id": "agent_crm"}})
    b.call("shop", "caller-t4-3")
    b.result()
    ((text, is_error),) = [(r["result"], r["is_error"]) for r in results(sim)]
    assert is_error and "not supported" in text


def test_an_ami_client_answers_a_tool(bed, sim):
    b = bed({"crm": {"elevenlabs_agent_id": "agent_crm", "client_tools_via_ami": "yes"}})
    b.call("crm", "caller-t5-4")
    asked = b.event("ElevenLabsToolCall", IsError="pending")
    assert asked["Tool"] == "crm_lookup" and '"account":"A-1"' in asked["Parameters"]
    response = b.ami.action("ElevenLabsToolResult", Channel=asked["Channel"], ToolCallID=asked["ToolCallID"],
                            Result='Gold customer, "VIP" \\ since 2019')
    assert response.get("Response") == "Success", response
    again = b.ami.action("ElevenLabsToolResult", Channel=asked["Channel"], ToolCallID=asked["ToolCallID"], Result="x")
    assert again.get("Response") == "Error" and "is waiting" in again.get("Message", "")
    b.result()
    assert [(r["result"], r["is_error"]) for r in results(sim)] == [('Gold customer, "VIP" \\ since 2019', False)]


def test_no_ami_answer_in_time_is_an_error_after_the_timeout(bed, sim):
    b = bed({"crm": {"elevenlabs_agent_id": "agent_crm", "client_tools_via_ami": "yes",
                     "client_tool_timeout_seconds": 5}})
    b.call("crm", "caller-t6-8")
    b.result()
    record = sim.wait_for_conversations(1)[0]
    asked = next(t for t, m in record.sent if m.get("type") == "client_tool_call")
    answered, result = next((t, m) for t, m in record.messages if m.get("type") == "client_tool_result")
    assert result["is_error"] and "No answer from the PBX within 5 s" in result["result"]
    assert 4.5 <= answered - asked <= 5.5, answered - asked  # the timeout, ± 10 %


def test_two_tool_calls_in_flight_each_get_their_own_answer(bed, sim):
    b = bed({"shop": {"elevenlabs_agent_id": "agent_two", "client_tool": "lookup_order,e2e"}})
    b.call("shop", "caller-t7-4")
    b.result()
    record = sim.wait_for_conversations(1)[0]
    ids = [m["client_tool_call"]["tool_call_id"] for m in record.sent_of_type("client_tool_call")]
    # The first call's note is not left behind for the second, which has none.
    assert sorted((r["tool_call_id"], r["result"]) for r in record.tool_results) == sorted(
        [(ids[0], f"order 1 shipped {ids[0]}!"), (ids[1], f"order 2 shipped {ids[1]}")])
    b.wait_idle()


def test_a_caller_hangup_during_a_subroutine_ends_cleanly(bed, sim):
    b = bed({"shop": {"elevenlabs_agent_id": "agent_slow", "client_tool": "slow_tool,e2e"}})
    b.call("shop", "caller-t8-3")
    assert b.result()["Status"] == "CALLER_HANGUP"
    record = sim.wait_for_conversations(1)[0]
    assert record.closed.wait(10) and record.close_code == 1000
    assert record.tool_results == []
    b.wait_idle(timeout=20)
