"""The module inside a real Asterisk 22: load, embedded Python, CLI, config, unload, stop."""

import re

import pytest

AGENTS = """\
[general]

[sales_agent]
elevenlabs_agent_id = agent_sales_0001
elevenlabs_api_key = sk_live_0123456789abcdef0123456789abcd

[support](!)
elevenlabs_audio_frames_buffer_ms = 20
max_connection_attempts = 5

[support_en](support)
elevenlabs_agent_id = agent_support_en
"""


def agent_rows(output: str) -> dict[str, str]:
    return {line.split()[0]: line for line in output.splitlines()[1:] if line and not line.endswith("agent(s)")}


def test_module_loads_and_is_running(make_asterisk):
    ast = make_asterisk({"elevenlabs.conf": AGENTS})
    assert re.search(r"app_elevenlabs_convai\.so\s+ElevenLabs Conversational AI\s+\d+\s+Running", ast.cli("module show like elevenlabs"))
    doc = ast.cli("core show application ElevenLabsConversationalAI")
    assert "Connect the caller to an ElevenLabs Conversational AI agent" in doc
    assert "ELEVENLABS_STATUS" in doc and "AGENT_ENDED" in doc


def test_embedded_python_imports_everything(make_asterisk):
    ast = make_asterisk({"elevenlabs.conf": AGENTS})
    out = ast.cli("elevenlabs show runtime")
    assert "Runtime:         running" in out
    assert re.search(r"Python:\s+3\.\d+", out)
    assert "Virtual env:     yes" in out
    for module in ("ssl", "asyncio", "websockets", "httpx", "orjson", "pyconvai._ring"):
        line = next(l for l in out.splitlines() if l.startswith(f"Module {module}:"))
        assert line.split(":", 1)[1].strip().startswith("ok"), line
    assert "Thread pyconvai-asyncio: running" in out.replace(":running", ": running")
    assert "Event loop:      uvloop.Loop" in out  # a dependency, installed by make install
    assert "OpenSSL" in out


def test_show_agents_lists_agents_with_keys_redacted(make_asterisk):
    ast = make_asterisk({"elevenlabs.conf": AGENTS})
    out = ast.cli("elevenlabs show agents")
    rows = agent_rows(out)
    assert set(rows) == {"sales_agent", "support_en"}  # the template is not an agent
    assert "sk_\u2026abcd" in rows["sales_agent"]
    assert "0123456789abcdef" not in out
    assert re.search(r"\b20 ms\s+5\b", rows["support_en"]), rows["support_en"]  # inherited from the template
    assert "(none)" in rows["support_en"]
    assert "0123456789abcdef" not in ast.log_text()


def test_debug_command_and_its_completion(make_asterisk):
    ast = make_asterisk({"elevenlabs.conf": AGENTS})
    assert "debug logging enabled" in ast.cli("elevenlabs debug on")
    assert re.search(r"sales_agent.*Yes", ast.cli("elevenlabs show agents"))
    assert "debug logging disabled" in ast.cli("elevenlabs debug off")
    assert "Usage: elevenlabs debug" in ast.cli("elevenlabs debug maybe")
    completions = ast.cli('_command matchesarray "elevenlabs debug " ""')
    assert "on" in completions.split() and "off" in completions.split()
    assert "show" in ast.cli('_command matchesarray "elevenlabs " ""').split()


@pytest.mark.parametrize("command", ["elevenlabs reload", "module reload app_elevenlabs_convai"])
def test_reload_applies_a_new_config(make_asterisk, command):
    ast = make_asterisk({"elevenlabs.conf": AGENTS})
    ast.write_config("elevenlabs.conf", AGENTS + "\n[billing]\nelevenlabs_agent_id = agent_billing\n")
    ast.cli(command)
    assert "billing" in agent_rows(ast.cli("elevenlabs show agents"))


