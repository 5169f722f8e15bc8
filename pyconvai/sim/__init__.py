"""Local ElevenLabs-compatible agent server for tests and the demo.

One port on 127.0.0.1 serves the signed-URL HTTP endpoint and the agent
WebSocket; each agent id follows an :class:`AgentScript`. See
``python -m pyconvai.sim --help``.
"""

from .records import ConversationRecord, HttpRequestRecord
from .scripts import PRESETS, AgentScript
from .server import SimConfig, Simulator

__all__ = ["PRESETS", "AgentScript", "ConversationRecord", "HttpRequestRecord", "SimConfig", "Simulator"]
