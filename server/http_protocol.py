"""The HTTP protocol the server runs: uvicorn's httptools protocol plus a deadline for request headers, which uvicorn lacks.

Without it a client that opens a connection and sends its headers a byte at a time
(slowloris) holds the connection for ever: uvicorn's keep-alive timer is cancelled
by the first byte. Here each request's headers must be complete within the deadline
from the connection's start or from the request's first byte; otherwise the client
gets 408 and the connection is closed.
"""

from __future__ import annotations

import asyncio
import json
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("simsearch.serve")


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """httptools' protocol, closing with 408 a connection whose request headers take longer than `header_timeout_s`."""

    header_timeout_s: float = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        log.warning("closed a connection from %s: its request headers took longer than %g s", self.client, self.header_timeout_s)
        body = json.dumps({"detail": f"request headers not complete within {self.header_timeout_s:g} s", "limit": "header_timeout"}).encode()
        head = f"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
        self.transport.write(head.encode() + body)
        self.transport.close()


def with_header_timeout(seconds: float) -> type[HeaderDeadlineProtocol]:
    """The protocol class for uvicorn's `http=` setting, with this header deadline."""
    return type("HeaderDeadlineProtocol", (HeaderDeadlineProtocol,), {"header_timeout_s": seconds})
