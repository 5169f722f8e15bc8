"""SessionSettings validation and the pre-run parts of Session (no network)."""

import asyncio
import ssl

import pytest

from pyconvai.config import SessionSettings
from pyconvai.outcome import EndStatus
from pyconvai.session import Session, SessionState


def test_defaults():
    s = SessionSettings("sales", "agent_1")
    assert s.buffer_ms == 240 and s.max_connection_attempts == 3
    assert s.connection_timeout_seconds == 10.0
    assert s.signed_url_endpoint == (
        "https://api.elevenlabs.io/v1/convai/conversation/get-signed-url"
    )
    assert s.api_key is None and s.dynamic_variables == {} and s.overrides == {}


def test_repr_hides_api_key():
    assert "sk-secret" not in repr(SessionSettings("a", "agent_1", api_key="sk-secret"))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"agent_id": ""},
        {"buffer_ms": 19},
        {"buffer_ms": 1001},
        {"max_connection_attempts": 0},
        {"connection_timeout_seconds": 0},
        {"signed_url_endpoint": "ftp://x"},
    ],
)
def test_invalid_settings(kwargs):
    base = {"agent_name": "a", "agent_id": "agent_1"} | kwargs
    with pytest.raises(ValueError):
        SessionSettings(**base)


def test_buffer_bounds_accepted():
    SessionSettings("a", "agent_1", buffer_ms=20)
    SessionSettings("a", "agent_1", buffer_ms=1000)


def test_ssl_context_must_verify():
    SessionSettings("a", "agent_1", ssl_context=ssl.create_default_context())
    lax = ssl.create_default_context()
    lax.check_hostname = False
    lax.verify_mode = ssl.CERT_NONE
    with pytest.raises(ValueError):
        SessionSettings("a", "agent_1", ssl_context=lax)


def test_hangup_before_run_returns_at_once_without_connecting():
    events = []
    session = Session(
        SessionSettings("a", "agent_1", signed_url_endpoint="http://127.0.0.1:9/x"),
        events.append,
    )
    session.hangup("caller gone")
    ended = asyncio.run(asyncio.wait_for(session.run(), 2))
    assert ended.status == EndStatus.CALLER_HANGUP == "CALLER_HANGUP"
    assert ended.reason == "caller gone"
    assert session.state is SessionState.ENDED
    assert events == [ended]
    with pytest.raises(RuntimeError):
        asyncio.run(session.run())


def test_listener_exception_does_not_escape():
    def bad_listener(event):
        raise RuntimeError("boom")

    session = Session(SessionSettings("a", "agent_1"), bad_listener)
    session.hangup()
    ended = asyncio.run(asyncio.wait_for(session.run(), 2))
    assert ended.status == "CALLER_HANGUP"

