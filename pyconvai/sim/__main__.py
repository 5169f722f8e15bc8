"""Command line: ``python -m pyconvai.sim --help``."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
import sys
from typing import Any

from . import audio
from .scripts import PRESETS, AgentScript
from .server import SimConfig, Simulator

_EPILOG = """\
presets (--agent ID=PRESET, --default PRESET):
  greeting      3 s greeting, answers every caller turn, never hangs up
  bargein       8 s greeting and 3 s replies, easy to interrupt
  end_call      hangs up (goodbye, end_call tool, close 1000) after the first reply
  hangup        greeting, goodbye and close 1000 without waiting for the caller
  close_1002    error llm_timeout + close 1002 after 3 s, mid-greeting
  close_1008    error invalid_message + close 1008 after 3 s
  close_1011    error unknown + close 1011 after 3 s, mid-greeting
  drop          aborts the TCP connection 2 s into an 8 s greeting (no close frame)
  slow_url      answers the signed-URL request after 15 s
  big_frame     first greeting message over 1 MiB (long with low-rate formats)
  odd_chunks    PCM chunks of odd byte lengths
  tool          client_tool_call "lookup_caller" after the greeting
  idle_timeout  error transport_receive_timeout + close 1002 after 10 s without caller audio
  max_duration  error max_duration_exceeded + close 1000 after 20 s
  overrides     accepts prompt, first_message, language, voice_id and custom LLM body overrides

The agent speaks tones (greeting 440 Hz, reply 880 Hz, goodbye 660 Hz, stale
chunks after an interruption 1200 Hz) or, with --speech and espeak-ng on PATH,
the script's texts. Caller speech is detected by energy (RMS > 1000 for 60 ms).

example:
  python -m pyconvai.sim --port 8765 --output-format ulaw_8000 --input-format ulaw_8000 \\
      --agent agent_demo=bargein --agent agent_bye=end_call --log sim.jsonl
"""


def _agent(value: str) -> tuple[str, str]:
    agent_id, sep, preset = value.partition("=")
    if not sep or not agent_id or preset not in PRESETS:
        raise argparse.ArgumentTypeError(f"expected ID=PRESET with PRESET in: {', '.join(PRESETS)}")
    return agent_id, preset


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pyconvai.sim",
        description="Run a local ElevenLabs-compatible Agents server: the signed-URL endpoint "
        "(GET /v1/convai/conversation/get-signed-url) and the WebSocket "
        "(/v1/convai/conversation) on one port.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8765, help="port, 0 for any free one (default: %(default)s)")
    parser.add_argument("--api-key", default="sk-sim",
                        help="expected xi-api-key (and the others' Bearer token) (default: %(default)s)")
    parser.add_argument("--agent", action="append", type=_agent, default=[], metavar="ID=PRESET",
                        help="script an agent id with a preset; repeatable")
    parser.add_argument("--default", default="greeting", choices=sorted(PRESETS), metavar="PRESET",
                        help="preset for agent ids not given with --agent (default: %(default)s)")
    parser.add_argument("--output-format", choices=audio.FORMATS, metavar="FMT",
                        help="agent output format for every agent (default: pcm_16000)")
    parser.add_argument("--input-format", choices=audio.FORMATS, metavar="FMT",
                        help="caller input format for every agent (default: pcm_16000)")
    parser.add_argument("--send-speed", type=float, metavar="X",
                        help="send agent audio X times faster than real time (default: 4)")
    parser.add_argument("--speech", action="store_true", help="speak the texts with espeak-ng when available")
    parser.add_argument("--strict", action="store_true",
                        help="refuse unknown agent ids and invalid client messages (1008)")
    parser.add_argument("--require-signature", action="store_true",
                        help="WebSockets need a fresh signature from the signed-URL endpoint")
    parser.add_argument("--tls-cert", metavar="FILE", help="PEM certificate: serve https/wss")
    parser.add_argument("--tls-key", metavar="FILE", help="PEM private key for --tls-cert")
    parser.add_argument("--log", metavar="FILE", help="append JSON lines of all traffic (audio as byte counts)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def _config(args: argparse.Namespace) -> SimConfig:
    changes: dict[str, Any] = {
        name: value
        for name, value in (("output_format", args.output_format), ("input_format", args.input_format),
                            ("send_speed", args.send_speed))
        if value is not None
    }
    if args.speech:
        changes["speech"] = True

    def script(preset: str) -> AgentScript:
        return dataclasses.replace(PRESETS[preset], **changes)

    return SimConfig(
        api_key=args.api_key,
        agents={agent_id: script(preset) for agent_id, preset in args.agent},
        default_script=script(args.default),
        host=args.host,
        port=args.port,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        log_path=args.log,
        strict=args.strict,
        require_signature=args.require_signature,
    )


async def _serve(sim: Simulator) -> None:
    await sim.start_async()
    print(f"signed URL endpoint: {sim.signed_url_endpoint}", flush=True)
    print(f"WebSocket:           {sim.ws_url}?agent_id=<ID>", flush=True)
    print(f"bridge protocol:     {sim.bridge_url()}?agent=<ID>   (provider = websocket)", flush=True)
    print(f"OpenAI Realtime:     {sim.realtime_url()}?agent=<ID>   (provider = openai_realtime, openai_url)",
          flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await sim.stop_async()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        _parser().error("--tls-cert and --tls-key go together")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    asyncio.run(_serve(Simulator(_config(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
