"""Index files: round trips, the reference files, locking, and fault injection.

Fault tests (truncation, bit flips, hostile header values) run the loaders in a
subprocess with an address-space cap (``RLIMIT_AS``: its size after warm-up plus
64 MiB plus a few times the file size), so a crash or a huge allocation shows
up as a failed case instead of taking pytest down. ``kill -9`` during save
forks a writer that saves in a loop and kills it at random times.

Sizes: by default 3,000 random bit flips and 60 kill trials (about 10 s).
Set ``VECPRESS_FAULT_TRIALS=N`` for N bit flips and N/50 kill trials (at least
60), e.g. ``VECPRESS_FAULT_TRIALS=10000 pytest tests/test_storage.py``.

The reference files ``tests/data/ref_v1.vpi`` (format version 1: flat),
``tests/data/ref_v2.vpi`` (format version 2: IVF with a second tier) and
``tests/data/ref_v3.vpi`` (format version 3: the same with block checksums, in
blocks of 4 KiB so that every data section has several) were made by
``python tests/test_storage.py make-reference`` (see :func:`make_reference`,
:func:`make_reference_v2` and :func:`make_reference_v3`; it now writes the
version-3 file); they must keep loading, with the same results, in every later
version. So must ``tests/data/ref_kl4_groups.vpi`` (:func:`make_reference_kl`: a
``kl4`` index whose codes lie as ``kl`` packed them before its codes were placed
within 64-bit words, each group of equal widths after the one before).

A memory-mapped format-3 file is verified block by block as searches read it:
every fault case checks that the file fails to open, or that a search reading
every block and ``verify()`` both raise ``FormatError`` naming the file and the
section (a search reading part of the data may pass). The block tests below
check which blocks a search verifies.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import struct
import subprocess
import sys
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest

import vecpress
from vecpress import Codec, FormatError, Index, atomic, container
from vecpress.files import storage

DATA = Path(__file__).parent / "data"
REFERENCE = DATA / "ref_v1.vpi"
REFERENCE_V2 = DATA / "ref_v2.vpi"
REFERENCE_V3 = DATA / "ref_v3.vpi"
FAULT_TRIALS = int(os.environ.get("VECPRESS_FAULT_TRIALS", "3000"))
KILL_TRIALS = max(60, FAULT_TRIALS // 50)


def reference_vectors() -> np.ndarray:
    return np.random.default_rng(2026).standard_normal((40, 32)).astype(np.float32)


def make_reference(path) -> Index:
    """The snippet that made ``tests/data/ref_v1.vpi`` (vecpress 0.1.0, format version 1)."""
    x = reference_vectors()
    index = vecpress.Index("hd2,rq4", metric="l2", seed=7)
    index.add(x, ids=np.arange(40) * 3 + 100)
    index.remove([103, 106])  # two removed ids: next_id stays 218
    index.save(path)
    return index


# Recorded from the reference file when it was made; later versions must agree.
REF_QUERY_ROWS = [0, 5, 17, 39]
REF_TOP3 = [[100, 130, 172], [115, 172, 163], [151, 154, 118], [217, 178, 118]]


def make_reference_v2(path) -> Index:
    """The snippet that made ``tests/data/ref_v2.vpi`` (format version 2)."""
    x = np.random.default_rng(2027).standard_normal((120, 24)).astype(np.float32)
    index = vecpress.Index("hd2,rq4", metric="l2", seed=8, rerank_spec="f16", ivf=4)
    index.add(x, ids=np.arange(120) * 2 + 1)
    index.remove([1, 3, 101])
    index.save(path)
    return index


# Recorded from ref_v2.vpi when it was made (first stage nprobe=2; re-ranked top 20).
REF2_QUERY_ROWS = [0, 7, 50, 119]
REF2_TOP3 = [[123, 147, 201], [15, 195, 219], [75, 235, 47], [239, 97, 79]]
REF2_TOP3_RERANK = [[123, 147, 201], [15, 195, 219], [75, 235, 149], [239, 97, 79]]


def make_reference_v3(path) -> Index:
    """The snippet that made ``tests/data/ref_v3.vpi`` (format version 3, blocks of 4 KiB)."""
    x = np.random.default_rng(2028).standard_normal((700, 24)).astype(np.float32)
    index = vecpress.Index("hd2,rq4", metric="l2", seed=9, rerank_spec="f16", ivf=4)
    index.add(x, ids=np.arange(700) * 2 + 1)
    index.remove([1, 3, 101])
    index.save(path, block_size=4096)
    return index


# Recorded from ref_v3.vpi when it was made (first stage nprobe=2; re-ranked top 20).
REF3_QUERY_ROWS = [0, 7, 350, 699]
REF3_TOP3 = [[1077, 499, 363], [15, 313, 953], [701, 1391, 403], [1399, 885, 247]]
REF3_TOP3_RERANK = [[1077, 363, 499], [15, 313, 953], [701, 1391, 403], [1399, 885, 247]]


REFERENCE_KL = DATA / "ref_kl4_groups.vpi"


def reference_kl_vectors() -> np.ndarray:
    """400 x 64 rows of decreasing variance along the axes (``kl4`` gives them 1-8 bits)."""
    rng = np.random.default_rng(2029)
    return rng.standard_normal((400, 64)).astype(np.float32) * np.geomspace(4.0, 0.05, 64).astype(
        np.float32
    )


def make_reference_kl(path) -> Index:
    """The snippet that made ``tests/data/ref_kl4_groups.vpi`` (frozen)."""
    index = vecpress.Index("kl4", metric="cosine", seed=10)
    index.add(reference_kl_vectors(), ids=np.arange(400) * 3)
    index.save(path)
    return index


# Recorded from ref_kl4_groups.vpi when it was made: its codes' runs, and the top 5.
REFKL_LAYOUT = [
    [0, 20, 8, 0], [20, 4, 6, 20], [24, 3, 5, 23], [27, 6, 4, 25], [33, 5, 3, 28],
    [38, 4, 2, 30], [42, 8, 1, 31],
]  # fmt: skip
REFKL_QUERY_ROWS = [0, 9, 200, 399]
REFKL_TOP5 = [
    [0, 258, 834, 396, 591], [27, 411, 1179, 711, 1008], [600, 678, 1029, 639, 903],
    [1197, 426, 264, 555, 951],
]  # fmt: skip


def full_index(metric: str = "l2", n: int = 60, d: int = 32) -> Index:
    """An index with every section: IVF lists and a second tier."""
    x = np.random.default_rng(n * d + 1).standard_normal((n, d)).astype(np.float32)
    index = Index("hd2,rq4", metric=metric, seed=1, rerank_spec="f16", ivf=3)
    index.add(x, ids=np.arange(n) * 2 + 5)
    return index


def small_index(metric: str = "l2", n: int = 60, d: int = 32, spec: str = "hd2,rq4") -> Index:
    x = np.random.default_rng(n * d).standard_normal((n, d)).astype(np.float32)
    index = Index(spec, metric=metric, seed=1)
    index.add(x, ids=np.arange(n) * 2 + 5)
    return index


def same(a, b) -> bool:
    return np.array_equal(a.ids, b.ids) and np.array_equal(a.scores, b.scores)


# -- round trips ------------------------------------------------------------------
@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
@pytest.mark.parametrize("spec", ["f32", "hd2,rq4", "center,int8"])
def test_save_open_search_identical(tmp_path, spec, metric):
    index = small_index(metric, spec=spec)
    index.remove([7, 9, 11])
    q = np.random.default_rng(9).standard_normal((13, 32)).astype(np.float32)
    expect = index.search(q, 10)
    path = tmp_path / "i.vpi"
    index.save(path)
    for mm in (True, False):
        loaded = vecpress.open(path, mmap=mm)
        assert (len(loaded), loaded.next_id, loaded.spec, loaded.metric) == (
            len(index),
            index.next_id,
            index.spec,
            index.metric,
        )
        assert same(loaded.search(q, 10), expect)
        np.testing.assert_array_equal(loaded.ids, index.ids)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_mmap_index_accepts_adds_and_removes_and_saves_over_itself(tmp_path, metric):
    path = tmp_path / "i.vpi"
    index = small_index(metric)
    index.save(path)
    loaded = vecpress.open(path, mmap=True)
    extra = np.random.default_rng(3).standard_normal((5, 32)).astype(np.float32)
    assert loaded.add(extra).tolist() == list(range(124, 129))
    assert loaded.remove([5, 124]) == 2
    index.add(extra)
    index.remove([5, 124])
    q = extra[:3]
    loaded.save(path)  # replaces the file it is mapped from
    again = vecpress.open(path, mmap=False)
    assert same(again.search(q, 8), index.search(q, 8))
    assert again.next_id == 129 and len(again) == 63


def test_trained_empty_index_round_trips(tmp_path):
    index = Index("center,int8", metric="l2").train(np.eye(8, dtype=np.float32) + 1)
    index.save(tmp_path / "e.vpi")
    loaded = vecpress.open(tmp_path / "e.vpi")
    assert len(loaded) == 0 and loaded.d == 8 and loaded.is_trained
    assert (loaded.search(np.ones((1, 8), np.float32), 2).ids == -1).all()
    loaded.add(np.ones((2, 8), np.float32))
    assert len(loaded) == 2


def test_extreme_but_valid_values_round_trip(tmp_path):
    wide = Index("f32", metric="ip").train(np.ones((1, 5000), np.float32))  # code_size > file
    wide.save(tmp_path / "w.vpi")
    assert vecpress.open(tmp_path / "w.vpi").d == 5000
    top = Index("f32", metric="l2", seed=2**64 - 1)
    top.add(np.ones((2, 3), np.float32), ids=[0, 2**63 - 1])
    top.save(tmp_path / "t.vpi")
    loaded = vecpress.open(tmp_path / "t.vpi")
    assert loaded.contains(2**63 - 1) and loaded.next_id == 2**63 and loaded.seed == 2**64 - 1
    with pytest.raises(ValueError, match="exceed int64"):
        loaded.add(np.ones((1, 3), np.float32))
    with pytest.raises(ValueError, match="seed"):
        Index("f32", seed=2**64)


def test_info_reads_the_header_alone(tmp_path):
    path = tmp_path / "i.vpi"
    small_index("l2", n=60).save(path)
    meta = vecpress.info(path)
    assert meta == {
        "spec": "hd2,rq4",
        "metric": "l2",
        "d": 32,
        "count": 60,
        "code_size": 20,
        "rerank_spec": None,
        "rerank_code_size": 0,
        "ivf": None,
        "ivf_residual": True,
        "bytes_per_vector": 32,
        "format_version": 3,
        "block_size": storage.BLOCK_SIZE,
        "next_id": 124,
        "seed": 1,
        "file_size": os.path.getsize(path),
    }


def test_save_refuses_an_untrained_index_and_a_directory(tmp_path):
    with pytest.raises(ValueError, match="not fitted"):
        Index("hd2,rq4").save(tmp_path / "x.vpi")
    with pytest.raises(IsADirectoryError):
        small_index().save(tmp_path)
    with pytest.raises(FileNotFoundError):
        vecpress.open(tmp_path / "missing.vpi")
    for bad in (0, 4095, 6000, 1 << 27, 2.0**12, True):
        with pytest.raises(ValueError, match="block_size"):
            small_index().save(tmp_path / "b.vpi", block_size=bad)


def test_saving_into_a_missing_folder_names_the_folder(tmp_path):
    folder = tmp_path / "no" / "such"
    with pytest.raises(FileNotFoundError, match=str(folder)) as raised:
        small_index().save(folder / "x.vpi")
    assert raised.value.filename == str(folder) and ".lock" not in str(raised.value)
    assert not (tmp_path / "no").exists()


# -- the version-1 reference file ---------------------------------------------------
@pytest.mark.parametrize("mm", [True, False])
def test_reference_v1_file_still_loads_with_the_same_results(mm):
    index = vecpress.open(REFERENCE, mmap=mm)
    assert vecpress.info(REFERENCE)["format_version"] == 1
    assert (index.spec, index.metric, index.d, len(index), index.next_id) == (
        "hd2,rq4",
        "l2",
        32,
        38,
        218,
    )
    expected_ids = [i for i in np.arange(40) * 3 + 100 if i not in (103, 106)]
    assert index.ids.tolist() == expected_ids
    x = reference_vectors()
    res = index.search(x[REF_QUERY_ROWS], 3)
    assert res.ids.tolist() == REF_TOP3
    # the scores are those of the stored codes
    codes = index._codes.view
    est = index.codec.score(x[REF_QUERY_ROWS], codes)
    norms = (x.astype(np.float64) ** 2).sum(1)
    keep = np.isin(np.arange(40) * 3 + 100, expected_ids)
    est = 2 * est - norms[keep].astype(np.float32)[None, :]
    est -= norms[REF_QUERY_ROWS].astype(np.float32)[:, None]
    np.testing.assert_allclose(res.scores, np.sort(est, axis=1)[:, ::-1][:, :3], rtol=1e-6)


@pytest.mark.parametrize("mm", [True, False])
def test_reference_v2_file_still_loads_with_the_same_results(mm):
    index = vecpress.open(REFERENCE_V2, mmap=mm)
    meta = vecpress.info(REFERENCE_V2)
    assert (meta["format_version"], meta["ivf"], meta["rerank_spec"]) == (2, 4, "f16")
    assert (index.spec, index.metric, index.d, len(index), index.next_id, index.nlist) == (
        "hd2,rq4",
        "l2",
        24,
        117,
        240,
        4,
    )
    assert sorted(index.ids.tolist()) == [i for i in range(1, 240, 2) if i not in (1, 3, 101)]
    assert index.list_sizes.sum() == 117 and index.bytes_per_vector == 16 + 48 + 8 + 4
    x = np.random.default_rng(2027).standard_normal((120, 24)).astype(np.float32)
    q = x[REF2_QUERY_ROWS]
    assert index.search(q, 3, nprobe=2).ids.tolist() == REF2_TOP3
    res = index.search(q, 3, nprobe=2, rerank=20)
    assert res.ids.tolist() == REF2_TOP3_RERANK
    # re-ranked scores are the f16 tier's negated squared distances
    row = {int(i): r for r, i in enumerate(x[:, 0] * 0 + np.arange(120) * 2 + 1)}
    xf = x.astype(np.float16).astype(np.float64)
    for qi, ids in enumerate(res.ids):
        want = [-(((q[qi] - xf[row[int(i)]]) ** 2).sum()) for i in ids]
        np.testing.assert_allclose(res.scores[qi], want, rtol=1e-3, atol=1e-2)


@pytest.mark.parametrize("mm", [True, False])
def test_reference_v3_file_still_loads_with_the_same_results(mm):
    index = vecpress.open(REFERENCE_V3, mmap=mm)
    meta = vecpress.info(REFERENCE_V3)
    assert (meta["format_version"], meta["block_size"], meta["ivf"]) == (3, 4096, 4)
    assert (index.spec, index.metric, index.d, len(index), index.next_id) == (
        "hd2,rq4",
        "l2",
        24,
        697,
        1400,
    )
    x = np.random.default_rng(2028).standard_normal((700, 24)).astype(np.float32)
    q = x[REF3_QUERY_ROWS]
    assert index.search(q, 3, nprobe=2).ids.tolist() == REF3_TOP3
    assert index.search(q, 3, nprobe=2, rerank=20).ids.tolist() == REF3_TOP3_RERANK
    assert sorted(index.ids.tolist()) == [i for i in range(1, 1400, 2) if i not in (1, 3, 101)]


@pytest.mark.parametrize("mm", [True, False])
def test_reference_kl_file_still_loads_with_the_same_results(tmp_path, mm):
    """A ``kl4`` file of codes packed group after group is read as it was written, and
    saved again as it was read."""
    index = vecpress.open(REFERENCE_KL, mmap=mm)
    assert (index.spec, index.metric, index.d, len(index)) == ("kl4", "cosine", 64, 400)
    assert index.codec.quantizer.grid_layout.tolist() == REFKL_LAYOUT
    q = reference_kl_vectors()[REFKL_QUERY_ROWS] + np.float32(0.1)
    assert index.search(q, 5).ids.tolist() == REFKL_TOP5
    index.save(tmp_path / "again.vpi")
    again = vecpress.open(tmp_path / "again.vpi", mmap=mm)
    assert again.codec.quantizer.grid_layout.tolist() == REFKL_LAYOUT
    assert same(again.search(q, 5), index.search(q, 5))


@pytest.mark.parametrize("ref", [REFERENCE, REFERENCE_V2], ids=["v1", "v2"])
def test_old_files_are_written_back_as_version_3(tmp_path, ref):
    old = vecpress.open(ref, mmap=True)
    old.save(tmp_path / "new.vpi")
    new = vecpress.open(tmp_path / "new.vpi", mmap=True)
    assert vecpress.info(tmp_path / "new.vpi")["format_version"] == 3
    q = np.random.default_rng(3).standard_normal((5, old.d)).astype(np.float32)
    nprobe = old.nlist if old.is_ivf else None
    rerank = 10 if old.has_second_tier else None
    args = {"nprobe": nprobe, "rerank": rerank}
    assert same(new.search(q, 5, **args), old.search(q, 5, **args))
    assert np.array_equal(new.ids, old.ids)


# -- locking and temp files ------------------------------------------------------
def test_a_second_writer_gets_a_clear_error(tmp_path):
    path = str(tmp_path / "i.vpi")
    small_index().save(path)
    with atomic.writer_lock(os.path.abspath(path)):
        with pytest.raises(vecpress.LockedError, match="another writer"):
            small_index(n=10).save(path)
    assert len(vecpress.open(path)) == 60  # the old state is intact
    small_index(n=10).save(path)  # lock released
    assert len(vecpress.open(path)) == 10


def test_stale_temp_files_are_removed_by_save_not_by_open(tmp_path):
    path = tmp_path / "i.vpi"
    small_index().save(path)
    stale = tmp_path / ".i.vpi.4242.deadbeef.vptmp"
    other = tmp_path / ".j.vpi.4242.deadbeef.vptmp"  # another index's temp file
    stale.write_bytes(b"partial")
    other.write_bytes(b"partial")
    with atomic.writer_lock(str(path)):  # a writer holds the lock: readers still open
        assert len(vecpress.open(path)) == 60
        assert vecpress.info(path)["count"] == 60
    assert len(vecpress.open(path)) == 60
    assert stale.exists()  # a reader never removes anything (it would need the lock)
    assert not (tmp_path / "i.vpi.lock").exists()
    small_index(n=10).save(path)
    assert not stale.exists() and other.exists()


def test_a_leftover_lock_file_never_blocks_a_save(tmp_path):
    """A killed save leaves ``<path>.lock``; its flock died with it, so the next save
    takes it (even a read-only one) and removes it."""
    path = tmp_path / "i.vpi"
    lock = tmp_path / "i.vpi.lock"
    lock.write_bytes(b"")
    small_index().save(path)
    assert not lock.exists()
    lock.write_bytes(b"")
    lock.chmod(0o444)
    small_index(n=10).save(path)
    assert not lock.exists() and len(vecpress.open(path)) == 10


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_save_killed_while_holding_the_lock_leaves_a_harmless_lock_file(tmp_path):
    path = tmp_path / "i.vpi"
    small_index().save(path)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # take the writer lock, say so, and wait to be killed
        try:
            with atomic.writer_lock(str(path)):
                os.write(w, b"x")
                time.sleep(60)
        finally:
            os._exit(1)
    os.read(r, 1)
    with pytest.raises(vecpress.LockedError):  # held: a second writer is refused
        small_index(n=10).save(path)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    os.close(r)
    os.close(w)
    assert (tmp_path / "i.vpi.lock").exists()  # left behind by the killed holder
    small_index(n=10).save(path)  # not held any more
    assert sorted(os.listdir(tmp_path)) == ["i.vpi"] and len(vecpress.open(path)) == 10


def test_readers_never_make_a_writer_fail(tmp_path):
    """A writer saves in a loop while reader threads open the file (and stale temp files
    keep appearing, which open once cleaned by taking the writer's lock): no LockedError."""
    import threading

    path = tmp_path / "i.vpi"
    states = [small_index(n=200), small_index(n=300)]
    states[0].save(path)
    stop = threading.Event()
    errors: list[str] = []
    opens = [0]

    def reader(k: int) -> None:
        i = 0
        while not stop.is_set():
            if i % 3 == 0:  # what a killed writer leaves
                (tmp_path / f".i.vpi.{k}.{i:08x}.vptmp").write_bytes(b"partial")
            try:
                assert len(vecpress.open(path, mmap=i % 2 == 0)) in (200, 300)
                opens[0] += 1
            except Exception as e:
                errors.append(f"reader: {type(e).__name__}: {e}")
            i += 1

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    saves = 0
    try:
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            try:
                states[saves % 2].save(path)
                saves += 1
            except Exception as e:  # a LockedError before the fix
                errors.append(f"writer: {type(e).__name__}: {e}")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, (len(errors), errors[:3])
    assert saves >= 10 and opens[0] >= 10, (saves, opens)
    states[0].save(path)
    assert sorted(os.listdir(tmp_path)) == ["i.vpi"]


# -- tampering detected in-process (with explanations) ---------------------------
def _layout(data: bytes) -> tuple[dict, int]:
    hlen = struct.unpack_from("<Q", data, 16)[0]
    return json.loads(data[32 : 32 + hlen]), hlen


def _with_header(data: bytes, meta, header: bytes | None = None) -> bytes:
    """Replace the JSON header (length and checksum recomputed; sections left in place,
    unless the header grew past the first; the footer's length matches the new size)."""
    old, hlen = _layout(data)
    header = container.canonical_json(meta) if header is None else header
    version = struct.unpack_from("<I", data, 8)[0]
    prefix = struct.pack("<8sIIQII", storage.MAGIC, version, 0, len(header), zlib.crc32(header), 0)
    body = prefix + header
    first = old["sections"][0]["offset"]
    if len(body) <= first:
        out = body + bytes(first - len(body)) + data[first:]
    else:
        out = body + data[32 + hlen :]
    return out[:-16] + struct.pack("<Q8s", len(out), storage.END_MAGIC)


def test_mmap_defers_data_checks_until_first_use(tmp_path):
    path = tmp_path / "i.vpi"
    small_index().save(path)
    data = bytearray(path.read_bytes())
    meta, _ = _layout(bytes(data))
    codes = next(s for s in meta["sections"] if s["name"] == "codes")
    data[codes["offset"] + 5] ^= 0x10
    path.write_bytes(bytes(data))
    assert vecpress.info(path)["count"] == 60  # header only
    with pytest.raises(FormatError, match=r"i\.vpi.*section 'codes'.*checksum"):
        vecpress.open(path, mmap=False)
    lazy = vecpress.open(path, mmap=True)
    assert len(lazy) == 60
    for use in (
        lambda: lazy.search(np.ones((1, 32), np.float32), 3),
        lazy.verify,
        lambda: lazy.add(np.ones((1, 32), np.float32)),
        lambda: lazy.save(tmp_path / "copy.vpi"),
    ):
        with pytest.raises(FormatError, match="section 'codes'"):
            use()
    assert not (tmp_path / "copy.vpi").exists()


def _rechecksum(data: bytes) -> bytes:
    """Recompute every checksum (sections, blocks, header) of an edited file."""
    meta, _ = _layout(data)
    data = bytearray(data)
    sec = {e["name"]: e for e in meta["sections"]}

    def raw(name):
        return bytes(data[sec[name]["offset"] : sec[name]["offset"] + sec[name]["nbytes"]])

    if "block_crcs" in sec:
        bs = meta["block_size"]
        crcs = [storage.block_crcs(raw(n), bs) for n in storage.DATA_SECTIONS if n in sec]
        new = np.concatenate(crcs).astype("<u4").tobytes()
        e = sec["block_crcs"]
        data[e["offset"] : e["offset"] + e["nbytes"]] = new
    for e in meta["sections"]:
        if e["crc32"] is not None:
            e["crc32"] = zlib.crc32(raw(e["name"]))
    return _with_header(bytes(data), meta)


def _edit_section(data: bytes, name: str, fn) -> bytes:
    """``data`` with section ``name``'s array replaced by ``fn(array copy)``, checksums
    recomputed (so only the content checks can find the edit)."""
    meta, _ = _layout(data)
    e = next(s for s in meta["sections"] if s["name"] == name)
    a = np.frombuffer(data[e["offset"] : e["offset"] + e["nbytes"]], e["dtype"]).copy()
    raw = np.ascontiguousarray(fn(a), e["dtype"]).tobytes()
    assert len(raw) == e["nbytes"]
    data = data[: e["offset"]] + raw + data[e["offset"] + e["nbytes"] :]
    return _rechecksum(data)


def test_consistent_checksums_do_not_hide_bad_ids(tmp_path):
    path = tmp_path / "i.vpi"
    small_index(n=10).save(path)
    good = path.read_bytes()
    for first in (None, -1, 10**6):  # a duplicate, a negative id, an id >= next_id
        path.write_bytes(
            _edit_section(good, "ids", lambda a, f=first: [a[1] if f is None else f, *a[1:]])
        )
        with pytest.raises(FormatError, match="section 'ids'"):
            vecpress.open(path, mmap=False)
        with pytest.raises(FormatError, match="section 'ids'"):
            vecpress.open(path, mmap=True).verify()


@pytest.mark.parametrize(
    "content",
    [b"", b"VPINDEX\x00", b"\x00" * 200, os.urandom(4096), b"VECPRESS" + bytes(100)],
    ids=["empty", "magic only", "zeros", "random", "codec magic"],
)
def test_not_an_index(tmp_path, content):
    path = tmp_path / "x.vpi"
    path.write_bytes(content)
    for load in (lambda: vecpress.open(path), lambda: vecpress.info(path)):
        with pytest.raises(FormatError, match=r"x\.vpi"):
            load()


def hostile_cases(data: bytes) -> list[tuple[str, bytes]]:
    """Header values 0, -1, 2^32, 2^64-1, file size ± 1 ... with checksums recomputed."""
    size = len(data)
    meta, hlen = _layout(data)
    values = [0, -1, 1, 2**31, 2**32, 2**63, 2**64 - 1, 2**64, 10**30, size - 1, size, size + 1]
    out = []
    for v in [0, 2**32, 2**63, 2**64 - 1, size - 1, size, size + 1, size - 48, size - 47, hlen - 1]:
        b = bytearray(data)
        struct.pack_into("<Q", b, 16, v)
        if 32 + v <= size:
            struct.pack_into("<I", b, 24, zlib.crc32(bytes(b[32 : 32 + v])))
        out.append((f"header length {v}", bytes(b)))
    for v in [0, 2**64 - 1, size - 1, size + 1, 2**32]:
        b = bytearray(data)
        struct.pack_into("<Q", b, size - 16, v)
        out.append((f"footer length {v}", bytes(b)))
    keys = ["d", "count", "code_size", "next_id", "seed"]
    optional = ("ivf", "rerank_code_size", "rerank_spec", "ivf_residual", "block_size")
    keys += [k for k in optional if k in meta]
    for key in keys:
        for v in [*values, 2048, 4097, 1 << 27, "7", None, 1.5, True, [1]]:
            if key == "next_id" and type(v) is int and meta["next_id"] <= v <= 2**63:
                continue  # a larger next_id is a legitimate header, not a hostile one
            m = json.loads(json.dumps(meta))
            m[key] = v
            if json.dumps(m) != json.dumps(meta):  # the same header is no case
                out.append((f"{key}={v!r}", _with_header(data, m)))
    for i in range(len(meta["sections"])):
        for field in ("offset", "nbytes", "crc32", "shape"):
            for v in [*values, None]:
                m = json.loads(json.dumps(meta))
                sec = m["sections"][i]
                sec[field] = [v, *sec["shape"][1:]] if field == "shape" else v
                if m != meta:
                    out.append((f"section {i} {field}={v}", _with_header(data, m)))
    for name, m in [
        ("no sections", {**meta, "sections": []}),
        ("extra key", {**meta, "extra": 1}),
        ("metric", {**meta, "metric": "cosine"}),
        ("spec", {**meta, "spec": "hd2,rq8"}),
        ("list header", [meta]),
    ]:
        out.append((name, _with_header(data, m)))
    # an integer of 5000 digits (beyond Python's int-string limit) in a checksummed header
    text = container.canonical_json(meta)
    for key in (b'"d":', b'"count":', b'"offset":'):
        at = text.index(key) + len(key)
        end = at + len(text[at:].split(b",")[0].split(b"}")[0])
        out.append(
            (
                f"{key.decode()} 5000 digits",
                _with_header(data, None, text[:at] + b"9" * 5000 + text[end:]),
            )
        )
    return out


@pytest.mark.parametrize("ref", [REFERENCE, REFERENCE_V2, REFERENCE_V3], ids=["v1", "v2", "v3"])
def test_hostile_header_values_are_rejected_before_allocation(tmp_path, ref):
    data = ref.read_bytes()
    path = tmp_path / "h.vpi"
    cases = hostile_cases(data)
    assert len(cases) > 200
    for name, content in cases:
        path.write_bytes(content)
        for mm in (False, True):
            tracemalloc.start()
            try:
                with pytest.raises(FormatError, match=r"h\.vpi"):
                    vecpress.open(path, mmap=mm).verify()
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert peak < 2 * len(data) + (1 << 20), (name, peak)


def _reheader_blob(data: bytes, header: bytes) -> bytes:
    """A codec blob with its JSON header replaced (length, CRC, padding, footer redone)."""
    hlen = struct.unpack_from("<I", data, 12)[0]
    body = data[container.align(20 + hlen) : len(data) - 16]
    head = struct.pack(
        "<8sIII", container.BLOB.magic, container.BLOB_VERSION, len(header), zlib.crc32(header)
    )
    head += header
    head += bytes(container.align(len(head)) - len(head))
    return head + body + struct.pack("<Q8s", len(head) + len(body) + 16, container.BLOB.end_magic)


def malformed_codec_blobs(codec) -> dict[str, bytes]:
    """Codec blobs whose layout and checksums are valid but whose contents are not."""
    good = codec.to_bytes()
    config, arrays = container.unpack(good)
    arrays = {k: v.copy() for k, v in arrays.items()}
    out = {}
    n = len(config["stages"])
    for key, value in [
        ("stages", [1, 2]),
        ("stages", [1] * n),
        ("stages", [[1]] * n),
        ("stages", [None] * n),
        ("stages", ["center"] * n),
        ("stages", 7),
        ("stages", "ab"),
        ("stages", [{}, {}]),
        ("spec", [1]),
        ("spec", 3),
        ("seed", "x"),
        ("seed", -1),
        ("d", 2.5),
        ("kind", None),
    ]:
        out[f"{key}={value!r}"] = container.pack({**config, key: value}, arrays)
    first = dict(config["stages"][0])
    out["stage d=[1]"] = container.pack(
        {**config, "stages": [{**first, "d": [1]}, *config["stages"][1:]]}, arrays
    )
    one = next(iter(arrays))
    out["array shape"] = container.pack(config, {**arrays, one: arrays[one][:1]})
    out["array missing"] = container.pack(config, {k: v for k, v in arrays.items() if k != one})
    text = json.loads(good[20 : 20 + struct.unpack_from("<I", good, 12)[0]])
    for what, edit in [
        ("5000-digit d", lambda t: t.replace(b'"d":32', b'"d":' + b"9" * 5000, 1)),
        ("5000-digit offset", lambda t: t.replace(b'"offset":0', b'"offset":' + b"1" * 5000, 1)),
        ("array name 5", lambda t: t.replace(b'"name":"', b'"name":5,"x":"', 1)),
        ("config a list", lambda t: t.replace(b'"config":{', b'"config":[{', 1)[:-1] + b"]}"),
    ]:
        header = json.dumps(text, sort_keys=True, separators=(",", ":")).encode()
        new = edit(header)
        assert new != header, what
        out[what] = _reheader_blob(good, new)
    return out


@pytest.mark.parametrize("spec", ["hd2,rq4", "center,hd2,rq4"])
def test_malformed_codec_blobs_are_format_errors_naming_the_file(tmp_path, monkeypatch, spec):
    """Codec.from_bytes, and open() of an index whose codec section holds the blob (all
    checksums valid): FormatError naming the source, never AttributeError or ValueError."""
    index = small_index("l2", spec=spec)
    cases = malformed_codec_blobs(index.codec)
    assert len(cases) >= 15
    path = tmp_path / "i.vpi"
    for name, bad in cases.items():
        with pytest.raises(FormatError, match=r"^c\.bin: ") as raised:
            Codec.from_bytes(bad, source="c.bin")
        assert type(raised.value) is FormatError, name
        with monkeypatch.context() as m:
            m.setattr(index.codec, "to_bytes", lambda b=bad: b)
            with pytest.raises(RuntimeError, match="would not open again"):
                index.save(path)  # save refuses to write what open rejects
            m.setattr(storage, "_check_written", lambda tmp: None)  # write it all the same
            index.save(path)
        for mm in (True, False):
            with pytest.raises(FormatError, match=r"i\.vpi.*section 'codec'"):
                vecpress.open(path, mmap=mm)


def test_huge_integers_in_a_checksummed_header_are_format_errors(tmp_path):
    """Python refuses to parse integers of more than 4300 digits (a ValueError naming no
    file); open() and info() must still raise FormatError naming the file and header."""
    path = tmp_path / "i.vpi"
    small_index().save(path)
    data = path.read_bytes()
    meta, _ = _layout(data)
    text = container.canonical_json(meta)
    for key in (b'"d":32', b'"seed":1', b'"count":60'):
        name = key.split(b":")[0]
        path.write_bytes(_with_header(data, None, text.replace(key, name + b":" + b"7" * 4400)))
        for load in (vecpress.info, vecpress.open, lambda p: vecpress.open(p, mmap=False)):
            with pytest.raises(FormatError, match=r"i\.vpi: invalid vecpress index in header"):
                load(path)


# -- block-by-block verification of memory-mapped files (format 3) -----------------
def _blocked_file(tmp_path, index: Index, name: str = "b.vpi") -> tuple[Path, dict]:
    path = tmp_path / name
    index.save(path, block_size=4096)
    meta, _ = _layout(path.read_bytes())
    return path, {e["name"]: e for e in meta["sections"]}


def _flip(path: Path, offset: int, bit: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1 << bit
    path.unlink()  # a new inode: never rewrite a mapped file
    path.write_bytes(bytes(data))


def _verified(index: Index) -> dict[str, set[int]]:
    """The blocks of each data section verified so far (by number within the section)."""
    check = index._pending_check
    return {
        n: {j for j in range(check._count[n]) if check._state[check._first[n] + j] == 2}
        for n in check._count
    }


def _blocks_of_rows(rows, width: int, bs: int = 4096) -> set[int]:
    out = set()
    for lo, hi in rows:
        if hi > lo:
            out |= set(range(lo * width // bs, (hi * width - 1) // bs + 1))
    return out


def _list_rows(index: Index, lists) -> list[tuple[int, int]]:
    off = index._list_offsets
    return [(int(off[i]), int(off[i + 1])) for i in np.unique(lists)]


def test_a_search_verifies_only_the_blocks_it_reads(tmp_path):
    """IVF (l2, f16 tier): a first search verifies the blocks of codes and norms holding
    its probed lists, of ids holding its results and of rerank_codes holding its
    candidates -- no other; verify() then checks the rest."""
    path, sec = _blocked_file(tmp_path, blocked_index("l2", n=3000, ivf=16, rerank_spec="f16"))
    index = vecpress.open(path)
    width = {"ids": 8, "norms": 4, "codes": index.memory["codes"], "rerank_codes": 64}
    total = {n: -(-sec[n]["nbytes"] // 4096) for n in width}
    assert min(total.values()) >= 3, total
    assert _verified(index) == {n: set() for n in width}  # open verified no data block
    q = np.random.default_rng(8).standard_normal((1, 32)).astype(np.float32)
    res = index.search(q, 5, nprobe=2)
    lists, _ = vecpress.search.ivf.probe(index.centroids, q, 2, "l2")
    rows = np.flatnonzero(np.isin(index._ids.view, res.ids[0]))
    seen = _verified(index)
    assert seen["codes"] == _blocks_of_rows(_list_rows(index, lists), width["codes"])
    assert seen["norms"] == _blocks_of_rows(_list_rows(index, lists), 4)
    assert seen["ids"] == _blocks_of_rows([(r, r + 1) for r in rows], 8)
    assert seen["rerank_codes"] == set()
    assert len(seen["codes"]) < total["codes"] and len(seen["ids"]) < total["ids"]
    res = index.search(q, 5, nprobe=2, rerank=40)
    cand = index.search(q, 40, nprobe=2).ids[0]
    cand_rows = np.flatnonzero(np.isin(index._ids.view, cand))
    want = _blocks_of_rows([(r, r + 1) for r in cand_rows], 64)
    assert _verified(index)["rerank_codes"] == want and len(want) < total["rerank_codes"]
    index.verify()
    assert index._pending_check is None


def test_a_flat_search_verifies_every_codes_block_and_the_results_ids(tmp_path):
    path, sec = _blocked_file(tmp_path, blocked_index("cosine", n=3000, rerank_spec="int8"))
    index = vecpress.open(path)
    q = np.random.default_rng(8).standard_normal((2, 32)).astype(np.float32)
    res = index.search(q, 3)
    seen = _verified(index)
    assert seen["codes"] == set(range(-(-sec["codes"]["nbytes"] // 4096)))
    rows = np.flatnonzero(np.isin(index._ids.view, res.ids))
    assert seen["ids"] == _blocks_of_rows([(r, r + 1) for r in rows], 8)
    assert "norms" not in seen and seen["rerank_codes"] == set()
    # every codes block has passed: a search no longer works out which it reads
    check = index._pending_check
    assert not check.pending(("codes",)) and not check.pending(("codes", "norms"))
    assert check.pending(("ids",)) and check.pending(("codes", "ids"))
    assert check.pending(("rerank_codes",))
    again = index.search(q[::-1], 3)
    assert same(again, vecpress.open(path, mmap=False).search(q[::-1], 3))
    assert _verified(index)["codes"] == seen["codes"]


def _row_of_list(index: Index, lst: int, where: float = 0.5) -> int:
    lo, hi = _list_rows(index, [lst])[0]
    return lo + int((hi - lo) * where)


def _rows_of_ids(index: Index, ids) -> list[tuple[int, int]]:
    rows = np.flatnonzero(np.isin(index._ids.view, np.asarray(ids)))
    return [(int(r), int(r) + 1) for r in rows]


@pytest.mark.parametrize("name", ["codes", "norms", "ids", "rerank_codes"])
def test_a_search_fails_exactly_when_it_reads_a_flipped_block(tmp_path, name):
    """A bit flip in block j of a data section: the searches that read block j raise
    FormatError naming the file, section and block; those that do not read it pass
    (and give the intact file's results); verify() raises."""
    path, sec = _blocked_file(tmp_path, blocked_index("l2", n=3000, ivf=8, rerank_spec="f16"))
    intact = vecpress.open(path, mmap=False)
    width = {"ids": 8, "norms": 4, "codes": intact.memory["codes"], "rerank_codes": 64}
    row = _row_of_list(intact, 0)  # a row of list 0: its blocks hold no row of list 7
    block = row * width[name] // 4096
    _flip(path, sec[name]["offset"] + row * width[name] + width[name] // 2, 3)
    rng = np.random.default_rng(4)

    def reads(q, k, nprobe, rerank=None) -> bool:
        """Whether the search reads the flipped block (from the intact file's results)."""
        lists, _ = vecpress.search.ivf.probe(intact.centroids, q, nprobe, "l2")
        rows = {
            "codes": _list_rows(intact, lists),
            "norms": _list_rows(intact, lists),
            "ids": _rows_of_ids(intact, intact.search(q, k, rerank, nprobe).ids),
            "rerank_codes": []
            if rerank is None
            else _rows_of_ids(intact, intact.search(q, rerank, nprobe=nprobe).ids),
        }
        return block in _blocks_of_rows(rows[name], width[name])

    cases = [(intact.centroids[[7]], 5, 1), (intact.centroids[[7]], 5, 1, 30)]
    cases += [(intact.centroids[[0]], 5, 1), (intact.centroids[[0]], 20, 1, 40)]
    cases += [(rng.standard_normal((2, 32)).astype(np.float32), 10, 2, 50) for _ in range(10)]
    cases += [(intact.centroids[[0]], 3000, 8, 3000)]  # reads every block
    index = vecpress.open(path)
    outcomes = []
    for q, k, nprobe, *rerank in cases:
        args = {"k": k, "nprobe": nprobe, "rerank": rerank[0] if rerank else None}
        outcomes.append(reads(q, **args))
        if outcomes[-1]:
            pattern = rf"b\.vpi: invalid vecpress index in section '{name}'.*block {block} "
            with pytest.raises(FormatError, match=pattern):
                index.search(q, **args)
        else:
            assert same(index.search(q, **args), intact.search(q, **args)), args
    assert outcomes[0] is False and outcomes[-1] is True
    with pytest.raises(FormatError, match=rf"b\.vpi: .*section '{name}'"):
        index.verify()


def test_a_flipped_block_checksum_fails_the_open(tmp_path):
    path, sec = _blocked_file(tmp_path, blocked_index())
    _flip(path, sec["block_crcs"]["offset"] + 5)
    for mm in (True, False):
        with pytest.raises(FormatError, match=r"b\.vpi: .*section 'block_crcs': checksum"):
            vecpress.open(path, mmap=mm)


def test_block_contents_are_checked_with_the_block(tmp_path):
    """Checksums consistent, contents not: an id >= next_id or a negative norm fails the
    search reading its block; a duplicate id only verify() (it needs every id)."""
    path, _ = _blocked_file(tmp_path, blocked_index("l2", n=3000, ivf=8, rerank_spec=None))
    intact = vecpress.open(path, mmap=False)
    row = _row_of_list(intact, 0)
    good = path.read_bytes()
    q0, q7 = intact.centroids[[0]], intact.centroids[[7]]
    everything = {"k": 3000, "nprobe": 8}

    def bad_id(a):
        a[row] = 10**9
        return a

    def bad_norm(a):
        a[row] = -1.0
        return a

    def dup_id(a):
        a[row] = a[row + 1]
        return a

    for name, fn, why in [("ids", bad_id, "outside"), ("norms", bad_norm, "finite and >= 0")]:
        path.unlink()
        path.write_bytes(_edit_section(good, name, fn))
        index = vecpress.open(path)
        assert same(index.search(q7, 5, nprobe=1), intact.search(q7, 5, nprobe=1))
        with pytest.raises(FormatError, match=rf"section '{name}'.*{why}"):
            index.search(q0, **everything)
        with pytest.raises(FormatError, match=rf"section '{name}'"):
            index.verify()
    path.unlink()
    path.write_bytes(_edit_section(good, "ids", dup_id))
    index = vecpress.open(path)
    index.search(q0, **everything)  # every block passes on its own
    for use in (index.verify, lambda: index.add(q0), lambda: index.ids, lambda: index.remove([5])):
        with pytest.raises(FormatError, match=r"b\.vpi: .*section 'ids': duplicate ids"):
            use()


@pytest.mark.parametrize("flip", [False, True], ids=["intact", "flipped"])
def test_concurrent_first_searches_share_the_verification(tmp_path, flip):
    """Threads searching a freshly opened file at once: intact, every one gets the right
    results and every block is verified once; a flipped codes block fails every one."""
    import threading

    path, sec = _blocked_file(tmp_path, blocked_index("l2", n=4000, rerank_spec="int8"))
    expect_index = vecpress.open(path, mmap=False)
    q = np.random.default_rng(3).standard_normal((4, 32)).astype(np.float32)
    expect = expect_index.search(q, 5, rerank=20)
    if flip:
        _flip(path, sec["codes"]["offset"] + sec["codes"]["nbytes"] // 2)
    for _ in range(5):
        index = vecpress.open(path)
        start = threading.Barrier(6)
        outcomes = []

        def search(index=index, start=start, outcomes=outcomes):
            start.wait()
            try:
                outcomes.append(same(index.search(q, 5, rerank=20), expect))
            except FormatError as e:
                outcomes.append(str(e))

        threads = [threading.Thread(target=search) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if flip:
            assert all(isinstance(o, str) and "section 'codes'" in o for o in outcomes), outcomes
        else:
            assert outcomes == [True] * 6
            check = index._pending_check
            first, n = check._first["codes"], check._count["codes"]
            assert (check._state[first : first + n] == 2).all()
            assert not (check._state == 1).any()


# -- fault injection in a memory-capped subprocess --------------------------------
def _run_worker(tmp_path, good: Path, cases: list) -> list:
    cases_path = tmp_path / "cases.json"
    out_path = tmp_path / "out.json"
    cases_path.write_text(json.dumps(cases))
    proc = subprocess.run(
        [sys.executable, __file__, "worker", str(good), str(cases_path), str(out_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (
        f"loader process crashed ({proc.returncode}): {proc.stderr[-2000:]}"
    )
    return json.loads(out_path.read_text())


def _section_edges(data: bytes) -> set[int]:
    """Section (and, format 3, block) boundaries, +-1."""
    meta, hlen = _layout(data)
    edges = {0, 8, 12, 16, 24, 28, 32, 32 + hlen, len(data) - 16, len(data) - 8}
    for s in meta["sections"]:
        edges |= {
            s["offset"],
            s["offset"] + s["nbytes"],
            container.align(s["offset"] + s["nbytes"]),
        }
        if s["name"] in storage.DATA_SECTIONS:
            edges |= set(range(s["offset"], s["offset"] + s["nbytes"], meta["block_size"]))
    return {e + delta for e in edges for delta in (-1, 0, 1) if 0 <= e + delta < len(data)}


def blocked_index(metric: str = "l2", n: int = 600, **options) -> Index:
    """A format-3 test file's index with several blocks of 4 KiB in every data section:
    IVF lists and a second tier (or the options given)."""
    options = options or {"rerank_spec": "f16", "ivf": 4}
    x = np.random.default_rng(n + 11).standard_normal((n, 32)).astype(np.float32)
    index = Index("hd2,rq4", metric=metric, seed=1, **options)
    index.add(x, ids=np.arange(n) * 2 + 5)
    return index


def _failures(cases, results) -> list:
    return [(c, r) for c, r in zip(cases, results, strict=True) if r != ["FormatError"] * 2]


@pytest.mark.slow
@pytest.mark.parametrize(
    "make",
    [
        lambda: full_index("l2"),
        lambda: small_index("cosine"),
        lambda: small_index("cosine", spec="center,lvq4x4"),
        lambda: blocked_index("l2", n=300),
    ],
    ids=["ivf-rerank-l2", "flat-cosine", "two-level", "blocks-of-4k"],
)
def test_truncation_at_every_offset_is_a_format_error(tmp_path, make):
    good = tmp_path / "good.vpi"
    make().save(good, block_size=4096)
    data = good.read_bytes()
    offsets = set(range(len(data))) | _section_edges(data)
    if len(data) > 20_000:  # the 4 KiB-block file: every offset near an edge, 3000 others
        others = sorted(set(range(len(data))) - _section_edges(data))
        offsets = _section_edges(data) | set(random.Random(5).sample(others, 3000))
    assert len(offsets) >= 2000 and _section_edges(data) <= offsets
    cases = [{"truncate": n} for n in sorted(offsets)]
    results = _run_worker(tmp_path, good, cases)
    assert not _failures(cases, results)[:5]


@pytest.mark.slow
@pytest.mark.parametrize(
    "make",
    [
        lambda p: full_index("l2", n=60).save(p),
        lambda p: blocked_index().save(p, block_size=4096),
    ],
    ids=["one-block-per-section", "blocks-of-4k"],
)
def test_random_bit_flips_are_all_detected(tmp_path, make):
    """Every single bit flip: a FormatError naming the file and section at open, or on
    the memory-mapped search reading the flipped block and on verify()."""
    good = tmp_path / "good.vpi"
    make(good)
    data = good.read_bytes()
    size = len(data)
    rng = random.Random(1234)
    cases = [{"flip": [rng.randrange(size), rng.randrange(8)]} for _ in range(FAULT_TRIALS)]
    cases += [{"flip": [e, 0]} for e in sorted(_section_edges(data))]
    meta, _ = _layout(data)
    crcs = next(s for s in meta["sections"] if s["name"] == "block_crcs")
    cases += [{"flip": [crcs["offset"] + i, i % 8]} for i in range(crcs["nbytes"])]
    results = _run_worker(tmp_path, good, cases)
    assert len(cases) >= 300
    assert not _failures(cases, results)[:5]


@pytest.mark.slow
@pytest.mark.parametrize("ref", [REFERENCE, REFERENCE_V2, REFERENCE_V3], ids=["v1", "v2", "v3"])
def test_hostile_headers_in_a_memory_capped_process(tmp_path, ref):
    good = tmp_path / "good.vpi"
    good.write_bytes(ref.read_bytes())
    cases = [{"bytes": blob.hex(), "name": name} for name, blob in hostile_cases(good.read_bytes())]
    results = _run_worker(tmp_path, good, cases)
    assert not [
        (c["name"], r) for c, r in zip(cases, results, strict=True) if r != ["FormatError"] * 2
    ]


_NAMED_SECTION = re.compile(r"(section '\w+'|header|prefix|footer|padding)")


def _named(e: FormatError, target: Path) -> str:
    """``"FormatError"`` if the message names the file and a section, else what it says."""
    msg = str(e)
    if str(target) in msg and _NAMED_SECTION.search(msg):
        return "FormatError"
    return f"FormatError naming no file or section: {msg}"[:300]


def _outcome(target: Path, q: np.ndarray, mm: bool) -> str:
    """``"FormatError"`` (named), ``"loaded"``, or what went wrong.

    In memory: open and search. Memory-mapped: open; then a search reading part of
    the data (it may pass: format 3 verifies only the blocks it reads), a search
    reading every block (all lists, every row a result and a candidate), and
    ``verify()``; a fault must make the last two raise (or the open).
    """
    try:
        index = vecpress.open(target, mmap=mm)
        if not mm:
            index.search(q, 5)
            return "loaded"
    except FormatError as e:
        return _named(e, target)
    except BaseException as e:  # every other outcome is a failure
        return f"{type(e).__name__}: {e}"[:300]
    n = max(1, len(index))
    steps = {
        "part": lambda: index.search(q, 5),
        "all": lambda: index.search(
            q, n, rerank=n if index.has_second_tier else None, nprobe=index.nlist
        ),
        "verify": index.verify,
    }
    seen = {}
    for name, step in steps.items():
        try:
            step()
            seen[name] = "passed"
        except FormatError as e:
            seen[name] = _named(e, target)
        except BaseException as e:
            seen[name] = f"{type(e).__name__}: {e}"[:300]
    if set(seen.values()) == {"passed"}:
        return "loaded"
    if seen["part"] in ("passed", "FormatError") and seen["all"] == seen["verify"] == "FormatError":
        return "FormatError"
    return f"mmap: {seen}"


def _worker(good: str, cases_path: str, out_path: str) -> None:
    """Load every mutated file twice (in memory; mmap + searches + verify), record outcomes."""
    import resource

    vecpress.set_num_threads(1)
    data = Path(good).read_bytes()
    ref = vecpress.open(good, mmap=False)
    q = np.random.default_rng(0).standard_normal((3, ref.d)).astype(np.float32)
    # warm up before the cap: every kernel either load mode runs is compiled (or loaded
    # from numba's cache, which maps code sections too) now, not under the cap
    for mm in (False, True):
        _outcome(Path(good), q, mm)
    cases = json.loads(Path(cases_path).read_text())  # before the cap too: it may be large
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    cap = vm + (64 << 20) + 4 * len(data)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    try:  # the cap must be effective, or this run proves nothing
        np.empty(cap, np.uint8)
        raise SystemExit(f"the address-space cap of {cap} bytes is not enforced")
    except MemoryError:
        pass
    target = Path(out_path).with_suffix(".case.vpi")
    results = []
    for case in cases:
        if "truncate" in case:
            blob = data[: case["truncate"]]
        elif "flip" in case:
            b = bytearray(data)
            b[case["flip"][0]] ^= 1 << case["flip"][1]
            blob = bytes(b)
        else:
            blob = bytes.fromhex(case["bytes"])
        if target.exists():
            target.unlink()  # a new inode: never rewrite a mapped file
        target.write_bytes(blob)
        results.append([_outcome(target, q, mm) for mm in (False, True)])
    Path(out_path).write_text(json.dumps(results))


# -- kill -9 during save --------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_kill_during_save_leaves_the_old_or_the_new_state(tmp_path):
    path = tmp_path / "k.vpi"
    states = [small_index("l2", n=2000, d=64), small_index("l2", n=3000, d=64)]
    q = np.random.default_rng(5).standard_normal((4, 64)).astype(np.float32)
    expect = {len(s): s.search(q, 5) for s in states}
    states[0].save(path)
    rng = random.Random(99)
    left_temp = left_lock = 0
    for _ in range(KILL_TRIALS):
        pid = os.fork()
        if pid == 0:  # the writer: save the two states in turn until killed
            try:
                i = 0
                while True:
                    states[i % 2].save(path)
                    i += 1
            finally:
                os._exit(1)
        time.sleep(rng.uniform(0.0, 0.04))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        temps = atomic.temp_files(str(path))
        left_temp += bool(temps)
        left_lock += os.path.exists(str(path) + ".lock")
        loaded = vecpress.open(path, mmap=False)
        assert len(loaded) in expect
        assert same(loaded.search(q, 5), expect[len(loaded)])
        assert atomic.temp_files(str(path)) == temps  # readers remove nothing
    states[0].save(path)  # the next save removes what the killed ones left
    assert sorted(os.listdir(tmp_path)) == ["k.vpi"]
    print(
        f"{KILL_TRIALS} kills: {left_temp} left a temp file, {left_lock} a lock file "
        "(removed by the next save)"
    )


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        _worker(*sys.argv[2:5])
    elif sys.argv[1] == "make-reference-kl":  # made once (frozen): do not run again
        make_reference_kl(REFERENCE_KL)
    elif sys.argv[1] == "make-reference":  # writes the version-3 file; v1 and v2 are frozen
        DATA.mkdir(exist_ok=True)
        idx = make_reference_v3(REFERENCE_V3)
        x3 = np.random.default_rng(2028).standard_normal((700, 24)).astype(np.float32)
        print(idx.search(x3[REF3_QUERY_ROWS], 3, nprobe=2).ids.tolist())
        print(idx.search(x3[REF3_QUERY_ROWS], 3, nprobe=2, rerank=20).ids.tolist())


@pytest.mark.parametrize("widest", [None, 10**200])  # as planned; a header that shrinks
@pytest.mark.parametrize("metric, rerank", [("l2", None), ("ip", "f16")])
def test_filling_in_place_writes_what_save_writes(tmp_path, monkeypatch, widest, metric, rerank):
    """``storage.filling`` (a file whose rows are written in place, the layout planned
    before the checksums are known) writes save()'s bytes; planned with a header far
    longer than the final one, the data moves down within the file."""
    if widest is not None:
        monkeypatch.setattr(storage, "_WIDEST_CRC", widest)
    x = np.random.default_rng(4).standard_normal((700, 24)).astype(np.float32)
    index = Index("hd2,rq4", metric=metric, rerank_spec=rerank)
    index.add(x)
    state = index.to_state()
    storage.save(state, tmp_path / "saved.vpi", block_size=4096)
    shaped = {
        k: None if a is None else np.broadcast_to(np.zeros((), a.dtype), a.shape)
        for k, a in [("ids", state.ids), ("norms", state.norms), ("codes", state.codes),
                     ("rerank_codes", state.rerank_codes)]
    }  # fmt: skip
    planned = storage.IndexState(**{**state.__dict__, **shaped})
    with storage.filling(planned, tmp_path / "filled.vpi", block_size=4096) as fill:
        for s in range(0, 700, 256):  # in pieces, out of order
            for name in ("codes", "norms", "rerank_codes", "ids")[::-1]:
                a = getattr(state, name)
                if a is not None:
                    fill(name, s, a[s : s + 256])
        with pytest.raises(ValueError, match=r"codes: rows 600\.\.856 .* do not fit"):
            fill("codes", 600, state.codes[:256])
    assert (tmp_path / "filled.vpi").read_bytes() == (tmp_path / "saved.vpi").read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["filled.vpi", "saved.vpi"]


def test_filling_that_fails_leaves_the_target(tmp_path):
    index = Index("hd2,rq4", metric="ip")
    index.add(np.random.default_rng(5).standard_normal((50, 8)).astype(np.float32))
    index.save(tmp_path / "x.vpi")
    before = (tmp_path / "x.vpi").read_bytes()
    with pytest.raises(RuntimeError, match="stop"):
        with storage.filling(index.to_state(), tmp_path / "x.vpi") as fill:
            fill("codes", 0, index.to_state().codes[:10])
            raise RuntimeError("stop")
    assert (tmp_path / "x.vpi").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["x.vpi"]
