"""The AI providers an agent can talk to, each a sans-I/O protocol core.

Every core has the same shape as :class:`pyconvai.protocol.ConvaiProtocol`
(ElevenLabs, the first): ``begin()`` once the socket is open, ``receive_text``
for every frame, then ``messages_to_send()`` and ``events_received()``; client
messages (caller audio, tool results, text) are built by methods and land in
the same outbox. All of them emit the events of :mod:`pyconvai.protocol`, so
the session, the call, the downlink, the tools and the statistics do not know
which provider they serve. No network code here: :mod:`pyconvai.client` opens
the socket each provider needs.

- ``elevenlabs``: :mod:`pyconvai.protocol`;
- ``websocket``: :mod:`pyconvai.providers.websocket`, the generic JSON
  protocol of "any AI server over a WebSocket" bridges;
- ``openai_realtime``: :mod:`pyconvai.providers.openai_realtime`, OpenAI's
  Realtime API (GA).
"""

from __future__ import annotations

from ..config import SessionSettings
from ..protocol import ConvaiProtocol
from .openai_realtime import RealtimeProtocol
from .websocket import BridgeProtocol

__all__ = ["PROVIDERS", "BridgeProtocol", "RealtimeProtocol", "new_protocol"]

PROVIDERS = ("elevenlabs", "websocket", "openai_realtime")


def new_protocol(settings: SessionSettings) -> ConvaiProtocol | BridgeProtocol | RealtimeProtocol:
    """The core for one conversation of the agent ``settings`` describe."""
    if settings.provider == "websocket":
        assert settings.bridge is not None
        return BridgeProtocol(settings.bridge)
    if settings.provider == "openai_realtime":
        assert settings.realtime is not None
        return RealtimeProtocol(settings.realtime)
    return ConvaiProtocol(settings.dynamic_variables, settings.overrides, settings.user_id)
