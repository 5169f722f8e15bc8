"""Network I/O for ConvAI: the signed-URL request (httpx) and the WebSocket (websockets'
Sans-I/O protocol on an asyncio transport, :class:`Connection`).

This is the only module that touches the network. Everything runs on the
asyncio thread. Every await is bounded:

* one connection attempt (signed URL + WebSocket handshake together) is
  bounded by ``timeout``; up to ``attempts`` attempts with a short exponential
  backoff (0.25 s · 2^n, at most 2 s) between them. Only transient failures
  are retried: network errors, timeouts, HTTP 429 and 5xx. Other HTTP
  statuses (401, 403, 404, 422, ...) fail at once.
* receiving waits for the server without a deadline, but the keepalive (a
  WS ping every 20 s, 20 s to answer) ends a dead connection within about 40 s.
* :meth:`Connection.close` is bounded by ``CLOSE_TIMEOUT``.

TLS certificates are always verified, against the system's CA store by
default (one context, built once and shared by every call: building one costs
milliseconds of CPU and leaves fragmented memory behind); a custom
``ssl.SSLContext`` (e.g. a test CA) may be supplied but must itself verify. Neither the API key nor the
full signed URL is ever logged: URLs go through :func:`redact_url`.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import os
import re
import ssl
import time
import urllib.parse
from collections import deque
from collections.abc import Awaitable, Callable

import httpx
import orjson
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus, WebSocketException
from websockets.frames import CloseCode, Frame, Opcode
from websockets.protocol import CLOSED, CONNECTING, OPEN
from websockets.uri import parse_uri

from . import __version__

__all__ = [
    "CLOSE_TIMEOUT",
    "MAX_MESSAGE_BYTES",
    "ConnectFailed",
    "ConnectionEnded",
    "Connection",
    "default_tls_context",
    "open_connection",
    "open_direct",
    "read_agent",
    "public_url",
    "redact_secrets",
    "redact_url",
    "set_wire_debug",
    "warm_up",
]

log = logging.getLogger("pyconvai.client")

MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # the server's own maximum (protocol doc §2)
#: Received messages queued for recv() before the socket stops being read: with 16 MiB
#: messages, 16 would let one connection hold 256 MiB.
MAX_QUEUED_MESSAGES = 4
CLOSE_TIMEOUT = 2.0
PING_INTERVAL = 20.0
PING_TIMEOUT = 20.0
_BACKOFF_BASE = 0.25
_BACKOFF_MAX = 2.0
_EXCERPT = 160
_USER_AGENT = f"pyconvai/{__version__}"
_SECRET_KEYS = frozenset(
    {"conversation_signature", "token", "xi-api-key", "xi_api_key", "api_key", "signature"}
)


class ConnectFailed(Exception):
    """No conversation socket could be opened; ``reason`` is readable and free of secrets."""

    def __init__(self, reason: str, *, retryable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


class ConnectionEnded(Exception):
    """The socket closed. ``code`` is the server's close code, None when it sent none."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"websocket closed {code}: {reason}")
        self.code = code
        self.reason = reason


_SECRET_PARAM = re.compile(
    r"(?i)\b(" + "|".join(map(re.escape, _SECRET_KEYS)) + r")(['\"]?\s*[=:]\s*['\"]?)([^&\s'\",]+)")
_API_KEY = re.compile(r"\bsk[_-][A-Za-z0-9_-]{6,}")
#: websockets logs the handshake's headers under wire debug: the other providers' bearer tokens.
_AUTHORIZATION = re.compile(r"(?i)\b(authorization['\"]?\s*[=:]\s*['\"]?)(bearer\s+)?([^\s'\",]+)")


def redact_secrets(text: str) -> str:
    """``text`` with signed-URL tokens, API keys and bearer tokens blanked: exception texts
    that become a call's reason, and every log line (a traceback under wire debug may
    quote a URL or a header)."""
    text = _AUTHORIZATION.sub(r"\1\2***", _SECRET_PARAM.sub(r"\1\2***", text))
    return _API_KEY.sub("sk_***", text)


