"""Per-call settings from the module (strings) to typed settings.

The module parses elevenlabs.conf with Asterisk's config framework, evaluates
the dialplan expressions on the channel's thread, and hands each call a flat
``dict[str, str]`` (convai_call_settings() in csrc/app_elevenlabs_convai.c):

- plain keys: ``agent``, ``agent_id``, ``api_key``, ``signed_url_endpoint``,
  ``buffer_ms``, ``max_connection_attempts``, ``connection_timeout_seconds``,
  ``debug``, ``user_id``, ``max_call_duration_seconds``,
  ``max_call_duration_message``, ``channel``, ``uniqueid``;
- ``var:<name>``: a dynamic variable (already evaluated);
- ``override:<field>``: an override the agent allows (first_message, prompt,
  language, voice_id).

This is the one place that reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .session import DEFAULT_SIGNED_URL_ENDPOINT, SessionSettings

DEFAULT_GOODBYE_MESSAGE = (
    "The maximum duration of this call has been reached. Tell the caller briefly and say goodbye."
)

# Where each override goes in conversation_config_override.
_OVERRIDE_PATHS = {
    "first_message": ("agent", "first_message"),
    "prompt": ("agent", "prompt", "prompt"),
    "language": ("agent", "language"),
    "voice_id": ("tts", "voice_id"),
}


class SettingsError(ValueError):
    """A per-call setting the module passed is unusable (names the key)."""


@dataclass(frozen=True)
class CallLimits:
    """What the call bridge enforces on top of the session."""

    max_duration_seconds: int = 0  # 0: no limit
    goodbye_message: str = DEFAULT_GOODBYE_MESSAGE


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


def overrides(settings: Mapping[str, str]) -> dict[str, Any]:
    """conversation_config_override built from the ``override:<field>`` keys."""
    result: dict[str, Any] = {}
    for key, value in settings.items():
        if not key.startswith("override:"):
            continue
        field = key.removeprefix("override:")
        path = _OVERRIDE_PATHS.get(field)
        if path is None:
            raise SettingsError(f"unknown override {field!r}")
        node = result
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return result


def session_settings(settings: Mapping[str, str]) -> SessionSettings:
    """Build the SessionSettings of one call; SettingsError on a bad value."""
    agent_id = settings.get("agent_id", "")
    if not agent_id:
        raise SettingsError("agent_id is empty")
    dynamic_variables = {
        key.removeprefix("var:"): value for key, value in settings.items() if key.startswith("var:")
    }
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
            overrides=overrides(settings),
            user_id=settings.get("user_id") or None,
            debug=_flag(settings, "debug"),
        )
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


def call_limits(settings: Mapping[str, str]) -> CallLimits:
    return CallLimits(
        max_duration_seconds=_int(settings, "max_call_duration_seconds", 0),
        goodbye_message=settings.get("max_call_duration_message") or DEFAULT_GOODBYE_MESSAGE,
    )
