"""One stage lifecycle: every transform and quantizer fits as fit(x, *, weights, queries)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from vecpress import Codec
from vecpress.codecs import spec, transforms
from vecpress.codecs.quantizers.base import Quantizer
from vecpress.codecs.quantizers.two_level import LVQ2


def _stage_classes() -> list[type]:
    quantizers = [cls for cls, _ in spec.QUANTIZERS.values()]
    quantizers += [*spec.PRODUCT_QUANTIZERS.values(), LVQ2]
    found = {Quantizer, transforms.Transform, *quantizers}
    for name in spec.TRANSFORM_NAMES:
        token = name.replace("<d'>", "4")
        found.add(type(spec.make_transform(token)))
    return sorted(found, key=lambda c: c.__name__)


@pytest.mark.parametrize("cls", _stage_classes(), ids=lambda c: c.__name__)
def test_every_stage_fits_with_one_signature(cls):
    params = inspect.signature(cls.fit).parameters
    assert list(params) == ["self", "x", "weights", "queries"]
    assert params["weights"].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["queries"].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["weights"].default is None and params["queries"].default is None


def test_codec_fit_hands_every_stage_the_same_arguments(monkeypatch):
    """Codec.fit calls each stage's fit with the (mapped) rows, the weights and the queries,
    with no dispatch on the stage's type."""
    seen = []

    def spy(original):
        def fit(self, x, *, weights=None, queries=None):
            seen.append((self.spec, x.shape, weights is None, queries is None))
            return original(self, x, weights=weights, queries=queries)

        return fit

    for cls in (transforms.Center, transforms.Hadamard, transforms.PCA):
        monkeypatch.setattr(cls, "fit", spy(cls.fit))
    codec = Codec.from_spec("center,pca8,hd2,rq4")
    monkeypatch.setattr(type(codec.quantizer), "fit", spy(type(codec.quantizer).fit))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    codec.fit(x, sample=200, sampling="leverage", queries=x[:20])
    assert seen == [
        ("center", (200, 16), False, False),
        ("pca8", (200, 16), False, False),
        ("hd2", (200, 8), False, False),
        ("rq4", (200, 8), False, False),
    ]


@pytest.mark.parametrize(
    "spec",
    [
        "rq4",
        "rq8",
        "tq3",
        "tqp3",
        "kl4",
        "lvq4",
        "lvq8",
        "qjl64",
        "e4m3",
        "int4",
        "f16",
        "sign",
        "pq8x4",
        "lvq4x8",
    ],
)
def test_row_fields_are_declared_once_and_laid_out_by_the_base(spec):
    """A row is the codes, then the declared per-vector fields back to back: the base
    class derives every offset and the row size from the declaration."""
    x = np.random.default_rng(1).standard_normal((300, 64)).astype(np.float32)
    codec = Codec.from_spec(spec).fit(x)
    qz = codec.quantizer
    offset = qz.payload_size
    for field in qz.row_fields:
        at, dtype, exp = qz.field_at(field.name)
        assert at == offset and exp == (qz.field_exp if field.scaled else 0)
        offset += dtype.itemsize
    assert offset == qz.code_size == codec.code_size
    codes = codec.encode(x)
    for field in qz.row_fields:  # every field reads back finite from real rows
        assert np.isfinite(qz.get_fields(codes, field.name)[0]).all()
    with pytest.raises(KeyError, match="no per-vector field"):
        qz.field_at("nonexistent")
