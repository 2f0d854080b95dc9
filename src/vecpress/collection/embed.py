"""Text embedders of a collection: a callable, or a sentence-transformers model by name.

A collection created with ``embed=`` turns texts into vectors itself
(:meth:`~vecpress.collection.collection.Collection.add_texts`,
:meth:`~vecpress.collection.collection.Collection.search_text`). ``embed`` is
either

* a callable taking a list of ``n`` strings and returning an ``(n, dim)`` float
  array (any model, any service); it is code, so it is not stored: pass it again
  to :meth:`~vecpress.collection.collection.Collection.open`; or
* the name (or local path) of a sentence-transformers model, stored in the
  collection's settings and loaded on first use with
  ``sentence_transformers.SentenceTransformer`` (the extra ``vecpress[embed]``;
  imported only then).

Whatever the embedder returns is checked (:meth:`Embedder.__call__`): one finite
row per text, of the collection's dimension.

Examples
--------
>>> import numpy as np
>>> emb = Embedder.of(lambda texts: np.ones((len(texts), 3)))
>>> emb(["a", "b"]).shape, emb(["a"]).dtype, emb.setting
((2, 3), dtype('float32'), {'kind': 'callable'})
>>> Embedder.of("all-MiniLM-L6-v2").setting
{'kind': 'sentence-transformers', 'model': 'all-MiniLM-L6-v2'}
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .._validation import as_vectors

#: texts embedded per call of the embedder
BATCH = 256


class Embedder:
    """Texts to float32 vectors (module docstring); build with :meth:`of`."""

    def __init__(self, fn: Callable | None, setting: dict) -> None:
        self._fn = fn
        self.setting = setting

    @classmethod
    def of(cls, embed) -> Embedder:
        """The embedder of ``embed``: a callable or a sentence-transformers model name."""
        if isinstance(embed, str):
            if not embed.strip():
                raise ValueError("embed must name a sentence-transformers model, found ''")
            return cls(None, {"kind": "sentence-transformers", "model": embed})
        if callable(embed):
            return cls(embed, {"kind": "callable"})
        raise TypeError(
            "embed must be a callable (list of str -> float array) or a sentence-transformers "
            f"model name, found {type(embed).__name__}"
        )

    @classmethod
    def from_setting(cls, setting: dict | None, embed=None) -> Embedder | None:
        """The embedder a collection's settings name, or ``embed`` given at open (which
        replaces a stored model name)."""
        if embed is not None:
            return cls.of(embed)
        if not setting:
            return None
        return cls(None, dict(setting))  # a model loads on first use; a callable is refused

    def __call__(self, texts, dim: int | None = None) -> np.ndarray:
        """``float32[n, dim]`` for the ``n`` strings ``texts``, checked."""
        texts = check_texts(texts)
        fn = self._function()
        parts = []
        for s in range(0, len(texts), BATCH):
            chunk = texts[s : s + BATCH]
            got = np.asarray(fn(chunk))
            if got.ndim != 2 or got.shape[0] != len(chunk):
                raise ValueError(
                    f"the embedder must return one row per text: ({len(chunk)}, dim), found "
                    f"shape {got.shape}"
                )
            parts.append(as_vectors(got, "embedded texts", dim=dim))
        if not parts:
            return np.zeros((0, dim or 0), np.float32)
        return np.concatenate(parts)

    def _function(self) -> Callable:
        if self._fn is not None:
            return self._fn
        if self.setting.get("kind") == "callable":
            raise ValueError(
                "this collection embeds texts with a callable, which is code and not stored: "
                "pass it again, Collection.open(path, embed=fn)"
            )
        self._fn = _sentence_transformer(self.setting["model"])
        return self._fn


def check_texts(texts) -> list[str]:
    """``texts`` as a list of strings, or a ``TypeError`` naming the first that is not."""
    if isinstance(texts, (str, bytes)) or not hasattr(texts, "__iter__"):
        raise TypeError(f"texts must be a list of strings, found {type(texts).__name__}")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"texts must be strings, found {type(t).__name__} at {i}")
    return out


def _sentence_transformer(model: str) -> Callable:
    """``encode`` of the sentence-transformers model ``model`` (imported here, lazily)."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ImportError(
            f"embedding with the model {model!r} needs sentence-transformers: "
            "pip install 'vecpress[embed]' (or pass a callable as embed=)"
        ) from None
    st = SentenceTransformer(model)

    def encode(texts: list[str]) -> np.ndarray:
        return st.encode(texts, convert_to_numpy=True, show_progress_bar=False)

    return encode
