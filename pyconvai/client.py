"""Network I/O for ConvAI: the signed-URL request (httpx) and the WebSocket (websockets).

This is the only module that touches the network. Everything runs on the
asyncio thread. Every await is bounded:

* one connection attempt (signed URL + WebSocket handshake together) is
  bounded by ``timeout``; up to ``attempts`` attempts with a short exponential
  backoff (0.25 s · 2^n, at most 2 s) between them. Only transient failures
  are retried: network errors, timeouts, HTTP 429 and 5xx. Other HTTP
  statuses (401, 403, 404, 422, ...) fail at once.
* :meth:`Connection.recv` waits for the server without a deadline, but the
  websockets keepalive (a WS ping every 20 s, 20 s to answer) ends a dead
  connection within about 40 s.
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
import re
import ssl
import time
import urllib.parse
from collections.abc import Awaitable, Callable

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

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
    "redact_url",
    "set_wire_debug",
    "warm_up",
]

log = logging.getLogger("pyconvai.client")

MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # the server's own maximum (protocol doc §2)
#: Received messages buffered before websockets stops reading the socket: with 16 MiB
#: messages its default (16) would let one connection hold 256 MiB.
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


_SECRET_PARAM = re.compile(r"\b(" + "|".join(map(re.escape, _SECRET_KEYS)) + r")=[^&\s]+", re.I)


class _RedactingFilter(logging.Filter):
    """Rewrites records of the websockets wire logger so no signed URL leaks at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _SECRET_PARAM.sub(r"\1=***", message)
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
                          headers: dict[str, str] | None = None) -> ClientConnection:
    tls = {"ssl": ssl_context} if url.startswith("wss:") else {}
    try:
        return await connect(
            url,
            additional_headers=headers,
            compression=None,
            max_size=MAX_MESSAGE_BYTES,
            max_queue=MAX_QUEUED_MESSAGES,
            open_timeout=None,  # the caller bounds the whole attempt
            ping_interval=PING_INTERVAL,
            ping_timeout=PING_TIMEOUT,
            close_timeout=CLOSE_TIMEOUT,
            user_agent_header=_USER_AGENT,
            logger=_wire_log,
            **tls,
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        raise ConnectFailed(
            f"websocket handshake: HTTP {status}", retryable=status == 429 or status >= 500
        ) from None
    except (OSError, WebSocketException) as exc:
        detail = _SECRET_PARAM.sub(r"\1=***", str(exc))  # some messages quote the URL
        raise ConnectFailed(f"websocket: {type(exc).__name__}: {detail}", retryable=True) from None


async def _attempt(open_socket: Callable[[list[str]], Awaitable[ClientConnection]], timeout: float,
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
                ws = await open_socket(phase)
        except TimeoutError:
            failure = ConnectFailed(f"{phase[-1]}: timed out after {timeout:g} s", retryable=True)
        except ConnectFailed as exc:
            failure = exc
        else:
            log.debug("websocket open after %.3f s", time.monotonic() - started)
            return Connection(ws)
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
        async def open_socket(phase: list[str]) -> ClientConnection:
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

    async def open_socket(phase: list[str]) -> ClientConnection:
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


class Connection:
    """An open conversation socket. Asyncio thread only."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws

    async def recv(self) -> str | bytes:
        """Next frame from the server; ConnectionEnded once the socket is closed."""
        try:
            return await self._ws.recv()
        except ConnectionClosed as exc:
            raise self._ended(exc) from None

    async def send(self, message: str) -> None:
        """Send one text frame; ConnectionEnded if the socket is already closed."""
        try:
            await self._ws.send(message)
        except ConnectionClosed as exc:
            raise self._ended(exc) from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the socket (bounded by CLOSE_TIMEOUT); idempotent."""
        await self._ws.close(code, reason.encode()[:123].decode(errors="ignore"))

    @staticmethod
    def _ended(exc: ConnectionClosed) -> ConnectionEnded:
        if exc.rcvd is None:
            return ConnectionEnded(None, "")
        return ConnectionEnded(exc.rcvd.code, exc.rcvd.reason)
