"""Documents' metadata (:mod:`vecpress.collection.metadata`): kinds per field, conflicts
and bad values named with their document, and the JSON text stored."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vecpress.collection.filters import compile_filter
from vecpress.collection.metadata import dumps, metadata_kinds


def test_kinds_are_fixed_by_the_first_value():
    batch = [
        {"year": 2024, "lang": "en", "flag": True, "score": None},
        {"year": 2.5, "tags": ["a", "b"], "extra": {"k": 1}},
        None,
        {},
        {"score": np.float32(0.5), "n": np.int64(3), "ok": np.bool_(False)},
    ]
    assert metadata_kinds(batch, {}) == {
        "extra": "json", "flag": "bool", "lang": "string", "n": "number", "ok": "bool",
        "score": "number", "tags": "json", "year": "number",
    }  # fmt: skip
    # known fields are not returned again; None fixes nothing
    assert metadata_kinds([{"year": 1, "lang": None, "new": "x"}], {"year": "number"}) == {
        "new": "string"
    }
    assert metadata_kinds([], {}) == {}


@pytest.mark.parametrize(
    ("batch", "known", "exc", "match"),
    [
        ([{"year": "2024"}], {"year": "number"}, ValueError,
         r"document 0: field 'year' holds numbers, found string '2024'"),
        ([{"a": 1}, {"a": "x"}], {}, ValueError,
         r"document 1: field 'a' holds numbers, found string 'x'"),
        ([{"a": True}, {"a": 1}], {}, ValueError, r"field 'a' holds booleans, found number 1"),
        ([{"a": [1]}, {"a": 1}], {}, ValueError, r"field 'a' holds lists or objects, found number"),
        ([{"a": 1}, "x"], {}, TypeError, r"metadata of document 1 must be a dict .* found str"),
        ([{"a": float("nan")}], {}, ValueError, r"document 0, field 'a': .*finite, found nan"),
        ([{"a": [1.0, float("inf")]}], {}, ValueError, r"document 0, field 'a'"),
        ([{"a": {1, 2}}], {}, TypeError, r"document 0, field 'a': .*found set"),
        ([{"a": b"x"}], {}, TypeError, r"field 'a': .*found bytes"),
        ([{"a": [object()]}], {}, TypeError, r"field 'a': found object, which is not a JSON"),
        ([{"a": np.zeros(3)}], {}, TypeError, r"field 'a': found a numpy array"),
        ([{"$a": 1}], {}, ValueError, r"field '\$a': .*must not start with '\$'"),
        ([{3: 1}], {}, TypeError, r"field 3: metadata field names must be strings"),
    ],
)  # fmt: skip
def test_bad_metadata_names_document_and_field(batch, known, exc, match):
    with pytest.raises(exc, match=match):
        metadata_kinds(batch, known)


def test_dumps_is_canonical_json():
    meta = {"b": [1, None, {"c": "é"}], "a": np.float64(0.25), "z": np.int32(7), "t": True}
    text = dumps(meta)
    assert text == '{"a":0.25,"b":[1,null,{"c":"é"}],"t":true,"z":7}'
    assert json.loads(text) == {"a": 0.25, "b": [1, None, {"c": "é"}], "t": True, "z": 7}
    assert dumps(None) == dumps({}) == "{}"
    with pytest.raises(ValueError):
        dumps({"a": float("nan")})
    with pytest.raises(TypeError, match="not a JSON value"):
        dumps({"a": object()})


def test_a_field_of_lists_is_not_filtered_on():
    kinds = metadata_kinds([{"tags": ["a"], "year": 1}], {})
    compile_filter({"year": 1}, kinds)
    with pytest.raises(ValueError, match="'tags', a field of lists or objects"):
        compile_filter({"tags": "a"}, kinds)
