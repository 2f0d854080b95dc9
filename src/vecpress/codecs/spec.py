"""Spec strings: ``"center,hd2,rq4"`` — transforms first, one quantizer last.

A spec is parsed into stage objects and printed back from them, so
``Codec.from_spec(s).spec`` is the canonical form of ``s`` (lower case, no
spaces). Unknown or misplaced stages raise ``ValueError`` naming the stage and
listing the valid names.
"""

from __future__ import annotations

import re

from .quantizers.additive import make_additive
from .quantizers.base import Quantizer
from .quantizers.floats import BF16, E4M3, E5M2, F16, F32
from .quantizers.pq import OPQ, PQ, PQ_BITS
from .quantizers.rabitq import RQ
from .quantizers.sketches import QJL, Sign
from .quantizers.transform_coding import KL
from .quantizers.transform_vq import make_klvq
from .quantizers.turboquant import TQ, TQProd
from .quantizers.two_level import LVQ2
from .quantizers.uniform import LVQ, Int
from .transforms import PCA, Center, Haar, Hadamard, LeanVec, Transform

#: name -> (class, (low, high) for the integer parameter, or None)
QUANTIZERS: dict[str, tuple[type[Quantizer], tuple[int, int] | None]] = {
    "f32": (F32, None),
    "f16": (F16, None),
    "bf16": (BF16, None),
    "e4m3": (E4M3, None),
    "e5m2": (E5M2, None),
    "int": (Int, (1, 8)),
    "lvq": (LVQ, (1, 8)),
    "tq": (TQ, (1, 8)),
    "tqp": (TQProd, (1, 8)),
    "rq": (RQ, (1, 8)),
    "kl": (KL, (1, 8)),
    "qjl": (QJL, (1, 1 << 16)),
    "sign": (Sign, None),
}

TRANSFORM_NAMES = (
    "center",
    "haar",
    "hd1",
    "hd2",
    "hd3",
    "pca<d'>",
    "leanvec<d'>",
    "leanvec-ood<d'>",
)

_TOKEN = re.compile(r"^([a-z][a-z0-9]*?)(\d*)$")
#: product quantizers: name, M sub-quantizers, bits each
PRODUCT_QUANTIZERS = {"pq": PQ, "opq": OPQ}
_PQ_TOKEN = re.compile(r"^(o?pq)(\d+)x(\d+)$")
_LVQ2_TOKEN = re.compile(r"^lvq(\d+)x(\d+)$")


def _valid_names() -> str:
    q = ", ".join(
        f"{n}<{'m' if cls.param_name == 'm' else 'b'}>" if rng else n
        for n, (cls, rng) in QUANTIZERS.items()
    )
    return (
        f"transforms: {', '.join(TRANSFORM_NAMES)}; quantizers: {q} (b in 1..8), "
        "pq<M>x<b>, opq<M>x<b> (b = 4 or 8), lvq<b1>x<b2> (two-level LVQ, b1, b2 in 1..8), "
        "rvq<M>x<b>[-beam<n>], lsq<M>x<b>[-ils<n>] (additive, b = 4 or 8), "
        "klvq<b>[-beam<n>][-aniso<eta>] (transform coding with vector-quantized leading axes)"
    )


def make_transform(token: str) -> Transform:
    """Build the transform stage named ``token`` (``center``, ``haar``, ``hd1``..``hd3``)."""
    if token == "center":
        return Center()
    if token == "haar":
        return Haar()
    if token in ("hd1", "hd2", "hd3"):
        return Hadamard(int(token[2]))
    lv = re.fullmatch(r"leanvec(-ood)?(\d+)", token)
    if lv:
        out = int(lv.group(2))
        if not 1 <= out <= 1 << 16 or token != f"leanvec{lv.group(1) or ''}{out}":
            raise ValueError(f"stage {token!r}: leanvec<d'> needs d' in [1, 65536]")
        return LeanVec(out, ood=lv.group(1) is not None)
    pca = re.fullmatch(r"pca(\d+)", token)
    if pca:
        out = int(pca.group(1))
        if not 1 <= out <= 1 << 16 or token != f"pca{out}":
            raise ValueError(f"stage {token!r}: pca<d'> needs d' in [1, 65536]")
        return PCA(out)
    raise KeyError(token)


