"""The HTTP service's application: JSON endpoints over the collections of a folder.

``pip install 'vecpress[serve]'`` (FastAPI and uvicorn); ``vecpress serve ROOT``
runs it (:mod:`vecpress.cli.serve_command`). Every collection is a folder under
``ROOT`` (:mod:`vecpress.service.registry`). The endpoints:

=======  ================================  =============================================
GET      ``/health``                       liveness (never needs the token)
GET      ``/collections``                  the collections' names
POST     ``/collections``                  create one (201; 409 when the name is taken)
GET      ``/collections/{name}``           its settings, counts, segments and fields
POST     ``/collections/{name}/add``       store documents (an id already stored: 400)
POST     ``/collections/{name}/upsert``    store or replace documents by id
POST     ``/collections/{name}/delete``    delete documents by id
POST     ``/collections/{name}/get``       documents by id (null where absent)
POST     ``/collections/{name}/search``    the ``k`` best documents per query vector or
                                           text, with an optional metadata filter
=======  ================================  =============================================

``/openapi.json`` describes them all (and ``/docs`` shows it); both are public.

**Errors.** A request the schemas refuse is 422 (FastAPI's list of the fields at
fault); one the collection refuses (a vector of the wrong dimension, a duplicate
id, a filter on an unknown operator, a non-finite number) is 400 with the
collection's message; an unknown collection is 404, a taken name 409, a body over
the limit 413 (:mod:`vecpress.service.limits`), a missing or wrong token 401. A
5xx means a fault of the server or of its files, never of the request.

**Token.** With ``token=``, every request but those of :data:`PUBLIC` (``/health``
and the API's description) needs the header ``Authorization: Bearer <token>``, or
is answered 401 before its body is read (an unknown path too); the comparison
takes the same time wherever the given token first differs
(:func:`hmac.compare_digest`).

**Durability.** An add, upsert or delete is answered after its transaction is
committed (:class:`vecpress.Collection`): an acknowledged write survives a crash
of the server, and every later search sees it.

Examples
--------
>>> import tempfile
>>> from fastapi.testclient import TestClient
>>> client = TestClient(create_app(tempfile.mkdtemp(), token="s3cret"))
>>> auth = {"Authorization": "Bearer s3cret"}
>>> client.post("/collections", json={"name": "docs", "dim": 2}, headers=auth).status_code
201
>>> client.post("/collections/docs/add", headers=auth, json={
...     "vectors": [[1, 0], [0, 1]], "ids": ["a", "b"], "texts": ["north", "east"]}).json()
{'ids': ['a', 'b']}
>>> hits = client.post("/collections/docs/search", headers=auth,
...                    json={"vectors": [[0.9, 0.1]], "k": 1}).json()["results"][0]
>>> hits[0]["id"], hits[0]["text"]
('a', 'north')
>>> client.get("/collections/docs").status_code  # no token
401
"""

# no ``from __future__ import annotations``: FastAPI reads the endpoints' annotations,
# and the request models are made inside create_app (their limits are its arguments)
import hmac
from pathlib import Path
from typing import Annotated

import numpy as np

try:  # first: without the extra, this is the error (pydantic comes with FastAPI)
    from fastapi import Depends, FastAPI, HTTPException, Request
    from fastapi import Path as PathParam
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "the vecpress service needs FastAPI and uvicorn: pip install 'vecpress[serve]'"
    ) from e

from .._version import __version__
from ..errors import FormatError
from .limits import BodyLimit, Limits, TokenCheck
from .registry import NAME_PATTERN, NotFound, Registry
from .schemas import (
    Collections,
    Deleted,
    Documents,
    Error,
    Health,
    Ids,
    Info,
    Results,
    schemas,
)

__all__ = ["create_app"]

#: the ``{name}`` of a collection's endpoints
CollectionName = Annotated[
    str, PathParam(pattern=NAME_PATTERN, description="the collection's name")
]

