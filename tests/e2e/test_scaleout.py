"""Several Asterisk nodes behind Kamailio's dispatcher, as README "Deploying beyond one PBX" says.

Three sandboxed Asterisks run the module with contrib/kamailio's node dialplan
(extensions.conf: BUSY → 486) and pjsip.conf (calls and OPTIONS probes from the
dispatcher's address); Kamailio runs contrib/kamailio/kamailio.cfg as shipped, with its
defines pointed at them; SIPp places the calls at Kamailio. Every conversation is counted
where it happened: the simulator's records, each node's AMI events and its metrics.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from pyconvai.sim import AgentScript, SimConfig
from tests.e2e.asterisk import MODULES
from tests.e2e.calls import API_KEY, CallBed, agents_conf
from tests.e2e.kamailio import Kamailio
from tests.e2e.sip import SIP_MODULES, Sipp, free_udp_port, rtp_conf

CONTRIB = Path(__file__).resolve().parents[2] / "contrib" / "kamailio"
TIMED_CALL = Path(__file__).parent / "sipp" / "timed_call.xml"
NODE_MODULES = MODULES + SIP_MODULES + ["res_pjsip_endpoint_identifier_ip.so"]
SCRIPTS = {"agent_node": AgentScript(output_format="ulaw_8000", input_format="ulaw_8000", greeting_ms=60000,
                                     vad_threshold=1e9)}


def node_pjsip(port: int) -> str:
    """contrib's node pjsip.conf, on this node's port, with Kamailio on 127.0.0.1."""
    text = (CONTRIB / "pjsip.conf").read_text()
    return text.replace("0.0.0.0:5060", f"127.0.0.1:{port}").replace("192.0.2.10", "127.0.0.1")


class Node:
    def __init__(self, port: int, bed: CallBed) -> None:
        self.port = port
        self.bed = bed

    def conversations(self) -> set[str]:
        """Conversation ids this node's AMI reported finished."""
        return {e["ConversationID"] for e in self.bed.events("ElevenLabsConversationStats")}

    def calls_total(self, status: str) -> int:
        """asterisk_elevenlabs_calls_total{status} as res_prometheus would serve it."""
        found = re.search(rf'asterisk_elevenlabs_calls_total\{{status="{status}"\}} (\d+)',
                          self.bed.ast.cli("elevenlabs show metrics"))
        return int(found.group(1)) if found else -1


@pytest.fixture
def cluster(make_asterisk, sim, testbed_root):
    """factory(caps): one node per entry of caps (its max_concurrent_calls), Kamailio in front."""
    started: list[Kamailio] = []
    sim.config = SimConfig(api_key=API_KEY, agents=SCRIPTS)
    sim.start()

    def factory(caps: list[int]) -> tuple[Kamailio, list[Node]]:
        nodes = []
        for cap in caps:
            port = free_udp_port()
            ast = make_asterisk({"pjsip.conf": node_pjsip(port), "rtp.conf": rtp_conf(),
                                 "extensions.conf": (CONTRIB / "extensions.conf").read_text()},
                                modules=NODE_MODULES, start=False)
            ast.write_config("elevenlabs.conf", agents_conf(
                sim.signed_url_endpoint, {"sales_agent": {"elevenlabs_agent_id": "agent_node",
                                                          "max_concurrent_calls": cap}}, None, ast.path("etc")))
            ast.start()
            nodes.append(Node(port, CallBed(ast, ast.ami())))
        kamailio = Kamailio(testbed_root, free_udp_port(), [n.port for n in nodes], ping_interval=1)
        started.append(kamailio)
        return kamailio.start(), nodes

    yield factory
    for kamailio in started:
        kamailio.stop()


def _calls(testbed_root, kamailio, n: int, hold_ms: int, rate: float = 10.0) -> Sipp:
    return Sipp(testbed_root, TIMED_CALL, kamailio.port, service="100", calls=n, rate=rate, timeout=90,
                values={"HOLD_MS": str(hold_ms)})


def _wait(predicate, timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _served(nodes: list[Node], conversations: set[str]) -> list[set[str]]:
    """Each node's finished conversations, once they account for ``conversations`` (the
    simulator's): every one served by exactly one node."""
    _wait(lambda: sum(len(node.conversations()) for node in nodes) >= len(conversations),
          what=f"{len(conversations)} finished conversations")
    served = [node.conversations() for node in nodes]
    assert sum(map(len, served)) == len(conversations)
    assert set().union(*served) == conversations
    return served


def _ids(records) -> set[str]:
    return {r.conversation_id for r in records}


def test_calls_spread_over_the_nodes_and_each_node_counts_its_own(cluster, sim, testbed_root):
    kamailio, nodes = cluster([4, 4, 4])
    run = _calls(testbed_root, kamailio, 6, hold_ms=3000).wait()
    assert run.count("Successful call") == 6, run.output[-2000:]
    served = _served(nodes, _ids(sim.wait_for_conversations(6)))
    assert all(served), f"a node served nothing: {[len(s) for s in served]}"
    for node, conversations in zip(nodes, served):
        assert node.calls_total("CALLER_HANGUP") == len(conversations)
        assert node.calls_total("BUSY") == 0


def test_a_full_node_refuses_with_486_and_the_next_node_takes_the_call(cluster, sim, testbed_root):
    kamailio, nodes = cluster([1, 4, 4])
    # Six calls at once: the first node holds one and refuses every other it is offered.
    run = _calls(testbed_root, kamailio, 6, hold_ms=6000, rate=20).wait()
    assert run.count("Successful call") == 6, run.output[-2000:]
    served = _served(nodes, _ids(sim.wait_for_conversations(6)))
    assert len(served[0]) == 1
    refused = nodes[0].calls_total("BUSY")
    assert refused >= 1, "the full node was never offered a second call"
    assert kamailio.log_text().count("486 from the last node") == refused
    assert nodes[1].calls_total("BUSY") == nodes[2].calls_total("BUSY") == 0


def test_a_node_stopped_mid_run_loses_only_its_own_calls(cluster, sim, testbed_root):
    kamailio, nodes = cluster([4, 4, 4])
    first = _calls(testbed_root, kamailio, 6, hold_ms=8000, rate=20)
    records = sim.wait_for_conversations(6, timeout=30)
    _wait(lambda: all(node.bed.ast.channel_count() == 2 for node in nodes), what="two calls on each node")
    stopped = nodes[1]
    assert stopped.bed.ast.stop(timeout=30) == 0  # core stop now
    # Its two conversations were closed properly (1000) when it stopped; the others go on.
    closed = [r for r in records if r.closed.is_set()]
    assert len(closed) == 2 and all(r.close_code == 1000 for r in closed), [(r.close_code, r.closed_by) for r in closed]
    # Its OPTIONS go unanswered: the dispatcher marks it inactive (the others stay active).
    _wait(lambda: kamailio.node_states().get(stopped.port, "").startswith("I"), what="the node marked inactive")
    assert all(kamailio.node_states()[n.port].startswith("A") for n in (nodes[0], nodes[2]))
    # New calls land on the survivors.
    second = _calls(testbed_root, kamailio, 4, hold_ms=1000).wait()
    assert second.count("Successful call") == 4, second.output[-2000:]
    first.wait()
    assert first.count("Successful call") == 4 and first.count("Failed call") == 2, first.output[-2000:]
    survivors = [nodes[0], nodes[2]]
    _served(survivors, _ids(sim.wait_for_conversations(10)) - _ids(closed))
    for node in survivors:
        assert node.bed.ast.running
        assert node.calls_total("CALLER_HANGUP") == len(node.conversations())