BROKEN = {
    "missing required key": ("[general]\n[sales_agent]\nelevenlabs_api_key = sk_x\n", r"\[sales_agent\].*elevenlabs_agent_id"),
    "unknown key": ("[sales_agent]\nelevenlabs_agent_id = a\nelevenlabs_voice = x\n", r"sales_agent.*elevenlabs_voice"),
    "out-of-range number": (
        "[sales_agent]\nelevenlabs_agent_id = a\nconnection_timeout_seconds = 99\n",
        r"\[sales_agent\] connection_timeout_seconds = '99' is not a number from 1 to 60",
    ),
    "no agents at all": ("[general]\ndebug = yes\n", r"no agent sections"),
    "unknown override": (
        "[sales_agent]\nelevenlabs_agent_id = a\nallow_overrides = first_message, tone\n",
        r"\[sales_agent\] allow_overrides: unknown override 'tone'",
    ),
    "malformed dynamic variable": (
        "[sales_agent]\nelevenlabs_agent_id = a\ndynamic_variable = system__caller_id=${CALLERID(num)}\n",
        r"\[sales_agent\] dynamic_variable = 'system__caller_id=\$\{CALLERID\(num\)\}' must be name=value",
    ),
    "unreadable key file": (
        "[sales_agent]\nelevenlabs_agent_id = a\nelevenlabs_api_key_file = /nonexistent/key\n",
        r"\[sales_agent\] elevenlabs_api_key_file: cannot read a key from /nonexistent/key",
    ),
    "unset key variable": (
        "[sales_agent]\nelevenlabs_agent_id = a\nelevenlabs_api_key_env = CONVAI_NO_SUCH_VARIABLE\n",
        r"\[sales_agent\] elevenlabs_api_key_env: environment variable CONVAI_NO_SUCH_VARIABLE is not set",
    ),
    "two key sources": (
        "[sales_agent]\nelevenlabs_agent_id = a\nelevenlabs_api_key = sk_1\nelevenlabs_api_key_env = HOME\n",
        r"\[sales_agent\] set only one of elevenlabs_api_key, elevenlabs_api_key_file and elevenlabs_api_key_env",
    ),
    "concurrency out of range": (
        "[general]\nmax_concurrent_calls = -1\n[sales_agent]\nelevenlabs_agent_id = a\n",
        r"\[general\] max_concurrent_calls = '-1' is not a number from 0 to 100000",
    ),
}


@pytest.mark.parametrize("case", BROKEN)
def test_broken_config_at_startup_never_stops_asterisk(make_asterisk, case):
    text, message = BROKEN[case]
    ast = make_asterisk({"elevenlabs.conf": text})
    assert "Running" in ast.cli("module show like elevenlabs")
    ast.wait_for_log_match(message)
    assert "No configuration loaded" in ast.cli("elevenlabs show agents")
    assert "Runtime:         running" in ast.cli("elevenlabs show runtime")


@pytest.mark.parametrize("case", BROKEN)
def test_broken_config_on_reload_keeps_the_previous_one(make_asterisk, case):
    text, message = BROKEN[case]
    ast = make_asterisk({"elevenlabs.conf": AGENTS})
    ast.write_config("elevenlabs.conf", text)
    assert "kept the previous configuration" in ast.cli("elevenlabs reload")
    ast.wait_for_log_match(message)
    assert set(agent_rows(ast.cli("elevenlabs show agents"))) == {"sales_agent", "support_en"}


def test_missing_config_file_is_reported(make_asterisk):
    ast = make_asterisk()
    assert "Running" in ast.cli("module show like elevenlabs")
    assert "elevenlabs.conf" in ast.log_text()


def test_unload_is_refused_with_a_clear_message(make_asterisk):
    ast = make_asterisk({"elevenlabs.conf": AGENTS})
    ast.cli("module unload app_elevenlabs_convai.so")
    assert "cannot be unloaded: it embeds a Python interpreter" in ast.wait_for_log("cannot be unloaded")
    assert "Running" in ast.cli("module show like elevenlabs")
    assert "Runtime:         running" in ast.cli("elevenlabs show runtime")


def test_core_stop_now_exits_cleanly_and_quickly(make_asterisk):
    import time

    ast = make_asterisk({"elevenlabs.conf": AGENTS})
    ast.cli("elevenlabs show runtime")
    started = time.monotonic()
    assert ast.stop(timeout=10) == 0
    assert time.monotonic() - started < 5
    assert "Segmentation" not in ast.stdout_text()


def test_config_options_are_documented_in_asterisk(make_asterisk):
    ast = make_asterisk({"elevenlabs.conf": AGENTS})
    types = ast.cli("config show help app_elevenlabs_convai")
    assert re.search(r"^general\s+--", types, re.M) and re.search(r"^agent\s+--", types, re.M)
    option = ast.cli("config show help app_elevenlabs_convai agent dynamic_variable")
    assert "evaluated for each call" in option and "ELEVENLABS_VAR_name" in option


