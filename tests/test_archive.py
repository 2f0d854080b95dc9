"""The archive codec (``vecpress.archive``): transform coding in the principal basis,
one uniform step found for the error or size asked, ANS-coded symbols."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("constriction")

from vecpress import FormatError
from vecpress.archive import (
    MAX_LEVELS,
    compress,
    compress_file,
    decompress,
    decompress_file,
    describe,
    gaussian_rate,
    iter_decompress,
    recall_of,
)


def gaussian(n: int, d: int, seed: int = 0, decay: float = 100.0) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a Gaussian with eigenvalues from 1 down to 1/decay in a random basis."""
    rng = np.random.default_rng(seed)
    lam = np.geomspace(1.0, 1.0 / decay, d)
    basis, _ = np.linalg.qr(rng.standard_normal((d, d)))
    x = (rng.standard_normal((n, d)) * np.sqrt(lam)) @ basis.T + 0.5
    return x.astype(np.float32), lam


def error(x: np.ndarray, y: np.ndarray) -> float:
    return float(((y.astype(np.float64) - x) ** 2).mean())


@pytest.mark.parametrize("fraction", [0.3, 0.03, 0.001])
def test_the_error_never_exceeds_mse_and_is_what_the_blob_says(fraction):
    x, lam = gaussian(3000, 24)
    mse = fraction * lam.mean()
    blob = compress(x, mse=mse)
    y = decompress(blob)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert error(x, y) <= mse
    info = describe(blob)
    assert info["mse"] == pytest.approx(error(x, y), rel=1e-6)
    assert info["bits_per_dim"] == 8 * len(blob) / x.size
    assert (info["n"], info["d"]) == x.shape
    assert compress(x, mse=mse) == blob  # deterministic


def symbol_bits(blob: bytes) -> float:
    """Bits of the coded levels (the chunk frames' streams and raw bits), no tables."""
    from vecpress.archive import _head
    from vecpress.archive.frames import Reader, chunk_frames

    reader = Reader(blob)
    config, _, crc, offset = _head(reader)
    frames = chunk_frames(reader, offset, crc, config["chunks"])
    return sum(8 * (a["words"].nbytes + a["bits"].nbytes) for _, _, a in frames)


def test_the_rate_is_within_a_scalar_quantizers_gap_of_the_gaussian_bound():
    """Entropy-coded uniform quantization of Gaussian coefficients costs 0.254 bits per
    coded coefficient above R(D) at high rate (½ log2(2πe/12), the 1.53 dB space-filling
    loss of a scalar quantizer), less at low rate: the coded symbols stay within that,
    plus 0.05 for the step found to 0.5 % and the sample's luck. Where every axis is on
    the E8 lattice (high rate), the loss is ½ log2(2πe G) = 0.146 with G = 0.0717 its
    cells' normalized second moment, plus the raw low bits' ≤ 0.004 and 0.03 of luck.
    The blob's tables (histograms, basis, mean) come on top, counted from the blob.
    Below R(D) the blob cannot go by more than the sample's luck."""
    x, lam = gaussian(40_000, 16, seed=1)
    eig = np.linalg.eigvalsh(np.cov(x.T.astype(np.float64), bias=True))
    for fraction in (0.5, 0.1, 0.01, 0.001, 0.0001):
        mse = fraction * lam.mean()
        blob = compress(x, mse=mse)
        info = describe(blob)
        bits, symbols = info["bits_per_dim"], symbol_bits(blob) / x.size
        bound = gaussian_rate(eig, mse)
        assert info["gaussian_bits_per_dim"] == pytest.approx(
            gaussian_rate(eig, info["mse"]), rel=1e-4
        )  # the bound at the blob's own error, from the covariance it stores
        loss = 0.146 + 0.03 if fraction == 0.0001 else 0.254 + 0.05
        assert bound - 0.02 <= bits and symbols <= bound + loss, (fraction, bits, bound)
        assert bits - symbols < 0.1  # the tables, at 40,000 rows of 16


def test_the_lattice_cells_err_less_than_cubes():
    """At high rate the E8 cells' mean squared error is 0.0717 step² per axis (1/12 =
    0.0833 for a cube): with all 16 axes on the lattice, the error of a step is 14 %
    below the scalar quantizer's."""
    from vecpress.archive.transform import quantizer, symbols, values

    rng = np.random.default_rng(5)
    y = (rng.standard_normal((50_000, 16)) * 20).astype(np.float32)
    sigma = np.full(16, 20.0, np.float32)
    qz = quantizer(1.0, sigma)
    assert qz.groups == 2
    err = float(((values(symbols(y, qz), qz) - y) ** 2).mean())
    assert err == pytest.approx(0.0717, abs=0.0015)  # ± 3 standard errors


