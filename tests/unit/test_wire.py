"""The C<->Python contract: csrc/convai_wire.h, ring.h and clockstats.h as Python sees them.

The C headers are the truth. These tests read them and fail when
pyconvai/wire.py or the cffi cdef (csrc/ring_build.py) says otherwise.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from pyconvai import wire
from pyconvai.stats import IDLE_GAP_SECONDS

CSRC = Path(__file__).resolve().parents[2] / "csrc"


def _header(name: str) -> str:
    text = (CSRC / name).read_text()
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)  # comments may mention anything


def _defines(text: str) -> dict[str, int]:
    return {name: int(value) for name, value in re.findall(r"#define\s+(\w+)\s+(\d+)\s*$", text, re.M)}


def _enum(text: str, name: str) -> dict[str, int]:
    body = re.search(rf"enum {name}\s*\{{(.*?)\}};", text, re.S)
    assert body, f"enum {name} not found"
    return {k: int(v) for k, v in re.findall(r"(\w+)\s*=\s*(\d+)", body[1])}


def test_version_frame_and_control_limits_match():
    defines = _defines(_header("convai_wire.h"))
    assert defines["CONVAI_WIRE_VERSION"] == wire.WIRE_VERSION
    assert defines["CONVAI_FRAME_MS"] == wire.FRAME_MS
    assert defines["CONVAI_CONTROL_HEADER"] == wire.CONTROL_HEADER.size
    assert defines["CONVAI_CONTROL_MAX_PAYLOAD"] == wire.CONTROL_MAX_PAYLOAD


def test_control_kinds_match():
    kinds = _enum(_header("convai_wire.h"), "convai_control")
    assert kinds == {f"CONVAI_CONTROL_{k.name}": k.value for k in wire.Control}


def test_clock_kinds_match():
    kinds = _enum(_header("convai_wire.h"), "convai_clock_kind")
    assert kinds == {f"CONVAI_CLOCK_{k.name}": k.value for k in wire.ClockKind}


_C_SIZES = {"uint64_t": ("Q", 8), "uint32_t": ("I", 4), "uint16_t": ("H", 2), "uint8_t": ("B", 1)}


def test_clock_record_layout_matches():
    body = re.search(r"struct convai_clock_record\s*\{(.*?)\};", _header("convai_wire.h"), re.S)
    fields = re.findall(r"(\w+)\s+\w+;", body[1])
    assert "<" + "".join(_C_SIZES[t][0] for t in fields) == wire.CLOCK_RECORD.format
    # Naturally aligned and in size order: no padding for the C compiler to add.
    sizes = [_C_SIZES[t][1] for t in fields]
    assert sizes == sorted(sizes, reverse=True) and sum(sizes) % max(sizes) == 0


def test_nothing_else_redefines_the_contract():
    """The contract is written once in C (convai_wire.h) and once in Python (wire.py)."""
    for path in CSRC.glob("*.[ch]"):
        if path.name == "convai_wire.h":
            continue
        text = path.read_text()
        for name in ("CONVAI_FRAME_MS", "CONVAI_CONTROL_HEADER", "CONVAI_CONTROL_MAX_PAYLOAD", "CONVAI_WIRE_VERSION"):
            assert not re.search(rf"#define\s+{name}\b", text), f"{path.name} defines {name}"
        assert "enum convai_control {" not in text and "struct convai_clock_record {" not in text, path.name
    package = Path(wire.__file__).parent
    for path in package.rglob("*.py"):
        if path.name == "wire.py":
            continue
        text = path.read_text()
        assert not re.search(r"^\s*FRAME_(MS|SECONDS)\s*=", text, re.M), f"{path.name} redefines the frame"
        assert not re.search(r'Struct\("<QQII"\)|pack\("<BBH"', text), f"{path.name} redefines a record"


def test_the_cffi_binding_is_built_from_ring_h_and_clockstats_h_themselves():
    """No hand copy of ring.h or clockstats.h: csrc/ring_build.py derives the cdef, and the
    binding the tests and the runtime load has every function they declare."""
    from pyconvai._ring import lib

    spec = importlib.util.spec_from_file_location("ring_build", CSRC / "ring_build.py")
    ring_build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ring_build)
    names = set(re.findall(r"\b(convai_(?:ring|clockstats)_\w+)\(", _header("ring.h") + _header("clockstats.h")))
    assert len(names) == 22
    assert names == set(re.findall(r"\b(convai_(?:ring|clockstats)_\w+)\(", ring_build.ring_cdef()))
    assert all(hasattr(lib, name) for name in names)


def test_clockstats_reads_the_clock_record_of_convai_wire_h():
    """clockstats.c reads struct convai_clock_record as wire.CLOCK_RECORD packs it."""
    from pyconvai._ring import ffi, lib

    stats = ffi.new("struct convai_clockstats *")
    stats.hand_over_writes_from_ns = 2**64 - 1
    data = wire.CLOCK_RECORD.pack(0, 5_000_000, wire.ClockKind.WRITTEN, 0)
    data += wire.CLOCK_RECORD.pack(160, 25_000_000, wire.ClockKind.WRITTEN, 0)
    data += wire.CLOCK_RECORD.pack(7, 26_000_000, wire.ClockKind.DTMF, 0)
    assert lib.convai_clockstats_digest(stats, ffi.from_buffer(data), len(data)) == 2 * wire.CLOCK_RECORD.size
    assert (stats.frames_written, stats.first_write_ns, stats.last_write_ns) == (2, 5_000_000, 25_000_000)
    assert stats.intervals_ms[20] == 1
    idle_gap_ms = _defines(_header("clockstats.h"))["CONVAI_CLOCKSTATS_IDLE_GAP_MS"]
    assert idle_gap_ms == round(IDLE_GAP_SECONDS * 1000) and len(stats.intervals_ms) == idle_gap_ms + 1


def test_control_record_packs_header_and_payload():
    record = wire.control_record(wire.Control.END, "FAILED", "conv_1", "why")
    assert record[:4] == bytes([2, 0, len(b"FAILED\0conv_1\0why"), 0])
    assert record[4:] == b"FAILED\0conv_1\0why"
    long = wire.control_record(wire.Control.STARTED, *["x" * 10_000] * 5)  # 5 fields, each capped
    assert len(long) == wire.CONTROL_HEADER.size + wire.CONTROL_MAX_PAYLOAD


def test_a_module_of_another_version_is_refused_with_the_fix():
    wire.check_version(wire.WIRE_VERSION)
    with pytest.raises(wire.WireVersionMismatch) as refused:
        wire.check_version(wire.WIRE_VERSION + 1)
    message = str(refused.value)
    assert f"wire version {wire.WIRE_VERSION + 1}" in message and f"speaks {wire.WIRE_VERSION}" in message
    assert "make install" in message


def test_network_text_becomes_one_safe_line():
    injected = "ok\r\nEvent: Hangup\r\nChannel: SIP/victim\x00tail\x1b[31m"
    line = wire.one_line(injected)
    assert "\r" not in line and "\n" not in line and "\x00" not in line and "\x1b" not in line
    assert line == "ok Event: Hangup Channel: SIP/victim tail [31m"
    long = wire.one_line("x" * (1 << 20))
    assert len(long) == wire.TEXT_LIMIT and long.endswith("\u2026")


def test_control_records_carry_no_separator_or_line_break_from_the_network():
    record = wire.control_record(wire.Control.END, "FAILED", "conv\x00_1", "server said:\r\nEvent: Hangup")
    assert record[4:].split(b"\0") == [b"FAILED", b"conv _1", b"server said: Event: Hangup"]