def test_a_venv_of_another_wire_version_is_refused_with_the_fix(make_asterisk):
    """A pyconvai whose record layouts differ from the module's (csrc/convai_wire.h) must not run."""
    import shutil

    from pyconvai import wire

    ast = make_asterisk(start=False)
    venv = ast.path("lib") + "/venv-other-build"
    shutil.copytree(ast.host_path("/opt/app_elevenlabs_convai/venv"), ast.host_path(venv), symlinks=True)
    (mirror,) = ast.host_path(venv).glob("lib/python3*/site-packages/pyconvai/wire.py")
    text = mirror.read_text()
    assert f"WIRE_VERSION = {wire.WIRE_VERSION}\n" in text
    mirror.write_text(text.replace(f"WIRE_VERSION = {wire.WIRE_VERSION}\n", "WIRE_VERSION = 999\n"))
    ast.write_config("elevenlabs.conf", f"[general]\npython_venv = {venv}\n" + AGENTS.replace("[general]\n", ""))
    ast.start()
    log = ast.wait_for_log("wire version")
    assert f"speaks wire version {wire.WIRE_VERSION} but pyconvai in this venv speaks 999" in log
    assert "make install" in log
    assert "Runtime:         not running" in ast.cli("elevenlabs show runtime")
    assert "Running" in ast.cli("module show like elevenlabs")
    # Fixed in place (as 'make install' would): 'elevenlabs reload' starts it, no restart.
    mirror.write_text(text)
    ast.cli("elevenlabs reload")
    assert "Runtime:         running" in ast.cli("elevenlabs show runtime")


GIL_HOLDER = """

def _hold_the_gil_until_released(fifo: str, marker: str) -> None:
    # Test only: read(2) called through ctypes.PyDLL keeps the GIL for as long as it blocks.
    import ctypes
    import os
    import threading
    fd = os.open(fifo, os.O_RDWR)
    os.read(fd, 1)  # the test's go (the GIL released while waiting, as usual)
    with open(marker, "w") as out:
        out.write(str(threading.get_native_id()))
    ctypes.PyDLL(None).read(fd, ctypes.create_string_buffer(1), 1)
    os.replace(marker, marker + ".released")


import threading as _threading
_threading.Thread(target=_hold_the_gil_until_released, args=({fifo!r}, {marker!r}), daemon=True).start()
"""


def test_module_commands_and_metrics_never_wait_for_the_gil(make_asterisk):
    """A runtime that holds the GIL (a stuck call, a long garbage collection) must not stall
    'elevenlabs show metrics' (res_prometheus' scrape runs the same code under its lock),
    'elevenlabs debug', 'elevenlabs reload' or 'module reload' (the loader's locks)."""
    import os
    import shutil
    import time

    ast = make_asterisk(start=False)
    venv, fifo, marker = (ast.path("lib") + name for name in ("/venv-gil", "/gil.fifo", "/gil.holder"))
    shutil.copytree(ast.host_path("/opt/app_elevenlabs_convai/venv"), ast.host_path(venv), symlinks=True)
    (runtime,) = ast.host_path(venv).glob("lib/python3*/site-packages/pyconvai/runtime.py")
    runtime.write_text(runtime.read_text() + GIL_HOLDER.format(fifo=fifo, marker=marker))
    os.mkfifo(ast.host_path(fifo))
    ast.write_config("elevenlabs.conf", f"[general]\npython_venv = {venv}\n" + AGENTS.replace("[general]\n", ""))
    ast.start()
    with open(ast.host_path(fifo), "wb", buffering=0) as go:
        go.write(b"g")
    holder = ast.host_path(marker)
    while not holder.exists() or not holder.read_text():
        time.sleep(0.05)
    syscall = f"/proc/{ast.process.pid}/task/{holder.read_text()}/syscall"
    while not open(syscall).read().startswith("0 "):  # blocked in read(2), the GIL held
        time.sleep(0.05)

    assert "asterisk_elevenlabs_calls_total" in ast.cli("elevenlabs show metrics")
    assert "enabled" in ast.cli("elevenlabs debug on").lower()
    assert "reloaded" in ast.cli("elevenlabs reload")
    ast.cli("module reload app_elevenlabs_convai")
    assert "sales" in ast.cli("elevenlabs show agents")
    assert open(syscall).read().startswith("0 ") and holder.exists(), "the GIL was released meanwhile"

    with open(ast.host_path(fifo), "wb") as release:
        release.write(b"x")
    assert "Runtime:         running" in ast.cli("elevenlabs show runtime")  # takes the GIL
    assert "Running" in ast.cli("module show like elevenlabs")


def test_secrets_stay_hidden_in_the_cli(make_asterisk):
    ast = make_asterisk({"elevenlabs.conf": "[short]\nelevenlabs_agent_id = a\nelevenlabs_api_key = sk_0123456789ab\n"
                         "dynamic_variable = secret__token=abc123XYZ\ndynamic_variable = tier=gold\n"})
    shown = ast.cli("elevenlabs show agent short") + ast.cli("elevenlabs show agents")
    assert "sk_0123456789ab" not in shown and "sk_" not in shown and "****" in shown  # 15 characters: none shown
    assert "abc123XYZ" not in shown and "secret__token = (secret, not shown)" in shown
    assert "tier = gold" in shown
