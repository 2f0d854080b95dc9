"""``vecpress collection create | build | add | search | delete | compact | info | index``.

The commands of a :class:`vecpress.Collection`: documents (string ids, texts,
metadata) over compressed vectors, in a folder
(:mod:`vecpress.collection.collection`). Each command prints one JSON object on
stdout (``create`` and ``info`` indented); progress bars go to stderr, on a
terminal only; an error is one line on stderr and exit status 2, never a
traceback.

Files
-----
VECTORS (``add``) and QUERIES (``search``) are float vectors as ``vecpress
build`` reads them (:func:`vecpress.files.readers.read_vectors`): ``.npy``,
``.fvecs``, ``.fbin`` or ``.parquet`` (``--column NAME`` picks the Parquet column
of vectors, by default the only list-of-floats column), of the collection's
dimension.

``add --docs FILE`` gives the documents of the vectors: one row per vector, in
the vectors' order, as many rows as vectors.

* ``.jsonl``: one JSON object per line, with the keys ``id`` (a string),
  ``text`` (a string or null) and ``metadata`` (an object of field: value, or
  null), each optional and no other; ``{}`` is a document with none of them.
  Example line: ``{"id": "doc1", "text": "a cat", "metadata": {"year": 2024}}``.
* ``.parquet``: a column ``id`` (strings), a column ``text`` (strings, null for
  none), and every other column a metadata field (a null leaves the field out of
  that row's metadata). When FILE is the VECTORS file itself, its vectors column
  (``--column``, or its only list-of-floats column) is left out, and so are the
  index columns pandas writes (``__index_level_0__``).

Either every row has an id or none has (then each document gets a random hex
id); ids are distinct. Without ``--docs`` the documents get random ids, no text
and no metadata. Metadata values are numbers, strings and booleans (which
filters compare) or lists and objects (stored, never filtered on); a field's
first value fixes its kind (:mod:`vecpress.collection.metadata`).

``delete --ids-file FILE``: one id per line (UTF-8), empty lines skipped.

``search --filter JSON``: a filter of :mod:`vecpress.collection.filters`, as
JSON text, e.g. ``'{"year": {"$gte": 2020}, "lang": {"$in": ["en", "de"]}}'``.

Checks
------
Before anything is stored, ``add`` reads the vectors' header (the dimension),
scans their rows (NaN, Inf, zero rows under cosine) and reads the whole docs
file: its row count, each row's keys and types, distinct ids, ids already in the
collection (unless ``--upsert``, which replaces them) and each metadata value's
kind against its field's. It then adds the documents in batches of ``--batch``
rows, each one transaction (:meth:`vecpress.Collection.add`): a batch that still
fails (another writer got there first) stores nothing, and the error says what
the collection holds.

Examples
--------
>>> import json, tempfile
>>> import numpy as np
>>> from vecpress.cli import main
>>> d = tempfile.mkdtemp()
>>> np.save(f"{d}/x.npy", np.eye(4, dtype=np.float32))
>>> np.save(f"{d}/q.npy", np.eye(4, dtype=np.float32)[1:2])
>>> with open(f"{d}/docs.jsonl", "w") as f:
...     for i in range(4):
...         print(json.dumps({"id": f"doc{i}", "metadata": {"n": i}}), file=f)
>>> main(["collection", "create", f"{d}/col", "--spec", "f16", "--dim", "4"])
{
  "path": ...
0
>>> main(["collection", "add", f"{d}/col", f"{d}/x.npy", "--docs", f"{d}/docs.jsonl"])
{"added": 4, "count": 4}
0
>>> main(["collection", "search", f"{d}/col", f"{d}/q.npy", "-k", "1"])
{"results": [[{"id": "doc1", "score": 1.0, "text": null, "metadata": {"n": 1}}]]}
0
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Iterator
from itertools import islice

import numpy as np

from ..collection.collection import DESCRIBED
from ..files.readers import read_vectors
from .args import SEARCH_CHUNK, _check_rows, _progress

#: documents added per transaction by default (``add --batch``)
ADD_BATCH = 10_000
#: the keys of a line of a ``.jsonl`` docs file
DOC_KEYS = ("id", "text", "metadata")
#: the formats of a docs file
DOCS_FORMATS = (".jsonl", ".parquet")
#: the settings ``info`` and ``create`` print, in this order
SETTINGS = DESCRIBED
#: ids looked up per query when checking which are stored already
_LOOKUP = 10_000
#: the index columns pandas writes into Parquet files
_PANDAS_INDEX = re.compile(r"__index_level_\d+__")


def _print(obj: dict, indent: int | None = None) -> None:
    """Print ``obj`` as one JSON object on stdout."""
    print(json.dumps(obj, indent=indent, allow_nan=False))


def _open(path: str):
    """The collection in folder ``path``, or a clear error if there is none.

    Parameters
    ----------
    path : str
        The collection's folder.

    Returns
    -------
    vecpress.Collection
        Open; close it (it is a context manager).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist, or holds no catalog.
    NotADirectoryError
        ``path`` is a file.
    """
    from ..collection import Collection
    from ..collection.collection import CATALOG

    if not os.path.exists(path):
        raise FileNotFoundError(
            f"collection {path} does not exist (vecpress collection create makes one)"
        )
    if not os.path.isdir(path):
        raise NotADirectoryError(f"collection {path} is a file, not a collection folder")
    if not os.path.isfile(os.path.join(path, CATALOG)):
        raise FileNotFoundError(f"{path} is not a collection: it holds no {CATALOG}")
    return Collection.open(path)


def _describe(col) -> dict:
    """What ``info`` prints of a collection: its ``path`` and
    :meth:`vecpress.Collection.describe`."""
    return {"path": str(col.path), **col.describe()}


def _settings(col) -> dict:
    """The settings of a collection (:data:`SETTINGS`), as it was created with them."""
    settings = col.settings
    return {k: settings.get(k) for k in SETTINGS}


# -- create ------------------------------------------------------------------------------


def _check_create_args(args: argparse.Namespace) -> None:
    """``collection create``'s options, in the words of its flags, before anything is
    written.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed options.

    Raises
    ------
    ValueError
        A bad value, named with its flag.
    FileExistsError
        PATH is a file or a folder that is not empty.
    """
    from ..codecs.codec import Codec

    for flag, value in (("--dim", args.dim), ("--flush-rows", args.flush_rows)):
        if value < 1:
            raise ValueError(f"{flag} must be >= 1, found {value}")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, found {args.seed}")
    if args.ivf is not None and args.ivf < 1:
        raise ValueError(f"--ivf must be >= 1 (lists), found {args.ivf}")
    if args.ivf is not None and args.ivf > args.flush_rows:
        raise ValueError(
            f"--ivf {args.ivf}: more lists than the --flush-rows {args.flush_rows} vectors the "
            "codec is trained on; give fewer lists or a larger --flush-rows"
        )
    for flag, spec in (("--spec", args.spec), ("--rerank-spec", args.rerank_spec)):
        if spec is None:
            continue
        try:
            Codec.from_spec(spec)
            Codec.code_size_of(spec, args.dim)
        except (ValueError, TypeError) as e:
            message = str(e).removeprefix(f"{spec}: ")  # said once, after the flag
            raise ValueError(f"{flag} {spec}: {message}") from None
    if args.rerank_spec is not None and Codec.from_spec(args.spec).is_two_level:
        raise ValueError(
            f"--rerank-spec cannot be added to the two-level --spec {args.spec}: its second "
            "level is the re-ranking tier already (search it with --rerank R)"
        )
    if "leanvec-ood" in args.spec:
        raise ValueError(
            f"--spec {args.spec}: a collection trains its codec on the vectors alone, and "
            "leanvec-ood learns from queries too; use leanvec<d'> or pca<d'>"
        )
    path = args.path
    if os.path.isfile(path):
        raise FileExistsError(f"{path} is a file; a collection is created in a new or empty folder")
    if os.path.isdir(path) and os.listdir(path):
        from ..collection.collection import CATALOG

        if os.path.isfile(os.path.join(path, CATALOG)):
            raise FileExistsError(f"collection {path} exists already")
        raise FileExistsError(
            f"{path} is a folder that is not empty; a collection is created in a new or empty "
            "folder"
        )


def _build(args: argparse.Namespace) -> int:
    """``vecpress collection build PATH VECTORS... --spec S ...``: a new collection from
    inputs larger than memory (:func:`vecpress.build_collection`); print
    :func:`_describe`."""
    from ..collection.bulk import build_collection
    from ..files.sources import VectorSource

    if not args.chunk_mb > 0:
        raise ValueError(f"--chunk-mb must be > 0, found {args.chunk_mb}")
    if os.path.exists(args.path):
        raise FileExistsError(f"{args.path} exists; collection build makes a new folder")
    src = VectorSource.open(list(args.vectors), column=args.column)
    args.dim = src.d
    _check_create_args(args)
    metadata = [c for c in (args.metadata_columns or "").split(",") if c.strip()]
    with _progress(args, total=src.n, desc="building", unit="vec") as bar:
        col = build_collection(
            src, args.path, spec=args.spec, metric=args.metric, seed=args.seed,
            rerank_spec=args.rerank_spec, ivf=args.ivf, flush_rows=args.flush_rows,
            id_column=args.id_column, text_column=args.text_column,
            metadata_columns=[c.strip() for c in metadata],
            chunk_bytes=max(1, int(args.chunk_mb * 2**20)), progress=bar.update,
        )  # fmt: skip
    with col:
        _print(_describe(col), indent=2)
    return 0


def _create(args: argparse.Namespace) -> int:
    """``vecpress collection create PATH --spec S --dim D ...``: print :func:`_describe`."""
    from ..collection import Collection

    _check_create_args(args)
    col = Collection.create(
        args.path,
        spec=args.spec,
        dim=args.dim,
        metric=args.metric,
        seed=args.seed,
        rerank_spec=args.rerank_spec,
        ivf=args.ivf,
        flush_rows=args.flush_rows,
    )
    with col:
        _print(_describe(col), indent=2)
    return 0


# -- add ---------------------------------------------------------------------------------


class _Docs:
    """A ``--docs`` file (module docstring): its rows as ``(id, text, metadata)``.

    Parameters
    ----------
    path : str
        The file, ``.jsonl`` or ``.parquet``.
    vectors : str
        The VECTORS file of the command: when it is ``path`` too, its vectors column
        is not metadata.
    column : str, optional
        ``--column``: the vectors column of the VECTORS file.

    Raises
    ------
    ValueError
        An unsupported extension; for Parquet, a file that cannot be read or a
        column that cannot be an id, a text or a metadata field.
    FileNotFoundError
        The file does not exist.
    """

    def __init__(self, path: str, vectors: str, column: str | None) -> None:
        ext = os.path.splitext(path)[1].lower()
        if ext not in DOCS_FORMATS:
            raise ValueError(
                f"--docs {path}: unsupported extension {ext or '(none)'!r}; expected one of "
                f"{', '.join(DOCS_FORMATS)}"
            )
        if os.path.isdir(path):
            raise IsADirectoryError(f"--docs {path} is a directory, not a file of documents")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--docs {path} does not exist")
        self.path = path
        self.parquet = ext == ".parquet"
        if self.parquet:
            self.columns = self._parquet_columns(vectors, column)

    def where(self, i: int) -> str:
        """Row ``i`` (from 0) in an error message: a line (from 1) of a ``.jsonl`` file."""
        if self.parquet:
            return f"--docs {self.path} row {i}"
        return f"--docs {self.path} line {i + 1}"

    def rows(self) -> Iterator[tuple]:
        """``(id, text, metadata)`` of each row, in order; ``id`` is ``None`` where the row
        has none. The shape of each row is checked (:meth:`_jsonl_rows`); its values are
        checked by :func:`_check_docs`."""
        return self._parquet_rows() if self.parquet else self._jsonl_rows()

    def _jsonl_rows(self) -> Iterator[tuple]:
        try:
            with open(self.path, encoding="utf-8") as f:
                for i, line in enumerate(f):
                    yield self._jsonl_row(i, line)
        except UnicodeDecodeError as e:
            raise ValueError(f"--docs {self.path}: not UTF-8 text ({e.reason})") from None

    def _jsonl_row(self, i: int, line: str) -> tuple:
        where = self.where(i)
        if not line.strip():
            raise ValueError(
                f"{where} is empty: every line is the document of one vector, in the vectors' "
                "order ({} for one without id, text or metadata)"
            )
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON ({e.msg}, column {e.colno})") from None
        if not isinstance(row, dict):
            raise ValueError(
                f"{where}: expected a JSON object with the keys id, text and metadata, found "
                f"{_json_kind(row)}"
            )
        extra = sorted(set(row) - set(DOC_KEYS))
        if extra:
            raise ValueError(
                f"{where}: unknown key {extra[0]!r}; a document has the keys id, text and "
                "metadata (put other fields in metadata)"
            )
        if "id" in row and not isinstance(row["id"], str):
            raise ValueError(f"{where}: id must be a string, found {_json_kind(row['id'])}")
        return row.get("id"), row.get("text"), row.get("metadata")

    def _parquet_columns(self, vectors: str, column: str | None) -> list[str]:
        """The columns read: ``id``, ``text`` and the metadata fields, their types
        checked."""
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as e:
            raise ImportError(
                f"reading the Parquet --docs file {self.path} needs pyarrow: pip install "
                '"vecpress[parquet]"'
            ) from e
        from ..collection.filters import check_field_name

        where = f"--docs {self.path}"
        try:
            pf = pq.ParquetFile(self.path)
        except (pa.ArrowException, OSError) as e:
            raise ValueError(f"{where}: cannot read it as Parquet: {e}") from e
        schema = pf.schema_arrow
        self.n = pf.metadata.num_rows

        def is_vector(t) -> bool:
            lists = pa.types.is_list(t) or pa.types.is_large_list(t)
            lists = lists or pa.types.is_fixed_size_list(t)
            return lists and pa.types.is_floating(t.value_type)

        same = os.path.exists(vectors) and os.path.samefile(self.path, vectors)
        out = []
        for field in schema:
            name, t = field.name, field.type
            if _PANDAS_INDEX.fullmatch(name):
                continue
            if same and (name == column if column is not None else is_vector(t)):
                continue  # the vectors
            if pa.types.is_dictionary(t):
                t = t.value_type
            strings = pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)
            if name in ("id", "text"):
                if not strings:
                    raise ValueError(f"{where}: column {name!r} must hold strings, found {t}")
            else:
                try:
                    check_field_name(name)
                except (ValueError, TypeError) as e:
                    raise ValueError(
                        f"{where}: column {name!r} cannot be a metadata field: {e}"
                    ) from None
                if not (strings or _is_metadata_type(pa, t)):
                    raise ValueError(
                        f"{where}: column {name!r} has type {t}, which is no metadata value "
                        "(numbers, strings, booleans, lists, structs); convert it, or write "
                        "the file without it"
                    )
            out.append(name)
        return out

    def _parquet_rows(self) -> Iterator[tuple]:
        import pyarrow.parquet as pq

        if not self.columns:
            yield from ((None, None, None) for _ in range(self.n))
            return
        pf = pq.ParquetFile(self.path)
        for batch in pf.iter_batches(batch_size=ADD_BATCH, columns=self.columns):
            for row in batch.to_pylist():
                meta = {k: v for k, v in row.items() if k not in ("id", "text") and v is not None}
                yield row.get("id"), row.get("text"), meta


def _is_metadata_type(pa, t) -> bool:
    """Whether the Arrow type ``t`` holds metadata values (numbers, booleans, lists,
    structs; strings are checked by the caller)."""
    return (
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_boolean(t)
        or pa.types.is_list(t)
        or pa.types.is_large_list(t)
        or pa.types.is_fixed_size_list(t)
        or pa.types.is_struct(t)
    )


def _json_kind(value: object) -> str:
    """The JSON name of a parsed JSON value, for error messages."""
    kinds = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return kinds.get(type(value), "a number")


def _check_docs(col, docs: _Docs, upsert: bool) -> tuple[int, list[str] | None]:
    """Read the whole docs file once and check every row, as the collection will.

    Parameters
    ----------
    col : vecpress.Collection
        The collection the documents go to (its metadata fields and stored ids).
    docs : _Docs
        The file.
    upsert : bool
        Whether ids already stored are replaced (else they are an error).

    Returns
    -------
    tuple
        The number of rows, and the ids (``None`` when the rows have none).

    Raises
    ------
    ValueError, TypeError
        The first problem, naming its row: an id given on some rows only, repeated,
        empty or already stored (without ``upsert``), a text that is not a string, a
        metadata that is not an object, or a value of another kind than its field's.
    """
    from ..collection.catalog import check_ids
    from ..collection.metadata import metadata_kinds

    kinds = col.fields()
    ids: list[str] = []
    first: dict[str, int] = {}
    n = 0
    for i, (id_, text, meta) in enumerate(docs.rows()):
        n = i + 1
        where = docs.where(i)
        if i > 0 and (id_ is not None) != bool(ids):
            has, other = ("has an id", "has none") if not ids else ("has no id", "has one")
            raise ValueError(
                f"{where} {has}, and {docs.where(0)} {other}: give every document an id, or "
                "none (random ids)"
            )
        if id_ is not None:
            try:
                check_ids([id_])
            except (ValueError, TypeError) as e:
                raise ValueError(f"{where}: {str(e).removesuffix(' at 0')}") from None
            if id_ in first:
                raise ValueError(
                    f"{where}: id {id_!r} again, first at {docs.where(first[id_])}; ids must "
                    "be distinct"
                )
            first[id_] = i
            ids.append(id_)
        if text is not None and not isinstance(text, str):
            raise ValueError(f"{where}: text must be a string or null, found {_json_kind(text)}")
        if meta is not None and not isinstance(meta, dict):
            raise ValueError(
                f"{where}: metadata must be an object of field: value (or null), found "
                f"{_json_kind(meta)}"
            )
        try:
            kinds.update(metadata_kinds([meta], kinds))
        except (ValueError, TypeError) as e:
            message = str(e).replace("metadata of document 0", "metadata")
            raise type(e)(f"{where}: {message}") from None
    if ids and not upsert:
        _check_not_stored(col, docs, ids, first)
    return n, (ids or None)


def _check_not_stored(col, docs: _Docs, ids: list[str], first: dict[str, int]) -> None:
    """A ``ValueError`` naming the first of ``ids`` already in the collection, if any."""
    taken = []
    for s in range(0, len(ids), _LOOKUP):
        part = ids[s : s + _LOOKUP]
        taken += [x for x, doc in zip(part, col.get(part), strict=True) if doc is not None]
    if taken:
        raise ValueError(
            f"{docs.where(first[taken[0]])}: document id {taken[0]!r} is already in the "
            f"collection ({len(taken):,} of the file's ids are); --upsert replaces documents"
        )


def _add(args: argparse.Namespace) -> int:
    """``vecpress collection add PATH VECTORS [--docs FILE] ...``: print ``{"added",
    "count"}``."""
    if args.batch < 1:
        raise ValueError(f"--batch must be >= 1, found {args.batch}")
    docs = None if args.docs is None else _Docs(args.docs, args.vectors, args.column)
    with _open(args.path) as col:
        x = read_vectors(args.vectors, "vectors", column=args.column)
        n, d = x.shape
        if n == 0:
            raise ValueError(f"vectors file {args.vectors} holds no vectors (shape {x.shape})")
        if d != col.dim:
            raise ValueError(
                f"vectors file {args.vectors} has vectors of {d} dimensions, the collection "
                f"{args.path} has dim {col.dim}"
            )
        ids = None
        if docs is not None:
            rows, ids = _check_docs(col, docs, args.upsert)
            if rows != n:
                raise ValueError(
                    f"--docs {args.docs} has {rows:,} rows and the vectors file {args.vectors} "
                    f"{n:,} vectors: give one row per vector, in the vectors' order"
                )
        if args.upsert and ids is None:
            raise ValueError("--upsert replaces documents by id: give every row of --docs an id")
        _check_rows(x, "vectors", col.metric)
        store = col.upsert if args.upsert else col.add
        rows_left = None if docs is None else docs.rows()
        added = 0
        with _progress(args, total=n, desc="adding", unit="vec") as bar:
            for s in range(0, n, args.batch):
                e = min(n, s + args.batch)
                texts = metadata = None
                if rows_left is not None:
                    part = list(islice(rows_left, e - s))
                    texts, metadata = [r[1] for r in part], [r[2] for r in part]
                try:
                    store(
                        np.asarray(x[s:e], np.float32),
                        ids=None if ids is None else ids[s:e],
                        texts=texts,
                        metadata=metadata,
                    )
                except (ValueError, TypeError) as err:
                    kind = TypeError if isinstance(err, TypeError) else ValueError
                    raise kind(
                        f"adding rows {s:,} to {e - 1:,}: {err}; the collection now holds "
                        f"{len(col):,} documents ({added:,} added by this command before)"
                    ) from None
                added += e - s
                bar.update(e - s)
        _print({"added": added, "count": len(col)})
    return 0


# -- search ------------------------------------------------------------------------------


def _parse_filter(text: str | None):
    """``--filter``: JSON text of a filter, parsed (its fields are checked later)."""
    if text is None:
        return None
    try:
        where = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"--filter {text}: not valid JSON ({e.msg}, column {e.colno}); expected an object "
            """such as '{"year": {"$gte": 2020}}'"""
        ) from None
    if not isinstance(where, dict):
        raise ValueError(
            f"--filter {text}: expected a JSON object such as "
            f"""'{{"year": {{"$gte": 2020}}}}', found {_json_kind(where)}"""
        )
    return where


def _search(args: argparse.Namespace) -> int:
    """``vecpress collection search PATH QUERIES -k K ...``: print ``{"results": [...]}``,
    per query its hits ``{"id", "score", "text", "metadata"}``, best first."""
    from ..collection.collection import MAX_K
    from ..collection.filters import compile_filter
    from ..search.index import Index

    if not 1 <= args.k <= MAX_K:
        raise ValueError(f"-k must be in [1, {MAX_K}], found {args.k}")
    where = _parse_filter(args.filter)
    with _open(args.path) as col:
        s = _settings(col)
        shape = Index(s["spec"], metric=s["metric"], rerank_spec=s["rerank_spec"], ivf=s["ivf"])
        if args.rerank is not None:
            if not shape.has_second_tier:
                raise ValueError(
                    f"--rerank needs a second tier, and the collection {args.path} has none: "
                    "create it with --rerank-spec (e.g. --rerank-spec f32) or a two-level "
                    "--spec such as lvq4x8"
                )
            if args.rerank != "auto" and args.rerank < args.k:
                raise ValueError(
                    f"--rerank must be >= -k (it is the candidates kept), found {args.rerank}"
                )
        if args.nprobe is not None:
            if not shape.is_ivf:
                raise ValueError(
                    f"--nprobe applies to IVF collections (created with --ivf N); {args.path} "
                    "is flat"
                )
            if args.nprobe < 1:
                raise ValueError(f"--nprobe must be >= 1, found {args.nprobe}")
        if where is not None:
            try:
                compile_filter(where, col.fields())
            except (ValueError, TypeError) as e:
                raise ValueError(f"--filter {args.filter}: {e}") from None
        q = read_vectors(args.queries, "queries", column=args.column)
        if q.shape[1] != col.dim:
            raise ValueError(
                f"queries file {args.queries} has vectors of {q.shape[1]} dimensions, the "
                f"collection {args.path} has dim {col.dim}"
            )
        _check_rows(q, "queries", col.metric)
        results: list[list[dict]] = []
        nq = q.shape[0]
        with _progress(args, total=nq, desc="searching", unit="query") as bar:
            for start in range(0, nq, SEARCH_CHUNK):
                res = col.search(
                    np.asarray(q[start : start + SEARCH_CHUNK], np.float32),
                    args.k,
                    filter=where,
                    rerank=args.rerank,
                    nprobe=args.nprobe,
                )
                results += _hits(res)
                bar.update(len(res.ids))
    _print({"results": results})
    return 0


def _hits(res) -> list[list[dict]]:
    """Per query of a :class:`~vecpress.CollectionResult`, its documents as dicts
    ``{"id", "score", "text", "metadata"}``, the padding past the documents left out."""
    return [
        [
            {"id": i, "score": float(s), "text": t, "metadata": m}
            for i, s, t, m in zip(ids, scores, texts, metas, strict=True)
            if i is not None
        ]
        for ids, scores, texts, metas in zip(
            res.ids, res.scores, res.texts, res.metadata, strict=True
        )
    ]


# -- delete, compact, info, index --------------------------------------------------------


def _ids_of_file(path: str) -> list[str]:
    """``--ids-file``: one id per line (UTF-8), empty lines skipped."""
    if os.path.isdir(path):
        raise IsADirectoryError(f"--ids-file {path} is a directory, not a file of ids")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--ids-file {path} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            return [line for line in f.read().splitlines() if line]
    except UnicodeDecodeError as e:
        raise ValueError(f"--ids-file {path}: not UTF-8 text ({e.reason})") from None


def _delete(args: argparse.Namespace) -> int:
    """``vecpress collection delete PATH ID ... [--ids-file F]``: print ``{"deleted",
    "count"}``."""
    from ..collection.catalog import check_ids

    ids = list(args.ids) + ([] if args.ids_file is None else _ids_of_file(args.ids_file))
    if not ids:
        raise ValueError("no ids to delete: give them as arguments (ID ...) or with --ids-file")
    ids = check_ids(dict.fromkeys(ids))  # a repeated id is deleted once
    with _open(args.path) as col:
        deleted = col.delete(ids)
        _print({"deleted": deleted, "count": len(col)})
    return 0


def _compact(args: argparse.Namespace) -> int:
    """``vecpress collection compact PATH [--min-rows N]``: print
    :meth:`vecpress.Collection.compact`'s ``{"merged", "dropped", "segments"}``."""
    if args.min_rows is not None and args.min_rows < 1:
        raise ValueError(f"--min-rows must be >= 1, found {args.min_rows}")
    with _open(args.path) as col:
        _print(col.compact(args.min_rows))
    return 0


def _info(args: argparse.Namespace) -> int:
    """``vecpress collection info PATH``: print :func:`_describe`."""
    with _open(args.path) as col:
        _print(_describe(col), indent=2)
    return 0


def _index(args: argparse.Namespace) -> int:
    """``vecpress collection index PATH FIELD``: print ``{"field", "created"}``."""
    with _open(args.path) as col:
        fields = col.fields()
        if args.field not in fields:
            known = ", ".join(fields) or "none yet"
            raise ValueError(f"no metadata field {args.field!r} to index; known fields: {known}")
        _print({"field": args.field, "created": col.create_index(args.field)})
    return 0