class _RedactingFilter(logging.Filter):
    """Rewrites records of the websockets wire logger so no signed URL leaks at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_secrets(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


_wire_log = logging.getLogger("pyconvai.client.websockets")
_wire_log.addFilter(_RedactingFilter())
_wire_log.setLevel(logging.INFO)  # frame by frame only under "elevenlabs debug on": see set_wire_debug


def set_wire_debug(on: bool) -> None:
    """Log every WebSocket frame of the connections opened from now on (redacted).

    websockets decides per connection, when it opens, whether to build debug
    records; without this they would be built for every frame of every call
    and thrown away by the host handler."""
    _wire_log.setLevel(logging.DEBUG if on else logging.INFO)


def _redact_param(item: str) -> str:
    key = item.partition("=")[0]
    return f"{key}=***" if urllib.parse.unquote_plus(key).lower() in _SECRET_KEYS else item


def redact_url(url: str) -> str:
    """``url`` with signature/token/API-key query values and any password replaced by ``***``."""
    parts = urllib.parse.urlsplit(url)
    query = "&".join(_redact_param(item) for item in parts.query.split("&") if item)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def public_url(endpoint: str, agent_id: str) -> str:
    """Unsigned conversation URL on the endpoint's host (https→wss, http→ws)."""
    parts = urllib.parse.urlsplit(endpoint)
    scheme = {"https": "wss", "http": "ws", "wss": "wss", "ws": "ws"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"endpoint is not an http(s) URL: {redact_url(endpoint)}")
    query = urllib.parse.urlencode({"agent_id": agent_id})
    return urllib.parse.urlunsplit((scheme, parts.netloc, "/v1/convai/conversation", query, ""))


def _backoff(attempt: int) -> float:
    return min(_BACKOFF_BASE * 2**attempt, _BACKOFF_MAX)


def _body_excerpt(response: httpx.Response, api_key: str) -> str:
    """Short readable summary of an error body (ElevenLabs ``detail`` shapes understood)."""
    text = response.text
    try:
        detail = orjson.loads(text).get("detail")
    except (orjson.JSONDecodeError, AttributeError):
        detail = None
    if isinstance(detail, dict):
        summary = " ".join(str(detail[k]) for k in ("status", "message") if detail.get(k))
    elif isinstance(detail, list):
        summary = "; ".join(
            f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg', '')}"
            for d in detail
            if isinstance(d, dict)
        )
    elif isinstance(detail, str):
        summary = detail
    else:
        summary = " ".join(text.split())
    if api_key:
        summary = summary.replace(api_key, "***")
    return summary[:_EXCERPT]


def is_loopback(url: str) -> bool:
    """Whether ``url`` names this machine (127.0.0.0/8, ::1 or localhost)."""
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_encryption(url: str, what: str) -> None:
    """Refuse a clear-text URL (http, ws) unless it stays on this machine: the API key and
    the signed URL's token would otherwise cross the network readable."""
    if url.startswith(("https://", "wss://")) or is_loopback(url):
        return
    raise ConnectFailed(f"{what} {redact_url(url)} is not encrypted (https:// or wss:// is required "
                        "beyond this machine)")


