"""Score-aware residual quantization: beam search and codebook updates under an
anisotropic loss.

A residual quantizer (:mod:`.additive`) picks the codewords whose sum ``ŷ`` is nearest
the row ``y`` in squared error. Search does not rank by that error: it ranks by inner
products ``<q, ŷ>``, and what decides a row's place in a query's top k is the error
``<q, y - ŷ>`` for the queries that rank it high -- queries near the row, whose
direction is mostly the row's own. An error along the row's direction shifts its score
for every such query; an error orthogonal to it shifts their scores by a fraction of
its size, in varying signs. So the loss weighs the error's component along the row's
direction ``g`` (a unit vector) ``eta`` times its orthogonal components:

    l(ŷ) = |y - ŷ|²  +  (eta - 1) <g, y - ŷ>²

(``eta = 1`` is the squared error). This is the anisotropic loss of Guo et al. (2020,
"Accelerating large-scale inference with anisotropic vector quantization", the ScaNN
paper), used there for product quantizers; here it drives the residual quantizer's
beam search (:func:`beam_encode`) and a least-squares update of its codebooks
(:func:`refine_codebooks`), the codebooks faiss's residual quantizer trained as the
starting point. The decoder is unchanged: a row is still the sum of its codewords,
and a code is scored as any residual quantizer's.

Measured on GloVe-50 (399,000 rows L2-normalised, 1,000 queries, recall@10 of an
exhaustive inner-product search, 6 codebooks of 256 codewords over all 50 dimensions,
faiss's codebooks trained on 16,384 rows, beam 16; throwaway script): squared error
0.2349 (faiss's own beam search: 0.2349); the anisotropic beam search with the same
codebooks 0.2699 at ``eta = 2`` and at 4, 0.2490 at 8; with ``eta = 3`` 0.2710, and
after one, two and three rounds of codebook updates 0.2825, 0.2847, 0.2899.

**Beam search.** Each step extends every kept partial sum by every codeword of the next
codebook and keeps the ``beam`` of least loss. With the residual ``r = y - ŷ`` of a
partial sum, its squared norm ``E = |r|²`` and ``P = <g, r>``, adding codeword ``c``
gives ``E - 2 <r, c> + |c|²`` and ``P - <g, c>``, so a candidate costs one dot product
over the block's axes. The row's code is the kept sum of least loss after the last
codebook.

The dot products come from BLAS products and tables, for a block of 128 rows at a time:
``<g, c>`` of every codeword once; and at step ``m``, ``<r_b, c>`` of each kept sum
``b`` from the residual of its ancestor :data:`ANCESTRY` (2) steps up, ``r_a``, as
``<r_a, c> - Σ_s <C_s[w_s], c>`` over the words ``w_s`` the sum added since, read from
tables of the products of each codebook's words with the next two codebooks' (0.5 MiB
a codebook, :func:`codebook_tables`). The kept sums of a step descend from few
ancestors (MiniLM block at 1 bit below, beam 5: on average 3.1 distinct parents and 2.2
distinct grandparents of a step's 5 sums; beam 16: 8.3 and 5.2), so a step is one
``(distinct ancestors, L) @ (L, 256)`` product instead of one row for every kept sum.
A compiled kernel then computes each kept sum's 256 losses and keeps each row's
``beam`` best, searching word by word only the blocks of 32 words whose least loss is
at most the ``beam``-th least block minimum (any ``beam`` blocks hold that many losses
at most that, so no better word is skipped). The codes are those of the plain
definition but where two candidates tie to float32 rounding (tested against a float64
reference).

Measured (one core, 20,000 rows of the MiniLM block at 1 bit: 92 axes, 23 codebooks
trained at beam 5 with ``eta = 3``; three rounds alternating with the former encoder,
which multiplied every kept residual and tested every word; throwaway script): beam 5
7,145-9,375 rows/s against 5,826-6,094, with one sweep (below) 7,372-8,083 against
5,040-5,605, beam 16 3,045-3,928 against 2,086-2,168; 1 row in 20,000 differs at beam
5 and 4 at beam 16, the mean loss equal to 6 digits. (The former encoder had in turn
given 6,930 rows/s at beam 5 on 4,096 Gaussian rows of that shape against 2,340 for a
kernel that computed each dot product in a loop.) What remains is mostly BLAS: per
row, 23 x 256 x 92 multiply-adds for ``<g, c>``, as many for a sweep, and the
ancestors' products (about 2.2 / 5 of one product a kept sum at beam 5); the kernel's
losses about 1.2 ns a candidate.

**Sweeps.** The beam search fixes the codebooks' words in order, so an early word is
never revisited once later codebooks are chosen. A *sweep* then takes the codebooks one
at a time and gives each row the word of least loss with every other word fixed (the
row's residual without that word, ``t``, scored against the codebook by one BLAS
product as a beam step with beam 1; the current word is kept unless another is strictly
better, so no row's loss rises): iterated conditional modes, as local-search
quantization refines its codes. Measured on the MiniLM block at 1 bit (100,000 sentence
embeddings, 92 axes, 23 codebooks trained at beam 5 with ``eta = 3``, 1,000 queries,
recall@10 of an exhaustive inner-product search; every encoder on the same codebooks,
throwaway script): beam 5 0.7326, beam 5 and one sweep **0.7370**, two sweeps 0.7378,
beam 16 0.7373 (one sweep after it 0.7370); beam 1 0.6986 and with one to three sweeps
0.7049-0.7054, beam 2 and two sweeps 0.7189. So one sweep after a beam of 5 reaches
what a beam of 16 reaches, where sweeps after a narrow beam stop at a poorer optimum.
Cost with the former beam search, one core, 4,096 Gaussian rows of that shape: 6,760
rows/s at beam 5, 5,630 with one sweep, 2,310 at beam 16 (22,770 at beam 1, 14,070
with a sweep).

**Codebook update.** With every other codebook fixed, codebook ``m``'s codeword ``v``
serves the rows ``S`` whose code picks it, each wanting ``t_i = y_i - Σ_{m'≠m}
C_m'[c_im']``. Their loss ``Σ_{i∈S} (t_i - v)ᵀ (I + (eta - 1) g_i g_iᵀ) (t_i - v)`` is
least at ``v = (|S| I + (eta - 1) Σ g_i g_iᵀ)⁻¹ Σ (t_i + (eta - 1) g_i <g_i, t_i>)``,
one small linear system per codeword (a codeword no row picks keeps its value). A
round updates the codebooks one after the other and each step lowers the training
rows' loss; between rounds the rows are encoded again.
"""

