"""The :class:`Codec`: transforms followed by one quantizer, as data plus functions."""

from __future__ import annotations

import numpy as np

from .. import container
from .._validation import as_codes, as_vectors, check_positive_int
from ..errors import FormatError, NotFittedError
from ..threads import get_num_threads, threaded, using
from .quantizers.base import field_exponent, get_field, put_field
from .spec import canonical, parse

_KIND = "vecpress.codec"
#: float32 bytes of input per slice of ``Codec.encode`` (cache-sized, see _encode_rows)
_SLICE_BYTES = 3 << 20
#: version 2 = version 1 plus scale exponents of float16 fields (``field_exp``, ``term_exp``
#: in the stages' configs); version 3 = version 2 plus Hadamard rounds of the mixing-step
#: layout (``mix`` in their config, :class:`~vecpress.codecs.transforms.Hadamard`). A blob
#: is written with the lowest version that holds what it uses, so that an older vecpress
#: reads it if it can, and refuses (naming the version) one it would misread
_CODEC_VERSION = 3
_READ_VERSIONS = (1, 2, 3)
_SCALE_KEYS = ("field_exp", "term_exp")
#: the config keys that need a version: key -> the first version that has it
_KEY_VERSIONS = {"field_exp": 2, "term_exp": 2, "mix": 3}


#: queries scored together against the union of their re-ranking candidates
#: (:meth:`Codec.score_candidates`): larger blocks score more pairs that are not
#: asked for, smaller ones call the kernels more often
CANDIDATE_BLOCK = 16