#: the paths that never need the token: liveness and the API's own description
PUBLIC = frozenset({"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})

#: the error answers every endpoint may give (documented in the OpenAPI schema)
_ERRORS = {
    400: {"model": Error, "description": "the collection refused the request"},
    401: {"model": Error, "description": "missing or wrong bearer token"},
    404: {"model": Error, "description": "no collection of that name"},
    413: {"model": Error, "description": "the body is larger than the service takes"},
}


def create_app(root, *, token: str | None = None, limits: Limits | None = None,
               readers: int = 4, embedders: dict | None = None) -> FastAPI:  # fmt: skip
    """The service's ASGI application over the collections under ``root``.

    Parameters
    ----------
    root : str or pathlib.Path
        The folder of the collections (created if absent).
    token : str, optional
        The bearer token every endpoint but ``/health`` requires (module docstring).
    limits : Limits, optional
        What one request may ask (:class:`vecpress.service.limits.Limits`).
    readers : int
        Searches and reads one collection serves at once
        (:class:`vecpress.service.registry.Registry`).
    embedders : dict, optional
        Collection name -> the callable that embeds its texts, for collections
        created with a callable (those created with a sentence-transformers model
        name load it themselves).

    Returns
    -------
    fastapi.FastAPI
        Run it with any ASGI server (``vecpress serve`` uses uvicorn); its
        ``state.registry`` holds the open collections (close it on shutdown).
    """
    if token is not None and (not isinstance(token, str) or not token.strip()):
        raise ValueError("token must be a non-empty string")
    limits = Limits() if limits is None else limits
    registry = Registry(Path(root), readers=readers, embedders=embedders)
    s = schemas(limits)
    bearer = HTTPBearer(auto_error=False, description="the token given to vecpress serve")
    expected = None if token is None else token.encode()

    def authorized(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        if expected is None:
            return
        given = b"" if credentials is None else credentials.credentials.encode()
        if not hmac.compare_digest(given, expected):
            raise HTTPException(
                401, "a valid bearer token is required (Authorization: Bearer <token>)",
                headers={"WWW-Authenticate": "Bearer"},
            )  # fmt: skip

    app = FastAPI(
        title="vecpress",
        version=__version__,
        description="Compressed vector collections: documents with texts and metadata, "
        "searched by vector or text with metadata filters.",
    )
    app.state.registry = registry
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    if expected is not None:  # added last: runs first, before the body is read or parsed
        app.add_middleware(TokenCheck, expected=expected, public=PUBLIC)
    _add_error_handlers(app)
    guarded = {"dependencies": [Depends(authorized)], "responses": _ERRORS}

    @app.get("/health", response_model=Health, tags=["service"])
    def health() -> dict:
        """Liveness: answers while the server runs (no token needed)."""
        return {"status": "ok", "version": __version__}

    @app.get("/collections", response_model=Collections, tags=["collections"], **guarded)
    def list_collections() -> dict:
        """The names of the collections, sorted."""
        return {"collections": registry.names()}

    taken = {409: {"model": Error, "description": "the name is taken"}}

    @app.post("/collections", response_model=Info, status_code=201, tags=["collections"],
              **{**guarded, "responses": {**_ERRORS, **taken}})  # fmt: skip
    def create(body: s.Create) -> dict:
        """Create a collection (its codec trains on its first ``flush_rows`` vectors)."""
        settings = body.model_dump(exclude={"name"})
        served = registry.create(body.name, **settings)
        return {"name": served.name, **served.writer.describe()}

    @app.get("/collections/{name}", response_model=Info, tags=["collections"], **guarded)
    def info(name: CollectionName) -> dict:
        """The collection's settings, counts, segments and metadata fields."""
        served = registry.get(name)
        with served.reader() as col:
            return {"name": name, **col.describe()}

    def stored(served, body, replace: bool) -> dict:
        vectors = getattr(body, "vectors", None)
        x = served.embed(body.texts) if vectors is None else _as_array(vectors)
        write = served.writer.upsert if replace else served.writer.add
        return {"ids": write(x, body.ids, texts=body.texts, metadata=body.metadata)}

    @app.post("/collections/{name}/add", response_model=Ids, tags=["documents"], **guarded)
    def add(name: CollectionName, body: s.Add) -> dict:
        """Store documents (all or none); an id already stored is refused (400)."""
        return stored(registry.get(name), body, replace=False)

    @app.post("/collections/{name}/upsert", response_model=Ids, tags=["documents"], **guarded)
    def upsert(name: CollectionName, body: s.Upsert) -> dict:
        """Store documents, replacing those whose ids are stored (one transaction)."""
        return stored(registry.get(name), body, replace=True)

    @app.post("/collections/{name}/delete", response_model=Deleted, tags=["documents"],
              **guarded)  # fmt: skip
    def delete(name: CollectionName, body: s.IdList) -> dict:
        """Delete the documents of ``ids`` (ids not stored are skipped)."""
        return {"deleted": registry.get(name).writer.delete(body.ids)}

    @app.post("/collections/{name}/get", response_model=Documents, tags=["documents"], **guarded)
    def get(name: CollectionName, body: s.IdList) -> dict:
        """The documents of ``ids``, in that order (null where absent)."""
        served = registry.get(name)
        with served.reader() as col:
            return {"documents": col.get(body.ids)}

    @app.post("/collections/{name}/search", response_model=Results, tags=["documents"],
              **guarded)  # fmt: skip
    def search(name: CollectionName, body: s.Search) -> dict:
        """The ``k`` best documents for each query (vectors, or texts the collection
        embeds) among those ``filter`` matches."""
        served = registry.get(name)
        vectors = getattr(body, "vectors", None)
        q = served.embed(body.texts) if vectors is None else _as_array(vectors)
        with served.reader() as col:
            res = col.search(q, body.k, filter=body.filter, rerank=body.rerank,
                             nprobe=body.nprobe)  # fmt: skip
        return {"results": [
            [{"id": i, "score": float(sc), "text": t, "metadata": m}
             for i, sc, t, m in zip(ids, scores, texts, metas, strict=True) if i is not None]
            for ids, scores, texts, metas in zip(res.ids, res.scores, res.texts, res.metadata,
                                                 strict=True)
        ]}  # fmt: skip

    return app


def _as_array(rows: list[list[float]]) -> np.ndarray:
    """Request vectors as float64 rows (the collection checks their finiteness and
    casts them to float32), or a clear error when rows differ in length."""
    widths = {len(r) for r in rows}
    if len(widths) > 1:
        raise ValueError(f"every vector must have the same length, found lengths {sorted(widths)}")
    return np.asarray(rows, dtype=np.float64)


def _add_error_handlers(app: FastAPI) -> None:
    """Refusals of the collection as 4xx with its message (module docstring)."""

    def answer(status: int):
        async def handler(request: Request, exc: Exception) -> JSONResponse:
            message = " ".join(str(exc).split()) or type(exc).__name__
            return JSONResponse({"detail": message}, status_code=status)

        return handler

    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's answer without the ``input`` it would echo (a whole body, at worst)
        detail = [{k: e[k] for k in ("type", "loc", "msg") if k in e} for e in exc.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(NotFound, answer(404))
    app.add_exception_handler(FileExistsError, answer(409))
    app.add_exception_handler(RecursionError, _nested(answer(400)))
    app.add_exception_handler(FormatError, answer(500))
    for kind in (ValueError, TypeError):
        app.add_exception_handler(kind, answer(400))


def _nested(handler):
    async def nested(request: Request, exc: Exception) -> JSONResponse:
        return await handler(request, ValueError("the request is nested too deeply"))

    return nested
