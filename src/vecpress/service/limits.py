"""What one request to the HTTP service may ask: the body-size guard and the token check.

:class:`Limits` bounds each request: rows in a batch, queries in a search, ``k``,
the vectors' dimension and the body's bytes. The first four are constraints of
the request schemas (:mod:`vecpress.service.schemas`), so they appear in the
OpenAPI document and a request beyond them is answered 422 by the schema
validation; the body's size is checked before the body is parsed
(:class:`BodyLimit`: 413), so a client cannot make the server read or hold
more than ``max_body_bytes`` of one request. :class:`TokenCheck` answers 401 to
a request without the bearer token before anything else reads it.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass

from .._validation import check_positive_int
from ..collection.collection import MAX_K


@dataclass(frozen=True)
class Limits:
    """The most one request may ask of the service.

    Parameters
    ----------
    max_batch : int
        Documents in one add/upsert, ids in one get/delete.
    max_queries : int
        Queries in one search.
    max_k : int
        Results per query (at most the collection's own limit, 10,000).
    max_dim : int
        Dimension of a vector (and of a new collection).
    max_body_bytes : int
        Bytes of a request's body (a 1,024 × 384 batch is ~8 MB as JSON).

    Examples
    --------
    >>> Limits(max_k=100).max_k
    100
    >>> Limits(max_k=0)
    Traceback (most recent call last):
    ...
    ValueError: max_k must be in [1, 10000], found 0
    """

    max_batch: int = 1_024
    max_queries: int = 64
    max_k: int = 1_000
    max_dim: int = 8_192
    max_body_bytes: int = 32 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_queries", "max_dim", "max_body_bytes"):
            check_positive_int(getattr(self, name), name)
        check_positive_int(self.max_k, "max_k", high=MAX_K)  # a collection's own limit


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` is answered 413 before the
    application reads it (by its ``Content-Length``, or by counting the chunks of a
    body sent without one); other requests pass through with their body replayed.

    Parameters
    ----------
    app : ASGI application
    max_bytes : int
    """

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await _reject(send, 400, "the Content-Length header is not a number")
                return
            if size > self.max_bytes:
                await _reject(send, 413, self._too_large(f"{size:,} bytes"))
                return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _reject(send, 413, self._too_large(f"more than {self.max_bytes:,} bytes"))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self, found: str) -> str:
        return f"request bodies may have at most {self.max_bytes:,} bytes, found {found}"


async def _reject(send, status: int, detail: str, headers=()) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close"), *headers],
        }
    )  # fmt: skip
    await send({"type": "http.response.body", "body": body})


class TokenCheck:
    """ASGI middleware: a request whose path is not in ``public`` needs the header
    ``Authorization: Bearer <expected>``, or is answered 401 (compared in constant
    time: :func:`hmac.compare_digest`).

    Parameters
    ----------
    app : ASGI application
    expected : bytes
        The token.
    public : frozenset of str
        Paths served without it.
    """

    def __init__(self, app, expected: bytes, public: frozenset) -> None:
        self.app = app
        self.expected = expected
        self.public = public

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in self.public:
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, given = header.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.expected):
            await self.app(scope, receive, send)
            return
        await _reject(
            send, 401, "a valid bearer token is required (Authorization: Bearer <token>)",
            [(b"www-authenticate", b"Bearer")],
        )  # fmt: skip