from __future__ import annotations

from typing import NamedTuple

import numba as nb
import numpy as np

from ...threads import single_threaded_blas
from .pq import unit_scale

#: rounds of encoding and codebook updates on the training rows
ROUNDS = 3


def unit_directions(h: np.ndarray) -> np.ndarray:
    """``h`` with each row scaled to unit norm (float32); rows of zero norm stay zero
    (their loss is the squared error).

    Examples
    --------
    >>> unit_directions(np.array([[3.0, 4.0], [0.0, 0.0]])).tolist()
    [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]]
    """
    h = np.asarray(h, np.float64)
    norm = np.sqrt((h * h).sum(axis=1, keepdims=True))
    return np.divide(h, norm, out=np.zeros_like(h), where=norm > 0).astype(np.float32)


def beam_encode(
    y: np.ndarray,
    g: np.ndarray,
    codebooks: np.ndarray,
    eta: float,
    beam: int,
    sweeps: int = 0,
    tables: CodebookTables | None = None,
) -> np.ndarray:
    """Codes (uint8[n, M]) of the rows ``y`` (float32[n, L]) by beam search under the
    anisotropic loss with unit directions ``g`` (float32[n, L]) and codebooks
    float32[M, 256, L], then ``sweeps`` rounds of single-codebook changes (module
    docstring). ``tables``: :func:`codebook_tables` of these codebooks, made once by a
    caller that encodes with them again (made here when ``None``).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> cb = rng.standard_normal((2, 256, 4)).astype(np.float32)
    >>> cb[1] *= 0.1  # a residual quantizer's second codebook: smaller than the first
    >>> y = (cb[0, [3, 7]] + cb[1, [5, 9]]).astype(np.float32)
    >>> beam_encode(y, unit_directions(y), cb, 2.0, 8).tolist()
    [[3, 5], [7, 9]]
    """
    g = np.ascontiguousarray(g, np.float32)
    if tables is None:
        tables = codebook_tables(codebooks)
    nbooks, _, dim = tables.cb.shape
    y = np.asarray(y, np.float32)
    if (
        np.shape(codebooks) != tables.cb.shape
        or y.ndim != 2
        or y.shape[1] != dim
        or g.shape != y.shape
    ):
        raise ValueError(
            f"beam_encode: rows {y.shape}, directions {g.shape}, codebooks "
            f"{np.shape(codebooks)} and tables of {tables.cb.shape} need float32[n, L], "
            "float32[n, L], float32[M, 256, L] and the codebooks' tables"
        )
    if isinstance(beam, bool) or not isinstance(beam, int | np.integer) or beam < 1:
        raise ValueError(f"beam_encode: beam must be an integer >= 1, found {beam!r}")
    if isinstance(sweeps, bool) or not isinstance(sweeps, int | np.integer) or sweeps < 0:
        raise ValueError(f"beam_encode: sweeps must be an integer >= 0, found {sweeps!r}")
    n = y.shape[0]
    out = np.empty((n, nbooks), np.uint8)
    if n == 0:
        return out
    y = np.ascontiguousarray(y * tables.scale)
    beam = int(beam)
    rows = min(n, _BLOCK)
    bufs = _Buffers(
        res=np.empty((ANCESTRY + 1, rows, beam, dim), np.float32),
        codes=np.zeros((2, rows, beam, nbooks), np.uint8),
        e=np.empty((2, rows, beam), np.float64),
        p=np.empty((2, rows, beam), np.float64),
        parent=np.zeros((ANCESTRY, rows, beam), np.int64),
        word=np.empty((rows, beam), np.int64),
        pos=np.empty((rows, beam), np.int64),
        anchors=np.empty((rows * beam, dim), np.float32),
    )
    extra = float(eta) - 1.0
    with single_threaded_blas():  # BLAS threads spinning beside the kernel's: 18x slower
        for s0 in range(0, n, _BLOCK):
            _beam_block(y, g, s0, tables, extra, beam, int(sweeps), out, bufs)
    return out