async def _signed_url(
    http: httpx.AsyncClient, endpoint: str, agent_id: str, api_key: str
) -> str:
    require_encryption(endpoint, "signed URL endpoint")
    try:
        response = await http.get(
            endpoint, params={"agent_id": agent_id}, headers={"xi-api-key": api_key}
        )
    except httpx.TimeoutException:
        raise ConnectFailed("signed URL: timed out", retryable=True) from None
    except httpx.HTTPError as exc:
        raise ConnectFailed(f"signed URL: {type(exc).__name__}: {exc}", retryable=True) from None
    if not response.is_success:
        status = response.status_code
        excerpt = _body_excerpt(response, api_key)
        raise ConnectFailed(
            f"signed URL: HTTP {status} {excerpt}".rstrip(),
            retryable=status == 429 or status >= 500,
        )
    try:
        url = orjson.loads(response.content)["signed_url"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        url = None
    if not isinstance(url, str) or not url.startswith(("ws://", "wss://")):
        raise ConnectFailed("signed URL: response has no usable signed_url")
    require_encryption(url, "signed URL")
    return url


@functools.cache
def default_tls_context() -> ssl.SSLContext:
    """The system's CA store, verifying certificates and host names."""
    return ssl.create_default_context()


async def _open_websocket(url: str, ssl_context: ssl.SSLContext,
                          headers: dict[str, str] | None = None) -> Connection:
    """Connect, send the opening handshake and wait for its answer (the caller bounds it)."""
    try:
        uri = parse_uri(url)
    except WebSocketException as exc:
        raise ConnectFailed(f"websocket: {type(exc).__name__}: {redact_secrets(str(exc))}") from None
    protocol = ClientProtocol(uri, max_size=MAX_MESSAGE_BYTES, logger=_wire_log)
    request = protocol.connect()
    request.headers["User-Agent"] = _USER_AGENT
    for name, value in (headers or {}).items():
        request.headers[name] = value
    protocol.send_request(request)
    loop = asyncio.get_running_loop()
    conn = Connection(protocol, loop)
    try:
        await loop.create_connection(lambda: conn, uri.host, uri.port,
                                     ssl=ssl_context if uri.secure else None,
                                     server_hostname=uri.host if uri.secure else None)
        await conn.handshake
    except InvalidStatus as exc:
        conn.abort()
        status = exc.response.status_code
        raise ConnectFailed(
            f"websocket handshake: HTTP {status}", retryable=status == 429 or status >= 500
        ) from None
    except (OSError, WebSocketException) as exc:
        conn.abort()
        # some messages quote the URL
        raise ConnectFailed(f"websocket: {type(exc).__name__}: {redact_secrets(str(exc))}", retryable=True) from None
    except BaseException:  # cancelled (the attempt's bound): nothing may stay open
        conn.abort()
        raise
    return conn


async def _attempt(open_socket: Callable[[list[str]], Awaitable[Connection]], timeout: float,
                   attempts: int) -> Connection:
    """Up to ``attempts`` tries of ``open_socket``, each bounded by ``timeout``, with backoff
    between them; only retryable failures are tried again. ``open_socket`` keeps the phase it
    is in as the last item of the list it is given, for a timeout to name."""
    failure = ConnectFailed("no connection attempt made")
    for attempt in range(attempts):
        if attempt:
            await asyncio.sleep(_backoff(attempt - 1))
        started = time.monotonic()
        phase = ["websocket handshake"]
        try:
            async with asyncio.timeout(timeout):
                conn = await open_socket(phase)
        except TimeoutError:
            failure = ConnectFailed(f"{phase[-1]}: timed out after {timeout:g} s", retryable=True)
        except ConnectFailed as exc:
            failure = exc
        else:
            log.debug("websocket open after %.3f s", time.monotonic() - started)
            return conn
        log.debug("connection attempt %d/%d failed: %s", attempt + 1, attempts, failure.reason)
        if not failure.retryable:
            break
    raise failure


async def open_connection(
    *,
    agent_id: str,
    api_key: str | None,
    signed_url_endpoint: str,
    timeout: float,
    attempts: int,
    ssl_context: ssl.SSLContext | None = None,
) -> Connection:
    """ElevenLabs: fetch a signed URL (or use the public URL without a key) and open the socket.

    Raises :class:`ConnectFailed` after the last attempt, or at once for a
    non-retryable failure. Total time ≤ attempts × timeout + backoff.
    """
    public = "" if api_key else public_url(signed_url_endpoint, agent_id)
    tls = ssl_context if ssl_context is not None else default_tls_context()
    async with httpx.AsyncClient(
        timeout=timeout, verify=tls, headers={"user-agent": _USER_AGENT}
    ) as http:
        async def open_socket(phase: list[str]) -> Connection:
            url = public
            if api_key:
                phase.append("signed URL")
                url = await _signed_url(http, signed_url_endpoint, agent_id, api_key)
                phase.append("websocket handshake")
            log.debug("opening websocket %s", redact_url(url))
            return await _open_websocket(url, tls)

        return await _attempt(open_socket, timeout, attempts)


async def open_direct(*, url: str, headers: dict[str, str], timeout: float, attempts: int,
                      ssl_context: ssl.SSLContext | None = None) -> Connection:
    """The other providers: open ``url`` with ``headers`` (a bearer token), as open_connection
    does (same bounds and retries); ws:// only to this machine: the token would be readable."""
    require_encryption(url, "websocket URL")
    tls = ssl_context if ssl_context is not None else default_tls_context()

    async def open_socket(phase: list[str]) -> Connection:
        log.debug("opening websocket %s", redact_url(url))
        return await _open_websocket(url, tls, headers)

    return await _attempt(open_socket, timeout, attempts)


def agent_url(endpoint: str, agent_id: str) -> str:
    """``GET /v1/convai/agents/{agent_id}`` on the signed-URL endpoint's host."""
    parts = urllib.parse.urlsplit(endpoint)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc,
                                    "/v1/convai/agents/" + urllib.parse.quote(agent_id, safe=""), "", ""))


