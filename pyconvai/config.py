"""Per-call settings from the module (strings) to a typed SessionSettings.

The module parses elevenlabs.conf with Asterisk's config framework and hands
each call a flat ``dict[str, str]`` (see convai_call_settings() in
csrc/app_elevenlabs_convai.c). This is the one place that reads it.
"""

from __future__ import annotations

from collections.abc import Mapping

from .session import DEFAULT_SIGNED_URL_ENDPOINT, SessionSettings


class SettingsError(ValueError):
    """A per-call setting the module passed is unusable (names the key)."""


def _int(settings: Mapping[str, str], key: str, default: int) -> int:
    raw = settings.get(key, "")
    if raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{key} = {raw!r} is not a whole number") from None


def _flag(settings: Mapping[str, str], key: str) -> bool:
    return settings.get(key, "0") not in ("", "0", "no", "false")


def session_settings(settings: Mapping[str, str]) -> SessionSettings:
    """Build the SessionSettings of one call; SettingsError on a bad value."""
    agent_id = settings.get("agent_id", "")
    if not agent_id:
        raise SettingsError("agent_id is empty")
    caller_number = settings.get("caller_number", "")
    dynamic_variables: dict[str, str] = {}
    user_id = None
    if _flag(settings, "send_caller_number") and caller_number:
        dynamic_variables["caller_number"] = caller_number
        user_id = caller_number
    try:
        return SessionSettings(
            agent_name=settings.get("agent", agent_id),
            agent_id=agent_id,
            api_key=settings.get("api_key") or None,
            signed_url_endpoint=settings.get("signed_url_endpoint") or DEFAULT_SIGNED_URL_ENDPOINT,
            buffer_ms=_int(settings, "buffer_ms", 240),
            max_connection_attempts=_int(settings, "max_connection_attempts", 3),
            connection_timeout_seconds=float(_int(settings, "connection_timeout_seconds", 10)),
            dynamic_variables=dynamic_variables,
            user_id=user_id,
            debug=_flag(settings, "debug"),
        )
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
