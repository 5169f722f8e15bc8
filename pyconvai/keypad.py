"""Keys both ways, without I/O: the caller's keys into one message, the agent's into digits to send.

Pure, one thread (the asyncio thread). :class:`KeyCollector` gathers the
caller's digits until ``#`` or ``timeout`` seconds without a new key and then
gives the message the agent is sent; :func:`keypad_tones` checks what the
agent's keypad tool asked to send.
"""

from __future__ import annotations

import re

__all__ = ["KeyCollector", "keypad_tones"]

_TONES = re.compile(r"[0-9*#A-Da-dwW]{1,64}")


class KeyCollector:
    """The caller's keypad digits, in the order pressed, until ``#`` or a pause."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._digits = ""
        self._last = 0.0

    def press(self, digit: str, at: float) -> str | None:
        """A key; the message to send when it completes the entry (``#``), else None."""
        self._digits += digit
        self._last = at
        return self._take() if digit == "#" else None

    def due(self, now: float) -> str | None:
        """The message to send when the caller has stopped pressing keys, else None."""
        if self._digits and now - self._last >= self.timeout:
            return self._take()
        return None

    def _take(self) -> str:
        digits, self._digits = self._digits, ""
        return f"The caller pressed the keys {digits}"


def keypad_tones(value: object) -> str | None:
    """The digits the agent's keypad tool may send (0-9 * # A-D, w/W pauses), or None."""
    if not isinstance(value, str) or not _TONES.fullmatch(value):
        return None
    return value
