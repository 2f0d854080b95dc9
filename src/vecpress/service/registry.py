"""The collections a service serves: folders under one root, opened once each.

A collection's folder is ``ROOT/NAME``. :class:`Registry` opens it on first use
and keeps it open: one :class:`~vecpress.Collection` writes (its writes are
serialised by the collection's own lock) and a pool of up to ``readers`` more,
each with its own catalog connection, serve searches and reads at the same time
(a collection object runs one call at a time; its readers never lock, and they
share the writer's memory-mapped segments, one mapping of each file; texts are
embedded by the writer's embedder, so a model is loaded once). A reader
sees every write committed before its call began, so an add the service has
acknowledged is in every later search.
"""

from __future__ import annotations

import contextlib
import queue
import re
import threading
from pathlib import Path

import numpy as np

from .._validation import check_positive_int
from ..collection import Collection
from ..collection.collection import CATALOG

#: a collection's name: its folder under the root
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class NotFound(KeyError):
    """No collection of that name under the root."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "not found"


class Served:
    """One collection: its writer, its readers, and one embedder for both."""

    def __init__(self, name: str, writer: Collection, readers: int) -> None:
        self.name = name
        self.writer = writer
        self._readers: queue.LifoQueue[Collection] = queue.LifoQueue()
        self._opened = 0
        self._most = readers
        self._lock = threading.Lock()
        self._embedding = threading.Lock()

    @contextlib.contextmanager
    def reader(self):
        """A collection to read with, for the duration of the block (opened on demand,
        up to ``readers``; then the caller waits for one)."""
        try:
            col = self._readers.get_nowait()
        except queue.Empty:
            with self._lock:
                fresh = self._opened < self._most
                if fresh:
                    self._opened += 1
            if not fresh:
                col = self._readers.get()
            else:
                try:
                    col = Collection.open(self.writer.path, share=self.writer)
                except BaseException:
                    with self._lock:
                        self._opened -= 1
                    raise
        try:
            yield col
        finally:
            self._readers.put(col)

    def embed(self, texts: list[str]) -> np.ndarray:
        """``texts`` as vectors by the collection's embedder (one model in memory,
        one call at a time)."""
        with self._embedding:
            return self.writer.embed(texts)

    def close(self) -> None:
        self.writer.close()
        while True:
            try:
                self._readers.get_nowait().close()
            except queue.Empty:
                return


class Registry:
    """The collections under ``root`` (module docstring).

    Parameters
    ----------
    root : str or pathlib.Path
        The folder whose sub-folders are the collections (created if absent).
    readers : int
        Reading collection objects per collection (searches at once).
    embedders : dict, optional
        Collection name -> callable (a list of str -> float array) that embeds the
        texts of that collection: for collections created with a callable embedder
        (which a collection does not store), as :meth:`vecpress.Collection.open`
        takes it.
    """

    def __init__(self, root, readers: int = 4, embedders: dict | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.readers = check_positive_int(readers, "readers")
        self.embedders = dict(embedders or {})
        for name, fn in self.embedders.items():
            if not callable(fn):
                raise TypeError(f"embedders[{name!r}] must be callable, found {type(fn).__name__}")
        self._served: dict[str, Served] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        """The names of the collections under the root, sorted."""
        return sorted(
            p.name for p in self.root.iterdir()
            if re.match(NAME_PATTERN, p.name) and (p / CATALOG).is_file()
        )  # fmt: skip

    def get(self, name: str) -> Served:
        """The collection ``name``; :class:`NotFound` when the root has none of that name."""
        with self._lock:
            served = self._served.get(name)
            if served is None:
                path = self._path(name)
                if not (path / CATALOG).is_file():
                    raise NotFound(f"no collection named {name!r}")
                col = Collection.open(path, embed=self.embedders.get(name))
                served = self._served[name] = Served(name, col, self.readers)
            return served

    def create(self, name: str, **settings) -> Served:
        """Create the collection ``name`` (:meth:`vecpress.Collection.create`'s
        ``settings``); ``FileExistsError`` when the name is taken."""
        with self._lock:
            path = self._path(name)
            if path.exists():
                raise FileExistsError(f"a collection named {name!r} exists")
            try:
                col = Collection.create(path, embed=self.embedders.get(name), **settings)
            except BaseException:
                _remove_empty(path)
                raise
            served = self._served[name] = Served(name, col, self.readers)
            return served

    def _path(self, name: str) -> Path:
        if not isinstance(name, str) or not re.match(NAME_PATTERN, name):
            raise ValueError(f"collection names match {NAME_PATTERN}, found {name!r}")
        return self.root / name

    def close(self) -> None:
        with self._lock:
            for served in self._served.values():
                served.close()
            self._served.clear()


def _remove_empty(path: Path) -> None:
    """Remove the folder a failed create left, if it holds nothing but empty folders."""
    if not path.is_dir():
        return
    for sub in sorted(path.rglob("*"), reverse=True):
        if sub.is_dir():
            with contextlib.suppress(OSError):
                sub.rmdir()
    with contextlib.suppress(OSError):
        path.rmdir()
