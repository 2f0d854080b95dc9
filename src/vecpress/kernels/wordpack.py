"""Code layouts whose every code lies within one 64-bit word of the row.

A layout (:func:`~vecpress.kernels.scan.check_layout`) places runs of ``b``-bit
codes at byte offsets of a row. Codes of 3, 5, 6 or 7 bits cross byte
boundaries, and packed one run after another they also cross the boundaries of
the row's 64-bit words (bytes ``8 w .. 8 w + 7``). A scan that reads a code
with one ``vpmultishiftqb`` lane (8 bits from any bit of the lane's 64-bit
word, :mod:`vecpress.kernels.wordlanes`) then needs each code's window moved
into a word of its own first: a byte permutation and another 64-byte load for
every 64 codes. When no code crosses a word, one load of 64 bytes of the row
serves every code in it, a few lanes per word at a time (``passes``).

:func:`pack_words` finds such a layout for codes of given widths in the bytes
they take packed run by run, so the row does not grow. It cuts each run of
equal widths into *atoms*: the fewest codes whose bits make whole bytes
(``8 / gcd(b, 8)`` codes: 8 of 3, 5 or 7 bits; 4 of 6; 2 of 4; 4 of 2; 8 of 1; 1
of 8), and the run's last few codes. An atom of one byte never crosses a
word; one of several (3, 5, 6 or 7 bits) must lie within one. So the atoms of
several bytes are placed in the words first (first fit, largest first), then
the one-byte atoms fill the bytes left, while no word holds more codes than its
chunk's passes give it lanes (8 a pass; a chunk of 8 words is read in as many passes
as its fullest word needs, at most :data:`MAX_PASSES`). The placement is greedy, so
not always the fewest passes there are (``kl4`` at d = 384: 8, where 7 exist). The
result is a layout like any other, with more runs: everything that reads layouts
reads it; a codec stores the layout it chose, so files do not depend on this
search staying the same.

Examples
--------
Eight 5-bit codes and eight 3-bit ones take 8 bytes, one word, either way; two
of each width would need 17 bytes packed run after run:

>>> bits = np.array([5] * 8 + [3] * 8, np.uint8)
>>> pack_words(bits, 8).tolist()
[[0, 8, 5, 0], [8, 8, 3, 5]]
>>> within_words(pack_words(bits, 8))
True
"""

from __future__ import annotations

from math import gcd

import numpy as np

from .scan import check_layout, code_positions

#: bits of the words no code may cross
WORD_BITS = 64
#: most lanes of 8 codes per word a scan reads a word with (codes a word holds / 8)
MAX_PASSES = 4


