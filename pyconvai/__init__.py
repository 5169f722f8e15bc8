"""pyconvai: the Python half of app_elevenlabs_convai.

The Asterisk module embeds CPython and drives this package. Audio flows in a
straight line: protocol.py (sans-I/O ElevenLabs protocol) -> session.py (one
conversation's asyncio orchestration, emitting events.py) -> call.py (applies
them in order) -> playback.py (the Downlink: queue, ring, lead) -> ring.py
(the lock-free ring shared with C) -> the module's channel thread. client.py
is the only network I/O; wire.py mirrors csrc/convai_wire.h; runtime.py owns
the threads and the entry points the module calls.
"""

__version__ = "0.1.0"
