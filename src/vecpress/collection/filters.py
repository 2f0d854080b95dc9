"""Metadata filters: a Mongo-like dict language compiled to one SQL expression.

The language is the one LangChain, Chroma and others translate to:

* ``{"lang": "en"}`` -- equality (``{"lang": {"$eq": "en"}}``);
* ``{"year": {"$gte": 2020, "$lt": 2025}}`` -- several operators on a field
  all hold; operators ``$eq $ne $gt $gte $lt $lte $in $nin``;
* ``{"$and": [f, g, ...]}``, ``{"$or": [f, g, ...]}`` -- non-empty lists of
  filters; several keys in one dict all hold (an implicit ``$and``);
* ``{}`` -- every document.

Metadata values are typed per field, once for the whole collection
(:func:`value_kind`): ``"number"`` (int or float, finite), ``"string"`` or
``"bool"``; ``None`` marks a value as absent. A filter names known fields only
and compares each with values of its kind: ``$gt``/``$gte``/``$lt``/``$lte``
order numbers and strings (strings by their UTF-8 bytes), never booleans. A
document without the field (or with ``None``) matches no comparison except
``$ne`` and ``$nin``, which match it (MongoDB's semantics: "not equal to").
Anything else -- an unknown operator, an unknown field, a value of another
kind, an empty ``$in`` list, a filter nested deeper than :data:`MAX_DEPTH` --
is a ``ValueError`` (``TypeError`` for a filter that is not a dict) naming what
was expected and what was found.

:func:`compile_filter` gives an SQL boolean expression over the JSON text of a
table's metadata column and its parameters (values are always parameters, never
SQL text). A field ``f`` is read as ``json_extract(meta, '$."f"')``
(:func:`field_expr`): an SQLite index on that same expression
(``CREATE INDEX ... ON docs(json_extract(meta, '$."f"'))``) serves the filter.

Examples
--------
>>> sql, params = compile_filter({"year": {"$gte": 2020}, "lang": "en"},
...                              {"year": "number", "lang": "string"})
>>> sql
'((json_extract(meta, \\'$."year"\\') >= ?) AND (json_extract(meta, \\'$."lang"\\') = ?))'
>>> params
[2020, 'en']
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

import numpy as np

#: the operators on a field, and their SQL comparison
COMPARISONS = {"$eq": "=", "$ne": "<>", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
#: the operators on a field that take a list of values
LIST_OPERATORS = ("$in", "$nin")
#: the operators that combine filters
COMBINATORS = ("$and", "$or")
#: the kinds of metadata values a filter can compare, and their names in messages
KINDS = {"number": "numbers", "string": "strings", "bool": "booleans"}
#: the deepest nesting of $and/$or a filter may have
MAX_DEPTH = 32
#: the most values one filter may hold (SQLite binds at most 32,766 parameters)
MAX_VALUES = 10_000
#: the longest field name, in characters
MAX_FIELD_LENGTH = 256


def check_field_name(name: object) -> str:
    """``name`` if it can name a metadata field, else a ``ValueError``/``TypeError``.

    A field name is a non-empty string of at most :data:`MAX_FIELD_LENGTH`
    printable characters, without ``"`` or ``\\`` (they would end the quoted JSON
    path) and not starting with ``$`` (operators do).

    Examples
    --------
    >>> check_field_name("year")
    'year'
    >>> check_field_name("$gt")
    Traceback (most recent call last):
    ...
    ValueError: metadata field names must not start with '$' (operators do), found '$gt'
    """
    if not isinstance(name, str):
        raise TypeError(f"metadata field names must be strings, found {type(name).__name__}")
    if not name:
        raise ValueError("metadata field names must not be empty")
    if len(name) > MAX_FIELD_LENGTH:
        raise ValueError(
            f"metadata field names must have at most {MAX_FIELD_LENGTH} characters, "
            f"found {len(name)}"
        )
    if name.startswith("$"):
        raise ValueError(
            f"metadata field names must not start with '$' (operators do), found {name!r}"
        )
    bad = [c for c in name if c in '"\\' or not c.isprintable()]
    if bad:
        raise ValueError(
            f"metadata field names must be printable and hold no '\"' or '\\\\', found "
            f"{name!r} (character {bad[0]!r})"
        )
    return name


def field_expr(name: str, column: str = "meta") -> str:
    """The SQL expression that reads field ``name`` from the JSON ``column``.

    Examples
    --------
    >>> field_expr("year")
    'json_extract(meta, \\'$."year"\\')'
    """
    name = check_field_name(name)
    path = '$."' + name.replace("'", "''") + '"'
    return f"json_extract({column}, '{path}')"


def value_kind(value: object) -> str | None:
    """The kind of a metadata value: ``"number"``, ``"string"``, ``"bool"``, ``None`` for
    ``None`` (absent), or a ``ValueError``/``TypeError`` for anything a filter cannot
    compare (NaN, infinities, lists, dicts, other objects).

    numpy scalars count as the Python values they hold.

    Examples
    --------
    >>> value_kind(2024), value_kind(0.5), value_kind("en"), value_kind(True), value_kind(None)
    ('number', 'number', 'string', 'bool', None)
    """
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, str):
        return "string"
    if isinstance(value, numbers.Real):
        if not math.isfinite(float(value)):
            raise ValueError(f"metadata numbers must be finite, found {value!r}")
        return "number"
    raise TypeError(
        "metadata values a filter compares are numbers, strings, booleans or None, "
        f"found {type(value).__name__}"
    )


def _plain(value: object) -> object:
    """A value as the Python int, float, str or bool SQLite binds (numpy scalars too)."""
    if isinstance(value, (bool, np.bool_)):
        return int(bool(value))  # JSON true/false read back as 1/0
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return value


def compile_filter(
    where: object, fields: Mapping[str, str], column: str = "meta"
) -> tuple[str, list]:
    """Compile a filter to ``(sql, params)``: a boolean SQL expression over the JSON text
    of ``column`` and the values it binds, in order.

    Parameters
    ----------
    where : dict
        The filter (module docstring); ``None`` or ``{}`` matches every document.
    fields : mapping of str to str
        The collection's fields and their kinds (``"number"``, ``"string"``,
        ``"bool"``): the fields a filter may name.
    column : str
        The metadata column (an SQL identifier the caller controls).

    Raises
    ------
    TypeError
        ``where`` (or a nested filter) is not a dict, or a value is not a number,
        string or boolean.
    ValueError
        An unknown operator or field, a value of another kind than the field's,
        an empty or mixed ``$in``/``$nin`` list, an empty ``$and``/``$or``, a
        filter deeper than :data:`MAX_DEPTH` or holding more than
        :data:`MAX_VALUES` values.

    Examples
    --------
    >>> compile_filter({"tag": {"$in": ["a", "b"]}}, {"tag": "string"})
    ('(json_extract(meta, \\'$."tag"\\') IN (?, ?))', ['a', 'b'])
    >>> compile_filter({}, {})
    ('1', [])
    >>> compile_filter({"year": {"$gt": "x"}}, {"year": "number"})
    Traceback (most recent call last):
    ...
    ValueError: filter on 'year' ($gt): the field holds numbers, found string 'x'
    """
    params: list = []
    sql = "1" if where is None else _compile(where, fields, column, params, 0)
    return sql, params


def _compile(where, fields, column, params, depth) -> str:
    if not isinstance(where, Mapping):
        raise TypeError(
            f"a filter must be a dict such as {{'year': {{'$gte': 2020}}}}, "
            f"found {type(where).__name__}"
        )
    if depth > MAX_DEPTH:
        raise ValueError(f"filters nest at most {MAX_DEPTH} levels of $and/$or")
    parts = []
    for key, value in where.items():
        if isinstance(key, str) and key in COMBINATORS:
            if not isinstance(value, (list, tuple)) or not value:
                raise ValueError(f"{key} takes a non-empty list of filters, found {value!r}")
            inner = [_compile(f, fields, column, params, depth + 1) for f in value]
            parts.append("(" + (" AND " if key == "$and" else " OR ").join(inner) + ")")
        elif isinstance(key, str) and key.startswith("$"):
            raise ValueError(
                f"unknown operator {key!r} at the top of a filter: expected a field name, "
                f"$and or $or"
            )
        else:
            parts.append(_field(key, value, fields, column, params))
    if not parts:
        return "1"
    return parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"


def _field(name, cond, fields, column, params) -> str:
    name = check_field_name(name)
    if name not in fields:
        known = ", ".join(repr(f) for f in sorted(fields)[:20]) or "none yet"
        raise ValueError(f"filter names the unknown field {name!r}; known fields: {known}")
    kind = fields[name]
    if kind not in KINDS:  # lists or objects (vecpress.collection.metadata): stored only
        raise ValueError(
            f"filter names {name!r}, a field of lists or objects: filters compare numbers, "
            "strings and booleans"
        )
    expr = field_expr(name, column)
    if not isinstance(cond, Mapping):  # {"field": value}: equality
        cond = {"$eq": cond}
    if not cond:
        raise ValueError(f"filter on {name!r}: an empty dict of operators")
    parts = []
    for op, value in cond.items():
        if op in COMPARISONS:
            _check_value(name, op, kind, value)
            if op not in ("$eq", "$ne") and kind == "bool":
                raise ValueError(
                    f"filter on {name!r} ({op}): the field holds booleans, which $eq, $ne, "
                    "$in and $nin compare, but nothing orders"
                )
            _bind(params, [value])
            if op == "$ne":  # a document without the field is not equal (MongoDB)
                parts.append(f"({expr} IS NULL OR {expr} <> ?)")
            else:
                parts.append(f"({expr} {COMPARISONS[op]} ?)")
        elif op in LIST_OPERATORS:
            if not isinstance(value, (list, tuple)) or not value:
                raise ValueError(
                    f"filter on {name!r} ({op}): expected a non-empty list of values, found "
                    f"{value!r}"
                )
            for v in value:
                _check_value(name, op, kind, v)
            _bind(params, value)
            marks = ", ".join("?" * len(value))
            if op == "$in":
                parts.append(f"({expr} IN ({marks}))")
            else:
                parts.append(f"({expr} IS NULL OR {expr} NOT IN ({marks}))")
        else:
            ops = ", ".join([*COMPARISONS, *LIST_OPERATORS])
            raise ValueError(f"filter on {name!r}: unknown operator {op!r}; expected one of {ops}")
    return parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"


def _check_value(name, op, kind, value) -> None:
    try:
        found = value_kind(value)
    except (TypeError, ValueError) as e:
        raise type(e)(f"filter on {name!r} ({op}): {e}") from None
    if found is None:
        raise ValueError(
            f"filter on {name!r} ({op}): None compares with nothing (a missing value "
            "matches only $ne and $nin)"
        )
    if found != kind:
        raise ValueError(
            f"filter on {name!r} ({op}): the field holds {KINDS[kind]}, found {found} {value!r}"
        )


def _bind(params: list, values) -> None:
    if len(params) + len(values) > MAX_VALUES:
        raise ValueError(f"a filter holds at most {MAX_VALUES} values")
    params.extend(_plain(v) for v in values)