class CodebookTables(NamedTuple):
    """What :func:`beam_encode` derives from a set of codebooks (:func:`codebook_tables`):
    the scale ``s`` (:func:`.pq.unit_scale`), the scaled codebooks ``cb``
    (float32[M, 256, L]), every codeword as a column (``every``, float32[L, M * 256]:
    codebook ``m``'s in columns ``m * 256 : (m + 1) * 256``), their squared norms ``cn``
    (float64[M, 256]) and the cross products of nearby codebooks (``cross``,
    :func:`cross_products`)."""

    scale: np.float32
    cb: np.ndarray
    every: np.ndarray
    cn: np.ndarray
    cross: np.ndarray


def codebook_tables(codebooks: np.ndarray) -> CodebookTables:
    """:class:`CodebookTables` of ``codebooks`` (float32[M, 256, L]): about 0.5 MiB a
    codebook (the cross products) and ``2 M`` products of 256 x L x 256 multiply-adds.

    Examples
    --------
    >>> t = codebook_tables(np.ones((3, 256, 4), np.float32))
    >>> t.every.shape, t.cross.shape, float(t.cn[0, 0])
    ((4, 768), (2, 3, 256, 256), 4.0)
    """
    cb = np.asarray(codebooks, np.float32)
    if cb.ndim != 3 or cb.shape[1] != 256:
        raise ValueError(f"codebooks {cb.shape}: need float32[M, 256, L]")
    # the loss scales by s² with the rows and codebooks: a power of two s near their unit
    # keeps the float32 dot products of rows of ~1e-30 or ~1e30 from under- or overflowing
    s = unit_scale(cb)
    cb = np.ascontiguousarray(cb * s)
    nbooks, k, dim = cb.shape
    with single_threaded_blas():
        cross = cross_products(cb)
    return CodebookTables(
        scale=s,
        cb=cb,
        every=np.ascontiguousarray(cb.reshape(nbooks * k, dim).T),
        cn=(cb.astype(np.float64) ** 2).sum(axis=2),
        cross=cross,
    )


