"""Documents' metadata: checked, typed per field, and stored as JSON text.

A collection keeps one *kind* per metadata field (:func:`metadata_kinds`):
``"number"`` (int or float), ``"string"``, ``"bool"`` -- the kinds a filter
compares (:mod:`vecpress.collection.filters`) -- or ``"json"`` for lists and
objects, which are stored and returned but never filtered on. The first value a
field receives fixes its kind; ``None`` is an absent value of any field. A batch
whose values disagree with a field's kind (``"2024"`` where the field holds
numbers), whose metadata is not a dict of JSON values, or that holds NaN or an
infinity is rejected whole, with the document and field named, before anything
is stored.

Examples
--------
>>> metadata_kinds([{"year": 2024, "lang": "en"}, {"year": 2.5, "tags": ["a"]}], {})
{'lang': 'string', 'tags': 'json', 'year': 'number'}
>>> dumps({"year": 2024, "lang": "é"})
'{"lang":"é","year":2024}'
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence

import numpy as np

from .filters import KINDS, check_field_name, value_kind

#: the kind of a field holding lists or objects: stored, never filtered on
STRUCTURED = "json"
#: every kind a field can have, with its name in messages
FIELD_KINDS = {**KINDS, STRUCTURED: "lists or objects"}


def _json_default(value: object) -> object:
    """numpy scalars as the Python values they hold; anything else is not JSON."""
    if isinstance(value, np.generic) and not isinstance(value, (np.void, np.object_)):
        return value.item()
    raise TypeError(f"found {type(value).__name__}, which is not a JSON value")


def dumps(meta: Mapping | None) -> str:
    """The JSON text stored for one document's metadata: keys sorted, UTF-8, no NaN.

    Raises ``ValueError`` for values JSON cannot hold exactly (NaN, infinities) and
    ``TypeError`` for values that are not JSON (sets, bytes, arrays, objects).

    Examples
    --------
    >>> dumps(None), dumps({}), dumps({"b": [1, None], "a": np.float32(0.5)})
    ('{}', '{}', '{"a":0.5,"b":[1,null]}')
    """
    if meta is None or (type(meta) is dict and not meta):
        return "{}"  # most documents of a bulk build: no metadata (no encoder call)
    return _ENCODER.encode(dict(meta))


_ENCODER = json.JSONEncoder(
    sort_keys=True, ensure_ascii=False, allow_nan=False, separators=(",", ":"),
    default=_json_default,
)  # fmt: skip


def metadata_kinds(metadatas: Sequence[Mapping | None], known: Mapping[str, str]) -> dict[str, str]:
    """Check a batch of documents' metadata against a collection's field kinds.

    Parameters
    ----------
    metadatas : sequence of dict or None
        One metadata dict (or ``None``: none) per document of the batch.
    known : mapping of str to str
        The collection's fields and their kinds so far.

    Returns
    -------
    dict
        The kinds of the fields the batch adds (sorted by name); ``{}`` when it
        adds none.

    Raises
    ------
    TypeError
        A metadata that is not a dict, a field name that is not a string, a value
        that is not JSON.
    ValueError
        A bad field name (:func:`~vecpress.collection.filters.check_field_name`),
        NaN or an infinity, a value of another kind than its field's (in the
        collection or earlier in the batch).

    Examples
    --------
    >>> metadata_kinds([{"year": "2024"}], {"year": "number"})
    Traceback (most recent call last):
    ...
    ValueError: metadata of document 0: field 'year' holds numbers, found string '2024'
    """
    kinds = dict(known)
    added: dict[str, str] = {}
    named: set[str] = set()  # field names checked already
    for i, meta in enumerate(metadatas):
        if meta is None:
            continue
        if not isinstance(meta, Mapping):
            raise TypeError(
                f"metadata of document {i} must be a dict (or None), found {type(meta).__name__}"
            )
        for name, value in meta.items():
            try:
                if name not in named:
                    named.add(check_field_name(name))
                kind = _kind(value)
            except (TypeError, ValueError) as e:
                raise type(e)(f"metadata of document {i}, field {name!r}: {e}") from None
            if kind is None:
                continue
            have = kinds.get(name)
            if have is None:
                kinds[name] = added[name] = kind
            elif have != kind:
                raise ValueError(
                    f"metadata of document {i}: field {name!r} holds {FIELD_KINDS[have]}, "
                    f"found {kind} {value!r}"
                )
    return dict(sorted(added.items()))


#: the kinds of the plain Python types (the common case, decided without isinstance)
_PLAIN_KINDS = {str: "string", int: "number", bool: "bool", type(None): None}


def _kind(value: object) -> str | None:
    plain = type(value)
    if plain in _PLAIN_KINDS:
        return _PLAIN_KINDS[plain]
    if plain is float and math.isfinite(value):
        return "number"
    if isinstance(value, (list, tuple, dict)):
        dumps({"v": value})  # raises for what JSON cannot hold
        return STRUCTURED
    if isinstance(value, np.ndarray):
        raise TypeError("found a numpy array; store value.tolist()")
    return value_kind(value)
