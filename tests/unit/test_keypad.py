"""Keys both ways (pyconvai/keypad.py), no socket."""

import pytest

from pyconvai.keypad import KeyCollector, keypad_tones


def test_keys_go_to_the_agent_at_hash_in_the_order_pressed():
    keys = KeyCollector(timeout=2.0)
    assert [keys.press(d, t) for d, t in zip("4711", (1.0, 1.2, 1.4, 1.6))] == [None] * 4
    assert keys.press("#", 1.8) == "The caller pressed the keys 4711#"
    assert keys.due(10.0) is None  # nothing left


def test_keys_go_to_the_agent_after_a_pause():
    keys = KeyCollector(timeout=2.0)
    keys.press("1", 1.0)
    keys.press("2", 2.5)
    assert keys.due(4.4) is None  # 1.9 s after the last key
    assert keys.due(4.5) == "The caller pressed the keys 12"
    assert keys.due(9.0) is None


@pytest.mark.parametrize("tones, expected", [("1w2#", "1w2#"), ("*0A-", None), ("1x", None), ("", None),
                                             (12, None), ("W9dD", "W9dD"), ("1" * 65, None)])
def test_keypad_tool_digits(tones, expected):
    assert keypad_tones(tones) == expected
