"""pyconvai.client against the simulator and tiny local servers (127.0.0.1 only)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
import ssl
import time

import pytest

from pyconvai import client
from pyconvai.client import ConnectFailed, ConnectionEnded, default_tls_context, open_connection, open_direct
from pyconvai.sim import AgentScript

from loopback_helpers import API_KEY, self_signed_cert


def connect(endpoint: str, agent_id: str = "agent_a", api_key: str | None = API_KEY, **kw):
    options = {"timeout": 2.0, "attempts": 3} | kw
    return open_connection(
        agent_id=agent_id, api_key=api_key, signed_url_endpoint=endpoint, **options
    )


async def first_message(conn) -> dict:
    async with asyncio.timeout(5):
        conn.send(json.dumps({"type": "conversation_initiation_client_data"}))
        return json.loads(await conn.recv())


def test_signed_url_connection_gets_metadata(make_sim, caplog):
    sim = make_sim({"agent_a": AgentScript(output_format="ulaw_8000")})

    async def main():
        conn = await connect(sim.signed_url_endpoint)
        msg = await first_message(conn)
        await conn.close()
        return msg

    with caplog.at_level(logging.DEBUG):  # every logger, websockets' wire log included
        msg = asyncio.run(main())
    assert msg["type"] == "conversation_initiation_metadata"
    assert msg["conversation_initiation_metadata_event"]["agent_output_audio_format"] == "ulaw_8000"
    (rec,) = sim.wait_for_conversations(1, timeout=2)
    assert "conversation_signature=" in rec.path
    assert rec.closed.wait(3) and rec.close_code == 1000 and rec.closed_by == "client"
    # neither the key nor the signature reach the client's logs (the server's are not ours)
    text = "\n".join(
        r.getMessage()
        for r in caplog.records
        if not r.name.startswith(("websockets.server", "pyconvai.sim"))
    )
    assert API_KEY not in text
    signature = re.search(r"conversation_signature=([^&]+)", rec.path).group(1)
    assert signature not in text and "conversation_signature=***" in text


def test_public_url_without_api_key(make_sim):
    sim = make_sim()

    async def main():
        conn = await connect(sim.signed_url_endpoint, agent_id="public_agent", api_key=None)
        msg = await first_message(conn)
        await conn.close()
        return msg

    assert asyncio.run(main())["type"] == "conversation_initiation_metadata"
    assert sim.http_requests == []  # no signed-URL request
    (rec,) = sim.conversations
    assert rec.agent_id == "public_agent" and "conversation_signature" not in rec.path


def test_recv_raises_connection_ended_with_server_close_code(make_sim):
    script = AgentScript(close_after_s=0.2, close_code=1011, close_reason="boom")
    sim = make_sim({"agent_a": script})

    async def main():
        conn = await connect(sim.signed_url_endpoint)
        conn.send(json.dumps({"type": "conversation_initiation_client_data"}))
        async with asyncio.timeout(5):
            while True:
                await conn.recv()

    with pytest.raises(ConnectionEnded) as info:
        asyncio.run(main())
    assert (info.value.code, info.value.reason) == (1011, "boom")


def test_401_fails_at_once_without_retry(make_sim):
    sim = make_sim()
    started = time.monotonic()
    with pytest.raises(ConnectFailed) as info:
        asyncio.run(connect(sim.signed_url_endpoint, api_key="sk-wrong-key"))
    assert time.monotonic() - started < 1.0
    assert info.value.reason == "signed URL: HTTP 401 invalid_api_key Invalid API key"
    assert "sk-wrong-key" not in info.value.reason
    assert [r.status for r in sim.http_requests] == [401]


def test_422_without_agent_id(make_sim):
    sim = make_sim()
    with pytest.raises(ConnectFailed) as info:
        asyncio.run(connect(sim.signed_url_endpoint, agent_id=""))
    assert info.value.reason == "signed URL: HTTP 422 query.agent_id: field required"
    assert [r.status for r in sim.http_requests] == [422]


def test_slow_signed_url_times_out_within_bound(make_sim):
    sim = make_sim({"slow": AgentScript(signed_url_delay_s=1.5)})
    timeout, attempts = 0.4, 2
    started = time.monotonic()
    with pytest.raises(ConnectFailed) as info:
        asyncio.run(connect(sim.signed_url_endpoint, "slow", timeout=timeout, attempts=attempts))
    elapsed = time.monotonic() - started
    assert elapsed <= timeout * attempts + 0.25 + 0.5
    assert elapsed >= timeout * attempts
    assert info.value.reason == "signed URL: timed out after 0.4 s"


def test_connection_refused_is_retried_then_fails():
    # Port 9 (discard) on 127.0.0.1: nothing listens, every attempt is refused at once.
    endpoint = "http://127.0.0.1:9/v1/convai/conversation/get-signed-url"
    started = time.monotonic()
    with pytest.raises(ConnectFailed) as info:
        asyncio.run(connect(endpoint, attempts=3, timeout=1.0))
    elapsed = time.monotonic() - started
    assert 0.25 + 0.5 <= elapsed < 3.0  # two backoffs were slept
    assert info.value.reason.startswith("signed URL: ConnectError")


async def _http_server(statuses: list[int], hits: list[int]) -> asyncio.Server:
    """Answer successive requests with the given statuses (then repeat the last)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        status = statuses[min(len(hits), len(statuses) - 1)]
        hits.append(status)
        body = b'{"detail": "try later"}' if status != 200 else b'{"nope": 1}'
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n"
            "Content-Type: application/json\r\nConnection: close\r\n\r\n".encode() + body
        )
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


