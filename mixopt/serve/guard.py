"""The ASGI guard of ``mixopt serve``: the bearer token and the request-size limit, before any route."""

from __future__ import annotations

import hmac

from mixopt.serve import wire

#: readable without the token
OPEN_PATHS = ("/docs", "/docs/oauth2-redirect", "/openapi.json")


class Guard:
    """Pure ASGI middleware: bearer token (constant-time compare) and the request-size limit.

    The body is read here (at most ``max_body`` bytes) and replayed to the app; a larger one is
    answered 413 (after reading what was sent, up to a bound, so the client sees the answer).
    """

    def __init__(self, app, token: str | None, max_body: int) -> None:
        self.app, self.max_body = app, max_body
        self.token = token.encode() if token else None

    def _authorized(self, scope) -> bool:
        if self.token is None or scope["path"] in OPEN_PATHS:
            return True
        value = b""
        for k, v in scope.get("headers") or []:
            if k == b"authorization":
                value = v
        scheme, _, cred = value.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(cred.strip(), self.token)

    async def _reject(self, send, receive, status: int, message: str, drain: int) -> None:
        seen, more = 0, True
        while more and seen <= drain:  # read (and drop) what the client sends, so it sees the answer
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            seen += len(msg.get("body", b""))
            more = msg.get("more_body", False)
        body = wire.dumps({"error": message, "type": "UserError"})
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        if status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self._authorized(scope):
            await self._reject(send, receive, 401, "missing or wrong bearer token: send the header "
                               "'Authorization: Bearer <token>' (mixopt.client.Client(url, token=...))", self.max_body)
            return
        too_big = (f"request body larger than this server's limit of {self.max_body} bytes; "
                   "send less per request (e.g. add_completed in parts)")
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await self._reject(send, receive, 413, too_big, 4 * self.max_body)
            return
        chunks, size, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunk = msg.get("body", b"")
            size += len(chunk)
            chunks.append(chunk)
            more = msg.get("more_body", False)
            if size > self.max_body:
                await self._reject(send, receive, 413, too_big, 4 * self.max_body if more else -1)
                return
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