async def read_agent(*, agent_id: str, api_key: str, signed_url_endpoint: str,
                     timeout: float) -> tuple[dict, str]:
    """The agent's settings and whether a signed URL is issued for it, both asked at once
    and together bounded by ``timeout``: (the agent; "" or why no signed URL).
    ConnectFailed when the agent cannot be read."""
    url = agent_url(signed_url_endpoint, agent_id)
    require_encryption(url, "agents endpoint")
    async with httpx.AsyncClient(timeout=timeout, verify=default_tls_context(),
                                 headers={"user-agent": _USER_AGENT}) as http:
        async def agent() -> dict:
            try:
                response = await http.get(url, headers={"xi-api-key": api_key})
            except httpx.HTTPError as exc:
                raise ConnectFailed(f"agent: {type(exc).__name__}: {exc}") from None
            if not response.is_success:
                raise ConnectFailed(f"agent: HTTP {response.status_code} {_body_excerpt(response, api_key)}".rstrip())
            try:
                body = orjson.loads(response.content)
            except orjson.JSONDecodeError:
                body = None
            if not isinstance(body, dict):
                raise ConnectFailed("agent: the answer is not a JSON object")
            return body

        async def signed() -> str:
            try:
                await _signed_url(http, signed_url_endpoint, agent_id, api_key)
            except ConnectFailed as exc:
                return exc.reason
            return ""

        try:
            async with asyncio.timeout(timeout):
                got, why = await asyncio.gather(agent(), signed())
        except TimeoutError:
            raise ConnectFailed(f"no answer within {timeout:g} s") from None
        return got, why


