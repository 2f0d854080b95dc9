"""A collection: documents with string ids, texts and metadata over compressed vectors.

A collection is a folder::

    catalog.sqlite     the catalog (vecpress.collection.catalog): documents, segments
    template.vpi       an empty trained index: the codec every segment shares
    segments/*.vpi     immutable index files (vecpress's format) of the vectors

**Writes.** One writer at a time (``flock`` on ``collection.lock``; readers
never lock). :meth:`Collection.add` checks the whole batch first (vectors,
ids, texts, metadata kinds), then stores it in one catalog transaction: a batch
of at least ``flush_rows`` vectors (once the codec is trained) as a segment file
written and fsynced before the transaction names it; a smaller one with its
float32 vectors in the catalog's ``pending`` table. When the pending vectors
reach ``flush_rows`` (or on :meth:`Collection.flush`) they become one segment
(:meth:`~vecpress.collection.catalog.Catalog.seal`). The codec is trained on
the first vectors that make a segment (``flush_rows`` of them, or what an
explicit ``flush`` finds) and saved as the template; every later segment is
the template plus its rows. A batch is thus durable and visible all at once
when ``add`` returns. A crash before the transaction leaves at most an
unnamed segment or template file, which :meth:`Collection.open` removes.

**Compaction.** :meth:`Collection.compact` merges the segments holding deleted
documents or few rows into one (their live rows' codes copied as they are,
:mod:`vecpress.collection.merge`), swaps them in one transaction and then
removes the old files; a search whose snapshot named a removed file reads a
fresh snapshot (:data:`SNAPSHOT_TRIES`).

**Search.** A read transaction fixes the segments, the pending vectors and the
live documents. Each segment is searched as an index (memory-mapped) for its
``k`` best plus as many as it has deleted documents, so the deleted ones can
be dropped without losing any of its best ``k`` live rows; pending vectors are
scored exactly. Segment scores are the codec's estimates of the metric's score
(:meth:`vecpress.Index.search`), pending ones exact; the best ``k`` of all are
returned with their ids, texts and metadata.

**Filters.** ``search(..., filter=...)`` compiles the filter
(:mod:`vecpress.collection.filters`) to one SQL query over the live documents;
its rows, grouped by segment, are each segment's allowlist, applied inside the
segment's scan (``Index.search(..., allow=)``, :mod:`vecpress.search.filtered`:
an exact scan of the allowed rows when they are few, a masked scan probing
more IVF lists as the filter narrows otherwise), and the pending vectors are
filtered before they are scored. Every query thus gets its ``k`` best matching
documents however selective the filter. Fields are not indexed in SQLite
unless :meth:`Collection.create_index` names them (each index slows writes).

Examples
--------
>>> import tempfile
>>> x = np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32)
>>> col = Collection.create(tempfile.mkdtemp() + "/docs", spec="hd2,rq4", dim=16,
...                         flush_rows=200)
>>> ids = col.add(x, ids=[f"doc{i}" for i in range(300)],
...               metadata=[{"n": i} for i in range(300)])
>>> len(col), len(col.segments()), col.delete(["doc7"])
(300, 1, 1)
>>> res = col.search(x[7:9], k=2)
>>> res.ids[1][0], res.metadata[1][0]
('doc8', {'n': 8})
>>> "doc7" in res.ids[0]
False
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .. import atomic
from .._validation import as_vectors, check_positive_int
from ..errors import FormatError, LockedError
from ..files.storage import IndexState
from ..search.index import METRICS, EncodedRows, Index, adapted, check_rerank
from ..search.index import open as open_index
from ..search.ivf import list_order
from .auto import choose
from .catalog import Catalog, check_ids, unique_ids
from .embed import Embedder, check_texts
from .merge import merge
from .metadata import dumps, metadata_kinds

#: pending vectors that make a segment (and the rows the codec is trained on)
FLUSH_ROWS = 20_000
#: the most results a query may ask for
MAX_K = 10_000
#: second tiers that give a collection's vectors back (:meth:`Collection.vectors`)
FLOAT_TIERS = ("f32", "f16", "bf16")
#: snapshots a search reads before it gives up on segments a compaction keeps removing
SNAPSHOT_TRIES = 5


#: the settings :meth:`Collection.describe` reports (those it was created with)
DESCRIBED = ("spec", "metric", "dim", "seed", "rerank_spec", "ivf", "flush_rows", "embed")

#: the spec that lets the advisor choose the codec (:mod:`vecpress.collection.auto`)
AUTO = "auto"


def _check_auto(spec, target_recall, budget_bytes, rerank_spec, ivf, seconds) -> bool:
    """Whether ``spec`` is ``"auto"``, with exactly one objective and nothing it chooses
    given; a clear error otherwise."""
    if spec != AUTO:
        if target_recall is not None or budget_bytes is not None:
            raise ValueError('target_recall and budget_bytes go with spec="auto"')
        return False
    if (target_recall is None) == (budget_bytes is None):
        raise ValueError('spec="auto" needs exactly one of target_recall and budget_bytes')
    if target_recall is not None and (
        isinstance(target_recall, bool) or not isinstance(target_recall, (int, float))
        or not 0 < target_recall <= 1
    ):  # fmt: skip
        raise ValueError(f"target_recall must be in (0, 1], found {target_recall!r}")
    if budget_bytes is not None:
        check_positive_int(budget_bytes, "budget_bytes")
    if rerank_spec is not None or ivf is not None:
        raise ValueError(
            'spec="auto" chooses the re-ranking tier itself, flat: no rerank_spec, ivf'
        )
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise ValueError(f"advise_seconds must be a positive number, found {seconds!r}")
    return True


def _segment_rerank(rerank, depth: int):
    """``rerank`` as a segment of ``depth`` results takes it: at least ``depth``."""
    return rerank if rerank is None or rerank == "auto" else max(rerank, depth)


CATALOG = "catalog.sqlite"
TEMPLATE = "template.vpi"
SEGMENTS = "segments"


@dataclass
class CollectionResult:
    """The result of :meth:`Collection.search`: per query, its ``k`` best documents'
    ``ids`` (str), ``scores`` (float32[nq, k], larger is better), ``texts`` and
    ``metadata`` (dicts); padded with ``None`` and ``-inf`` past the stored documents.
    ``keys`` (int64[nq, k], -1 as padding): the documents' catalog keys, by which equal
    scores are ordered (smaller first), so that results of parts of a collection
    (``search(..., shard=)``) merge into the whole's
    (:func:`vecpress.search.topk.topk` with the keys as labels)."""

    ids: list[list[str | None]]
    scores: np.ndarray
    texts: list[list[str | None]]
    metadata: list[list[dict | None]]
    keys: np.ndarray | None = None


class Collection:
    """Documents over compressed vectors in a folder (module docstring)."""

    def __init__(self, path: Path, catalog: Catalog, embed=None, segments=None) -> None:
        self.path = path
        self._catalog = catalog
        self._embedder = Embedder.from_setting(catalog.settings.get("embed"), embed)
        s = catalog.settings
        self.spec, self.metric, self.dim = s["spec"], s["metric"], int(s["dim"])
        self.flush_rows = int(s["flush_rows"])
        self._mutex = threading.RLock()  # one catalog connection: one thread at a time
        # file -> its memory-mapped Index; may be shared with other objects of the folder
        # (open(share=)): Index searches are thread-safe, and each dict operation is atomic
        self._segments: dict[str, Index] = {} if segments is None else segments
        self._template = None  # the codec template's state, read on the first segment write
        self._shape = None  # (settings, an empty Index of them): what searches may ask

    # -- opening ---------------------------------------------------------------
    @classmethod
    def create(
        cls, path, *, spec: str, dim: int | None = None, metric: str = "cosine", seed: int = 0,
        rerank_spec: str | None = None, ivf: int | None = None, flush_rows: int = FLUSH_ROWS,
        embed=None, target_recall: float | None = None, budget_bytes: int | None = None,
        advise_seconds: float = 120.0,
    ) -> Collection:  # fmt: skip
        """Create a collection in the folder ``path`` (absent or empty): codec ``spec``
        for ``dim``-dimensional vectors, as :class:`vecpress.Index` takes them
        (``metric``, ``seed``, ``rerank_spec``, ``ivf``); ``flush_rows`` pending
        vectors make a segment.

        ``embed``: how :meth:`add_texts` and :meth:`search_text` turn texts into
        vectors -- a callable (list of str -> float array; pass it again to
        :meth:`open`) or a sentence-transformers model name (stored; loaded on
        first use; ``pip install 'vecpress[embed]'``)
        (:mod:`vecpress.collection.embed`). ``dim`` may then be omitted: the
        embedder's output on one text gives it.

        ``spec="auto"`` with ``target_recall`` (fewest bytes reaching recall@10) or
        ``budget_bytes`` (best recall@10 within the bytes per vector): the advisor
        chooses the codec (and re-ranking tier and depth) on the training vectors,
        within ``advise_seconds`` (:mod:`vecpress.collection.auto`)."""
        path = Path(path)
        embedder = None if embed is None else Embedder.of(embed)
        if dim is None:
            if embedder is None:
                raise TypeError("Collection.create needs dim= (or embed=, which gives it)")
            dim = int(embedder(["dimension"]).shape[1])
        dim = check_positive_int(dim, "dim")
        flush_rows = check_positive_int(flush_rows, "flush_rows")
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, found {metric!r}")
        auto = _check_auto(spec, target_recall, budget_bytes, rerank_spec, ivf, advise_seconds)
        if not auto:
            Index(spec, metric=metric, seed=seed, rerank_spec=rerank_spec, ivf=ivf)  # checks
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise FileExistsError(f"{path}: exists and is not an empty folder")
        (path / SEGMENTS).mkdir(parents=True, exist_ok=True)
        settings = {
            "kind": "vecpress.collection", "spec": spec, "metric": metric, "dim": dim,
            "seed": seed, "rerank_spec": rerank_spec, "ivf": ivf, "flush_rows": flush_rows,
            "embed": None if embedder is None else embedder.setting,
        }  # fmt: skip
        if auto:
            settings["auto"] = {"target_recall": target_recall, "budget_bytes": budget_bytes,
                                "seconds": advise_seconds}  # fmt: skip
        return cls(path, Catalog.create(path / CATALOG, settings), embed)

    @classmethod
    def open(cls, path, *, embed=None, share: Collection | None = None) -> Collection:
        """Open the collection in folder ``path``; files a crashed writer left (segment or
        template files no transaction names) are removed when no writer is active.
        ``embed``: the callable a collection created with one embeds texts with (or a
        model name replacing the stored one). ``share``: an open collection object of
        the same folder whose memory-mapped segments this one uses too (one mapping of
        each file for both, rather than one each: a server opens one object per
        concurrent reader); their searches may run at once."""
        path = Path(path)
        segments = None
        if share is not None:
            if not isinstance(share, Collection) or share.path.resolve() != path.resolve():
                raise ValueError(
                    f"share= must be an open Collection of {path}, found "
                    f"{getattr(share, 'path', type(share).__name__)}"
                )
            segments = share._segments
        col = cls(path, Catalog.open(path / CATALOG), embed, segments)
        with contextlib.suppress(LockedError):
            with col._writing(wait=False):
                for orphan in col._catalog.orphans(path / SEGMENTS):
                    orphan.unlink(missing_ok=True)
                if "template" not in col._catalog.settings:
                    (path / TEMPLATE).unlink(missing_ok=True)
        return col

    def close(self) -> None:
        with self._mutex:
            self._catalog.close()
            self._segments = {}  # its own reference: objects sharing the segments keep them

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextlib.contextmanager
    def _writing(self, wait: bool = True):
        """The writer lock (this process's threads, then other processes), with the
        settings as the last writer left them (it may have trained the codec)."""
        with self._mutex, atomic.writer_lock(str(self.path / "collection"), wait=wait):
            self._catalog.refresh()
            yield

    # -- writing ---------------------------------------------------------------
    def add(self, vectors, ids=None, texts=None, metadata=None) -> list[str]:
        """Store documents: ``vectors`` float[n, dim], string ``ids`` (random hex ids when
        omitted), ``texts`` (str or None each) and ``metadata`` (a dict or None each).
        All or nothing: every check runs before anything is stored; an id already
        stored is a ``ValueError`` (:meth:`upsert` replaces). Returns the ids."""
        return self._store(vectors, ids, texts, metadata, replace=False)

    def upsert(self, vectors, ids, texts=None, metadata=None) -> list[str]:
        """:meth:`add`, replacing the stored documents of ``ids`` (their text, metadata and
        vector) in the same transaction: a reader sees the old documents or the new."""
        if ids is None:
            raise TypeError("upsert needs the ids of the documents it stores or replaces")
        return self._store(vectors, ids, texts, metadata, replace=True)

    def _store(self, vectors, ids, texts, metadata, *, replace: bool) -> list[str]:
        x = self._vectors(vectors, "vectors")
        n = x.shape[0]
        ids = [uuid.uuid4().hex for _ in range(n)] if ids is None else check_ids(ids)
        texts = [None] * n if texts is None else list(texts)
        metadata = [None] * n if metadata is None else list(metadata)
        for name, got in (("ids", ids), ("texts", texts), ("metadata", metadata)):
            if len(got) != n:
                raise ValueError(f"{name} must have one entry per vector ({n}), found {len(got)}")
        for i, t in enumerate(texts):
            if t is not None and not isinstance(t, str):
                raise TypeError(f"texts must be strings or None, found {type(t).__name__} at {i}")
        with self._writing():
            cat = self._catalog
            kinds = metadata_kinds(metadata, cat.fields())
            metas = [dumps(m) for m in metadata]
            pks = cat.next_pks(n)
            if n >= self.flush_rows and "template" in cat.settings:
                name = self._write_segment(x, pks)
                with self._named(name):
                    cat.add_documents(pks, ids, texts, metas, kinds, segment=name,
                                      replace=replace)  # fmt: skip
                return ids
            trained = None
            if "template" not in cat.settings and cat.pending_count() + n >= self.flush_rows:
                # the codec trains on these vectors: before the batch is stored, so that a
                # codec that cannot train on them (too few rows for its lists or
                # centroids) fails the add with nothing stored
                trained = self._train(np.concatenate([cat.pending()[1], x]))
            cat.add_documents(pks, ids, texts, metas, kinds, vectors=x, replace=replace)
            if cat.pending_count() >= self.flush_rows:
                self._flush(trained)
        return ids

    def add_encoded(self, rows: EncodedRows, ids, texts=None, metadata=None) -> list[str]:
        """:meth:`add` for vectors encoded elsewhere by this collection's codec: ``rows``
        is what :meth:`vecpress.Index.encode` of the collection's template
        (:meth:`template_bytes`, opened with :func:`vecpress.open`) returns for them.
        They become one segment, named in one transaction with their documents
        (``ids`` required, none stored yet): the segment file is the one :meth:`add`
        would write for the same vectors. :mod:`vecpress.distributed` stores what its
        workers encode this way. The rows are checked against the template (code
        widths, norms under ``"l2"``, IVF lists); a ``ValueError`` names what differs.

        Examples
        --------
        >>> import tempfile, vecpress
        >>> x = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
        >>> col = Collection.create(tempfile.mkdtemp(), spec="hd2,rq4", dim=8).train(x)
        >>> path = tempfile.mkdtemp() + "/template.vpi"
        >>> _ = open(path, "wb").write(col.template_bytes())
        >>> rows = vecpress.open(path).encode(x)
        >>> len(col.add_encoded(rows, [f"d{i}" for i in range(300)])), len(col.segments())
        (300, 1)
        """
        if ids is None:
            raise TypeError("add_encoded needs the ids of the documents it stores")
        ids = check_ids(ids)
        n = len(ids)
        texts = [None] * n if texts is None else list(texts)
        metadata = [None] * n if metadata is None else list(metadata)
        for name, got in (("texts", texts), ("metadata", metadata)):
            if len(got) != n:
                raise ValueError(f"{name} must have one entry per row ({n}), found {len(got)}")
        with self._writing():
            cat = self._catalog
            if "template" not in cat.settings:
                raise ValueError("add_encoded needs a trained collection (train() first)")
            template = self._template_state()
            _check_encoded(rows, template, n)
            kinds = metadata_kinds(metadata, cat.fields())
            metas = [dumps(m) for m in metadata]
            pks = cat.next_pks(n)
            state = _segment_state(template, rows, pks)
            name = f"seg-{int(pks[0])}-{secrets.token_hex(4)}.vpi"
            Index.from_state(state).save(self.path / SEGMENTS / name)
            with self._named(name):
                cat.add_documents(pks, ids, texts, metas, kinds, segment=name, replace=False)
        return ids

    def template_bytes(self) -> bytes:
        """The bytes of the collection's trained template: an empty index file of its codec
        (what a worker opens to encode vectors for :meth:`add_encoded`)."""
        with self._mutex:
            self._catalog.refresh()
            if "template" not in self._catalog.settings:
                raise ValueError("the collection is not trained yet: it has no template")
            return (self.path / TEMPLATE).read_bytes()

    def add_texts(self, texts, metadata=None, ids=None) -> list[str]:
        """:meth:`add` documents given by their ``texts``, embedded by the collection's
        embedder (``create(..., embed=)``). Returns the ids."""
        texts = check_texts(texts)
        return self.add(self._embed(texts), ids=ids, texts=texts, metadata=metadata)

    def search_text(self, query, k: int, filter=None, rerank=None, nprobe=None):
        """:meth:`search` for a text ``query`` (or a list of texts), embedded by the
        collection's embedder."""
        queries = [query] if isinstance(query, str) else check_texts(query)
        return self.search(self._embed(queries), k, filter=filter, rerank=rerank, nprobe=nprobe)

    def _embed(self, texts: list[str]) -> np.ndarray:
        if self._embedder is None:
            raise ValueError(
                "this collection has no embedder: create it with embed= (a callable or a "
                "sentence-transformers model name), or add vectors with add()"
            )
        return self._embedder(texts, dim=self.dim)

    def flush(self) -> None:
        """Make the pending vectors one segment now (training the codec on them if it is
        not trained yet)."""
        with self._writing():
            self._flush()

    def train(self, sample) -> Collection:
        """Train the codec on ``sample`` (float[n, dim]: vectors like those to come) now,
        rather than on the first ``flush_rows`` vectors added; a collection whose codec
        is trained already is a ``ValueError``. Returns ``self``."""
        x = self._vectors(sample, "sample")
        with self._writing():
            if "template" in self._catalog.settings:
                raise ValueError("the collection's codec is trained already (segments share it)")
            self._catalog.set_settings(self._train(x))
            self.spec = self._catalog.settings["spec"]
        return self

    def _train(self, x: np.ndarray) -> dict:
        """Train a template index on ``x`` and save it (fsynced); returns the settings the
        transaction naming it adds (with ``spec="auto"``, the advisor's choice)."""
        s = self._catalog.settings
        chosen = {}
        if s["spec"] == AUTO:
            a = s["auto"]
            chosen = choose(x, s["metric"], seed=s["seed"], target_recall=a["target_recall"],
                            budget_bytes=a["budget_bytes"], seconds=a["seconds"])  # fmt: skip
        s = {**s, **chosen}
        template = Index(s["spec"], metric=s["metric"], seed=s["seed"],
                         rerank_spec=s["rerank_spec"], ivf=s["ivf"])  # fmt: skip
        template.train(x)
        template.save(self.path / TEMPLATE)
        return {**chosen, "template": TEMPLATE}

    def _flush(self, trained: dict | None = None) -> None:
        """Seal the pending vectors into a segment, training the codec on them first
        unless ``trained`` (the settings :meth:`_train` returned) says it just was."""
        cat = self._catalog
        pks, x = cat.pending()
        if len(pks) == 0:
            return
        settings = None
        if "template" not in cat.settings:
            settings = trained or self._train(x)
        name = self._write_segment(x, pks)
        with self._named(name):
            cat.seal(name, pks, settings)
        self.spec = cat.settings["spec"]

    def _template_state(self) -> IndexState:
        if self._template is None:  # named by the catalog, so never changed again
            self._template = open_index(self.path / TEMPLATE, mmap=False).to_state()
        return self._template

    @contextlib.contextmanager
    def _named(self, name: str):
        """The block whose transaction names the segment file ``name``, just written: if it
        fails, the file is removed, unless the catalog names it after all (the file is
        kept in any doubt; :meth:`open` removes files that nothing names)."""
        try:
            yield
        except Exception:
            with contextlib.suppress(Exception):
                if name not in {f for _, f, _ in self._catalog.segments()}:
                    (self.path / SEGMENTS / name).unlink()
            raise

    def _write_segment(self, x: np.ndarray, pks: np.ndarray) -> str:
        """Write a segment of the template's codec holding rows ``x`` under ids ``pks``;
        returns its file name (fsynced, not yet named by the catalog)."""
        seg = Index.from_state(self._template_state())  # empty: adding copies nothing of it
        seg.add(x, ids=pks)
        name = f"seg-{int(pks[0])}-{secrets.token_hex(4)}.vpi"
        seg.save(self.path / SEGMENTS / name)
        return name

    def compact(self, min_rows: int | None = None) -> dict:
        """Merge segments: every segment holding deleted documents or fewer than
        ``min_rows`` rows (default ``10 * flush_rows``) becomes part of one new segment
        of their live rows (codes copied, never encoded again: :mod:`.merge`); deleted
        documents' vectors are dropped. One transaction swaps the segments (a reader
        sees the old ones or the new one); the old files are removed after it.
        Returns ``{"merged": segments merged, "dropped": rows dropped, "segments":
        segments after}``.
        """
        min_rows = 10 * self.flush_rows if min_rows is None else check_positive_int(
            min_rows, "min_rows"
        )  # fmt: skip
        with self._writing():
            cat = self._catalog
            live = cat.live_counts()
            segs = cat.segments()
            chosen = [(s, f, r) for s, f, r in segs if live.get(s, 0) < r or r < min_rows]
            if len(chosen) < 2 and not any(live.get(s, 0) < r for s, _, r in chosen):
                return {"merged": 0, "dropped": 0, "segments": len(segs)}
            keep = np.concatenate([cat.pks_of_segment(s) for s, _, _ in chosen])
            name = None
            if keep.size:
                states = [open_index(self.path / SEGMENTS / f, mmap=True).to_state()
                          for _, f, _ in chosen]  # fmt: skip
                merged = merge(states, np.sort(keep))
                name = f"seg-{int(keep.min())}-{secrets.token_hex(4)}.vpi"
                merged.save(self.path / SEGMENTS / name)
            cat.replace_segments([s for s, _, _ in chosen], name, int(keep.size))
            for _, f, _ in chosen:
                self._segments.pop(f, None)
                (self.path / SEGMENTS / f).unlink(missing_ok=True)
            dropped = sum(r for _, _, r in chosen) - int(keep.size)
            return {"merged": len(chosen), "dropped": dropped, "segments": len(cat.segments())}

    def delete(self, ids) -> int:
        """Delete the documents of ``ids`` (ids not stored are skipped); returns how many
        were deleted (an id repeated counts once). Their vectors stay in their segments,
        never returned again (until :meth:`compact` drops them)."""
        ids = unique_ids(ids)
        with self._writing():
            return self._catalog.delete(ids)

    # -- reading ---------------------------------------------------------------
    def verify(self) -> Collection:
        """Check everything now: the catalog (SQLite's ``integrity_check`` and every
        row's CRC) and every block of every segment file and of the template; a
        :class:`~vecpress.FormatError` names the file and the problem. Returns ``self``.
        (A search checks the catalog rows and the segment blocks it reads; this also
        finds damage in pages and blocks no search has read yet.)"""
        with self._mutex:
            cat = self._catalog
            cat.verify()
            files = [self.path / SEGMENTS / f for _, f, _ in cat.segments()]
            if "template" in cat.settings:
                files.append(self.path / TEMPLATE)
            for f in files:
                open_index(f, mmap=True).verify()
        return self

    def vectors(self) -> np.ndarray:
        """Every document's vector, in the order documents were stored: ``float32[n, dim]``;
        pending ones as given, the others decoded from the segments' float second
        tier (``rerank_spec`` ``"f32"``, ``"f16"`` or ``"bf16"``). A collection that
        keeps compressed codes only cannot give them back: ``ValueError``.
        (Normalised under ``"cosine"``, as stored.)"""
        with self._mutex, self._catalog.reading() as cat:
            self._check_float_tier(cat)
            parts, order = [], []
            for seg, file, _ in cat.segments():
                pks = cat.pks_of_segment(seg)
                if pks.size:
                    parts.append(self._segment(file).reconstruct(pks))
                    order.append(pks)
            pks, vecs = cat.pending()
            parts.append(self._stored_pending(vecs))
            order.append(pks)
        every = np.concatenate(order)
        return np.concatenate(parts)[np.argsort(every, kind="stable")]

    def vectors_of(self, ids) -> np.ndarray:
        """The stored vectors of the documents ``ids``, in that order: ``float32[n, dim]``
        as :meth:`vectors` gives them (a float tier is needed once documents are in
        segments; an id may repeat); an id not stored is a ``KeyError`` naming it.

        Examples
        --------
        >>> import tempfile, numpy as np
        >>> from vecpress import Collection
        >>> col = Collection.create(tempfile.mkdtemp(), spec="hd2,rq4", dim=3, metric="ip")
        >>> col.add(np.eye(3, dtype=np.float32), ids=["a", "b", "c"])
        ['a', 'b', 'c']
        >>> col.vectors_of(["c", "a"]).tolist()
        [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
        """
        if not isinstance(ids, (str, bytes)) and hasattr(ids, "__iter__"):
            ids = list(ids)
        wanted = check_ids(ids if isinstance(ids, (str, bytes)) else list(dict.fromkeys(ids)))
        with self._mutex, self._catalog.reading() as cat:
            found = dict(zip(wanted, cat.get(wanted), strict=True))
            docs = [found[x] for x in ids]
            absent = [x for x in wanted if found[x] is None]
            if absent:
                raise KeyError(f"no document with id {absent[0]!r} ({len(absent)} absent)")
            out = np.empty((len(docs), self.dim), np.float32)
            rows = np.arange(len(docs))
            segs = np.array([-1 if d.seg is None else d.seg for d in docs], np.int64)
            pks = np.array([d.pk for d in docs], np.int64)
            if (segs >= 0).any():
                self._check_float_tier(cat)
                files = {seg: file for seg, file, _ in cat.segments()}
                for seg in np.unique(segs[segs >= 0]).tolist():
                    at = rows[segs == seg]
                    out[at] = self._segment(files[seg]).reconstruct(pks[at])
            at = rows[segs < 0]
            if at.size:
                ppks, vecs = cat.pending()
                out[at] = self._stored_pending(vecs[np.searchsorted(ppks, pks[at])])
        return out

    @staticmethod
    def _check_float_tier(cat) -> None:
        tier = cat.settings.get("rerank_spec")
        if cat.segments() and tier not in FLOAT_TIERS:
            raise ValueError(
                f"this collection keeps its vectors as {cat.settings['spec']!r} codes "
                f"(second tier: {tier!r}): a float tier (rerank_spec='f32', 'f16' or "
                "'bf16') is needed to read them back"
            )

    def _stored_pending(self, vecs: np.ndarray) -> np.ndarray:
        """Pending vectors as the segments would give them back (normalised under cosine)."""
        if self.metric == "cosine" and len(vecs):
            vecs = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
        return vecs.astype(np.float32)

    def ids(self, filter=None) -> list[str]:
        """The ids of the documents ``filter`` matches (every document's without one),
        in the order they were stored.

        Examples
        --------
        >>> import tempfile, numpy as np
        >>> from vecpress import Collection
        >>> col = Collection.create(tempfile.mkdtemp(), spec="hd2,rq4", dim=2, metric="ip")
        >>> col.add(np.eye(2, dtype=np.float32), ids=["a", "b"], metadata=[{"n": 1}, {"n": 2}])
        ['a', 'b']
        >>> col.ids(), col.ids({"n": {"$gt": 1}})
        (['a', 'b'], ['b'])
        """
        with self._mutex, self._catalog.reading() as cat:
            return cat.ids(filter)

    @property
    def settings(self) -> dict:
        """A copy of the collection's settings (``spec``, ``metric``, ``dim``, ``seed``,
        ``rerank_spec``, ``ivf``, ``flush_rows``, ``embed``, and what training added)."""
        with self._mutex:
            self._catalog.refresh()
            return json.loads(json.dumps(self._catalog.settings))

    def describe(self) -> dict:
        """The collection at a glance, read in one snapshot of its catalog.

        Returns
        -------
        dict
            The settings it was created with (:data:`DESCRIBED`), ``trained``
            (whether the codec is trained: the first segment trains it), ``count``
            (documents), ``pending`` (documents whose vectors wait in the catalog for
            a segment, searched exactly), ``segments`` (``{"file", "rows",
            "live"}`` each: its rows, and those not deleted), ``fields`` (metadata
            field: kind) and ``indexed_fields``.

        Examples
        --------
        >>> import tempfile, numpy as np
        >>> col = Collection.create(tempfile.mkdtemp(), spec="hd2,rq4", dim=4)
        >>> _ = col.add(np.eye(4, dtype=np.float32), metadata=[{"n": i} for i in range(4)])
        >>> d = col.describe()
        >>> d["count"], d["pending"], d["segments"], d["fields"]
        (4, 4, [], {'n': 'number'})
        """
        with self._mutex, self._catalog.reading() as cat:
            live = cat.live_counts()
            return {
                **{k: cat.settings.get(k) for k in DESCRIBED},
                "trained": "template" in cat.settings,
                "count": cat.count(),
                "pending": cat.pending_count(),
                "segments": [
                    {"file": f, "rows": r, "live": live.get(seg, 0)} for seg, f, r in cat.segments()
                ],
                "fields": cat.fields(),
                "indexed_fields": cat.indexed_fields(),
            }

    def embed(self, texts) -> np.ndarray:
        """``texts`` (a list of str) as vectors, by the collection's embedder
        (``create(..., embed=)``): ``float32[len(texts), dim]``; a collection without
        one is a ``ValueError``."""
        return self._embed(check_texts(texts))

    def __len__(self) -> int:
        with self._mutex:
            return self._catalog.count()

    def segments(self) -> list[tuple[int, str, int]]:
        """``(seg, file, rows)`` of every segment."""
        with self._mutex:
            return self._catalog.segments()

    def get(self, ids) -> list[dict | None]:
        """``{"id", "text", "metadata"}`` of each of ``ids`` (``None`` where absent)."""
        with self._mutex:
            docs = self._catalog.get(ids)
        return [
            None if d is None else {"id": d.id, "text": d.text, "metadata": json.loads(d.meta)}
            for d in docs
        ]

    def search(
        self, q, k: int, filter=None, rerank=None, nprobe=None, *, shard=None, adapter=None
    ) -> CollectionResult:
        """The ``k`` best documents for each query (module docstring).

        Parameters
        ----------
        q : numpy.ndarray
            ``(nq, dim)`` float queries.
        k : int
            Results per query (at most :data:`MAX_K`); padded past the documents
            stored (or allowed).
        filter : dict, optional
            Metadata filter (:mod:`vecpress.collection.filters`): only the documents
            it matches are searched; the allowlist is applied inside each segment's
            scan (:meth:`vecpress.Index.search`'s ``allow``), so a selective filter
            still returns its ``k`` best matching documents.
        rerank, nprobe
            As :meth:`vecpress.Index.search` takes them, for every segment.
        shard : (int, int), optional
            ``(i, m)``: search part ``i`` of ``m`` only -- the segments whose catalog
            number is ``i`` modulo ``m``, and the pending vectors in part 0. The
            parts' results merged by score and ``keys`` are the whole's
            (:mod:`vecpress.distributed` searches parts on several processes).
        adapter : vecpress.migrate.Adapter, optional
            Queries embedded by another model, mapped into the collection's space
            first (:meth:`vecpress.Index.search`).
        """
        if adapter is not None:
            q = adapted(adapter, q, self.dim)
        q = self._vectors(q, "queries")
        k = check_positive_int(k, "k", high=MAX_K)
        if shard is not None:
            if (not isinstance(shard, tuple) or len(shard) != 2
                    or not all(isinstance(v, int) and not isinstance(v, bool) for v in shard)
                    or not 0 <= shard[0] < shard[1]):  # fmt: skip
                raise ValueError(f"shard must be (i, m) with 0 <= i < m, found {shard!r}")
        with self._mutex:
            self._catalog.refresh()  # another process may have trained the codec
        if rerank is None:
            rerank = self._catalog.settings.get("rerank")  # spec="auto": the advised depth
        self._check_search_args(rerank, nprobe)
        for _ in range(SNAPSHOT_TRIES - 1):
            try:
                return self._search(q, k, filter, rerank, nprobe, shard)
            except FileNotFoundError:  # a compaction removed a segment of this snapshot
                continue
        return self._search(q, k, filter, rerank, nprobe, shard)

    def _search(self, q, k, filter, rerank, nprobe, shard=None) -> CollectionResult:
        nq = q.shape[0]
        with self._mutex, self._catalog.reading() as cat:
            if filter is None:
                allowed = pending_allowed = None
            else:
                allowed, pending_allowed = cat.allowed(filter)
            live = cat.live_counts()
            cand_pk, cand_sc = [], []
            segments = cat.segments()
            live_files = {f for _, f, _ in segments}
            for stale in [f for f in list(self._segments) if f not in live_files]:
                self._segments.pop(stale, None)  # compacted away (maybe by a sharer too)
            for seg, file, rows in segments:
                if shard is not None and seg % shard[1] != shard[0]:
                    continue
                if allowed is None:  # deleted rows are skipped afterwards: look past them
                    allow = None
                    depth = min(rows, k + rows - live.get(seg, 0))
                    if live.get(seg, 0) == 0:
                        continue
                else:  # the allowlist holds live documents only
                    allow = allowed.get(seg)
                    if allow is None:
                        continue
                    depth = min(k, allow.size)
                index = self._segment(file)
                res = index.search(q, depth, _segment_rerank(rerank, depth), nprobe, allow=allow)
                if allow is not None and res.allowed != allow.size:
                    raise FormatError(
                        f"{cat.path}: {allow.size - res.allowed} document(s) name segment "
                        f"{seg} ({file}), which does not hold their vectors (the catalog "
                        "or the segment was modified or damaged)"
                    )
                cand_pk.append(res.ids)
                cand_sc.append(res.scores)
            pks, vecs = cat.pending()
            if allowed is not None:
                self._check_placement(cat, allowed, pending_allowed, segments, pks)
                keep = np.isin(pks, pending_allowed)
                pks, vecs = pks[keep], vecs[keep]
            if shard is not None and shard[0] != 0:  # pending vectors are part 0's
                pks, vecs = pks[:0], vecs[:0]
            if len(pks):
                cand_pk.append(np.broadcast_to(pks, (nq, len(pks))))
                cand_sc.append(self._exact_scores(q, vecs))
            allp = np.concatenate(cand_pk, axis=1) if cand_pk else np.zeros((nq, 0), np.int64)
            alls = np.concatenate(cand_sc, axis=1) if cand_sc else np.zeros((nq, 0), np.float32)
            uniq = np.unique(allp[allp >= 0])
            docs = dict(zip(uniq.tolist(), cat.docs_of_pks(uniq), strict=True))
        return self._results(allp, alls, docs, k)

    @staticmethod
    def _check_placement(cat, allowed, pending_allowed, segments, pending) -> None:
        """Every document a filter lets through lies where the catalog says: in a segment
        that exists, or pending (a damaged segment number would hide it)."""
        lost = set(allowed) - {seg for seg, _, _ in segments}
        missing = np.setdiff1d(pending_allowed, pending).size
        if lost or missing:
            raise FormatError(
                f"{cat.path}: documents name segments that do not exist ({sorted(lost)[:5]}) "
                f"or pending vectors that are not there ({missing}): the catalog was "
                "modified or damaged"
            )

    def _check_search_args(self, rerank, nprobe) -> None:
        """``rerank`` and ``nprobe`` checked against the settings before any segment is
        read (as :meth:`vecpress.Index.search` checks them)."""
        s = self._catalog.settings
        if s["spec"] == AUTO:  # not trained yet: nothing but pending vectors to search
            return
        key = (s["spec"], s["metric"], s["rerank_spec"], s["ivf"])
        if self._shape is None or self._shape[0] != key:
            self._shape = (key, Index(key[0], metric=key[1], rerank_spec=key[2], ivf=key[3]))
        shape = self._shape[1]
        check_rerank(
            rerank, shape.has_second_tier, "create the collection with rerank_spec= (e.g. "
            "rerank_spec='f32') or a two-level spec (e.g. 'lvq4x8')",
        )  # fmt: skip
        if nprobe is not None:
            if not shape.is_ivf:
                raise ValueError("nprobe= applies to IVF collections (ivf=nlist); this one is flat")
            check_positive_int(nprobe, "nprobe")

    def create_index(self, field: str) -> bool:
        """Index the metadata field ``field`` in the catalog, so that filters on it look
        documents up rather than reading every one (a filter works without; the
        index pays once a collection holds some 100,000 documents). Fields are not
        indexed automatically: each index slows every write a little. Returns
        whether it was created (``False``: it existed)."""
        with self._writing():
            return self._catalog.create_index(field)

    def indexed_fields(self) -> list[str]:
        """The metadata fields indexed by :meth:`create_index`."""
        with self._mutex:
            return self._catalog.indexed_fields()

    def fields(self) -> dict[str, str]:
        """The metadata fields stored so far and their kinds, sorted by name: ``"number"``,
        ``"string"`` or ``"bool"`` (the kinds a filter compares) or ``"json"`` (lists and
        objects, stored but never filtered on) (:mod:`vecpress.collection.metadata`).
        A field's first value fixed its kind; a filter may name these fields only."""
        with self._mutex:
            return self._catalog.fields()

    def _results(self, allp, alls, docs, k) -> CollectionResult:
        nq = allp.shape[0]
        out = CollectionResult([], np.full((nq, k), -np.inf, np.float32), [], [],
                               np.full((nq, k), -1, np.int64))  # fmt: skip
        for i in range(nq):
            keep = [j for j in range(allp.shape[1]) if docs.get(int(allp[i, j])) is not None]
            order = sorted(keep, key=lambda j, i=i: (-alls[i, j], int(allp[i, j])))[:k]
            found = [docs[int(allp[i, j])] for j in order]
            out.scores[i, : len(order)] = alls[i, order]
            out.keys[i, : len(order)] = allp[i, order]
            pad = [None] * (k - len(found))
            out.ids.append([d.id for d in found] + pad)
            out.texts.append([d.text for d in found] + pad)
            out.metadata.append([json.loads(d.meta) for d in found] + pad)
        return out

    def _segment(self, file: str) -> Index:
        idx = self._segments.get(file)
        if idx is None:
            idx = self._segments[file] = open_index(self.path / SEGMENTS / file, mmap=True)
        return idx

    def _vectors(self, x, name: str) -> np.ndarray:
        """``x`` checked as :func:`~vecpress._validation.as_vectors` does, and without
        zero rows under the cosine metric (they have no direction)."""
        x = as_vectors(x, name, dim=self.dim, allow_empty=name != "vectors")
        if self.metric == "cosine":
            zero = np.flatnonzero(~np.any(x != 0, axis=1))
            if zero.size:
                raise ValueError(
                    f"{name} has {zero.size} zero row(s), first at row {zero[0]}: a zero vector "
                    "has no direction under the cosine metric"
                )
        return x

    def _exact_scores(self, q: np.ndarray, x: np.ndarray) -> np.ndarray:
        """The metric's exact scores of pending rows (as the index scores them: cosine on
        unit vectors, negated squared distance for l2)."""
        q64, x64 = q.astype(np.float64), x.astype(np.float64)
        if self.metric == "cosine":
            q64 = q64 / np.linalg.norm(q64, axis=1, keepdims=True)
            x64 = x64 / np.linalg.norm(x64, axis=1, keepdims=True)
        s = q64 @ x64.T
        if self.metric == "l2":
            s = 2 * s - (x64 * x64).sum(axis=1)[None, :] - (q64 * q64).sum(axis=1)[:, None]
        return s.astype(np.float32)


def _check_encoded(rows, template: IndexState, n: int) -> None:
    """``rows`` (an :class:`EncodedRows`) as ``n`` rows of ``template``'s codecs, or a
    ``ValueError`` naming what differs."""
    if not isinstance(rows, EncodedRows):
        raise TypeError(f"rows must be EncodedRows (Index.encode), found {type(rows).__name__}")
    first, second = template.tier_sizes
    for name, a, width in (("codes", rows.codes, first), ("rerank_codes", rows.rerank_codes,
                                                          second if second else None)):  # fmt: skip
        if width is None:
            if a is not None:
                raise ValueError(f"{name}: the collection's codec has no second tier")
            continue
        if not isinstance(a, np.ndarray) or a.dtype != np.uint8 or a.shape != (n, width):
            found = f"{a.dtype} {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
            raise ValueError(f"{name} must be uint8 of shape ({n}, {width}), found {found}")
    if template.metric == "l2":
        a = rows.norms
        if (
            not isinstance(a, np.ndarray)
            or a.shape != (n,)
            or not (np.isfinite(a) & (a >= 0)).all()
        ):
            raise ValueError(f"norms must be {n} finite squared norms >= 0 under l2")
    elif rows.norms is not None:
        raise ValueError(f"norms are kept under the l2 metric only, not {template.metric}")
    if template.nlist is not None:
        a = rows.lists
        if (not isinstance(a, np.ndarray) or a.shape != (n,) or a.dtype.kind not in "iu"
                or (n and (a.min() < 0 or a.max() >= template.nlist))):  # fmt: skip
            raise ValueError(f"lists must be {n} integer IVF lists in [0, {template.nlist})")
    elif rows.lists is not None:
        raise ValueError("lists are given, but the collection is flat (no IVF)")


def _segment_state(template: IndexState, rows, pks: np.ndarray) -> IndexState:
    """The segment holding encoded ``rows`` under ids ``pks``: the state :meth:`Index.add`
    of the same vectors to an empty copy of ``template`` makes (IVF rows in list order,
    stably)."""
    n = pks.size
    codes, rcodes, norms = rows.codes, rows.rerank_codes, rows.norms
    ids = np.asarray(pks, np.int64)
    offsets = np.array([0, n], np.int64)
    if template.nlist is not None:
        order, offsets = list_order(rows.lists.astype(np.int64), template.nlist)
        ids, codes = ids[order], codes[order]
        rcodes = None if rcodes is None else rcodes[order]
        norms = None if norms is None else norms[order]
    return replace(
        template, list_offsets=offsets, ids=ids,
        norms=None if norms is None else norms.astype(np.float32),
        codes=np.ascontiguousarray(codes),
        rerank_codes=None if rcodes is None else np.ascontiguousarray(rcodes),
        next_id=int(ids.max()) + 1 if n else template.next_id, pending_check=None,
    )  # fmt: skip
