"""pyconvai: the Python half of app_elevenlabs_convai.

The Asterisk module embeds CPython and drives this package: a sans-I/O
ElevenLabs Conversational AI protocol core (protocol.py), the only network
client (client.py), the playback queue (playback.py), per-call sessions
(session.py) and the threads the module talks to (runtime.py).
"""

__version__ = "0.1.0"