@pytest.mark.parametrize("n", [1, 15, 17, 100])
def test_symbols_by_axis_decode_as_symbols_by_row(n):
    """A decoder's symbols (one axis after another, decoded as ``values`` of their
    transpose, in place) give the same coefficients, bit for bit, as the same symbols
    row by row: lattice groups and scalar axes, tiles of rows cut anywhere."""
    from vecpress.archive.transform import quantizer, symbols, values

    rng = np.random.default_rng(n)
    sigma = np.geomspace(30.0, 0.3, 21).astype(np.float32)
    y = (rng.standard_normal((n, 21)) * sigma).astype(np.float32)
    qz = quantizer(1.0, sigma)
    assert qz.groups >= 1 and qz.axes > 8 * qz.groups  # both kinds of axis
    s = symbols(y, qz)
    by_axis = np.ascontiguousarray(s.T)
    got, want = values(by_axis.T, qz), values(s, qz)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_bits_per_dim_caps_the_size():
    x, _ = gaussian(2000, 16, seed=2)
    sizes = []
    for target in (0.8, 2.0, 4.0):
        blob = compress(x, bits_per_dim=target)
        assert 8 * len(blob) <= target * x.size
        sizes.append((describe(blob)["mse"], len(blob)))
    assert sizes[0][0] > sizes[1][0] > sizes[2][0]  # more bits, less error
    with pytest.raises(ValueError, match=r"too small for 2000 x 16 vectors"):
        compress(x, bits_per_dim=0.001)


def test_gaussian_rate_is_reverse_water_filling():
    assert gaussian_rate([2.0], 0.5) == pytest.approx(1.0)
    assert gaussian_rate([3.0] * 4, 3.0 / 16) == pytest.approx(2.0)
    assert gaussian_rate([1.0, 0.1], 0.6) == 0.0  # mse >= mean variance: nothing to code
    # θ between the eigenvalues: the small axis is dropped (costs its variance)
    lam, mse = np.array([4.0, 1.0, 0.01]), 0.5
    theta = (3 * mse - 0.01) / 2
    want = 0.5 * (np.log2(4.0 / theta) + np.log2(1.0 / theta)) / 3
    assert gaussian_rate(lam, mse) == pytest.approx(want)
    with pytest.raises(ValueError, match="mse > 0"):
        gaussian_rate(lam, 0.0)


def test_constant_and_extreme_scale_rows():
    x = np.tile(np.float32([[1.5, -2.0, 3.0]]), (100, 1))
    blob = compress(x, mse=1e-6)
    assert describe(blob)["axes"] == 0
    np.testing.assert_array_equal(decompress(blob), x)
    base, lam = gaussian(500, 8, seed=3)
    for scale in (1e-30, 1e-18, 1e12):  # float32 denormal squares: errors summed in float64
        x = base * np.float32(scale)
        mse = 0.01 * lam.mean() * scale * scale
        y = decompress(compress(x, mse=mse))
        assert np.isfinite(y).all() and error(x, y) <= mse


def test_bad_input_is_refused():
    x, _ = gaussian(100, 8)
    bad = x.copy()
    bad[7, 3] = np.nan
    with pytest.raises(ValueError, match="row 7"):
        compress(bad, mse=0.01)
    with pytest.raises(ValueError):
        compress(np.zeros((0, 8), np.float32), mse=0.01)
    with pytest.raises(ValueError):
        compress(x[0], mse=0.01)
    with pytest.raises(ValueError, match="exactly one of"):
        compress(x)
    with pytest.raises(ValueError, match="exactly one of"):
        compress(x, mse=0.1, bits_per_dim=2)
    for value in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="positive finite"):
            compress(x, mse=value)
    with pytest.raises(TypeError, match="mse must be a number"):
        compress(x, mse="0.1")
    with pytest.raises(ValueError, match="at most 32"):
        compress(x, bits_per_dim=40)
    with pytest.raises(ValueError, match=f"{MAX_LEVELS} levels"):
        compress(x * np.float32(1e6), mse=1e-30)


