"""Per-call settings from the module (pyconvai/config.py)."""

import re
from pathlib import Path

import pytest

from pyconvai.config import (
    DEFAULT_GOODBYE_MESSAGE,
    RANGES,
    SessionSettings,
    SettingsError,
    call_limits,
    overrides,
    session_settings,
)

BASE = {"agent": "sales", "agent_id": "agent_1", "channel": "PJSIP/100-0001"}


def test_plain_settings_become_typed_session_settings():
    s = session_settings({**BASE, "api_key": "sk_x", "buffer_ms": "20", "max_connection_attempts": "5",
                          "connection_timeout_seconds": "3", "debug": "1", "user_id": "5551234"})
    assert (s.agent_name, s.agent_id, s.api_key) == ("sales", "agent_1", "sk_x")
    assert (s.buffer_ms, s.max_connection_attempts, s.connection_timeout_seconds) == (20, 5, 3.0)
    assert s.debug is True and s.user_id == "5551234"


def test_empty_api_key_means_a_public_agent():
    assert session_settings({**BASE, "api_key": ""}).api_key is None


def test_dynamic_variables_keep_their_names_and_values():
    s = session_settings({**BASE, "var:caller_number": "5551234", "var:customer_tier": "gold"})
    assert s.dynamic_variables == {"caller_number": "5551234", "customer_tier": "gold"}


def test_each_override_goes_to_its_place():
    assert overrides({"override:first_message": "Hi", "override:prompt": "Be brief", "override:language": "fr",
                      "override:voice_id": "v1"}) == {
        "agent": {"first_message": "Hi", "prompt": {"prompt": "Be brief"}, "language": "fr"},
        "tts": {"voice_id": "v1"},
    }
    assert overrides(BASE) == {}


@pytest.mark.parametrize("bad, key", [({"buffer_ms": "fast"}, "buffer_ms"), ({"agent_id": ""}, "agent_id"),
                                      ({"override:tone": "x"}, "tone"), ({"buffer_ms": "5"}, "buffer_ms")])
def test_bad_values_raise_settings_error_naming_the_key(bad, key):
    with pytest.raises(SettingsError, match=key):
        session_settings({**BASE, **bad})


def test_call_limits():
    assert call_limits(BASE).max_duration_seconds == 0
    limits = call_limits({**BASE, "max_call_duration_seconds": "90", "max_call_duration_message": ""})
    assert limits.max_duration_seconds == 90 and limits.goodbye_message == DEFAULT_GOODBYE_MESSAGE


def test_numeric_defaults_and_limits_mirror_elevenlabs_conf():
    """One table in C (convai_agent_ranges: name, default, min, max), mirrored once here."""
    source = (Path(__file__).resolve().parents[2] / "csrc" / "convai_config.c").read_text()
    table = re.search(r"convai_agent_ranges\[\] = \{(.*?)\n\};", source, re.S)[1]
    c_ranges = {name: (int(default), int(low), int(high))
                for name, default, low, high in re.findall(r'\{ "(\w+)", "(\d+)", (\d+), (\d+),', table)}
    for key, mirror in RANGES.items():
        assert c_ranges[mirror.conf_name] == (mirror.default, mirror.min, mirror.max), key
    s = SessionSettings("a", "agent_1")
    assert (s.buffer_ms, s.max_connection_attempts, s.connection_timeout_seconds) == (
        RANGES["buffer_ms"].default, RANGES["max_connection_attempts"].default,
        RANGES["connection_timeout_seconds"].default)
    assert session_settings(BASE).buffer_ms == s.buffer_ms
