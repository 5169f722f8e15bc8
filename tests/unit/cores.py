"""Driving a provider's sans-I/O core in tests: a server message in, events out; what it sent."""

from __future__ import annotations

import orjson

from pyconvai.jsoncore import JsonCore


def feed(core: JsonCore, msg: dict) -> list:
    """The events ``core`` makes of one server message."""
    core.receive_text(orjson.dumps(msg).decode())
    return core.events_received()


def sent(core: JsonCore) -> list[dict]:
    """The messages ``core`` has queued for the server since the last call, decoded."""
    return [orjson.loads(m) for m in core.messages_to_send()]