#: rows the beam search takes through its products at a time
_BLOCK = 128
#: generations up to the ancestor whose residual a beam step's product is taken of
ANCESTRY = 2


class _Buffers(NamedTuple):
    """Scratch of :func:`_beam_block`: residuals of the last ``ANCESTRY + 1``
    generations of kept sums, their codes, ``E`` and ``P`` (this and the next), the
    parents of the last ``ANCESTRY`` generations, the words chosen, each kept sum's
    ancestor's row in ``anchors`` (the distinct ancestors' residuals of a step)."""

    res: np.ndarray
    codes: np.ndarray
    e: np.ndarray
    p: np.ndarray
    parent: np.ndarray
    word: np.ndarray
    pos: np.ndarray
    anchors: np.ndarray


def cross_products(codebooks: np.ndarray) -> np.ndarray:
    """``X[j - 1, m, w, c] = <C_{m-j}[w], C_m[c]>`` for ``j = 1 .. ANCESTRY`` (zero where
    ``m < j``): the products of each codebook's words with those of the ``ANCESTRY``
    codebooks after it, float32[ANCESTRY, M, 256, 256].

    Examples
    --------
    >>> cb = np.random.default_rng(0).standard_normal((3, 256, 4)).astype(np.float32)
    >>> x = cross_products(cb)
    >>> x.shape  # (ANCESTRY, M, 256, 256)
    (2, 3, 256, 256)
    >>> bool(np.isclose(x[1, 2, 3, 7], cb[0, 3] @ cb[2, 7]))  # word 3 of C_0, word 7 of C_2
    True
    """
    cb = np.asarray(codebooks, np.float32)
    nbooks, k, _ = cb.shape
    x = np.zeros((ANCESTRY, nbooks, k, k), np.float32)
    for j in range(1, ANCESTRY + 1):
        for m in range(j, nbooks):
            x[j - 1, m] = cb[m - j] @ cb[m].T
    return x