async def warm_up() -> None:
    """Do once, at load, what the first call would do once (the HTTP and WebSocket
    clients' lazy imports, first buffers and this thread's allocator arena), so that
    the first call costs what the others do: one signed-URL request and one handshake
    against a throwaway server on 127.0.0.1, closed with 1000."""
    from http import HTTPStatus

    from websockets.asyncio.server import serve

    port = 0

    def answer(connection, request):  # noqa: ANN001, ANN202 - websockets' callback
        if request.path.startswith("/signed-url"):
            return connection.respond(HTTPStatus.OK, orjson.dumps({"signed_url": f"ws://127.0.0.1:{port}/"}).decode())
        return None

    async def close_at_once(ws) -> None:  # noqa: ANN001
        await ws.close(1000)

    async with serve(close_at_once, "127.0.0.1", 0, process_request=answer, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        conn = await open_connection(agent_id="warm-up", api_key="warm-up",
                                     signed_url_endpoint=f"http://127.0.0.1:{port}/signed-url",
                                     timeout=5.0, attempts=1)
        try:
            await conn.recv()
        except ConnectionEnded:
            pass
        await conn.close()


def _retrieved(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


class Connection(asyncio.Protocol):
    """An open conversation socket: websockets' Sans-I/O protocol on an asyncio transport.

    Nothing stands between a frame and the session: a received message goes
    to the handler set by :meth:`deliver_to` straight from ``data_received``
    (or is queued for :meth:`recv`), and :meth:`send` writes a frame to the
    transport at once; no task, future or lock per message. Keepalive: the
    first ping ``PING_INTERVAL`` after the handshake, then every
    ``PING_TIMEOUT``, when the last one must have been answered, else the
    connection fails (1011). Closing is bounded by ``CLOSE_TIMEOUT``.

    Asyncio thread only.
    """

    def __init__(self, protocol: ClientProtocol, loop: asyncio.AbstractEventLoop) -> None:
        self._ws = protocol
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self.handshake: asyncio.Future[None] = loop.create_future()
        self.handshake.add_done_callback(_retrieved)  # a failure nobody awaits any more is no warning
        #: Done once the TCP connection is gone (then ``ended()`` says how it closed).
        self.lost: asyncio.Future[None] = loop.create_future()
        self._inbox: deque[str | bytes] = deque()
        self._handler: Callable[[str | bytes], None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._fragments: list[bytes] = []
        self._fragmented_text = False
        self._reading_paused = False
        self._ping: bytes | None = None
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.writable = True
        #: Called when the transport's buffer has drained after a full one (see ``writable``).
        self.on_writable: Callable[[], None] | None = None

    # --- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._write()  # the opening handshake

    def data_received(self, data: bytes) -> None:
        self._ws.receive_data(data)
        self._write()  # pongs, the answer to a close
        for event in self._ws.events_received():
            if isinstance(event, Frame):
                self._frame(event)
            elif not self.handshake.done():  # the handshake's response
                if self._ws.handshake_exc is not None:
                    self.handshake.set_exception(self._ws.handshake_exc)
                else:
                    self.handshake.set_result(None)
                    self._timers["ping"] = self._loop.call_later(PING_INTERVAL, self._keepalive)
        if self._inbox:
            self._wake()
            if len(self._inbox) >= MAX_QUEUED_MESSAGES and not self._reading_paused:
                self._reading_paused = True
                self._transport.pause_reading()

    def eof_received(self) -> None:
        self._ws.receive_eof()
        self._write()

    def connection_lost(self, exc: Exception | None) -> None:
        self._ws.receive_eof()
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        if not self.handshake.done():
            self.handshake.set_exception(self._ws.handshake_exc or ConnectionError("closed during the handshake"))
        if not self.lost.done():
            self.lost.set_result(None)
        self._wake()

    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True
        if self.on_writable is not None:
            self.on_writable()

    # --- API -------------------------------------------------------------------------

    async def recv(self) -> str | bytes:
        """Next message from the server; ConnectionEnded once the socket is closed."""
        while not self._inbox:
            if self.lost.done():
                raise self.ended()
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        message = self._inbox.popleft()
        self._resume_reading()
        return message

    def deliver_to(self, handler: Callable[[str | bytes], None] | None) -> None:
        """Hand each message to ``handler`` from the read callback from now on (those
        already queued first); None: queue them for :meth:`recv` again."""
        self._handler = handler
        while handler is not None and self._handler is handler and self._inbox:
            handler(self._inbox.popleft())
        self._resume_reading()

    def send(self, message: str) -> None:
        """Write one text frame now; ConnectionEnded once closing. While ``writable`` is
        False the transport buffers it (the caller should hold more until ``on_writable``)."""
        if self._ws.state is not OPEN:
            raise self.ended()
        self._ws.send_text(message.encode())
        self._write()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the socket (bounded by CLOSE_TIMEOUT); idempotent."""
        if self._ws.state is OPEN:
            self._ws.send_close(code, reason.encode()[:123].decode(errors="ignore"))
            self._write()
        elif self._ws.state is CONNECTING:
            self.abort()
        try:
            await asyncio.wait_for(asyncio.shield(self.lost), CLOSE_TIMEOUT)
        except TimeoutError:
            self.abort()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # --- internals -------------------------------------------------------------------

    def _resume_reading(self) -> None:
        if self._reading_paused and not self._inbox:
            self._reading_paused = False
            self._transport.resume_reading()

    def _frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.PONG:
            if frame.data == self._ping:
                self._ping = None
            return
        if frame.opcode not in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
            return  # ping (answered by the protocol) or close (answered, then the TCP close ends us)
        if not frame.fin or self._fragments:
            self._fragments.append(frame.data)
            if not frame.fin:
                if frame.opcode is not Opcode.CONT:
                    self._fragmented_text = frame.opcode is Opcode.TEXT
                return
            data, text, self._fragments = b"".join(self._fragments), self._fragmented_text, []
        else:
            data, text = frame.data, frame.opcode is Opcode.TEXT
        if text:
            try:
                message: str | bytes = bytes(data).decode()
            except UnicodeDecodeError:
                self._ws.fail(CloseCode.INVALID_DATA, "invalid UTF-8")
                self._write()
                return
        else:
            message = bytes(data)
        if self._handler is not None:
            self._handler(message)
        else:
            self._inbox.append(message)

    def _write(self) -> None:
        transport = self._transport
        if transport is None:
            return
        for data in self._ws.data_to_send():
            if data:
                transport.write(data)
            elif transport.can_write_eof():
                transport.write_eof()
        if self._ws.close_expected() and "close" not in self._timers:
            self._timers["close"] = self._loop.call_later(CLOSE_TIMEOUT, self.abort)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _keepalive(self) -> None:
        """The last ping must have been answered; send the next."""
        if self._ws.state is not OPEN:
            return
        if self._ping is not None:
            log.debug("no pong within %g s: failing the connection", PING_TIMEOUT)
            self._ws.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
            self._write()
            self.abort()
            return
        self._ping = os.urandom(4)
        self._ws.send_ping(self._ping)
        self._write()
        self._timers["ping"] = self._loop.call_later(PING_TIMEOUT, self._keepalive)

    def ended(self) -> ConnectionEnded:
        """How the socket closed (code None: no close frame came)."""
        received = self._ws.close_rcvd if self._ws.state is CLOSED else None
        if received is None:
            return ConnectionEnded(None, "")
        return ConnectionEnded(received.code, received.reason)