def make_quantizer(token: str) -> Quantizer:
    """Build the quantizer stage named ``token`` (e.g. ``rq4``, ``qjl256``, ``f16``)."""
    if token in QUANTIZERS and QUANTIZERS[token][1] is None:
        return QUANTIZERS[token][0]()
    additive = make_additive(token)
    if additive is not None:
        return additive
    klvq = make_klvq(token)
    if klvq is not None:
        return klvq
    pq = _PQ_TOKEN.match(token)
    if pq:
        name, m, bits = pq.group(1), int(pq.group(2)), int(pq.group(3))
        if not 1 <= m <= 1 << 16 or bits not in PQ_BITS or token != f"{name}{m}x{bits}":
            raise ValueError(
                f"stage {token!r}: {name}<M>x<b> needs M in [1, 65536] and b in "
                f"{' or '.join(map(str, PQ_BITS))}"
            )
        return PRODUCT_QUANTIZERS[name](m, bits)
    two = _LVQ2_TOKEN.match(token)
    if two:
        b1, b2 = int(two.group(1)), int(two.group(2))
        if not (1 <= b1 <= 8 and 1 <= b2 <= 8) or token != f"lvq{b1}x{b2}":
            raise ValueError(f"stage {token!r}: lvq<b1>x<b2> needs b1 and b2 in 1..8")
        return LVQ2(b1, b2)
    m = _TOKEN.match(token)
    if not m or m.group(1) not in QUANTIZERS:
        raise KeyError(token)
    name, digits = m.groups()
    cls, rng = QUANTIZERS[name]
    if rng is None or not digits:
        raise KeyError(token)
    value = int(digits)
    if not rng[0] <= value <= rng[1] or digits != str(value):
        raise ValueError(
            f"stage {token!r}: {cls.param_name} must be an integer in [{rng[0]}, {rng[1]}], "
            f"found {digits}"
        )
    return cls(value)


def parse(spec: str) -> tuple[list[Transform], Quantizer]:
    """Parse a spec string into transform stages and the final quantizer.

    Examples
    --------
    >>> ts, q = parse("center, HD2, rq4")
    >>> [t.spec for t in ts], q.spec
    (['center', 'hd2'], 'rq4')
    """
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a string such as 'hd2,rq4', found {type(spec).__name__}")
    tokens = [t.strip().lower() for t in spec.split(",")]
    if not spec.strip() or any(not t for t in tokens):
        raise ValueError(f"spec {spec!r} has an empty stage; valid names: {_valid_names()}")
    transforms: list[Transform] = []
    for pos, tok in enumerate(tokens[:-1]):
        try:
            transforms.append(make_transform(tok))
        except KeyError:
            where = f"stage {pos + 1} ({tok!r}) of spec {spec!r}"
            try:
                make_quantizer(tok)
            except (KeyError, ValueError):
                raise ValueError(f"{where} is not a valid stage; {_valid_names()}") from None
            raise ValueError(
                f"{where} is a quantizer, but only the last stage may be one; {_valid_names()}"
            ) from None
    last = tokens[-1]
    try:
        quantizer = make_quantizer(last)
    except KeyError:
        where = f"last stage ({last!r}) of spec {spec!r}"
        try:  # any transform, parameters included (pca24, leanvec-ood8), not a fixed list
            make_transform(last)
        except (KeyError, ValueError):
            raise ValueError(f"{where} is not a valid quantizer; {_valid_names()}") from None
        raise ValueError(
            f"{where}: {last} is a transform and needs a quantizer after it (a spec must end "
            f"with a quantizer, e.g. {spec.strip() + ',rq4'!r}); {_valid_names()}"
        ) from None
    return transforms, quantizer


def canonical(transforms: list[Transform], quantizer: Quantizer) -> str:
    """Print stages back as a spec string."""
    return ",".join([t.spec for t in transforms] + [quantizer.spec])
