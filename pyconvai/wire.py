"""What crosses the rings between the module's channel thread and pyconvai.

The mirror of ``csrc/convai_wire.h``, the contract; ``tests/unit/test_wire.py``
parses that header and fails when this file says otherwise. Change both
together and bump ``WIRE_VERSION``: ``runtime.start()`` refuses a module
whose version differs (a venv from another build would read records of
another layout). Pure data and packing, no I/O, any thread.
"""

from __future__ import annotations

import enum
import struct

__all__ = [
    "CLOCK_RECORD",
    "CONTROL_HEADER",
    "CONTROL_MAX_PAYLOAD",
    "FRAME_MS",
    "FRAME_SECONDS",
    "WIRE_VERSION",
    "ClockKind",
    "Control",
    "WireVersionMismatch",
    "check_version",
    "control_record",
    "one_line",
]

#: CONVAI_WIRE_VERSION.
WIRE_VERSION = 4

#: CONVAI_FRAME_MS: agent audio crosses the downlink in frames this long.
FRAME_MS = 20
FRAME_SECONDS = FRAME_MS / 1000


class ClockKind(enum.IntEnum):
    """enum convai_clock_kind."""

    WRITTEN = 1  # an agent frame was written; position: its first byte in the downlink stream
    CAPTURED = 2  # caller audio was captured; position: the uplink stream's end after it
    DTMF = 3  # the caller pressed a key; position: the digit (ASCII)
    DTMF_SENT = 4  # a SEND_DTMF was carried out; position: digits sent (0: none)
    TRANSFER_CHECKED = 5  # a TRANSFER_CHECK was answered; position: 1 the extension exists, 0 not


#: struct convai_clock_record: position, at_ns (CLOCK_MONOTONIC), kind, reserved.
CLOCK_RECORD = struct.Struct("<QQII")


class Control(enum.IntEnum):
    """enum convai_control: records Python sends the channel thread."""

    FORMATS = 1  # input_format, output_format
    END = 2  # status, conversation_id, reason[, transfer_destination]
    STARTED = 3  # conversation_id
    SEND_DTMF = 4  # digits (0-9*#A-D, w/W pauses)
    TRANSFER_CHECK = 5  # destination
    RUN_TOOL = 6  # tool_call_id, tool_name, then variable, value pairs


#: CONVAI_CONTROL_HEADER: kind, 0, payload length (little-endian uint16).
CONTROL_HEADER = struct.Struct("<BBH")
#: CONVAI_CONTROL_MAX_PAYLOAD.
CONTROL_MAX_PAYLOAD = 8192


#: Longest text one field of a record, an AMI header or a log line carries.
TEXT_LIMIT = 2000
_CONTROL_CHARACTERS = dict.fromkeys([*range(0x20), 0x7F], " ")


def one_line(text: object, limit: int = TEXT_LIMIT) -> str:
    """Text that came from the network, made safe for Asterisk (AMI headers, channel
    variables, log lines): one line, no control characters (CR/LF would forge AMI
    headers or log lines, a NUL would cut a C string), at most ``limit`` characters."""
    line = " ".join(str(text).translate(_CONTROL_CHARACTERS).split())
    return line if len(line) <= limit else line[: limit - 1] + "\u2026"


def control_record(kind: Control, *parts: str) -> bytes:
    """One control record: NUL-separated UTF-8 strings, each made one safe line."""
    payload = "\0".join(one_line(part) for part in parts).encode("utf-8", "replace")[:CONTROL_MAX_PAYLOAD]
    return CONTROL_HEADER.pack(kind, 0, len(payload)) + payload


class WireVersionMismatch(RuntimeError):
    """The module and this pyconvai were built from different versions of the contract."""


def check_version(module_version: int) -> None:
    """Refuse a module whose records this pyconvai would misread."""
    if module_version != WIRE_VERSION:
        raise WireVersionMismatch(
            f"app_elevenlabs_convai.so speaks wire version {module_version} but pyconvai in this venv "
            f"speaks {WIRE_VERSION}: install the module and its venv from one build ('make install'), "
            "then restart Asterisk"
        )
