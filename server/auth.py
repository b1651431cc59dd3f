"""Bearer-key authentication (constant-time compare) and the request body checks (size limit, UTF-8), as ASGI middleware."""

from __future__ import annotations

import hmac

from server.http_errors import ApiError, send_error

OPEN_PATHS = frozenset({"/healthz"})  # liveness answers without a key
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def header(scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value
    return None


def key_matches(authorization: bytes | None, key: bytes) -> bool:
    """`Authorization: Bearer KEY`, compared in constant time."""
    scheme, _, given = (authorization or b"").partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), key)


class BearerAuth:
    """Every path but /healthz needs `Authorization: Bearer KEY` (401 otherwise); no key configured: all open."""

    def __init__(self, app, api_key: str | None) -> None:
        self.app = app
        self.key = api_key.encode() if api_key is not None else None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and self.key is not None and scope["path"] not in OPEN_PATHS:
            if not key_matches(header(scope, b"authorization"), self.key):
                error = ApiError(401, "missing or wrong API key: send 'Authorization: Bearer KEY'", headers={"WWW-Authenticate": "Bearer"})
                return await send_error(send, error)
        await self.app(scope, receive, send)


class BodyLimit:
    """Reads a request body up to `max_bytes` (413 beyond, before any parsing), refuses one that is not UTF-8 (400), then hands it to the app."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def too_large(self) -> ApiError:
        return ApiError(413, f"request body exceeds the limit of {self.max_bytes} bytes (--max-body)", limit="max_body")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            return await self.app(scope, receive, send)
        declared = header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await send_error(send, self.too_large())
        parts, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left before sending its body: nothing to answer
            parts.append(message.get("body", b""))
            size += len(parts[-1])
            if size > self.max_bytes:
                return await send_error(send, self.too_large())
            more = message.get("more_body", False)
        data = b"".join(parts)
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            return await send_error(send, ApiError(400, f"request body is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); send JSON encoded as UTF-8"))
        body = {"type": "http.request", "body": data, "more_body": False}

        async def replay():
            nonlocal body
            if body is not None:
                message, body = body, None
                return message
            return await receive()

        await self.app(scope, replay, send)