@pytest.mark.parametrize(
    "statuses, expected_hits, reason",
    [
        ([503], 3, "signed URL: HTTP 503 try later"),
        ([429, 500, 403], 3, "signed URL: HTTP 403 try later"),
        ([500, 404], 2, "signed URL: HTTP 404 try later"),
        ([200], 1, "signed URL: response has no usable signed_url"),
    ],
)
def test_retry_policy(statuses, expected_hits, reason):
    hits: list[int] = []

    async def main():
        server = await _http_server(statuses, hits)
        port = server.sockets[0].getsockname()[1]
        try:
            await connect(f"http://127.0.0.1:{port}/x", timeout=1.0, attempts=3)
        finally:
            server.close()
            await server.wait_closed()

    with pytest.raises(ConnectFailed) as info:
        asyncio.run(asyncio.wait_for(main(), 10))
    assert info.value.reason == reason
    assert len(hits) == expected_hits


def test_websocket_handshake_timeout_is_bounded():
    """A server that accepts TCP but never answers the upgrade: each attempt ends at timeout."""

    async def main():
        async def silent(reader, writer):
            await reader.read()  # until the client gives up
            writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            await connect(f"http://127.0.0.1:{port}/x", api_key=None, timeout=0.3, attempts=2)
        finally:
            server.close()

    started = time.monotonic()
    with pytest.raises(ConnectFailed) as info:
        asyncio.run(asyncio.wait_for(main(), 10))
    assert time.monotonic() - started < 0.3 * 2 + 0.25 + 0.5
    assert info.value.reason == "websocket handshake: timed out after 0.3 s"


def test_tls_is_verified_against_one_shared_system_context(make_sim, tmp_path):
    cert, key = self_signed_cert(tmp_path)
    sim = make_sim(tls_cert=cert, tls_key=key)
    assert sim.signed_url_endpoint.startswith("https://")
    shared = default_tls_context()
    assert shared is default_tls_context()  # built once, for every call
    assert shared.verify_mode == ssl.CERT_REQUIRED and shared.check_hostname

    async def main(**kw):
        conn = await connect(sim.signed_url_endpoint, attempts=1, **kw)
        msg = await first_message(conn)
        await conn.close()
        return msg

    with pytest.raises(ConnectFailed) as failed:  # a certificate the system does not trust
        asyncio.run(main())
    assert "CERTIFICATE_VERIFY_FAILED" in failed.value.reason, failed.value.reason
    trusted = ssl.create_default_context(cafile=cert)  # the administrator's own CA: still verifying
    assert asyncio.run(main(ssl_context=trusted))["type"] == "conversation_initiation_metadata"


