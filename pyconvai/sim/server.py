"""The simulator: one 127.0.0.1 port serving the signed-URL endpoint and the agent WebSockets.

Three providers' sockets on the one port, told apart by path: ElevenLabs'
(``WS_PATH``, the agent in ``agent_id``), the generic bridge protocol
(``BRIDGE_PATH``) and OpenAI's Realtime API (``REALTIME_PATH``); for the last
two the script is chosen by the ``agent`` query parameter (OpenAI's ``model``
when there is none). Both of those check ``Authorization: Bearer <api_key>``
(OpenAI always, the bridge when the client sends one).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import secrets
import ssl
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Self
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from . import messages
from .conversation import AgentConversation
from .records import ConversationRecord, EventLog, HttpRequestRecord
from .scripts import AgentScript

log = logging.getLogger("pyconvai.sim")

WS_PATH = "/v1/convai/conversation"
BRIDGE_PATH = "/bridge"
REALTIME_PATH = "/v1/realtime"
_DIALECT_OF_PATH = {WS_PATH: "elevenlabs", BRIDGE_PATH: "websocket", REALTIME_PATH: "openai_realtime"}
AGENTS_PATH = "/v1/convai/agents/"
"""``GET /v1/convai/agents/{agent_id}``: the agent's settings (for a client's checks)."""
SIGNED_URL_PATHS = frozenset({WS_PATH + "/get-signed-url", WS_PATH + "/get_signed_url"})
SIGNATURE_LIFETIME_S = 15 * 60
"""A signed URL must be used within 15 minutes, and only once (when signatures are required)."""


@dataclass(frozen=True)
class SimConfig:
    """Simulator settings; agents not in ``agents`` get ``default_script`` unless ``strict``."""

    api_key: str = "sk-sim"
    agents: Mapping[str, AgentScript] = field(default_factory=dict)
    default_script: AgentScript = field(default_factory=AgentScript)
    host: str = "127.0.0.1"
    port: int = 0
    """0 = any free port (see ``Simulator.port``)."""
    tls_cert: str | None = None
    tls_key: str | None = None
    log_path: str | None = None
    """JSON-lines log of everything received and sent (audio as byte counts)."""
    strict: bool = False
    """Unknown agents → 404 / close 1008; invalid client messages → error + close 1008."""
    require_signature: bool = False
    """WebSockets need a fresh ``conversation_signature`` from the signed-URL endpoint."""
    init_timeout_s: float = 1.0
    """How long to wait for ``conversation_initiation_client_data`` before the metadata."""

    def script_for(self, agent_id: str) -> AgentScript | None:
        """The script for an agent id, or None when the agent is unknown in strict mode."""
        script = self.agents.get(agent_id)
        if script is None and not self.strict:
            script = self.default_script
        return script


def _select_subprotocol(_connection: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
    """Echo ``convai`` when offered (as the JS client does); accept no subprotocol too."""
    return Subprotocol("convai") if "convai" in offered else None


def _json_response(status: int, body: object) -> Response:
    data = orjson.dumps(body)
    headers = Headers([
        ("Date", email.utils.formatdate(usegmt=True)),
        ("Connection", "close"),
        ("Content-Length", str(len(data))),
        ("Content-Type", "application/json"),
    ])
    return Response(status, HTTPStatus(status).phrase, headers, data)


class Simulator:
    """A local ElevenLabs-compatible Agents server for tests and demos.

    Run it in a background thread (``start()``/``stop()`` or ``with``) or on
    the current event loop (``async with``, ``serve_async()``).
    """

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self._records: list[ConversationRecord] = []
        self._http: list[HttpRequestRecord] = []
        self._changed = threading.Condition()
        self._signatures: dict[str, tuple[str, float]] = {}
        self._server: Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None
        self._log = EventLog(None)
        self._port = 0

    # --- addresses -------------------------------------------------------

    @property
    def port(self) -> int:
        """The listening port (known once started)."""
        if not self._port:
            raise RuntimeError("simulator not started")
        return self._port

    @property
    def _host(self) -> str:
        return "127.0.0.1" if self.config.host in ("", "0.0.0.0") else self.config.host

    @property
    def _tls(self) -> bool:
        return self.config.tls_cert is not None

    @property
    def base_url(self) -> str:
        """HTTP(S) base URL, e.g. for ``ElevenLabs(base_url=...)``."""
        return f"{'https' if self._tls else 'http'}://{self._host}:{self.port}"

    @property
    def signed_url_endpoint(self) -> str:
        return f"{self.base_url}{WS_PATH}/get-signed-url"

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self._tls else 'ws'}://{self._host}:{self.port}{WS_PATH}"

    def bridge_url(self, agent: str = "") -> str:
        """The generic bridge protocol's socket, speaking ``agent``'s script."""
        query = f"?{urlencode({'agent': agent})}" if agent else ""
        return f"{'wss' if self._tls else 'ws'}://{self._host}:{self.port}{BRIDGE_PATH}{query}"

    def realtime_url(self, agent: str = "") -> str:
        """OpenAI's Realtime socket (a client adds ``model``), speaking ``agent``'s script."""
        query = f"?{urlencode({'agent': agent})}" if agent else ""
        return f"{'wss' if self._tls else 'ws'}://{self._host}:{self.port}{REALTIME_PATH}{query}"

    # --- observations ----------------------------------------------------

    @property
    def conversations(self) -> list[ConversationRecord]:
        """Snapshot of the records of all WebSocket connections so far (records are live)."""
        with self._changed:
            return list(self._records)

    @property
    def http_requests(self) -> list[HttpRequestRecord]:
        """Snapshot of the plain HTTP requests answered so far."""
        with self._changed:
            return list(self._http)

    def wait_for_conversations(self, n: int, timeout: float = 5.0) -> list[ConversationRecord]:
        """Block until at least ``n`` connections were opened; raise TimeoutError otherwise."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._records) >= n, timeout):
                raise TimeoutError(f"{len(self._records)} of {n} conversations after {timeout} s")
            return list(self._records)

    def _add(self, items: list, item: object) -> None:
        with self._changed:
            items.append(item)
            self._changed.notify_all()

    # --- asyncio API -----------------------------------------------------

    async def start_async(self) -> None:
        """Start listening on the running event loop."""
        if self._server is not None:
            raise RuntimeError("simulator already started")
        cfg = self.config
        scripts = [cfg.default_script, *cfg.agents.values()]
        self._log = EventLog(cfg.log_path)
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        self._server = await serve(
            self._handle, cfg.host, cfg.port,
            process_request=self._process_request,
            select_subprotocol=_select_subprotocol,
            ssl=self._ssl_context(),
            open_timeout=10 + max(script.signed_url_delay_s for script in scripts),
            close_timeout=2,
            ping_interval=None,
        )
        self._port = self._server.sockets[0].getsockname()[1]
        log.info("listening: %s and %s", self.signed_url_endpoint, self.ws_url)

    async def stop_async(self, timeout: float = 5.0) -> None:
        """Close every connection (1001) and stop listening; idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        try:
            await asyncio.wait_for(server.wait_closed(), timeout)
        except TimeoutError:
            log.warning("connections still open after %s s", timeout)
        self._log.close()
        assert self._stopped is not None
        self._stopped.set()

    async def serve_async(self) -> None:
        """Start, then serve until ``stop()``/``stop_async()`` or cancellation."""
        await self.start_async()
        assert self._stopped is not None
        try:
            await self._stopped.wait()
        finally:
            await self.stop_async()

    async def __aenter__(self) -> Self:
        await self.start_async()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_async()

    # --- background-thread API ------------------------------------------

    def start(self, timeout: float = 10.0) -> Self:
        """Run on a new event loop in a daemon thread; return once listening."""
        if self._thread is not None or self._server is not None:
            raise RuntimeError("simulator already started")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="pyconvai-sim", daemon=True)
        thread.start()
        self._thread = thread
        try:
            asyncio.run_coroutine_threadsafe(self.start_async(), loop).result(timeout)
        except BaseException:
            self._stop_thread(loop, timeout)
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the simulator, bounded by ``timeout`` seconds; idempotent."""
        loop = self._loop
        if loop is None or loop.is_closed() or (self._server is None and self._thread is None):
            return
        if threading.current_thread() is self._thread or (self._thread is None and _running_in(loop)):
            raise RuntimeError("stop() from the simulator's own loop; await stop_async() instead")
        try:
            asyncio.run_coroutine_threadsafe(self.stop_async(), loop).result(timeout)
        except TimeoutError:
            log.warning("simulator did not stop within %s s", timeout)
        if self._thread is not None:
            self._stop_thread(loop, timeout)

    def _stop_thread(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        loop.call_soon_threadsafe(loop.stop)
        assert self._thread is not None
        self._thread.join(timeout)
        if not self._thread.is_alive():
            loop.close()
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- HTTP ------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext | None:
        cfg = self.config
        if cfg.tls_cert is None:
            if cfg.tls_key is not None:
                raise ValueError("tls_key given without tls_cert")
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cfg.tls_cert, cfg.tls_key)
        return context

    async def _process_request(self, _connection: ServerConnection, request: Request) -> Response | None:
        """Answer plain HTTP GETs; let WebSocket upgrades on ``WS_PATH`` through."""
        arrived = time.monotonic()
        url = urlsplit(request.path)
        if url.path == WS_PATH:
            return None
        if url.path in (BRIDGE_PATH, REALTIME_PATH):
            authorization = request.headers.get("Authorization")
            if (authorization is not None or url.path == REALTIME_PATH) \
                    and authorization != f"Bearer {self.config.api_key}":
                self._log.write("http", None, path=url.path, status=401)
                return _json_response(401, {"error": {"type": "invalid_request_error", "code": "invalid_api_key",
                                                      "message": "Incorrect API key provided."}})
            return None
        params = dict(parse_qsl(url.query))
        if url.path in SIGNED_URL_PATHS:
            status, body = await self._signed_url(request.headers.get("xi-api-key"), params)
        elif url.path.startswith(AGENTS_PATH):
            status, body = self._agent(request.headers.get("xi-api-key"), unquote(url.path.removeprefix(AGENTS_PATH)))
        else:
            status, body = 404, {"detail": "Not Found"}
        self._add(self._http, HttpRequestRecord(arrived, url.path, params, status))
        self._log.write("http", None, path=url.path, params=params, status=status, response=body)
        log.info("GET %s → %d", url.path, status)
        return _json_response(status, body)

    def _agent(self, api_key: str | None, agent_id: str) -> tuple[int, object]:
        if api_key != self.config.api_key:
            return 401, {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}}
        script = self.config.agents.get(agent_id)  # only scripted agents have settings to show
        if script is None:
            return 404, {"detail": {"status": "agent_not_found", "message": "Agent not found"}}
        return 200, messages.agent_document(agent_id, script, self._auth(script))

    def _auth(self, script: AgentScript) -> bool:
        """Whether the agent needs a signed URL (its own setting, else the simulator's)."""
        return self.config.require_signature if script.enable_auth is None else script.enable_auth

    async def _signed_url(self, api_key: str | None, params: dict[str, str]) -> tuple[int, object]:
        if api_key != self.config.api_key:
            return 401, {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}}
        agent_id = params.get("agent_id")
        if not agent_id:
            return 422, {"detail": [{"loc": ["query", "agent_id"], "msg": "field required",
                                     "type": "value_error.missing"}]}
        script = self.config.script_for(agent_id)
        if script is None:
            return 404, {"detail": {"status": "agent_not_found", "message": "Agent not found"}}
        await asyncio.sleep(script.signed_url_delay_s)
        if script.signed_url_refusal is not None:
            return script.signed_url_refusal, {"detail": {"status": "refused" + script.hostile_text,
                                                          "message": "Refused" + script.hostile_text}}
        signature = secrets.token_urlsafe(24)
        self._signatures[signature] = (agent_id, time.monotonic())
        query = urlencode({"agent_id": agent_id, "conversation_signature": signature})
        return 200, {"signed_url": f"{self.ws_url}?{query}"}

    # --- WebSocket -------------------------------------------------------

    def _rejection(self, agent_id: str, params: dict[str, str]) -> str | None:
        """Why a WebSocket must be refused, or None."""
        if not agent_id:
            return "Missing agent_id"
        script = self.config.script_for(agent_id)
        if script is None:
            return "Agent not found"
        if self._auth(script):
            issued = self._signatures.pop(params.get("conversation_signature", ""), None)
            if issued is None or issued[0] != agent_id or time.monotonic() - issued[1] > SIGNATURE_LIFETIME_S:
                return "Invalid or expired conversation signature"
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        url = urlsplit(ws.request.path)
        params = dict(parse_qsl(url.query))
        dialect = _DIALECT_OF_PATH.get(url.path, "elevenlabs")
        if dialect == "elevenlabs":
            agent_id = params.get("agent_id", "")
        else:
            agent_id = params.get("agent") or params.get("model") or dialect
        record = ConversationRecord(
            agent_id=agent_id, conversation_id=f"conv_sim_{secrets.token_hex(8)}",
            path=ws.request.path, subprotocol=ws.subprotocol, dialect=dialect,
            authorization=ws.request.headers.get("Authorization"),
        )
        self._add(self._records, record)
        self._log.write("open", record.conversation_id, path=record.path, subprotocol=ws.subprotocol)
        log.info("%s: agent %r connected", record.conversation_id, agent_id)
        if dialect == "elevenlabs":
            rejection = self._rejection(agent_id, params)
        else:
            rejection = None if self.config.script_for(agent_id) is not None else "Agent not found"
        conversation = AgentConversation(
            ws, self.config.script_for(agent_id) or self.config.default_script, record, self._log,
            strict=self.config.strict, init_timeout_s=self.config.init_timeout_s, dialect=dialect,
        )
        if rejection is not None:
            await conversation.reject(rejection)
        else:
            await conversation.run()


def _running_in(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
