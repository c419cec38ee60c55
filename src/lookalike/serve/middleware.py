"""ASGI middleware of the server: a bound on request bodies, and protective response headers.

:class:`BodyLimitMiddleware` refuses a body larger than the limit with 413 before it is
buffered: at once when ``Content-Length`` says so, else as soon as the streamed bytes pass it
(a chunked upload cannot get round the limit). :class:`SecurityHeadersMiddleware` tells browsers
not to guess content types and not to send the page's address elsewhere.
"""

from __future__ import annotations

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lookalike.serve.errors import ApiError, error_response


def _too_large(limit: int) -> str:
    return f"request body is larger than {limit} bytes; send fewer or smaller images"


class BodyLimitMiddleware:
    """Answer 413 to any request whose body exceeds ``max_bytes``.

    Args:
        app: The wrapped application.
        max_bytes: Largest body accepted.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = int(max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            response = error_response(413, _too_large(self.max_bytes))
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Raised inside body parsing, answered by the app's error handler.
                    raise ApiError(413, _too_large(self.max_bytes))
            return message

        await self.app(scope, limited_receive, send)


class SecurityHeadersMiddleware:
    """Add ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer`` to every
    response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "no-referrer")
            await send(message)

        await self.app(scope, receive, with_headers)