def test_the_warm_up_connection_runs_the_client_and_leaves_nothing_open(caplog):
    """At load the runtime does once what the first call would (client.warm_up)."""
    import os

    from pyconvai import client

    def open_sockets() -> int:
        return sum(os.readlink(f"/proc/self/fd/{fd}").startswith("socket:") for fd in os.listdir("/proc/self/fd")
                   if os.path.exists(f"/proc/self/fd/{fd}"))

    async def main() -> set:
        before = open_sockets()
        await client.warm_up()
        assert open_sockets() <= before
        return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}

    caplog.set_level(logging.DEBUG, logger="pyconvai.client")
    assert asyncio.run(main()) == set()
    assert any("websocket open after" in r.getMessage() for r in caplog.records)  # a real handshake


# --- the socket itself, against a raw server: frames written byte by byte ---------------------

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _server_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """One unmasked frame, as a server sends it (payloads under 126 bytes)."""
    assert len(payload) < 126
    return bytes([(0x80 if fin else 0) | opcode, len(payload)]) + payload


async def _raw_server(frames: list[bytes], received: list[bytes]) -> asyncio.Server:
    """Accept the upgrade, write ``frames``, then keep what the client sends until it closes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        key = re.search(rb"(?i)sec-websocket-key:\s*(\S+)", request).group(1)
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n" + b"".join(frames))
        while data := await reader.read(65536):
            received.append(data)
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def _open_raw(frames: list[bytes], received: list[bytes], body) -> object:
    async def main():
        server = await _raw_server(frames, received)
        port = server.sockets[0].getsockname()[1]
        conn = await open_direct(url=f"ws://127.0.0.1:{port}/", headers={}, timeout=2.0, attempts=1)
        try:
            async with asyncio.timeout(5):
                return await body(conn)
        finally:
            conn.abort()
            server.close()

    return asyncio.run(main())


def test_fragmented_and_binary_messages_arrive_whole():
    frames = [_server_frame(0x1, b"hel", fin=False), _server_frame(0x0, b"lo ", fin=False),
              _server_frame(0x9, b"ping"),  # a ping between fragments is allowed, and answered
              _server_frame(0x0, "wörld".encode()), _server_frame(0x2, b"\x00\x01\x02")]
    received: list[bytes] = []

    async def body(conn):
        return [await conn.recv(), await conn.recv()]

    assert _open_raw(frames, received, body) == ["hello wörld", b"\x00\x01\x02"]


def test_messages_go_to_the_handler_from_the_read_callback_in_order():
    frames = [_server_frame(0x1, b"one"), _server_frame(0x1, b"two"), _server_frame(0x1, b"three")]

    async def body(conn):
        first = await conn.recv()
        got: list[str] = []
        conn.deliver_to(got.append)  # what is queued first, then each message as it is read
        while len(got) < 2:
            await asyncio.sleep(0.01)
        return [first, *got]

    assert _open_raw(frames, [], body) == ["one", "two", "three"]


def test_invalid_utf8_fails_the_connection_with_1007():
    received: list[bytes] = []

    async def body(conn):
        with pytest.raises(ConnectionEnded):
            while True:
                await conn.recv()

    _open_raw([_server_frame(0x1, b"\xff\xfe")], received, body)
    close = b"".join(received)[-(2 + 4 + 2 + len("invalid UTF-8")):]  # the client's masked close frame
    assert close[0] == 0x88
    mask, payload = close[2:6], close[6:]
    assert int.from_bytes(bytes(b ^ mask[i % 4] for i, b in enumerate(payload[:2])), "big") == 1007


def test_a_server_that_never_answers_pings_is_dropped(monkeypatch):
    """The keepalive: no pong within PING_TIMEOUT ends the connection (here 0.2 s)."""
    monkeypatch.setattr(client, "PING_INTERVAL", 0.2)
    monkeypatch.setattr(client, "PING_TIMEOUT", 0.2)

    async def body(conn):
        started = time.monotonic()
        with pytest.raises(ConnectionEnded) as info:
            await conn.recv()
        return info.value.code, time.monotonic() - started

    code, waited = _open_raw([], [], body)
    assert code is None and waited >= 0.35  # not before the ping went unanswered