def _beam_block(y, g, s0, tables, extra, beam, sweeps, out, bufs) -> None:
    """:func:`beam_encode` of the rows ``s0 : s0 + _BLOCK`` into ``out``.

    Generation ``t`` is the kept sums after ``t`` codebooks (generation 0: the row). A
    step scores generation ``m``'s sums against codebook ``m``: ``<r_b, c>`` is the
    product of the residual of ``b``'s ancestor at generation ``a = max(0, m -
    ANCESTRY)`` less the cross products of the words ``b`` added since (module
    docstring), so a step multiplies only the distinct ancestors' residuals."""
    cb, every, cn, cross = tables.cb, tables.every, tables.cn, tables.cross
    nbooks, k, _ = cb.shape
    yb = y[s0 : s0 + _BLOCK]
    r = yb.shape[0]
    gen = ANCESTRY + 1
    gc = g[s0 : s0 + r] @ every  # <g, c> of every codeword, float32[r, M * 256]
    bufs.res[0, :r, 0] = yb
    y64 = yb.astype(np.float64)
    bufs.e[0, :r, 0] = (y64 * y64).sum(axis=1)
    bufs.p[0, :r, 0] = (y64 * g[s0 : s0 + r]).sum(axis=1)
    kept = 1
    for m in range(nbooks):
        a = max(0, m - ANCESTRY)
        cur, nxt = m % 2, (m + 1) % 2
        # the distinct ancestors' residuals, and their <r_a, c> for codebook m's words
        rows = _ancestors(bufs.res[a % gen], bufs.parent, m, a, r, kept, bufs.pos, bufs.anchors)
        sc = bufs.anchors[:rows] @ every[:, m * k : (m + 1) * k]
        _best_extensions(
            sc, bufs.pos, bufs.codes[cur], cross, m, a, bufs.e[cur], bufs.p[cur], gc, cn[m],
            extra, beam, kept, bufs.e[nxt], bufs.p[nxt], bufs.parent[m % ANCESTRY], bufs.word,
        )  # fmt: skip
        new = min(beam, kept * k)
        _extend(
            bufs.res[m % gen], bufs.codes[cur], bufs.parent[m % ANCESTRY], bufs.word, cb[m],
            m, r, new, bufs.res[(m + 1) % gen], bufs.codes[nxt],
        )  # fmt: skip
        kept = new
    last = nbooks % 2
    best = bufs.codes[last, :r, 0]  # the kept sum of least loss, and its residual
    left = bufs.res[nbooks % gen, :r, 0]
    for _ in range(sweeps):
        for m in range(nbooks):
            # the residual without codebook m's word, and its <t, c> for every word
            t = left + cb[m][best[:, m]]
            sc = t @ every[:, m * k : (m + 1) * k]
            _best_words(t, g[s0 : s0 + r], sc, gc[:, m * k : (m + 1) * k], cn[m], extra, best[:, m])
            left = t - cb[m][best[:, m]]
    out[s0 : s0 + r] = best


@nb.njit(cache=True)
def _ancestors(res_a, parent, m, a, r, kept, pos, anchors):
    """Copy the distinct generation-``a`` ancestors of each row's ``kept`` sums of
    generation ``m`` into ``anchors`` (row by row) and set ``pos[i, b]`` to the row of
    ``anchors`` holding sum ``b``'s ancestor (``parent[(t - 1) % ANCESTRY]``: the parents
    of generation ``t``); returns the rows written."""
    gens = parent.shape[0]
    slot = np.empty(res_a.shape[1], np.int64)
    rows = 0
    for i in range(r):
        slot[:] = -1
        for b in range(kept):
            u = b
            for t in range(m, a, -1):  # up from generation m to generation a
                u = parent[(t - 1) % gens, i, u]
            if slot[u] < 0:
                slot[u] = rows
                anchors[rows, :] = res_a[i, u, :]
                rows += 1
            pos[i, b] = slot[u]
    return rows


#: candidates per block of the selection's threshold (a beam's 256 words in 8)
_SPAN = 32


@nb.njit(cache=True, fastmath=True)
def _ancestor_products(ipb, anc, cross, path, m, a):
    """``ipb[c] = <r_b, c>``: the ancestor's products ``anc`` less the cross products of
    the words ``path[a .. m - 1]`` that the sum added since (:func:`_best_extensions`)."""
    k = ipb.shape[0]
    if m - a == 0:
        ipb[:] = anc
    elif m - a == 1:
        x1 = cross[0, m, path[m - 1]]
        for c in range(k):
            ipb[c] = anc[c] - x1[c]
    else:
        x1 = cross[0, m, path[m - 1]]
        x2 = cross[1, m, path[m - 2]]
        for c in range(k):
            ipb[c] = anc[c] - x1[c] - x2[c]
        for s in range(a, m - 2):
            xs = cross[m - s - 1, m, path[s]]
            for c in range(k):
                ipb[c] -= xs[c]


@nb.njit(cache=True, fastmath=True)
def _losses(lb, low, ipb, gci, cn, eb, pb, extra):
    """Each word's loss ``lb`` from the sum's ``E = eb``, ``P = pb`` and products ``ipb``
    (module docstring), and the least loss of each block of :data:`_SPAN` words."""
    for c in range(lb.shape[0]):
        pc = pb - gci[c]
        lb[c] = eb - 2.0 * ipb[c] + cn[c] + extra * pc * pc
    for j in range(low.shape[0]):
        v = lb[j * _SPAN]
        for c in range(j * _SPAN + 1, (j + 1) * _SPAN):
            v = min(v, lb[c])
        low[j] = v


