"""The service's own errors: one JSON shape `{"detail": ..., "limit": ...}` for every 4xx/5xx it writes."""

from __future__ import annotations

import json


class ApiError(Exception):
    """A request the service refuses: HTTP status, one-line message, and the limit's name when a limit was hit."""

    def __init__(self, status: int, detail: str, limit: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.limit = limit
        self.headers = headers or {}

    def body(self) -> dict:
        return {"detail": self.detail} | ({"limit": self.limit} if self.limit else {})


async def send_error(send, error: ApiError) -> None:
    """Write `error` as a complete JSON response from ASGI middleware (before any app response started)."""
    payload = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
