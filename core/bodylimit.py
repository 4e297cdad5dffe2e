"""Request bodies larger than kvmweb ever needs are refused before anything reads them.

Four anonymous 200 MB POSTs to /api/hosts/ (answered 401) grew the web
process from 344 to 743 MB: daphne hands the whole body to the application,
and the WSGI bridge buffered it. Nothing kvmweb takes is large (JSON requests,
small forms, no uploads), so a body over ``DATA_UPLOAD_MAX_MEMORY_SIZE`` is
answered 413 from its Content-Length, before a byte of it is read; a body
without one (chunked) is read only up to that size. Django's own
DATA_UPLOAD_MAX_MEMORY_SIZE check stays behind this one.
"""

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from daphne.http_protocol import WebRequest
from django.conf import settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return -1
    return None


class BodyLimit:
    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        length = _content_length(scope)
        if length is not None:
            if length < 0 or length > limit:
                return await self.refuse(scope, send, limit)
            return await self.app(scope, receive, send)
        # No Content-Length: read what comes, up to the limit, then hand it on.
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > limit:
                return await self.refuse(scope, send, limit)
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        return await self.app(scope, replay, send)

    async def refuse(self, scope: Scope, send: Send, limit: int) -> None:
        text = (
            f"The request body is larger than kvmweb accepts ({limit // 1024} KiB at most). "
            "kvmweb's requests are small JSON documents or forms: check what is being sent."
        )
        if scope.get("path", "").startswith("/api/"):
            body, kind = json.dumps({"detail": text}).encode(), b"application/json"
        else:
            body, kind = text.encode(), b"text/plain; charset=utf-8"
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", kind),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


_TOO_LARGE_TEXT = b"The request body is larger than kvmweb ever accepts.\n"
TOO_LARGE = (
    b"HTTP/1.1 413 Content Too Large\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: " + str(len(_TOO_LARGE_TEXT)).encode() + b"\r\n"
    b"Connection: close\r\n\r\n" + _TOO_LARGE_TEXT
)


def limit_daphne() -> None:
    """Make daphne itself stop receiving a body past the limit.

    daphne receives the whole body (into a temporary file) before it starts
    the application, then queues all of it for the application at once: by
    the time BodyLimit answers 413, the body is in memory (four 200 MB POSTs
    still grew the process by 400 MB). Here its request object answers 413
    and closes the connection as soon as the declared length, or the bytes
    received so far, pass the limit. daphne offers no option for this, so its
    two methods that take the length and the body are wrapped; under another
    server this changes nothing it uses, and BodyLimit still answers.
    """
    if getattr(WebRequest, "kvmweb_limited", False):
        return
    got_length = WebRequest.gotLength
    content_chunk = WebRequest.handleContentChunk

    def refuse(request: Any) -> None:
        request.kvmweb_refused = True
        request.channel.transport.write(TOO_LARGE)
        request.channel.transport.loseConnection()

    def gotLength(self: Any, length: int | None) -> None:  # noqa: N802 - twisted's name
        self.kvmweb_received = 0
        self.kvmweb_refused = False
        got_length(self, length)
        if length is not None and length > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
            refuse(self)

    def handleContentChunk(self: Any, data: bytes) -> None:  # noqa: N802 - twisted's name
        if getattr(self, "kvmweb_refused", False):
            return
        self.kvmweb_received = getattr(self, "kvmweb_received", 0) + len(data)
        if self.kvmweb_received > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
            refuse(self)
            return
        content_chunk(self, data)

    WebRequest.gotLength = gotLength
    WebRequest.handleContentChunk = handleContentChunk
    WebRequest.kvmweb_limited = True