@nb.njit(cache=True, parallel=True, fastmath=True)
def _best_extensions(
    sc, pos, codes, cross, m, a, e, p, gc, cn, extra, beam, kept, e2, p2, parent, word
):
    """For each row, the ``beam`` extensions of least loss of its ``kept`` sums by codebook
    ``m``'s words, sorted by loss (ties: the first in order of sum, then word): their
    parent, word, ``E`` and ``P`` (module docstring).

    ``<r_b, c>`` is ``sc[pos[i, b], c]`` (the product of ``b``'s generation-``a``
    ancestor) less ``cross[m - s - 1, m, w_s, c]`` for the words ``w_s`` that ``b``
    added at steps ``s = a .. m - 1``. Each sum's losses are computed for all words at
    once; a candidate can be among the ``beam`` best only if its loss is at most ``T``,
    the ``beam``-th least of the minima of blocks of :data:`_SPAN` words (``beam``
    blocks each hold a loss at most ``T``), so only blocks whose minimum is at most
    ``T`` are searched word by word, and the result is that of searching every word."""
    r = gc.shape[0]  # (the block's rows; the buffers may hold more)
    k = sc.shape[1]
    off = m * k
    nblk = k // _SPAN
    for i in nb.prange(r):
        ip = np.empty((kept, k), np.float32)
        loss = np.empty((kept, k), np.float64)
        low = np.empty((kept, nblk), np.float64)
        gci = gc[i, off : off + k]
        for b in range(kept):
            ipb = ip[b]
            _ancestor_products(ipb, sc[pos[i, b]], cross, codes[i, b], m, a)
            _losses(loss[b], low[b], ipb, gci, cn, e[i, b], p[i, b], extra)
        # T: the beam-th least block minimum (every block counts where there are fewer)
        top = np.empty(beam, np.float64)
        cnt = 0
        for b in range(kept):
            for j in range(nblk):
                v = low[b, j]
                if cnt == beam and v >= top[beam - 1]:
                    continue
                t = cnt if cnt < beam else beam - 1
                while t > 0 and top[t - 1] > v:
                    top[t] = top[t - 1]
                    t -= 1
                top[t] = v
                if cnt < beam:
                    cnt += 1
        bound = top[beam - 1] if cnt == beam else np.inf
        tl = top  # (reused: the kept losses)
        cnt = 0
        for b in range(kept):
            for j in range(nblk):
                if low[b, j] > bound:
                    continue
                for c in range(j * _SPAN, (j + 1) * _SPAN):
                    lc = loss[b, c]
                    if lc > bound or (cnt == beam and lc >= tl[cnt - 1]):
                        continue
                    t = cnt if cnt < beam else beam - 1
                    while t > 0 and tl[t - 1] > lc:
                        tl[t] = tl[t - 1]
                        parent[i, t] = parent[i, t - 1]
                        word[i, t] = word[i, t - 1]
                        e2[i, t] = e2[i, t - 1]
                        p2[i, t] = p2[i, t - 1]
                        t -= 1
                    tl[t] = lc
                    parent[i, t] = b
                    word[i, t] = c
                    e2[i, t] = e[i, b] - 2.0 * ip[b, c] + cn[c]
                    p2[i, t] = p[i, b] - gc[i, off + c]
                    if cnt < beam:
                        cnt += 1


@nb.njit(cache=True, fastmath=True)
def _best_words(t, g, sc, gc, cn, extra, word):
    """For each row, the codeword ``c`` of least loss ``|t - c|² + extra <g, t - c>²``
    from ``sc[i, c] = <t_i, c>`` (the row's residual without this codebook); ``word``
    holds the current word, kept unless another is strictly better (so a sweep never
    raises a row's loss)."""
    rows, k = sc.shape
    for i in range(rows):
        p = 0.0  # (|t|² is the same for every word)
        for j in range(t.shape[1]):
            p += np.float64(g[i, j]) * t[i, j]
        w = word[i]
        pc = p - gc[i, w]
        best = cn[w] - 2.0 * sc[i, w] + extra * pc * pc
        for c in range(k):
            pc = p - gc[i, c]
            loss = cn[c] - 2.0 * sc[i, c] + extra * pc * pc
            if loss < best:
                best = loss
                w = c
        word[i] = w