def _atoms(bits: np.ndarray) -> list[tuple[int, int, int, int]]:
    """``(first dim, codes, width, bytes)`` of every atom of the runs of equal widths
    (0-bit dimensions are not coded), in dimension order."""
    out = []
    edges = np.flatnonzero(np.diff(bits.astype(np.int64))) + 1
    for start, stop in zip([0, *edges.tolist()], [*edges.tolist(), len(bits)], strict=True):
        w = int(bits[start]) if stop > start else 0
        if w:
            per = 8 // gcd(w, 8)
            for a in range(start, stop, per):
                n = min(per, stop - a)
                out.append((a, n, w, (n * w + 7) // 8))
    return out


def _try(atoms, row_bytes: int, caps: list[int], keep: bool):
    """Atoms assigned to words (lists of atom indices, in placement order), word ``w``
    holding at most ``caps[w]`` codes, or None.

    The atoms of several bytes go first, largest first, each into the first word with
    the bytes for it and the lanes for it and for a code in each byte it leaves (the
    bytes are all needed where the codes fill the row); then the one-byte atoms,
    densest first, each where the most lanes are left beyond those its word's other
    free bytes need; or with ``keep``, in the word of the atom before or the first after
    it that fits (so that runs of one width stay whole where they can)."""
    nwords = (row_bytes + 7) // 8
    room = [8] * nwords
    room[-1] = row_bytes - 8 * (nwords - 1)
    codes = [0] * nwords
    words = [[] for _ in range(nwords)]
    wide = sorted((i for i, a in enumerate(atoms) if a[3] > 1), key=lambda i: (-atoms[i][3], i))
    for i in wide:
        n, nbytes = atoms[i][1], atoms[i][3]
        w = next(
            (
                w
                for w in range(nwords)
                if room[w] >= nbytes and codes[w] + n + room[w] - nbytes <= caps[w]
            ),
            None,
        )
        if w is None:
            return None
        room[w] -= nbytes
        codes[w] += n
        words[w].append(i)
    narrow = sorted((i for i, a in enumerate(atoms) if a[3] == 1), key=lambda i: (-atoms[i][1], i))
    last = -1  # the word of the atom placed before
    for i in narrow:
        n = atoms[i][1]

        def spare(w, n=n):
            return caps[w] - codes[w] - n - (room[w] - 1) if room[w] else -1

        if keep:  # the word before, else the first that fits: runs continue
            fits = (w for w in range(max(last, 0), nwords) if spare(w) >= 0)
            best = next(fits, max(range(nwords), key=spare))
        else:
            best = max(range(nwords), key=spare)
        if spare(best) < 0:
            return None
        last = best
        room[best] -= 1
        codes[best] += n
        words[best].append(i)
    return words


def _caps(nwords: int, passes: int, more: int) -> list[int]:
    """Lanes of each word: the first ``more`` chunks of 8 words read in ``passes + 1``
    passes, the others in ``passes``."""
    return [8 * (passes + (w // 8 < more)) for w in range(nwords)]


def pack_words(bits: np.ndarray, row_bytes: int) -> np.ndarray | None:
    """A layout of codes of widths ``bits`` (uint8[k], 0 for an uncoded dimension) in
    ``row_bytes`` bytes, no code crossing a 64-bit word of the row and no word holding
    more than ``8 * MAX_PASSES`` codes; None where none is found.

    A scan reads each 64-byte chunk of the row (8 words) in as many passes as its
    fullest word needs, 8 codes a word each (:func:`chunk_passes`). Two ways of placing
    the one-byte atoms are tried (:func:`_try`), each with words of ``8 p`` codes at most
    and the fewest chunks of ``8 (p + 1)`` that fit, for the least ``p`` that does; of
    those, the layout of the fewest passes in all, then of the fewest runs.

    Examples
    --------
    >>> pack_words(np.array([4] * 16, np.uint8), 8).tolist()
    [[0, 16, 4, 0]]
    >>> pack_words(np.array([5] * 16, np.uint8), 10) is None  # 2 x 40 bits: 2 words
    True
    """
    bits = np.asarray(bits, np.uint8)
    atoms = _atoms(bits)
    if not atoms or row_bytes < sum(a[3] for a in atoms):
        return None
    nwords = (row_bytes + 7) // 8
    nchunks = (nwords + 7) // 8
    found = []  # (passes in all, runs, layout) of each way of placing that fits
    for keep in (True, False):
        for passes in range(1, MAX_PASSES + 1):
            # the fewest chunks of one pass more that fit (searched as if more lanes never
            # made the greedy placement fail)
            top = nchunks if passes < MAX_PASSES else 0
            if _try(atoms, row_bytes, _caps(nwords, passes, top), keep) is None:
                continue
            lo, hi = 0, top  # hi fits
            while lo < hi:
                mid = (lo + hi) // 2
                if _try(atoms, row_bytes, _caps(nwords, passes, mid), keep) is None:
                    lo = mid + 1
                else:
                    hi = mid
            placed = _try(atoms, row_bytes, _caps(nwords, passes, hi), keep)
            runs = np.array(_runs(atoms, placed), np.int64)
            found.append((int(chunk_passes(runs).sum()), len(runs), runs))
            break  # more passes a word would only read more lanes
    if not found:
        return None
    layout = min(found, key=lambda f: f[:2])[2]
    return check_layout(layout, len(bits), row_bytes)


def _runs(atoms, words) -> list[list[int]]:
    """The layout's runs ``[first, count, width, offset]`` of atoms placed in words,
    an atom merged into the run before where it continues it."""
    runs = []
    for w, members in enumerate(words):
        offset = 8 * w
        for i in members:
            first, n, width, nbytes = atoms[i]
            last = runs[-1] if runs else None
            if (
                last is not None
                and last[2] == width
                and last[0] + last[1] == first
                and last[3] + (last[1] * width) // 8 == offset
                and (last[1] * width) % 8 == 0
            ):
                last[1] += n
            else:
                runs.append([first, n, width, offset])
            offset += nbytes
    return runs


def chunk_passes(layout: np.ndarray) -> np.ndarray:
    """Passes of 8 lanes a word that each 64-byte chunk of the row takes (its fullest
    word's codes / 8, rounded up; at least 1), int64[chunks], for a layout no code of
    which crosses a 64-bit word (ValueError otherwise).

    Examples
    --------
    >>> chunk_passes(np.array([[0, 8, 5, 0], [8, 8, 3, 5]])).tolist()
    [2]
    """
    codes = word_codes(layout)
    codes = np.concatenate([codes, np.zeros(-len(codes) % 8, np.int64)]).reshape(-1, 8)
    return np.maximum((codes.max(axis=1) + 7) // 8, 1)


def word_codes(layout: np.ndarray) -> np.ndarray:
    """Codes in each 64-bit word of the row, int64[words], where no code of ``layout``
    crosses a word; raises ValueError where one does.

    Examples
    --------
    >>> word_codes(np.array([[0, 8, 5, 0], [8, 8, 3, 5]])).tolist()
    [16]
    """
    _, pos, width = code_positions(layout)
    word = pos // WORD_BITS
    if ((pos + width - 1) // WORD_BITS != word).any():
        raise ValueError("a code of the layout crosses a 64-bit word of the row")
    return np.bincount(word, minlength=int(word.max(initial=-1)) + 1)


def within_words(layout: np.ndarray) -> bool:
    """Whether no code of ``layout`` crosses a 64-bit word of the row.

    Examples
    --------
    >>> within_words(np.array([[0, 16, 5, 0]]))  # code 12 takes bits 60-64
    False
    """
    try:
        word_codes(layout)
    except ValueError:
        return False
    return True


def word_readable(layout: np.ndarray) -> bool:
    """Whether a scan reads ``layout`` by its word passes
    (:func:`~vecpress.kernels.wordlanes.word_passes`): no code crosses a 64-bit word
    of the row (:func:`within_words`) and no word holds more than ``8 *``
    :data:`MAX_PASSES` codes, the most lanes the passes of a chunk give a word. A
    layout within words but past that (a ``kl`` whose codes did not pack within words
    keeps its groups, packed run after run, and those can lie within words: 64 codes
    of 1 bit in one word, say) is read another way.

    Examples
    --------
    >>> word_readable(np.array([[0, 32, 2, 0]])), word_readable(np.array([[0, 64, 1, 0]]))
    (True, False)
    """
    try:
        codes = word_codes(layout)
    except ValueError:
        return False
    return int(codes.max(initial=0)) <= 8 * MAX_PASSES
