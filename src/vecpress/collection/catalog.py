"""A collection's catalog: one SQLite file naming its segments, documents and fields.

The catalog is the source of truth of a collection (the segment files hold
only vectors, under int64 ids): a document is stored when one transaction has
named it, with its vector either in a segment already written or, for small
batches, in the ``pending`` table until a segment takes them
(:meth:`Catalog.add_documents`, :meth:`Catalog.seal`). Tables (schema
:data:`FORMAT`):

* ``settings(key, value)`` -- JSON values: ``format`` and the collection's
  settings (spec, metric, dimension ...), written once by :meth:`Catalog.create`;
* ``segments(seg, file, rows)`` -- the segment files by name (relative to the
  collection's folder);
* ``docs(pk, id, seg, text, meta, ccrc, crc)`` -- one row a document: ``pk``
  the int64 id of its vector in segment ``seg`` (``NULL`` while the vector is
  pending) (``AUTOINCREMENT``: never reused,
  so a deleted document's vector can never stand for a later one), ``id`` its
  unique string id, ``meta`` its metadata as JSON text
  (:func:`vecpress.collection.metadata.dumps`); ``ccrc`` the CRC-32 of its
  content (id, text, meta: :func:`content_crc`) and ``crc`` that of its
  placement (pk and seg, seeded with ``ccrc``: :func:`place_crc`), both checked
  whenever a row is read: SQLite checks its pages' structure but not their
  contents, so a flipped bit in a text, or in a segment number, would otherwise
  be read back as data. Moving documents to another segment (:meth:`Catalog.seal`,
  :meth:`Catalog.replace_segments`) checks and rewrites ``crc`` alone, in SQL,
  without reading the texts;
* ``pending(pk, vec, crc)`` -- the float32 vectors of documents no segment holds
  yet, with the CRC-32 of their bytes (seeded with the pk)
  (deleted with their document);
* ``fields(name, kind)`` -- the metadata fields and their kinds
  (:func:`vecpress.collection.metadata.metadata_kinds`).

The database runs in WAL mode with ``synchronous=FULL``: a committed
transaction survives a crash and readers see a consistent snapshot while one
writer commits. Any SQLite error reading the file (not a database, malformed
pages) and any CRC mismatch is a :class:`~vecpress.FormatError` naming the file.
A damaged page of an *index* (the id lookup) can still hide a document without
an error; :meth:`Catalog.verify` checks everything (SQLite's
``integrity_check``, which compares every index with its table, and every row's
CRC), in time proportional to the catalog.

Examples
--------
>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "catalog.sqlite"
>>> cat = Catalog.create(path, {"spec": "hd2,rq4", "dim": 3})
>>> pks = cat.next_pks(2)
>>> vecs = np.ones((2, 3), np.float32)
>>> cat.add_documents(pks, ["a", "b"], ["x", None], ['{"n":1}', "{}"], {"n": "number"},
...                   vectors=vecs)  # how many stored documents it replaced
0
>>> cat.get(["b", "z", "a"])[0].pk == int(pks[1]), cat.get(["z"]), cat.count()
(True, [None], 2)
>>> cat.pending()[0].tolist(), cat.seal("seg-1.vpi", pks), cat.pending()[0].tolist()
([1, 2], None, [])
>>> cat.segments(), cat.live_counts()
([(1, 'seg-1.vpi', 2)], {1: 2})
>>> cat.close(); Catalog.open(path).settings["spec"]
'hd2,rq4'
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import struct
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import FormatError
from .filters import KINDS, check_field_name, compile_filter, field_expr

#: the catalog's schema version (``settings.format``)
FORMAT = 2
#: the longest document id, in characters
MAX_ID_LENGTH = 1024
#: filters whose allowlists a catalog keeps (:meth:`Catalog.allowed`)
ALLOWED_CACHE_FILTERS = 8
#: the largest allowlist kept, in documents
ALLOWED_CACHE_ROWS = 1_000_000
#: ids per SQL statement (SQLite binds at most 32,766 parameters)
_CHUNK = 10_000

_SCHEMA = """
CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE segments (
    seg INTEGER PRIMARY KEY AUTOINCREMENT,
    file TEXT NOT NULL UNIQUE,
    rows INTEGER NOT NULL CHECK (rows >= 0),
    live INTEGER NOT NULL CHECK (live >= 0 AND live <= rows)
);
CREATE TABLE docs (
    pk INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    seg INTEGER REFERENCES segments(seg),
    text TEXT,
    meta TEXT NOT NULL,
    ccrc INTEGER NOT NULL,
    crc INTEGER NOT NULL
);
CREATE INDEX docs_by_seg ON docs(seg);
CREATE TABLE pending (
    pk INTEGER PRIMARY KEY REFERENCES docs(pk) ON DELETE CASCADE,
    vec BLOB NOT NULL,
    crc INTEGER NOT NULL
);
CREATE TABLE fields (name TEXT PRIMARY KEY, kind TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Doc:
    """A document's catalog row: string id, vector id ``pk`` in segment ``seg`` (``None``
    while pending), text (or ``None``) and metadata JSON text."""

    id: str
    pk: int
    seg: int | None
    text: str | None
    meta: str


def content_crc(id: str, text: str | None, meta: str) -> int:
    """CRC-32 of a document's content: its ``ccrc``. The id, the text (``None``: length
    ``-1``) and the metadata JSON, each after its length, as UTF-8 (lone surrogates
    passed through), so no two contents encode alike."""
    size = -1 if text is None else len(text)
    blob = f"{len(id)}:{id}{size}:{text or ''}{meta}"
    return zlib.crc32(blob.encode("utf-8", "surrogatepass"))


def place_crc(pk: int, seg: int | None, ccrc: int) -> int:
    """CRC-32 of a document's placement (``pk``, ``seg``; ``-1`` while pending) seeded with
    its content CRC: its ``crc``."""
    return zlib.crc32(_PLACE.pack(pk, -1 if seg is None else seg), ccrc)


def row_crc(pk: int, id: str, seg: int | None, text: str | None, meta: str) -> int:
    """The ``crc`` of a ``docs`` row of these values (:func:`place_crc` of
    :func:`content_crc`).

    Examples
    --------
    >>> row_crc(1, "a", 1, None, "{}") == row_crc(1, "a", 1, None, "{}")
    True
    >>> row_crc(1, "a", 1, None, "{}") == row_crc(1, "b", 1, None, "{}")
    False
    """
    return place_crc(pk, seg, content_crc(id, text, meta))


_PLACE = struct.Struct("<qq")
#: the columns of ``docs``, in order
_COLUMNS = "pk, id, seg, text, meta, ccrc, crc"


def _chunks(keys: list):
    """``(part, marks)`` for each run of at most ``_CHUNK`` keys: the keys and the
    ``?, ?, ...`` an ``IN (...)`` of them binds."""
    for s in range(0, len(keys), _CHUNK):
        part = keys[s : s + _CHUNK]
        yield part, ", ".join("?" * len(part))


def unique_ids(ids: object) -> list[str]:
    """:func:`check_ids` of ``ids`` with repeated ids kept once (where repeating one is
    harmless: deleting).

    Examples
    --------
    >>> unique_ids(["a", "b", "a"])
    ['a', 'b']
    """
    if isinstance(ids, (str, bytes)) or not hasattr(ids, "__iter__"):
        raise TypeError(f"ids must be a list of strings, found {type(ids).__name__}")
    seen: set[str] = set()
    out = []
    for x in ids:
        if isinstance(x, str):
            if x in seen:
                continue
            seen.add(x)
        out.append(x)
    return check_ids(out)


def check_ids(ids: object) -> list[str]:
    """Document ids as a list of distinct non-empty strings, or a clear exception.

    Examples
    --------
    >>> check_ids(["a", "b"])
    ['a', 'b']
    >>> check_ids(["a", "a"])
    Traceback (most recent call last):
    ...
    ValueError: duplicate document id 'a' at positions 0 and 1
    """
    if isinstance(ids, (str, bytes)) or not hasattr(ids, "__iter__"):
        raise TypeError(f"ids must be a list of strings, found {type(ids).__name__}")
    out = list(ids)
    seen: dict[str, int] = {}
    for i, x in enumerate(out):
        if not isinstance(x, str):
            raise TypeError(f"document ids must be strings, found {type(x).__name__} at {i}")
        if not x or len(x) > MAX_ID_LENGTH:
            raise ValueError(
                f"document ids must have 1 to {MAX_ID_LENGTH} characters, found {len(x)} at {i}"
            )
        if x in seen:
            raise ValueError(f"duplicate document id {x!r} at positions {seen[x]} and {i}")
        seen[x] = i
    return out


class _Refused(Exception):
    """An insert of new documents broke a constraint (an id already stored): raised out of
    the transaction, which rolls it back, to :meth:`Catalog.add_documents`."""


class Catalog:
    """The SQLite catalog of a collection (module docstring); one connection, used by
    one thread at a time."""

    def __init__(self, path: Path, con: sqlite3.Connection) -> None:
        self.path = Path(path)
        self._con = con
        self._bad_row: int | None = None
        self._commits = 0  # this connection's commits (data_version counts the others')
        self._allowed_cache: OrderedDict = OrderedDict()
        self._pending_cache: tuple | None = None
        self._settings_version = self._version()
        con.create_function("vp_move", 5, self._move, deterministic=True)
        self.settings: dict = self._read_settings()

    # -- opening ---------------------------------------------------------------
    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        con = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        con.execute("PRAGMA foreign_keys = ON")
        con.execute("PRAGMA synchronous = FULL")
        return con

    @classmethod
    def create(cls, path, settings: dict) -> Catalog:
        """Create the catalog file ``path`` (which must not exist) holding ``settings``
        (a dict of JSON values)."""
        path = Path(path)
        if path.exists():
            raise FileExistsError(f"{path}: a catalog already exists")
        if not path.parent.is_dir():
            raise FileNotFoundError(f"{path.parent}: no such folder for the catalog")
        values = {"format": FORMAT, **settings}
        encoded = [(k, json.dumps(v, allow_nan=False)) for k, v in values.items()]
        con = cls._connect(path)
        try:
            con.execute("PRAGMA journal_mode = WAL")
            con.executescript("BEGIN;" + _SCHEMA + "COMMIT;")
            con.executemany("INSERT INTO settings VALUES (?, ?)", encoded)
        except BaseException:
            con.close()
            path.unlink(missing_ok=True)
            raise
        return cls(path, con)

    @classmethod
    def open(cls, path) -> Catalog:
        """Open the catalog file ``path``; a missing file is ``FileNotFoundError``, a file
        that is not a catalog of format :data:`FORMAT` a ``FormatError``."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no collection catalog there")
        try:
            con = cls._connect(path)
        except sqlite3.DatabaseError as e:  # the pragmas read the header and the schema
            raise FormatError(f"{path}: not a readable vecpress catalog ({e})") from None
        try:
            return cls(path, con)
        except BaseException:
            con.close()
            raise

    def close(self) -> None:
        self._con.close()

    # -- reading ---------------------------------------------------------------
    def _query(self, sql: str, params=()) -> list[tuple]:
        try:
            return self._con.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as e:  # not a database, malformed pages, missing tables
            raise FormatError(f"{self.path}: not a readable vecpress catalog ({e})") from None

    def _read_settings(self) -> dict:
        rows = self._query("SELECT key, value FROM settings")
        try:
            settings = {k: json.loads(v) for k, v in rows}
        except (TypeError, ValueError) as e:
            raise FormatError(f"{self.path}: invalid settings in the catalog ({e})") from None
        if settings.get("format") != FORMAT:
            raise FormatError(
                f"{self.path}: catalog format {settings.get('format')!r}, this vecpress reads "
                f"format {FORMAT}"
            )
        return settings

    def refresh(self) -> None:
        """Read the settings again if the catalog changed since they were read (another
        process's writer may have added some)."""
        version = self._version()
        if version != self._settings_version:
            self.settings = self._read_settings()
            self._settings_version = version

    def fields(self) -> dict[str, str]:
        """The metadata fields and their kinds."""
        return dict(self._query("SELECT name, kind FROM fields ORDER BY name"))

    def segments(self) -> list[tuple[int, str, int]]:
        """``(seg, file, rows)`` of every segment, oldest first."""
        return [tuple(r) for r in self._query("SELECT seg, file, rows FROM segments ORDER BY seg")]

    def count(self) -> int:
        """The number of documents."""
        return int(self._query("SELECT count(*) FROM docs")[0][0])

    def get(self, ids) -> list[Doc | None]:
        """The documents of ``ids`` in that order (``None`` where absent); every row's
        CRC checked."""
        ids = check_ids(ids)
        found = {doc.id: doc for doc in self._docs_where("id", ids)}
        return [found.get(x) for x in ids]

    def docs_of_pks(self, pks) -> list[Doc | None]:
        """The documents whose vectors have ids ``pks`` (``None`` where deleted)."""
        keys = [int(p) for p in np.asarray(pks, np.int64).ravel()]
        found = {doc.pk: doc for doc in self._docs_where("pk", keys)}
        return [found.get(p) for p in keys]

    def _docs_where(self, column: str, keys: list) -> list[Doc]:
        """The checked rows whose ``column`` (``id`` or ``pk``) is one of ``keys``."""
        out: list[Doc] = []
        for part, marks in _chunks(keys):
            sql = f"SELECT {_COLUMNS} FROM docs WHERE {column} IN ({marks})"
            out += self._checked(self._query(sql, part))
        return out

    def _checked(self, rows) -> list[Doc]:
        out = []
        for pk, id_, seg, text, meta, ccrc, crc in rows:
            if content_crc(id_, text, meta) != ccrc or place_crc(pk, seg, ccrc) != crc:
                self._damaged(pk)
            out.append(Doc(id_, pk, seg, text, meta))
        return out

    def _damaged(self, pk: int):
        raise FormatError(
            f"{self.path}: document row {pk} fails its checksum (the catalog file was "
            "modified or damaged)"
        )

    def _move(self, pk: int, seg: int | None, ccrc: int, crc: int, new: int | None) -> int:
        """SQL function ``vp_move``: the ``crc`` of row ``pk`` once moved to segment
        ``new``, after checking its placement CRC (``ValueError``, remembered, if not)."""
        if place_crc(pk, seg, ccrc) != crc:
            self._bad_row = pk
            raise ValueError(f"document row {pk} fails its checksum")
        return place_crc(pk, new, ccrc)

    def _moved(self, con, where: str, params: list, new: int | None) -> int:
        """Move the documents ``WHERE where`` to segment ``new``; returns how many."""
        self._bad_row = None
        try:
            return con.execute(
                f"UPDATE docs SET seg = ?, crc = vp_move(pk, seg, ccrc, crc, ?) WHERE {where}",
                [new, new, *params],
            ).rowcount
        except sqlite3.DatabaseError:
            if self._bad_row is not None:
                self._damaged(self._bad_row)
            raise

    def allowed(self, where) -> tuple[dict[int, np.ndarray], np.ndarray]:
        """The documents a filter (:mod:`vecpress.collection.filters`) lets through:
        ``({seg: pks}, pending pks)``, int64 arrays in pk order (shared: not to be
        changed). One SQL query, which an index on a field (:meth:`create_index`)
        serves; the answers of the last :data:`ALLOWED_CACHE_FILTERS` filters are
        kept until the catalog changes (a commit of this connection or, as SQLite's
        ``data_version`` tells, of another)."""
        sql, params = compile_filter(where, self.fields())
        key = (sql, tuple(params))
        version = self._version()
        hit = self._allowed_cache.get(key)
        if hit is not None and hit[0] == version:
            self._allowed_cache.move_to_end(key)
            return hit[1]
        found = self._allowed(sql, params)
        if sum(p.size for p in found[0].values()) <= ALLOWED_CACHE_ROWS:
            self._allowed_cache[key] = (version, found)
            while len(self._allowed_cache) > ALLOWED_CACHE_FILTERS:
                self._allowed_cache.popitem(last=False)
        return found

    def ids(self, where=None) -> list[str]:
        """The ids of the documents a filter lets through (every document without one),
        in the order they were stored."""
        if where is None:
            return [r[0] for r in self._query("SELECT id FROM docs ORDER BY pk")]
        sql, params = compile_filter(where, self.fields())
        return [r[0] for r in self._query(f"SELECT id FROM docs WHERE {sql} ORDER BY pk", params)]

    def _allowed(self, sql: str, params: list) -> tuple[dict[int, np.ndarray], np.ndarray]:
        rows = self._query(f"SELECT pk, seg FROM docs WHERE {sql}", params)
        if not rows:
            return {}, np.zeros(0, np.int64)
        pks = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        seg = np.fromiter((-1 if r[1] is None else r[1] for r in rows), np.int64, len(rows))
        order = np.argsort(pks)
        pks, seg = pks[order], seg[order]
        pending = seg < 0
        by_seg: dict[int, np.ndarray] = {}
        stored = np.flatnonzero(~pending)
        if stored.size:
            order = np.argsort(seg[stored], kind="stable")  # by segment, each in pk order
            cuts = np.flatnonzero(np.diff(seg[stored][order])) + 1
            for part in np.split(stored[order], cuts):
                by_seg[int(seg[part[0]])] = pks[part]
        return by_seg, pks[pending]

    def create_index(self, field: str) -> bool:
        """An SQLite index on a metadata field (the expression filters read it with), so
        filters on it look rows up instead of reading every document. Returns whether
        it was created (``False``: it existed)."""
        name = check_field_name(field)
        fields = self.fields()
        if name not in fields:
            raise ValueError(f"no metadata field {name!r} to index; known: {sorted(fields)}")
        if fields[name] not in KINDS:
            raise ValueError(
                f"field {name!r} holds lists or objects, which filters never compare: an "
                "index would only slow writes"
            )
        index = "field:" + name  # field names hold no '"' (check_field_name)
        exists = self._query(
            "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?", [index]
        )
        if exists:
            return False
        with self._transaction() as con:
            # seg too: the index covers the filter's query (pk is the rowid), no table reads
            con.execute(f'CREATE INDEX "{index}" ON docs({field_expr(name)}, seg)')
        return True

    def indexed_fields(self) -> list[str]:
        """The metadata fields with an index (:meth:`create_index`)."""
        rows = self._query("SELECT name FROM sqlite_master WHERE type = 'index'")
        return sorted(n[len("field:") :] for (n,) in rows if n.startswith("field:"))

    def verify(self) -> None:
        """Check the whole file: SQLite's ``integrity_check`` and every row's CRC; a
        ``FormatError`` naming the file and the first problem."""
        problems = [r[0] for r in self._query("PRAGMA integrity_check")]
        if problems != ["ok"]:
            raise FormatError(f"{self.path}: the catalog is damaged ({problems[0]})")
        self._checked(self._query(f"SELECT {_COLUMNS} FROM docs"))
        counted = dict(
            self._query("SELECT seg, count(*) FROM docs WHERE seg IS NOT NULL GROUP BY seg")
        )
        for seg, live in self.live_counts().items():
            if counted.get(seg, 0) != live:
                raise FormatError(
                    f"{self.path}: segment {seg} counts {live} live documents, the documents "
                    f"name it {counted.get(seg, 0)} times (the catalog was modified or damaged)"
                )

    def orphans(self, folder) -> list[Path]:
        """Files of ``folder`` that no segment row names (a crash between writing a
        segment and committing it leaves one)."""
        named = {f for _, f, _ in self.segments()}
        folder = Path(folder)
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if p.is_file() and p.name not in named)

    # -- writing (one writer: the caller holds the collection's lock) ---------------
    def next_pks(self, n: int) -> np.ndarray:
        """The vector ids the next ``n`` documents get (int64): past every id ever used,
        so a segment can be written under them before its transaction commits."""
        rows = self._query("SELECT seq FROM sqlite_sequence WHERE name = 'docs'")
        start = (int(rows[0][0]) if rows else 0) + 1
        return np.arange(start, start + n, dtype=np.int64)

    def add_documents(
        self, pks, ids, texts, metas, new_fields: dict, *, segment: str | None = None,
        vectors: np.ndarray | None = None, replace: bool = False,
    ) -> int:  # fmt: skip
        """One transaction: documents (``pks`` from :meth:`next_pks`, string ``ids``,
        ``texts``, ``metas`` as JSON text) and the metadata fields the batch adds, their
        vectors either in the segment file ``segment`` (written already; ``rows`` = the
        batch) or ``vectors`` (float32[n, d]) kept in ``pending``. Nothing is stored when
        it fails: an id already in the collection is a ``ValueError`` naming it, unless
        ``replace``: then the stored documents of those ids are deleted in the same
        transaction (an upsert). Returns how many were replaced."""
        ids = check_ids(ids)
        pks = [int(p) for p in np.asarray(pks, np.int64).ravel()]
        if not (len(pks) == len(ids) == len(texts) == len(metas)):
            raise ValueError(
                f"documents need as many pks, ids, texts and metadata, found "
                f"{len(pks)}, {len(ids)}, {len(texts)} and {len(metas)}"
            )
        if (segment is None) == (vectors is None):
            raise ValueError("documents go to one segment file or to the pending vectors")
        if vectors is not None:
            vectors = np.ascontiguousarray(vectors, np.float32)
            if vectors.ndim != 2 or vectors.shape[0] != len(pks):
                raise ValueError(
                    f"pending vectors must be float32[{len(pks)}, d], found {vectors.shape}"
                )
        try:
            return self._add_documents(pks, ids, texts, metas, new_fields, segment, vectors,
                                       replace)  # fmt: skip
        except _Refused as e:  # rolled back; now the ids already stored can be named
            taken = self._taken(ids)
            if not taken:  # another constraint
                raise FormatError(f"{self.path}: the catalog refused a commit ({e})") from None
            raise ValueError(
                f"document id {taken[0]!r} is already in the collection "
                f"({len(taken)} of the batch are; upsert replaces documents)"
            ) from None

    def _add_documents(self, pks, ids, texts, metas, new_fields, segment, vectors, replace):
        """:meth:`add_documents` once its arguments are checked. Without ``replace``, the
        ids are not looked up first (a third of a bulk insert's time): the ``UNIQUE``
        constraint of ``docs.id`` refuses a stored one, and the transaction is rolled back
        (:class:`_Refused`)."""
        with self._transaction() as con:
            taken = self._taken(ids) if replace else []
            if taken:
                self._delete_ids(con, taken)
            seg = None
            if segment is not None:
                seg = con.execute(
                    "INSERT INTO segments (file, rows, live) VALUES (?, ?, ?)",
                    (segment, len(ids), len(ids)),
                ).lastrowid
            try:
                con.executemany(
                    f"INSERT INTO docs ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        (p, i, seg, t, m, c, place_crc(p, seg, c))
                        for p, i, t, m in zip(pks, ids, texts, metas, strict=True)
                        for c in (content_crc(i, t, m),)
                    ],
                )
            except sqlite3.IntegrityError as e:
                raise _Refused(str(e)) from None
            if vectors is not None:
                con.executemany(
                    "INSERT INTO pending VALUES (?, ?, ?)",
                    [
                        (p, b, zlib.crc32(b, p & 0xFFFFFFFF))
                        for p, v in zip(pks, vectors, strict=True)
                        for b in (v.tobytes(),)
                    ],
                )
            con.executemany("INSERT INTO fields VALUES (?, ?)", sorted(new_fields.items()))
        return len(taken)

    def pending(self) -> tuple[np.ndarray, np.ndarray]:
        """The pending vectors: ``(pks int64[m], float32[m, d])``, in pk order, each
        checked against its CRC (read-only arrays, kept until the catalog changes, as
        :meth:`allowed` keeps its answers)."""
        version = self._version()
        if self._pending_cache is not None and self._pending_cache[0] == version:
            return self._pending_cache[1]
        rows = self._query("SELECT pk, vec, crc FROM pending ORDER BY pk")
        d = int(self.settings.get("dim") or 0)
        pks = np.array([r[0] for r in rows], np.int64)
        for pk, vec, crc in rows:
            if zlib.crc32(vec, pk & 0xFFFFFFFF) != crc:
                raise FormatError(
                    f"{self.path}: the pending vector of document row {pk} fails its checksum "
                    "(the catalog file was modified or damaged)"
                )
        try:
            vecs = np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), d)
        except (ValueError, TypeError) as e:
            raise FormatError(f"{self.path}: pending vectors of the wrong size ({e})") from None
        vecs = vecs.copy()
        pks.flags.writeable = vecs.flags.writeable = False
        self._pending_cache = (version, (pks, vecs))
        return pks, vecs

    def _version(self) -> tuple[int, int]:
        """What changes when the catalog does: SQLite's ``data_version`` (other
        connections' commits) and this connection's commits."""
        return self._query("PRAGMA data_version")[0][0], self._commits

    def pending_count(self) -> int:
        """The number of pending vectors."""
        # counted on the index of docs(seg): the pending table's pages are mostly vectors
        return int(self._query("SELECT count(*) FROM docs WHERE seg IS NULL")[0][0])

    def seal(self, segment: str, pks, settings: dict | None = None) -> None:
        """One transaction: the segment file ``segment`` (written already) takes the
        pending vectors ``pks``; ``settings`` (JSON values) are added on the way (the
        codec template of the first segment)."""
        keys = [int(p) for p in np.asarray(pks, np.int64).ravel()]
        with self._transaction() as con:
            seg = con.execute(
                "INSERT INTO segments (file, rows, live) VALUES (?, ?, ?)",
                (segment, len(keys), len(keys)),
            ).lastrowid
            for part, marks in _chunks(keys):
                moved = self._moved(con, f"seg IS NULL AND pk IN ({marks})", part, seg)
                gone = con.execute(f"DELETE FROM pending WHERE pk IN ({marks})", part).rowcount
                if moved != len(part) or gone != len(part):
                    raise ValueError("a segment takes pending vectors of stored documents only")
            self._put_settings(con, settings or {})
        self.settings.update(settings or {})

    def set_settings(self, settings: dict) -> None:
        """Add or replace settings (JSON values) in one transaction."""
        with self._transaction() as con:
            self._put_settings(con, settings)
        self.settings.update(settings)

    @staticmethod
    def _put_settings(con, settings: dict) -> None:
        for k, v in settings.items():
            con.execute(
                "INSERT OR REPLACE INTO settings VALUES (?, ?)", (k, json.dumps(v, allow_nan=False))
            )

    def pks_of_segment(self, seg: int) -> np.ndarray:
        """The pks (int64, sorted) of the live documents whose vectors segment ``seg`` holds."""
        rows = self._query("SELECT pk FROM docs WHERE seg = ? ORDER BY pk", [int(seg)])
        return np.array([r[0] for r in rows], np.int64)

    def replace_segments(self, old: list[int], segment: str | None, rows: int) -> None:
        """One transaction: the segment file ``segment`` (written already, ``rows`` rows;
        ``None`` when nothing is left) takes the documents of segments ``old``, which are
        forgotten (their files are then the caller's to remove)."""
        old = [int(s) for s in old]
        marks = ", ".join("?" * len(old))
        with self._transaction() as con:
            seg = None
            if segment is not None:
                seg = con.execute(
                    "INSERT INTO segments (file, rows, live) VALUES (?, ?, ?)",
                    (segment, rows, rows),
                ).lastrowid
            moved = self._moved(con, f"seg IN ({marks})", old, seg)
            if moved != rows:
                raise ValueError(
                    f"the merged segment holds {rows} rows, the segments it replaces {moved} "
                    "live documents"
                )
            con.execute(f"DELETE FROM segments WHERE seg IN ({marks})", old)

    def live_counts(self) -> dict[int, int]:
        """Documents still stored per segment (a segment's ``rows`` minus its deletions;
        kept in ``segments.live`` by every write, so reading them costs nothing per
        document)."""
        return {int(seg): int(n) for seg, n in self._query("SELECT seg, live FROM segments")}

    @contextlib.contextmanager
    def reading(self):
        """A read transaction: every read inside sees the same committed state (WAL:
        writers go on meanwhile)."""
        con = self._con
        try:
            con.execute("BEGIN DEFERRED")
        except sqlite3.DatabaseError as e:
            raise FormatError(f"{self.path}: not a readable vecpress catalog ({e})") from None
        try:
            yield self
        finally:
            con.execute("COMMIT")

    @contextlib.contextmanager
    def _transaction(self):
        """``BEGIN IMMEDIATE`` (the write lock at once) ... ``COMMIT``, rolled back on any
        exception; SQLite's own errors as ``FormatError`` naming the file."""
        con = self._con
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
                con.execute("COMMIT")
                self._commits += 1
            except BaseException:
                con.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as e:
            raise FormatError(f"{self.path}: the catalog refused a commit ({e})") from None

    def _taken(self, ids: list[str]) -> list[str]:
        """The ids of ``ids`` already in the collection, in their order."""
        taken: set[str] = set()
        for part, marks in _chunks(ids):
            rows = self._con.execute(f"SELECT id FROM docs WHERE id IN ({marks})", part)
            taken.update(r[0] for r in rows)
        return [x for x in ids if x in taken]

    def delete(self, ids) -> int:
        """Delete the documents of ``ids`` in one transaction (ids not in the collection
        are skipped); returns how many were deleted."""
        ids = unique_ids(ids)  # a repeated id: deleted once
        with self._transaction() as con:
            return self._delete_ids(con, ids)

    @staticmethod
    def _delete_ids(con, ids: list[str]) -> int:
        """Delete the documents of ``ids`` and count them off their segments' ``live``
        (inside the caller's transaction); returns how many were deleted."""
        deleted = 0
        gone: dict[int, int] = {}
        for part, marks in _chunks(ids):
            where = f"id IN ({marks}) AND seg IS NOT NULL GROUP BY seg"
            for seg, n in con.execute(f"SELECT seg, count(*) FROM docs WHERE {where}", part):
                gone[seg] = gone.get(seg, 0) + n
            deleted += con.execute(f"DELETE FROM docs WHERE id IN ({marks})", part).rowcount
        con.executemany(
            "UPDATE segments SET live = live - ? WHERE seg = ?", [(n, s) for s, n in gone.items()]
        )
        return deleted
