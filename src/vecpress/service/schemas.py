"""The request and response bodies of the HTTP service, as pydantic models.

:func:`schemas` builds them for a :class:`~vecpress.service.limits.Limits`: the
limits are the schemas' ``maxItems``/``maximum`` constraints, so the OpenAPI
document states them and the validation enforces them (422). Requests forbid
unknown fields (a misspelt ``"vector"`` is an error, not an empty search) and
take numbers as JSON numbers only (``"1.5"`` is not a float). What a schema
cannot state -- a vector's length against its collection's dimension,
duplicate ids, a filter's operators, metadata kinds -- the collection checks,
and its ``ValueError``/``TypeError`` is answered 400 with its message.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..collection.catalog import MAX_ID_LENGTH
from ..files.storage import METRICS
from .limits import Limits
from .registry import NAME_PATTERN

_REQUEST = ConfigDict(extra="forbid", strict=True)


class Error(BaseModel):
    """An error's message (every 4xx but 422, whose ``detail`` lists the fields)."""

    detail: str


class Health(BaseModel):
    status: Literal["ok"]
    version: str


class Collections(BaseModel):
    collections: list[str]


class Segment(BaseModel):
    file: str
    rows: int
    live: int


class Info(BaseModel):
    """A collection at a glance (:meth:`vecpress.Collection.describe`)."""

    name: str
    spec: str
    metric: str
    dim: int
    seed: int
    rerank_spec: str | None
    ivf: int | None
    flush_rows: int
    embed: dict[str, str] | None = Field(
        description="how texts are embedded: {'kind': 'model', 'model': name} or {'kind': "
        "'callable'} (given to the server); null: vectors only"
    )
    trained: bool
    count: int
    pending: int
    segments: list[Segment]
    fields: dict[str, str]
    indexed_fields: list[str]


class Ids(BaseModel):
    ids: list[str]


class Deleted(BaseModel):
    deleted: int = Field(description="documents deleted (ids not stored are skipped)")


class Document(BaseModel):
    id: str
    text: str | None
    metadata: dict[str, Any] | None


class Documents(BaseModel):
    documents: list[Document | None] = Field(description="one per id asked; null where absent")


class Hit(BaseModel):
    id: str
    score: float = Field(description="the metric's score, larger is better")
    text: str | None
    metadata: dict[str, Any] | None


class Results(BaseModel):
    results: list[list[Hit]] = Field(
        description="per query, its best documents (fewer than k when fewer are stored or "
        "match the filter)"
    )


def schemas(limits: Limits) -> SimpleNamespace:
    """The request models for ``limits`` (and the response models above). A body that
    may take two forms is a union of two models, each with its required fields
    (``Add``: :class:`AddVectors` or :class:`AddTexts`; ``Upsert``, ``Search``
    alike), so the schema itself says which fields go together.

    Examples
    --------
    >>> s = schemas(Limits(max_k=50))
    >>> s.VectorSearch(vectors=[[1.0, 0.0]], k=5).k
    5
    >>> s.VectorSearch(vectors=[[1.0, 0.0]], k=51)
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for VectorSearch
    k
      Input should be less than or equal to 50 ...
    """
    DocId = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]
    Vector = Annotated[list[float], Field(min_length=1, max_length=limits.max_dim)]
    Batch = Annotated[list[Vector], Field(min_length=1, max_length=limits.max_batch)]
    BatchIds = Annotated[list[DocId], Field(max_length=limits.max_batch)]
    Meta = dict[str, Any] | None

    class Create(BaseModel):
        """A new collection (:meth:`vecpress.Collection.create`)."""

        model_config = _REQUEST
        name: str = Field(pattern=NAME_PATTERN, description="its folder under the root")
        dim: int = Field(ge=1, le=limits.max_dim)
        spec: str = Field("hd2,rq4", min_length=1, max_length=200, description="codec spec")
        metric: Literal[METRICS] = "cosine"  # type: ignore[valid-type]
        rerank_spec: str | None = Field(
            None, min_length=1, max_length=200,
            description="second tier re-ranking reads (e.g. 'f32'; None: none)",
        )  # fmt: skip
        ivf: int | None = Field(None, ge=1, le=1 << 20, description="IVF lists (None: flat)")
        seed: int = Field(0, ge=0, le=2**32 - 1)
        flush_rows: int = Field(20_000, ge=1, le=10_000_000)

    Texts = Annotated[list[str], Field(min_length=1, max_length=limits.max_batch)]
    Metas = Annotated[list[Meta], Field(max_length=limits.max_batch)]

    class AddVectors(BaseModel):
        """Documents given by their ``vectors``; ``ids`` (random when omitted),
        ``texts`` and ``metadata`` have one entry per vector."""

        model_config = _REQUEST
        vectors: Batch
        texts: Annotated[list[str | None], Field(max_length=limits.max_batch)] | None = None
        ids: BatchIds | None = None
        metadata: Metas | None = None

    class AddTexts(BaseModel):
        """Documents given by their ``texts``, embedded by the collection's embedder."""

        model_config = _REQUEST
        texts: Texts
        ids: BatchIds | None = None
        metadata: Metas | None = None

    class UpsertVectors(AddVectors):
        """:class:`AddVectors`, replacing the documents of ``ids`` (required)."""

        ids: BatchIds

    class UpsertTexts(AddTexts):
        """:class:`AddTexts`, replacing the documents of ``ids`` (required)."""

        ids: BatchIds

    class IdList(BaseModel):
        model_config = _REQUEST
        ids: BatchIds

    class _Query(BaseModel):
        model_config = _REQUEST
        k: int = Field(10, ge=1, le=limits.max_k)
        filter: dict[str, Any] | None = Field(
            None, description="metadata filter ($eq, $in, $and ...)"
        )
        rerank: Annotated[int, Field(ge=1, le=1_000_000)] | Literal["auto"] | None = Field(
            None, description="re-ranking depth, or 'auto' (certified); default: the collection's"
        )
        nprobe: int | None = Field(None, ge=1, le=1 << 20, description="IVF lists probed")

    class VectorSearch(_Query):
        """Query vectors."""

        vectors: Annotated[list[Vector], Field(min_length=1, max_length=limits.max_queries)]

    class TextSearch(_Query):
        """Query texts, embedded by the collection's embedder."""

        texts: Annotated[list[str], Field(min_length=1, max_length=limits.max_queries)]

    return SimpleNamespace(
        Create=Create, IdList=IdList, VectorSearch=VectorSearch, TextSearch=TextSearch,
        Add=AddVectors | AddTexts, Upsert=UpsertVectors | UpsertTexts,
        Search=VectorSearch | TextSearch,
    )  # fmt: skip