@nb.njit(cache=True, parallel=True)
def _extend(res, codes, parent, word, cbm, m, r, kept, res2, codes2):
    """The kept extensions' residuals and codes (:func:`_best_extensions`'s choices) of the
    first ``r`` rows."""
    dim = res.shape[2]
    for i in nb.prange(r):
        for t in range(kept):
            b = parent[i, t]
            c = word[i, t]
            for j in range(dim):
                res2[i, t, j] = res[i, b, j] - cbm[c, j]
            for mm in range(m):
                codes2[i, t, mm] = codes[i, b, mm]
            codes2[i, t, m] = c


def refine_codebooks(
    y: np.ndarray, g: np.ndarray, codes: np.ndarray, codebooks: np.ndarray, eta: float
) -> np.ndarray:
    """One round of codebook updates (module docstring): ``codebooks`` (float32[M, 256,
    L]) moved to lower the anisotropic loss of the rows ``y`` with directions ``g`` and
    codes ``codes`` (uint8[n, M]); a new array.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> y = rng.standard_normal((3000, 6)).astype(np.float32)
    >>> g = unit_directions(y)
    >>> cb = 0.5 * rng.standard_normal((2, 256, 6)).astype(np.float32)
    >>> codes = beam_encode(y, g, cb, 3.0, 4)
    >>> new = refine_codebooks(y, g, codes, cb, 3.0)
    >>> bool(anisotropic_loss(y, g, codes, new, 3.0) < anisotropic_loss(y, g, codes, cb, 3.0))
    True
    """
    y = np.asarray(y, np.float64)
    g = np.asarray(g, np.float64)
    cb = np.array(codebooks, np.float64)
    nbooks, k, dim = cb.shape
    extra = float(eta) - 1.0
    recon = sum(cb[m][codes[:, m]] for m in range(nbooks))
    eye = np.eye(dim)
    for m in range(nbooks):
        cm = codes[:, m].astype(np.int64)
        target = y - recon + cb[m][cm]
        want = target + extra * g * (g * target).sum(axis=1, keepdims=True)
        order = np.argsort(cm, kind="stable")
        bounds = np.searchsorted(cm[order], np.arange(k + 1))
        new = cb[m].copy()
        for c in range(k):
            rows = order[bounds[c] : bounds[c + 1]]
            if rows.size:
                gs = g[rows]
                a = rows.size * eye + extra * (gs.T @ gs)
                new[c] = np.linalg.solve(a, want[rows].sum(axis=0))
        recon += new[cm] - cb[m][cm]
        cb[m] = new
    return cb.astype(np.float32)


def anisotropic_loss(
    y: np.ndarray, g: np.ndarray, codes: np.ndarray, codebooks: np.ndarray, eta: float
) -> float:
    """Mean anisotropic loss of the rows ``y`` coded as ``codes`` (module docstring).

    Examples
    --------
    >>> cb = np.zeros((1, 256, 2), np.float32); cb[0, 1] = [1.0, 0.0]
    >>> y = np.array([[2.0, 0.0]], np.float32)
    >>> anisotropic_loss(y, unit_directions(y), np.array([[1]], np.uint8), cb, 3.0)
    3.0
    """
    cb = np.asarray(codebooks, np.float64)
    r = np.asarray(y, np.float64) - sum(cb[m][codes[:, m]] for m in range(cb.shape[0]))
    par = (r * np.asarray(g, np.float64)).sum(axis=1)
    return float(((r * r).sum(axis=1) + (float(eta) - 1.0) * par * par).mean())


__all__ = ["ROUNDS", "anisotropic_loss", "beam_encode", "refine_codebooks", "unit_directions"]
