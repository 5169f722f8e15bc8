"""Local ElevenLabs-compatible agent server for tests and the demo."""
