"""The session's send side (pyconvai/session.py), no network: what a ping flood into a
stalled socket leaves queued."""

from pyconvai.config import SessionSettings
from pyconvai.session import _MAX_CONTROL_BACKLOG, Session


def test_a_ping_flood_into_a_stalled_socket_sheds_the_oldest_pongs_only():
    session = Session(SessionSettings("a", "agent_1"))
    session._protocol.init_data()  # the first message: never shed
    session._queue_control()
    for event_id in range(1, 501):  # nothing is sent meanwhile: the writer is stalled
        session._protocol.receive_text('{"type":"ping","ping_event":{"event_id":%d,"ping_ms":5}}' % event_id)
        session._queue_control()
    queued = list(session._control_out)
    assert len(queued) == _MAX_CONTROL_BACKLOG
    assert queued[0].startswith('{"type":"conversation_initiation_client_data"')
    pongs = [q for q in queued if q.startswith('{"type":"pong"')]
    assert len(pongs) == _MAX_CONTROL_BACKLOG - 1
    assert '"event_id":500' in pongs[-1] and '"event_id":438' in pongs[0]  # the newest kept, in order
    assert session.counters.pongs_shed == 500 - (_MAX_CONTROL_BACKLOG - 1)
