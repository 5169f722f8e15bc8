"""An RTP impairment relay for the SIP tests (this kernel has no netem).

The phone sends its SIP to the relay, which passes every message on unchanged except
the SDP: each ``m=audio`` port is replaced by one of the relay's, so that the call's RTP
both ways crosses the relay, which drops, delays and thereby reorders packets with a
seeded random generator. In-dialog requests and ACKs for answered calls go straight
between the two Asterisks (their Contacts), as they would around a media relay.
"""

from __future__ import annotations

import asyncio
import random
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

_M_AUDIO = re.compile(rb"^m=audio (\d+) ", re.MULTILINE)
_CALL_ID = re.compile(rb"^(?:Call-ID|i):\s*(\S+)", re.MULTILINE | re.IGNORECASE)
_CONTENT_LENGTH = re.compile(rb"^(?:Content-Length|l):\s*\d+", re.MULTILINE | re.IGNORECASE)
LOCALHOST = "127.0.0.1"


@dataclass
class Impairment:
    """What one direction of RTP suffers: a seeded share of losses and a uniform delay,
    which reorders packets sent closer together than the delay's spread. ``sent`` and
    ``dropped`` count RTP packets (RTCP passes untouched)."""

    seed: int
    loss: float = 0.02
    jitter_ms: tuple[float, float] = (0.0, 60.0)
    sent: int = 0
    dropped: int = 0
    _random: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def due(self, now: float) -> float | None:
        """When to send a packet that arrived at ``now`` (loop time), or None to drop it."""
        if self._random.random() < self.loss:
            self.dropped += 1
            return None
        self.sent += 1
        low, high = self.jitter_ms
        return now + self._random.uniform(low, high) / 1000.0


class _Socket(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, tuple], None]) -> None:
        self.on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.on_datagram(data, addr)


@dataclass
class _Media:
    """One call's RTP legs: ``to_sut`` receives what the phone sends (and the sut's RTP
    leaves from ``to_phone``'s peer socket), and the other way round."""

    phone_port: int = 0
    sut_port: int = 0
    facing_sut: _Socket | None = None  # the port the sut sends to (in the phone's offer)
    facing_phone: _Socket | None = None  # the port the phone sends to (in the sut's answer)
    bound: asyncio.Future | None = None  # both sockets open (bound once, however many SDPs)


class ImpairingRelay:
    """SIP in at ``port``, out to the sut at ``sut_port``; RTP through ``toward_phone``
    and ``toward_sut`` impairments."""

    def __init__(self, sut_port: int, *, toward_phone: Impairment, toward_sut: Impairment) -> None:
        self.sut_port = sut_port
        self.toward_phone = toward_phone
        self.toward_sut = toward_sut
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="impair-relay", daemon=True)
        self._phone_sip: _Socket | None = None
        self._sut_sip: _Socket | None = None
        self._phone_addr: dict[bytes, tuple] = {}
        self._media: dict[bytes, _Media] = {}

    def start(self) -> "ImpairingRelay":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._open(), self._loop).result(10)
        return self

    def stop(self) -> None:
        def close_all() -> None:
            for sock in [self._phone_sip, self._sut_sip] + [
                    s for m in self._media.values() for s in (m.facing_sut, m.facing_phone)]:
                if sock and sock.transport:
                    sock.transport.close()
            self._loop.stop()

        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(close_all)
            self._thread.join(10)
        self._loop.close()

    async def _bind(self, on_datagram) -> _Socket:
        _, protocol = await self._loop.create_datagram_endpoint(lambda: _Socket(on_datagram),
                                                                local_addr=(LOCALHOST, 0), family=socket.AF_INET)
        return protocol

    async def _open(self) -> None:
        self._phone_sip = await self._bind(self._from_phone)
        self._sut_sip = await self._bind(self._from_sut)
        self.port = self._phone_sip.transport.get_extra_info("sockname")[1]

    # SIP: pass through, with the SDP's audio port swapped for a relay port.

    def _from_phone(self, data: bytes, addr: tuple) -> None:
        call_id = _call_id(data)
        self._phone_addr[call_id] = addr
        port = _audio_port(data)
        if port is not None:
            media = self._media.setdefault(call_id, _Media())
            media.phone_port = port
            asyncio.ensure_future(self._rewrite_and_send(data, media, toward_sut=True), loop=self._loop)
            return
        self._sut_sip.transport.sendto(data, (LOCALHOST, self.sut_port))

    def _from_sut(self, data: bytes, _addr: tuple) -> None:
        call_id = _call_id(data)
        phone = self._phone_addr.get(call_id)
        if phone is None:
            return
        port = _audio_port(data)
        media = self._media.get(call_id)
        if port is not None and media is not None:
            media.sut_port = port
            asyncio.ensure_future(self._rewrite_and_send(data, media, toward_sut=False), loop=self._loop)
            return
        self._phone_sip.transport.sendto(data, phone)

    async def _rewrite_and_send(self, data: bytes, media: _Media, *, toward_sut: bool) -> None:
        if media.bound is None:
            media.bound = asyncio.ensure_future(self._bind_media(media), loop=self._loop)
        await media.bound
        relay = media.facing_sut if toward_sut else media.facing_phone
        data = _with_audio_port(data, relay.transport.get_extra_info("sockname")[1])
        if toward_sut:
            self._sut_sip.transport.sendto(data, (LOCALHOST, self.sut_port))
        else:
            self._phone_sip.transport.sendto(data, self._phone_addr[_call_id(data)])

    async def _bind_media(self, media: _Media) -> None:
        media.facing_sut = await self._bind(lambda d, a: self._rtp(d, media, to_phone=True))
        media.facing_phone = await self._bind(lambda d, a: self._rtp(d, media, to_phone=False))

    # RTP: each packet dropped or held for a seeded delay, then sent on from the other leg
    # (so each side's symmetric RTP keeps answering the relay).

    def _rtp(self, data: bytes, media: _Media, *, to_phone: bool) -> None:
        impairment = self.toward_phone if to_phone else self.toward_sut
        port = media.phone_port if to_phone else media.sut_port
        sender = media.facing_phone if to_phone else media.facing_sut
        if not port or len(data) < 2 or data[0] >> 6 != 2:  # not RTP/RTCP (version 2), or no peer yet
            return
        if 192 <= data[1] <= 223:  # RTCP multiplexed on the RTP port (RFC 5761): passed, not counted
            _send(sender, data, port)
            return
        due = impairment.due(self._loop.time())
        if due is not None:
            self._loop.call_at(due, _send, sender, data, port)


def _send(sender: _Socket, data: bytes, port: int) -> None:
    if sender.transport and not sender.transport.is_closing():
        sender.transport.sendto(data, (LOCALHOST, port))


def _call_id(data: bytes) -> bytes:
    found = _CALL_ID.search(data)
    return found.group(1) if found else b""


def _audio_port(data: bytes) -> int | None:
    body = data.partition(b"\r\n\r\n")[2]
    found = _M_AUDIO.search(body)
    return int(found.group(1)) if found else None


def _with_audio_port(data: bytes, port: int) -> bytes:
    head, _, body = data.partition(b"\r\n\r\n")
    body = _M_AUDIO.sub(b"m=audio %d " % port, body, count=1)
    head = _CONTENT_LENGTH.sub(b"Content-Length: %d" % len(body), head, count=1)
    return head + b"\r\n\r\n" + body