def test_damaged_blobs_are_format_errors():
    x, _ = gaussian(500, 8)
    blob = compress(x, mse=0.01)
    for cut in (0, 10, len(blob) // 2, len(blob) - 1):
        with pytest.raises(FormatError):
            decompress(blob[:cut])
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 0x40
    with pytest.raises(FormatError):
        decompress(bytes(flipped))
    from vecpress import Codec

    other = Codec.from_spec("hd2,rq4", d=8).fit(x).to_bytes()
    with pytest.raises(FormatError):
        decompress(other)
    with pytest.raises(TypeError, match="bytes or the path of an archive"):
        describe(12345)


def test_two_threads_compress_at_once():
    """The compiled kernels are called from two threads at once: same blobs as alone."""
    import threading

    x, _ = gaussian(1500, 16, seed=6)
    want = [compress(x + i, mse=0.01) for i in range(2)]
    got: dict[int, list] = {0: [], 1: []}

    def work(i: int) -> None:
        for _ in range(4):
            got[i].append(compress(x + i, mse=0.01))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(b == want[i] for i in range(2) for b in got[i])


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunk frames of 1,000 rows (the format's grid is 256 to 65,536 by dimension)."""
    import vecpress.archive as archive

    monkeypatch.setattr(archive, "chunk_rows_for", lambda d: 1000)


def test_any_chunking_gives_the_same_archive_and_the_same_rows(tmp_path, small_chunks):
    """The chunk grid is the format's: an array, one file, or a folder of parts of other
    sizes compress to the same bytes; whole, streamed or written to a file, the rows
    decode to the same bits; the archive's mse is the error of exactly those rows."""
    from vecpress.archive import kernels

    x, lam = gaussian(3500, 20, seed=4)
    blob = compress(x, mse=0.01 * lam.mean())
    assert describe(blob)["chunks"] == 4
    np.save(tmp_path / "x.npy", x)
    parts = tmp_path / "parts"
    parts.mkdir()
    for i, (a, b) in enumerate([(0, 700), (700, 2900), (2900, 3500)]):
        np.save(parts / f"p{i}.npy", x[a:b])
    for source in (tmp_path / "x.npy", parts):
        info = compress_file(source, tmp_path / "x.vpz", mse=0.01 * lam.mean())
        assert (tmp_path / "x.vpz").read_bytes() == blob
        assert info == describe(blob) == describe(tmp_path / "x.vpz")
    y = decompress(blob)
    pieces = list(iter_decompress(tmp_path / "x.vpz"))
    assert [lo for lo, _ in pieces] == [0, 1000, 2000, 3000]
    np.testing.assert_array_equal(np.concatenate([p for _, p in pieces]), y)
    decompress_file(tmp_path / "x.vpz", tmp_path / "y.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), y)
    np.testing.assert_array_equal(decompress(tmp_path / "x.vpz"), y)
    # the recorded error: the same per-row sums, chunk by chunk, in the same order
    total = sum(float(kernels.squared_error(p, x[lo : lo + len(p)]).sum()) for lo, p in pieces)
    assert describe(blob)["mse"] == total / x.size


def test_damaged_frames_are_format_errors(small_chunks):
    """Every frame is checked, and frames missing, repeated, reordered, from another
    archive or followed by more bytes are refused."""
    from vecpress.archive.frames import Reader

    x, lam = gaussian(3500, 12, seed=8)
    blob = compress(x, mse=0.01 * lam.mean())
    reader = Reader(blob)
    starts, at = [], 0
    while at < len(blob):
        starts.append(at)
        at += reader.frame(at, "frame")[2]
    assert len(starts) == 6  # head, 4 chunks, tail
    frames = [blob[a:b] for a, b in zip(starts, [*starts[1:], len(blob)], strict=True)]
    other = compress(x + 1, mse=0.01 * lam.mean())
    other_frames = Reader(other)
    chunk_of_other = other[len(frames[0]) + 0 : len(frames[0]) + len(frames[1])]
    assert other_frames.frame(len(frames[0]), "x")[0]["frame"] == "chunk"
    bad = {
        "chunk missing": frames[0] + frames[1] + frames[3] + frames[4] + frames[5],
        "chunks swapped": frames[0] + frames[2] + frames[1] + frames[3] + frames[4] + frames[5],
        "no tail": b"".join(frames[:5]),
        "tail repeated": blob + frames[5],
        "another archive's chunk": frames[0] + chunk_of_other + b"".join(frames[2:]),
        "bytes appended": blob + b"\0" * 64,
    }
    for why, data in bad.items():
        with pytest.raises(FormatError):
            decompress(data)
        if why in ("no tail", "bytes appended", "tail repeated"):
            with pytest.raises(FormatError):
                describe(data)
    for start in starts:  # a flipped bit in every frame, and a cut inside it
        flipped = bytearray(blob)
        flipped[start + 100] ^= 0x01
        with pytest.raises(FormatError):
            decompress(bytes(flipped))
        with pytest.raises(FormatError):
            decompress(blob[: start + 50])


def test_recall_target(small_chunks):
    """``recall=R``: the coarsest step whose decompressed rows keep R on held-out rows
    (or given queries); a finer target costs more bits."""
    x, _ = gaussian(4000, 16, seed=9)
    sizes = []
    for target in (0.8, 0.95):
        blob = compress(x, recall=target)
        got = recall_of(x, decompress(blob))
        assert got >= target - 0.05, (target, got)  # another sample of queries than the search's
        sizes.append(len(blob))
    assert sizes[0] < sizes[1]
    queries = gaussian(100, 16, seed=10)[0]
    blob = compress(x, recall=0.9, queries=queries)
    y = decompress(blob)
    from vecpress.archive.transform import recall_at_10

    assert recall_at_10(queries, x, y) >= 0.85
    with pytest.raises(ValueError, match=r"recall must be in \(0, 1\]"):
        compress(x, recall=1.5)
    with pytest.raises(ValueError, match="at least 21 rows"):
        compress(x[:15], recall=0.9)
    with pytest.raises(ValueError, match="queries"):
        compress(x, recall=0.9, queries=queries[:, :5])
    with pytest.raises(ValueError, match="exactly one of"):
        compress(x, mse=0.1, recall=0.9)


def test_files_bad_rows_and_overflow_are_refused_without_a_file(tmp_path):
    x, _ = gaussian(500, 8, seed=11)
    path = tmp_path / "a.vpz"
    path.write_bytes(b"keep me")
    bad = x.copy()
    bad[321, 2] = np.inf
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(ValueError, match="row 321"):
        compress_file(tmp_path / "bad.npy", path, mse=0.01)
    huge = np.full((50, 4), 3e38, np.float32)
    huge[::2] *= -1
    with pytest.raises(ValueError, match="rescale"):  # norms past 2**50: float32 overflows
        compress(huge, mse=1.0)
    np.save(tmp_path / "empty.npy", np.zeros((0, 8), np.float32))
    with pytest.raises(ValueError, match="at least one row"):
        compress_file(tmp_path / "empty.npy", path, mse=0.01)
    assert path.read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.vpz", "bad.npy", "empty.npy"]


def test_the_basis_is_stored_to_each_axis_precision():
    """Leading axes' columns are rounded finer than the tail's (step ε Δ / σ_j); the
    stored basis costs well under float16's 16 bits an entry, and the error still holds."""
    import constriction

    from vecpress.archive import _head
    from vecpress.archive import basis as stored_basis
    from vecpress.archive.frames import Reader

    x, lam = gaussian(5000, 64, seed=12, decay=1000.0)
    mse = 0.003 * lam.mean()
    blob = compress(x, mse=mse)
    assert error(x, decompress(blob)) <= mse
    config, arrays, _, _ = _head(Reader(blob))
    k, d = config["axes"], config["d"]
    deltas = stored_basis.steps(
        arrays["variances"][:k], config["step"], config["basis_precision"], d
    )
    assert (np.diff(deltas) >= 0).all() and deltas[-1] > 10 * deltas[0]
    assert config["basis_precision"] == pytest.approx(np.sqrt(min(0.05, d / 5000) / d))
    ints, whole = stored_basis.decode(
        constriction, arrays["basis"], config["basis_bound"], deltas, d
    )
    assert whole and arrays["basis"].nbytes * 8 / (d * k) < 10
    # every entry within half its column's step of a unit column's: |‖b̂‖² - 1| ≤
    # 2 ‖b̂ - v‖ + ‖b̂ - v‖², ‖b̂ - v‖ ≤ sqrt(d) δ / 2 (float32 rounding aside)
    norms = (stored_basis.stored(ints, deltas).astype(np.float64) ** 2).sum(axis=0)
    off = np.sqrt(d) * deltas / 2
    assert (np.abs(norms - 1) <= 2 * off + off**2 + 1e-6).all()
