"""What the server refuses before it reads an upload: a body whose declared length is over the limit is answered
413 at once, unread; a body that grows past the limit is dropped with 413 as soon as it does; and a body that
stops arriving (no bytes for ``stall_seconds``) is dropped with 408, so a slow or stuck client cannot hold a
worker. An ASGI middleware around the app, ahead of FastAPI's form parsing."""

from __future__ import annotations

import asyncio
import json

from fastapi import HTTPException

FORM_OVERHEAD = 64 * 1024  # multipart boundaries and part headers around the file itself
STALL_SECONDS = 15.0


class BodyLimits:
    """``app`` with its request bodies held to ``max_bytes`` (plus the form's overhead) and to a byte at least every
    ``stall_seconds``."""

    def __init__(self, app, *, max_bytes: int, stall_seconds: float = STALL_SECONDS):
        self.app, self.max_bytes, self.stall_seconds = app, max_bytes + FORM_OVERHEAD, stall_seconds

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = _declared_length(scope)
        if declared is not None and declared > self.max_bytes:
            return await _answer(send, 413, f"the request declares {declared:,} bytes, over the upload limit of "
                                            f"{self.max_bytes - FORM_OVERHEAD:,}; it was not read")
        received = 0

        async def limited_receive():
            nonlocal received
            try:
                message = await asyncio.wait_for(receive(), self.stall_seconds)
            except asyncio.TimeoutError:  # TimeoutError itself from Python 3.11
                raise HTTPException(408, f"the upload stalled: no bytes for {self.stall_seconds:g} s") from None
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise HTTPException(413, f"the upload passed the limit of {self.max_bytes - FORM_OVERHEAD:,} bytes")
            return message

        return await self.app(scope, limited_receive, send)


def _declared_length(scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _answer(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail, "status": "unreadable"}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
