"""The request-size limit, enforced before the body is read into memory.

A declared ``Content-Length`` over the limit is answered 413 at once; a body without one
(chunked) is counted as it streams and cut off with 413 as soon as it passes the limit.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from volley.protocol.codes import ApiCode


def _too_large(limit: int, size: int | None) -> str:
    got = f"of {size} bytes " if size is not None else ""
    return (f"request body {got}exceeds the {limit} byte ({limit / 2**20:g} MiB) limit "
            "(service setting max_request_bytes)")


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
                break
        if declared is not None and declared > self.max_bytes:
            await _send_413(send, _too_large(self.max_bytes, declared))
            return
        seen = 0
        limit = self.max_bytes

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # FastAPI re-raises HTTPException from body reading unchanged, so this
                    # becomes the ordinary JSON 413 answer
                    raise HTTPException(413, _too_large(limit, None))
            return message

        await self.app(scope, counting_receive, send)


async def _send_413(send: Send, message: str) -> None:
    body = json.dumps({"code": ApiCode.PAYLOAD_TOO_LARGE, "message": message}).encode()
    headers: list[Any] = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