class Codec:
    """A vector codec built from a spec string such as ``"center,hd2,rq4"``.

    Every codec maps float32 vectors of dimension ``d`` to rows of
    ``code_size`` bytes that hold everything the vector needs (codes, norms,
    scales, correction factors), and scores float queries against those rows:
    :meth:`score` estimates the inner product ``<q, x>`` with the *original*
    vector ``x``.

    Use :meth:`from_spec` to build one. Codecs with nothing to learn are ready
    once their dimension is known (``from_spec(spec, d=...)`` or :meth:`fit`);
    codecs with a learned stage (``center``, ``int<b>``) need :meth:`fit`.

    Input policy: vectors must be 2-D float arrays; float16/float64 and
    non-contiguous arrays are converted to contiguous float32; integer arrays
    raise ``TypeError``; NaN/Inf, a row whose norm exceeds
    :data:`vecpress.MAX_NORM` (``2**50``) or a wrong dimension raise
    ``ValueError``. Zero rows encode to zero code rows and score to an empty matrix.

    Magnitudes: the float16 per-vector fields of codes of at most 4 bits (and
    ``lvq``'s bounds, the centring term) are scaled by a power of two that
    :meth:`fit` chooses from the training rows (:mod:`vecpress.codecs.quantizers.base`),
    so data of any scale within the limit code with float16's precision. A row
    whose field would not fit the fitted codec raises ``ValueError`` naming the
    row at :meth:`encode`; scores of accepted rows are always finite.

    Examples
    --------
    >>> import numpy as np
    >>> from vecpress import Codec
    >>> x = np.random.default_rng(0).standard_normal((1000, 64)).astype(np.float32)
    >>> codec = Codec.from_spec("hd2,rq4").fit(x)
    >>> codes = codec.encode(x)
    >>> codes.shape, codec.code_size
    ((1000, 36), 36)
    >>> codec.score(x[:3], codes).shape
    (3, 1000)
    >>> Codec.from_bytes(codec.to_bytes()).spec
    'hd2,rq4'
    """

    def __init__(self, transforms, quantizer, *, seed: int = 0) -> None:
        self.transforms = list(transforms)
        self.quantizer = quantizer
        self.seed = seed
        self.d: int | None = None
        self._tier_codec: Codec | None = None

    # -- construction ------------------------------------------------------
    @classmethod
    def from_spec(cls, spec: str, *, d: int | None = None, seed: int = 0) -> Codec:
        """Build a codec from a spec string.

        Parameters
        ----------
        spec : str
            Stages joined by commas, transforms first, one quantizer last
            (see :mod:`vecpress.codecs.spec`).
        d : int, optional
            The dimension; when given, random stages are drawn at once so that
            training-free codecs can encode without ``fit``.
        seed : int
            Seed of every random stage (rotations, projections).

        Examples
        --------
        >>> Codec.from_spec("center,hd2,rq4").spec
        'center,hd2,rq4'
        """
        seed = check_positive_int(seed, "seed", low=0)
        transforms, quantizer = parse(spec)
        if sum(t.stores_term for t in transforms) > 1:
            names = ", ".join(repr(t.spec) for t in transforms if t.stores_term)
            raise ValueError(
                f"spec {spec!r}: {names}: a stage that stores a per-vector term may appear "
                "at most once"
            )
        codec = cls(transforms, quantizer, seed=seed)
        if d is not None:
            codec._setup(check_positive_int(d, "d"))
        return codec

    def _stages(self):
        return [*self.transforms, self.quantizer]

    def _setup(self, d: int) -> None:
        ss = np.random.SeedSequence(self.seed)
        dim = d
        for stage, child in zip(self._stages(), ss.spawn(len(self._stages())), strict=True):
            stage.setup(dim, np.random.default_rng(child))
            if stage is not self.quantizer:
                dim = stage.out_dim(dim)
        self.d = d

    # -- properties --------------------------------------------------------
    @property
    def spec(self) -> str:
        """The canonical spec string."""
        return canonical(self.transforms, self.quantizer)

    @property
    def is_fitted(self) -> bool:
        return self.d is not None and all(s.fitted for s in self._stages())

    @property
    def _centered(self) -> bool:
        return self._center is not None

    @property
    def code_size(self) -> int:
        """Bytes per encoded vector (everything per vector included)."""
        self._check_ready()
        return self._row_bytes()

    def _row_bytes(self) -> int:
        """The quantizer's code plus the stored centring term (dimension set up)."""
        extra = self.quantizer.field_dtype.itemsize if self._centered else 0
        return self.quantizer.code_size + extra

    @classmethod
    def code_size_of(cls, spec: str, d: int) -> int:
        """Bytes per vector that ``spec`` takes at dimension ``d``, without fitting.

        Examples
        --------
        >>> Codec.code_size_of("center,hd2,rq4", 384), Codec.code_size_of("pq48x8", 384)
        (198, 48)
        """
        codec = cls.from_spec(spec)
        codec._setup(check_positive_int(d, "d"))
        return codec._row_bytes()

    # -- tiers (two-level codes) ----------------------------------------------
    @property
    def is_two_level(self) -> bool:
        """Whether the rows hold two levels (``lvq<b1>x<b2>``): an index scans the first
        (:attr:`tier_codec`) and re-ranks with both."""
        return self.quantizer.two_level

    @property
    def tier_codec(self) -> Codec:
        """The codec of the first level's rows (:meth:`split_tiers`): ``self`` for a
        one-level codec; for ``...,lvq<b1>x<b2>`` the codec ``...,lvq<b1>``, sharing
        this codec's fitted transforms.

        Examples
        --------
        >>> x = np.random.default_rng(0).standard_normal((100, 8)).astype(np.float32)
        >>> Codec.from_spec("center,lvq4x8").fit(x).tier_codec.spec
        'center,lvq4'
        """
        self._check_ready()
        if not self.is_two_level:
            return self
        cached = self._tier_codec
        if cached is None or cached.transforms != self.transforms:
            cached = Codec(self.transforms, self.quantizer.level1, seed=self.seed)
            cached.d = self.d
            self._tier_codec = cached
        return cached

    @property
    def tier_sizes(self) -> tuple[int, int]:
        """Bytes per row of the first level and of the second (0 for one-level codecs)."""
        first = self.tier_codec.code_size
        return first, self.code_size - first

    def split_tiers(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cut rows into first-level rows (rows of :attr:`tier_codec`, centring term
        included) and second-level rows; :meth:`join_tiers` puts them back."""
        codes = as_codes(codes, self.code_size)
        if not self.is_two_level:
            return codes, codes[:, :0]
        n1, q = self.quantizer.level1_size, self.quantizer.code_size
        first = np.concatenate([codes[:, :n1], codes[:, q:]], axis=1)
        return first, np.ascontiguousarray(codes[:, n1:q])

    def join_tiers(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """The full rows of :meth:`split_tiers`' two parts."""
        if not self.is_two_level:
            return first
        n1 = self.quantizer.level1_size
        return np.concatenate([first[:, :n1], second, first[:, n1:]], axis=1)

    @property
    def _center(self):
        """The stage whose exact per-vector term is stored (``center``), or ``None``."""
        return next((t for t in self.transforms if t.stores_term), None)

    def _split(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Quantizer part of the rows, and the stored centring term (or None)."""
        center = self._center
        if center is None:
            return codes, None
        qs = self.quantizer.code_size
        return codes[:, :qs], get_field(codes, qs, self.quantizer.field_dtype, center.term_exp)

    def __repr__(self) -> str:
        state = f"d={self.d}" if self.d is not None else "unfitted"
        return f"Codec({self.spec!r}, {state})"

    def _check_ready(self) -> None:
        if not self.is_fitted:
            need = [s.spec for s in self._stages() if not s.fitted] or ["(dimension)"]
            raise NotFittedError(
                f"codec {self.spec!r} is not fitted ({', '.join(need)} needs data): call fit(X) "
                "first, or pass d= to from_spec for a training-free codec"
            )

    # -- learning ----------------------------------------------------------
    def fit(
        self, x, *, sample: int | None = None, sampling: str = "uniform", queries=None
    ) -> Codec:
        """Learn what the stages need from training vectors; returns ``self``.

        For training-free codecs this fixes the dimension (and draws the
        random rotations if not done yet) and fits the scale of the float16
        per-vector fields to the rows' magnitude. ``sample`` rows (all if ``None``) are
        drawn with the codec's seed, uniformly or by leverage score
        (:func:`vecpress.codecs.sampling.sample_rows`): leverage sampling keeps rare
        directions in the sample; ``center`` then takes the weighted mean (so
        it stays unbiased), and the other stages fit the sampled rows as they are.
        ``queries`` (a sample of the queries the codec will serve) is required by
        ``leanvec-ood<d'>``, which learns from both distributions.

        Examples
        --------
        >>> x = np.random.default_rng(0).standard_normal((5000, 16)).astype(np.float32)
        >>> c = Codec.from_spec("center,int8").fit(x, sample=1000, sampling="leverage")
        >>> bool(np.abs(c.transforms[0].mean_).max() < 0.2)
        True
        """
        with using(blas=True):  # no more BLAS threads than vecpress's (vecpress.threads)
            return self._fit(x, sample, sampling, queries)

    def _fit(self, x, sample, sampling, queries) -> Codec:
        x = as_vectors(x, "X", dim=self.d, allow_empty=False)
        q = None if queries is None else as_vectors(queries, "queries", dim=x.shape[1])
        weights = None
        if sample is not None or sampling != "uniform":
            from .sampling import sample_rows

            rows, w = sample_rows(
                x, x.shape[0] if sample is None else sample, sampling, seed=self.seed
            )
            x = x[rows]
            weights = w if sampling != "uniform" else None
        if self.d is None:
            self._setup(x.shape[1])
        for t in self.transforms:  # every stage fits alike (transforms.Transform.fit)
            t.fit(x, weights=weights, queries=q)
            if t.stores_term:
                t.term_exp = self._term_exponent(t.term(x))
            x = t.forward(x)
            if q is not None:
                q, _ = t.query(q)
        # every quantizer fits: the training-free ones fit the scale of their float16
        # fields to the rows (vecpress.codecs.quantizers.base)
        self.quantizer.fit(x, weights=weights, queries=q)
        return self

    def _term_exponent(self, term: np.ndarray) -> int:
        """The exponent of the stored centring term: fitted to the training rows' terms
        when the field is float16, else 0."""
        if self.quantizer.field_dtype.itemsize != 2 or term.size == 0:
            return 0
        return field_exponent(float(np.abs(term).max()))

    # -- the codec trio ----------------------------------------------------
    @threaded
    def encode(self, x) -> np.ndarray:
        """Encode vectors into ``uint8[n, code_size]``.

        Rows go through the stages a slice at a time (:func:`_encode_rows`), so the
        intermediate arrays stay in the cache; every stage codes each row on its own,
        so the codes are those of one pass over all rows (up to the last-bit rounding
        of BLAS matrix products, ``pca``/``opq``/``kl``, which depends on the number
        of rows multiplied at once).

        Examples
        --------
        >>> x = np.random.default_rng(0).standard_normal((100, 64)).astype(np.float32)
        >>> codec = Codec.from_spec("hd2,rq4").fit(x)
        >>> codec.encode(x).shape
        (100, 36)
        """
        self._check_ready()
        x = as_vectors(x, "X", dim=self.d)
        out = np.empty((x.shape[0], self.code_size), np.uint8)
        step = _encode_rows(self.d, get_num_threads())
        for s in range(0, x.shape[0], step):
            out[s : s + step] = self._encode_slice(x[s : s + step])
        return out

    def _encode_slice(self, x: np.ndarray) -> np.ndarray:
        term = None
        for t in self.transforms:
            if t.stores_term:
                term = t.term(x)
            x = t.forward(x)
        codes = self.quantizer.encode(x)
        if term is None:
            return codes
        out = np.empty((x.shape[0], self.code_size), np.uint8)
        out[:, : codes.shape[1]] = codes
        put_field(
            out, codes.shape[1], term, self.quantizer.field_dtype, self._center.term_exp,
            what="centring term <mu, x - mu>", owner=f"codec {self.spec!r}",
        )  # fmt: skip
        return out

    @threaded
    def decode(self, codes) -> np.ndarray:
        """Reconstruct float32 vectors from codes."""
        self._check_ready()
        codes, _ = self._split(as_codes(codes, self.code_size))
        y = self.quantizer.decode(codes).astype(np.float32, copy=False)
        for t in reversed(self.transforms):
            y = t.inverse(y)
        return np.ascontiguousarray(y, dtype=np.float32)

    def transform_queries(self, q) -> tuple[np.ndarray, np.ndarray]:
        """Map queries into the quantizer's space: ``(q', offset)`` with
        ``<q, x> = <q', T x> + offset``."""
        self._check_ready()
        return self._transform_queries(as_vectors(q, "queries", dim=self.d))

    def _transform_queries(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`transform_queries` of queries already checked (float32[nq, d], finite)."""
        offset = np.zeros(q.shape[0], np.float32)
        for t in self.transforms:
            q, off = t.query(q)
            if off is not None:
                offset += off
        return np.ascontiguousarray(q, dtype=np.float32), offset

    @threaded
    def score(self, q, codes) -> np.ndarray:
        """Estimate ``<q_i, x_j>`` for every query row and code row: ``float32[nq, n]``."""
        qt, offset = self.transform_queries(q)
        codes = as_codes(codes, self.code_size)
        if qt.shape[0] == 0 or codes.shape[0] == 0:
            return np.zeros((qt.shape[0], codes.shape[0]), np.float32)
        qcodes, term = self._split(codes)
        out = self.quantizer.score(qt, qcodes)
        if term is not None:
            out += term[None, :]
        out += offset[:, None]
        return out

    @threaded
    def score_candidates(self, q, codes, rows) -> np.ndarray:
        """Score each query against its own candidate rows: ``float32[nq, R]``.

        ``out[i, r]`` is what :meth:`score` gives for query ``i`` and the row
        ``codes[rows[i, r]]`` — the codec's own estimator (for ``rq``, ``tqp``,
        ``kl``, ``qjl``, the unbiased, corrected one; for floats, ``<q_i, x̂>``),
        so a re-ranking tier ranks its candidates exactly as an index of that
        codec would; ``-inf`` where ``rows[i, r] < 0``. This is the re-ranking
        step: queries are scored in blocks of :data:`CANDIDATE_BLOCK` against the
        union of their candidates (by the compiled kernels, whose result for a
        pair does not depend on the others), or, for the codecs whose estimator
        is ``<q, x̂>`` itself (floats, two-level LVQ), pair by pair, in the
        quantizer's (rotated) space, so no inverse transform runs.

        Examples
        --------
        >>> x = np.eye(3, dtype=np.float32)
        >>> codec = Codec.from_spec("f32", d=3)
        >>> codec.score_candidates(x[:1], codec.encode(x), np.array([[2, 0, -1]])).tolist()
        [[0.0, 1.0, -inf]]
        """
        qt, offset = self.transform_queries(q)
        codes = as_codes(codes, self.code_size)
        rows = np.asarray(rows, np.int64)
        if rows.ndim != 2 or rows.shape[0] != qt.shape[0]:
            raise ValueError(f"rows must be (nq={qt.shape[0]}, R), found shape {rows.shape}")
        if rows.size and rows.max() >= codes.shape[0]:
            raise ValueError(f"rows must be < {codes.shape[0]}, found {int(rows.max())}")
        if self.quantizer.scores_by_decoding:  # <q, x̂>, pair by pair: order-independent
            return self._decoded_candidates(qt, offset, codes, rows)
        out = np.full(rows.shape, -np.inf, np.float32)
        for s in range(0, rows.shape[0], CANDIDATE_BLOCK):
            block = rows[s : s + CANDIDATE_BLOCK]
            valid = block >= 0
            if not valid.any():
                continue
            union, where = np.unique(block[valid], return_inverse=True)
            qcodes, term = self._split(codes[union])
            est = self.quantizer.score(qt[s : s + CANDIDATE_BLOCK], qcodes)
            if term is not None:
                est += term[None, :]
            qi = np.nonzero(valid)[0]
            part = out[s : s + CANDIDATE_BLOCK]
            part[valid] = est[qi, where.ravel()] + offset[s + qi]
        return out

    def _decoded_candidates(self, qt, offset, codes, rows) -> np.ndarray:
        """``<q_i, x̂>`` of each query's candidates, decoded in the quantizer's space."""
        nq, r = rows.shape
        valid = rows >= 0
        picked = codes[np.where(valid, rows, 0).ravel()]
        qcodes, term = self._split(picked)
        y = self.quantizer.decode(qcodes).astype(np.float32, copy=False)
        y = y.reshape(nq, r, qt.shape[1])  # (not -1: no candidates is a valid (nq, 0) block)
        out = np.einsum("ird,id->ir", y, qt).astype(np.float32)
        if term is not None:
            out += term.reshape(nq, r)
        out += offset[:, None]
        out[~valid] = -np.inf
        return out

    # -- serialization -----------------------------------------------------
    def to_bytes(self) -> bytes:
        """Serialize to a self-describing blob (JSON config + named arrays, no pickle)."""
        self._check_ready()
        stages = []
        arrays = {}
        for i, st in enumerate(self._stages()):
            stages.append(st.config())
            for k, v in st.arrays().items():
                arrays[f"{i}.{k}"] = v
        version = max([1] + [_KEY_VERSIONS[k] for cfg in stages for k in cfg if k in _KEY_VERSIONS])
        config = {
            "kind": _KIND,
            "version": version,
            "spec": self.spec,
            "d": self.d,
            "seed": self.seed,
            "stages": stages,
        }
        return container.pack(config, arrays)

    @classmethod
    def from_bytes(cls, data, source: str = "<bytes>") -> Codec:
        """Rebuild a codec from :meth:`to_bytes` output.

        Raises
        ------
        FormatError
            Whatever is wrong with ``data`` (the blob's layout or checksums, its
            JSON, the codec config or the stage arrays); the message names
            ``source``.

        Examples
        --------
        >>> x = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
        >>> Codec.from_bytes(Codec.from_spec("center,rq4").fit(x).to_bytes()).spec
        'center,rq4'
        >>> bad = container.pack({"kind": _KIND, "version": _CODEC_VERSION, "spec": "rq4", "d": 8,
        ...                  "seed": 0, "stages": [1]}, {})
        >>> Codec.from_bytes(bad, source="c.bin")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        vecpress.errors.FormatError: c.bin: invalid codec in config: stage 0 config 1 is not ...
        """
        config, arrays = container.unpack(data, source)
        try:
            version = config.get("version")
            if config.get("kind") != _KIND or version not in _READ_VERSIONS:
                raise ValueError(
                    f"not a codec of version {' or '.join(map(str, _READ_VERSIONS))} "
                    f"(kind {config.get('kind')!r}, version {version!r})"
                )
            d = check_positive_int(config["d"], "d")
            if not isinstance(config["spec"], str) or not isinstance(config["stages"], list):
                raise ValueError("spec must be a string and stages a list")
            codec = cls.from_spec(config["spec"], seed=config["seed"])
            stages = codec._stages()
            if len(config["stages"]) != len(stages):
                raise ValueError("stage list does not match the spec")
            dim = d
            for i, (st, cfg) in enumerate(zip(stages, config["stages"], strict=True)):
                if not isinstance(cfg, dict):
                    raise ValueError(f"stage {i} config {cfg!r:.80} is not an object")
                want = st.param
                if (
                    cfg.get("name") != st.name
                    or cfg.get("d") != dim
                    or cfg.get("param", want) != want
                ):
                    raise ValueError(f"stage {i} config {cfg!r} does not match {st.spec!r}")
                for key, since in _KEY_VERSIONS.items():
                    if key in cfg and version < since:
                        raise ValueError(f"stage {i}: {key!r} needs a version-{since} codec")
                mine = {
                    k.split(".", 1)[1]: v for k, v in arrays.items() if k.split(".", 1)[0] == str(i)
                }
                st.restore(cfg, mine)
                if st is not codec.quantizer:
                    dim = st.out_dim(dim)
            codec.d = d
        except FormatError:
            raise
        # the config and arrays are untrusted: whatever restoring them raises is a bad file
        except (ValueError, TypeError, LookupError, AttributeError, ArithmeticError) as e:
            raise FormatError(f"{source}: invalid codec in config: {e}") from None
        return codec


def _encode_rows(d: int, threads: int) -> int:
    """Rows per slice of :meth:`Codec.encode`: about ``_SLICE_BYTES`` of float32 input
    (the rotated copy of a slice stays in the last-level cache: encoding 100,000 x 384
    rows through ``hd2,rq4`` in one pass spends ~20 % of its time moving the rotated
    array through memory), and at least 1,024 rows a thread for the parallel kernels.

    Examples
    --------
    >>> _encode_rows(384, 1), _encode_rows(50, 1), _encode_rows(384, 8)
    (2048, 15728, 8192)
    """
    return max(_SLICE_BYTES // (4 * d), 1024 * threads)
