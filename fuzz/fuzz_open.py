"""Coverage-guided fuzzing of index-file loading with atheris (see fuzz/README.md).

Every input is a whole index file. It is written to a temp file and loaded
with ``vecpress.info``, ``vecpress.open(mmap=False)`` and ``vecpress.open(mmap=True)``
(then ``verify()`` and a search). The contract checked:

* a load either succeeds or raises :class:`vecpress.FormatError` -- any other
  exception (``MemoryError``, ``OverflowError``, ``RecursionError``, a
  ``ValueError`` that is not a ``FormatError`` ...) is a crash;
* the in-memory and the memory-mapped load agree (both fail, or both load
  with the same search results), and a file that opens has a readable header;
* a search on a loaded file returns ids that are stored ids or -1, without
  duplicates, with the -1 padding only at the end of a row (a row may hold
  fewer than min(k, n) ids: codes whose float fields are NaN are not ranked).

Modes (``--mode``):

``raw``
    libFuzzer's byte mutations on whole files (most die at a checksum: this
    exercises the outer layer -- prefix, footer, lengths, header CRC).
``header``
    a custom mutator that edits the JSON header (bytes or values), the section
    contents, or the codec blob inside the ``codec`` section (its own JSON and
    arrays), and then recomputes what a checksum would otherwise reject: the
    header length and CRC, the section offsets/sizes/CRCs (mostly; format 3: the
    block checksums too), the codec blob's header CRC and array CRCs, and the
    footer length. So the fuzzer reaches the header-field checks, the codec's
    restore() and the data checks.

Run: ``python fuzz/fuzz_open.py --mode=header WORKDIR fuzz/corpus -max_total_time=300
-rss_limit_mb=2048 -max_len=65536 -timeout=20``; ``python fuzz/fuzz_open.py
--make-corpus`` rewrites the seeds in ``fuzz/corpus/``; ``python fuzz/fuzz_open.py
--replay FILE...`` runs the check on files without atheris (prints the outcome).
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import random
import shutil
import struct
import sys
import tempfile
import warnings
import zlib
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
REFERENCES = [HERE.parent / "tests" / "data" / f"ref_v{v}.vpi" for v in (1, 2, 3)]

_PREFIX = struct.Struct("<8sIIQII")  # index: magic, version, flags, hlen, hcrc, reserved
_FOOTER = struct.Struct("<Q8s")  # index and blob: total length, end magic
_BLOB_PREFIX = struct.Struct("<8sIII")  # codec blob: magic, version, hlen, hcrc
INDEX_MAGIC, INDEX_END = b"VPINDEX\x00", b"VPIEND\x00\x00"
BLOB_END = b"VPEND\x00\x00\x00"
ALIGN = 64
K = 3

INTERESTING = [0, 1, -1, 2, 3, 7, 8, 63, 64, 65, 255, 256, 2**31 - 1, 2**31, 2**32 - 1, 2**32]
INTERESTING += [2**48, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**30, -(2**63)]
ODD_VALUES = [None, True, False, 1.5, -0.0, float("nan"), float("inf"), "", "7", "x" * 300]
ODD_VALUES += [[], [1], [[1]], {}, {"a": 1}]
SPECS = ["f32", "f16", "bf16", "e4m3", "int8", "int1", "lvq4", "tq4", "tqp3", "rq1", "rq8"]
SPECS += ["sign", "qjl64", "qjl1", "hd2,rq4", "center,int8", "haar,int4", "hd1,tqp3", "hd9,rq4"]


def _align(n: int) -> int:
    return n + (-n) % ALIGN


# -- the property under test --------------------------------------------------------
def check_file(path: str) -> str:
    """Load ``path`` every way; return a short outcome, raise on a contract violation."""
    import vecpress
    from vecpress import FormatError

    outcomes = []
    for mm in (False, True):
        index = None
        try:
            index = vecpress.open(path, mmap=mm)
            index.verify()
            q = np.linspace(-1.0, 1.0, 2 * index.d, dtype=np.float32).reshape(2, index.d)
            rerank = 2 * K if index.rerank_spec is not None else None
            nprobe = index.nlist if index.is_ivf else None  # every list: every row is a candidate
            res = index.search(q, K, rerank=rerank, nprobe=nprobe)
            stored = set(index.ids.tolist())
            for row in res.ids.tolist():
                real = [i for i in row if i != -1]
                if any(i not in stored for i in real) or len(set(real)) != len(real):
                    raise AssertionError(f"search returned unknown or repeated ids {row}")
                if row[: len(real)] != real:  # (fewer than min(K, n) results is allowed:
                    # search drops rows whose forged codes score NaN -- see fuzz/README.md)
                    raise AssertionError(f"-1 padding in the middle of a row: {row}")
            outcomes.append(("ok", len(index), index.next_id, index.spec, index.metric,
                             res.ids.tobytes(), res.scores.tobytes()))  # fmt: skip
        except FormatError:
            outcomes.append(("FormatError",))
        finally:
            del index
    if outcomes[0] != outcomes[1]:
        raise AssertionError(
            f"mmap=False and mmap=True disagree: {outcomes[0][:5]} vs {outcomes[1][:5]}"
        )
    try:
        vecpress.info(path)
    except FormatError:
        if outcomes[0][0] == "ok":
            raise AssertionError("the file opens but info() rejects its header") from None
    return outcomes[0][0]


class Target:
    """Writes each input to a fresh file (a new inode: never rewrite a mapped file)."""

    def __init__(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="vecpress-fuzz-")
        self.path = os.path.join(self.folder, "input.vpi")
        # removed at a normal exit; libFuzzer exits without atexit handlers, which leaves
        # the last input in /tmp/vecpress-fuzz-*/input.vpi (handy after an OOM or timeout)
        atexit.register(shutil.rmtree, self.folder, True)

    def __call__(self, data: bytes) -> str:
        if os.path.exists(self.path):
            os.unlink(self.path)
        with open(self.path, "wb") as f:
            f.write(data)
        return check_file(self.path)


# -- structure-aware mutation (header mode) -------------------------------------------
def split_index(data: bytes):
    """(meta or None, header bytes, {section name: bytes} in file order) or None."""
    if len(data) < _PREFIX.size + _FOOTER.size or data[:8] != INDEX_MAGIC:
        return None
    hlen = struct.unpack_from("<Q", data, 16)[0]
    if _PREFIX.size + hlen > len(data) - _FOOTER.size:
        return None
    header = data[_PREFIX.size : _PREFIX.size + hlen]
    try:
        meta = json.loads(header)
    except (ValueError, RecursionError):
        meta = None
    sections = {}
    if isinstance(meta, dict) and isinstance(meta.get("sections"), list):
        for e in meta["sections"]:
            try:
                off, n, name = int(e["offset"]), int(e["nbytes"]), str(e["name"])
            except (KeyError, TypeError, ValueError, OverflowError):
                continue
            if 0 <= off and 0 <= n and off + n <= len(data) - _FOOTER.size:
                sections[name] = data[off : off + n]
    return meta, header, sections


def join_index(header: bytes, body: bytes, version: int) -> bytes:
    """Prefix (length and CRC recomputed) + header + padding + body + footer."""
    head = _PREFIX.pack(INDEX_MAGIC, version, 0, len(header), zlib.crc32(header), 0) + header
    out = head + bytes(_align(len(head)) - len(head)) + body
    return out + _FOOTER.pack(len(out) + _FOOTER.size, INDEX_END)


def _entries(meta) -> list[dict]:
    """The section entries of a (possibly mutated) header that still name a section."""
    entries = meta.get("sections") if isinstance(meta, dict) else None
    if not isinstance(entries, list):
        return []
    return [e for e in entries if isinstance(e, dict) and isinstance(e.get("name"), str)]


def deepen(header: bytes, rng: random.Random) -> bytes:
    """Add a deeply nested JSON list to an object's text (json.dumps cannot write one)."""
    n = rng.choice([100, 900, 1100, 3000, 50000])
    text = header.rstrip()
    if not text.endswith(b"}"):
        return header
    return text[:-1] + b',"deep":' + b"[" * n + b"]" * n + b"}"


DATA_SECTIONS = ("ids", "norms", "codes", "rerank_codes")  # checked by block in version 3


def fix_block_crcs(meta, sections: dict) -> None:
    """Version 3: recompute ``block_crcs`` from the data sections (if the block size is one)."""
    bs = meta.get("block_size") if isinstance(meta, dict) else None
    if "block_crcs" not in sections or not (isinstance(bs, int) and 1 <= bs <= 1 << 26):
        return
    crcs = []
    for name in DATA_SECTIONS:
        raw = sections.get(name, b"")
        crcs += [zlib.crc32(raw[i : i + bs]) for i in range(0, len(raw), bs)]
    sections["block_crcs"] = np.array(crcs, "<u4").tobytes()
    for e in _entries(meta):
        if e["name"] == "block_crcs":
            e["shape"] = [len(crcs)]


def build_index(meta, sections: dict, *, relayout: bool, fix_crc: bool, version: int) -> bytes:
    """Lay the sections out in order at 64-byte boundaries; fix the header to match."""
    if fix_crc and version >= 3:
        fix_block_crcs(meta, sections)
    named = [e for e in _entries(meta) if e["name"] in sections]
    for e in named:
        raw = sections[e["name"]]
        if relayout:
            e["nbytes"] = len(raw)
            if e["name"] in ("codec", "rerank_codec"):
                e["shape"] = [len(raw)]
        if fix_crc:
            data = version >= 3 and e["name"] in DATA_SECTIONS
            e["crc32"] = None if data else zlib.crc32(raw)
    header = b""
    for _ in range(8):  # offsets depend on the header length: iterate until stable
        header = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
        if not relayout:
            break
        offset = _align(_PREFIX.size + len(header))
        for e in named:
            e["offset"] = offset
            offset = _align(offset + len(sections[e["name"]]))
        if json.dumps(meta, sort_keys=True, separators=(",", ":")).encode() == header:
            break
    body = bytearray()
    for raw in sections.values():  # in file order, each padded to 64 bytes
        body += raw + bytes(_align(len(raw)) - len(raw))
    return join_index(header, bytes(body), version)


def mutate_value(value, rng: random.Random, size: int):
    """A hostile or odd replacement for a JSON value."""
    r = rng.random()
    if isinstance(value, int) and not isinstance(value, bool) and r < 0.4:
        return rng.choice([value + 1, value - 1, value * 2, value // 2, -value, value + 64,
                           size, size - 1, size + 1, value ^ (1 << rng.randrange(64))])  # fmt: skip
    if isinstance(value, str) and r < 0.5:
        return rng.choice([*SPECS, "ip", "l2", "cosine", value.upper(), value + ",", "vecpress"])
    if isinstance(value, list) and value and r < 0.5:
        i = rng.randrange(len(value))
        out = list(value)
        out[i] = mutate_value(value[i], rng, size)
        return rng.choice([out, value[:i], [*value, value[i]], value[::-1]])
    if r < 0.75:
        return rng.choice(INTERESTING)
    if r < 0.97:
        return rng.choice(ODD_VALUES)
    return [[[[[[[[0]]]]]]]] if rng.random() < 0.5 else "[" * 5000  # deep nesting / junk


def mutate_json(obj, rng: random.Random, size: int, depth: int = 0):
    """Change one value somewhere in a JSON document (or add / drop a key)."""
    if isinstance(obj, dict) and obj and depth < 6:
        key = rng.choice(sorted(obj, key=str))
        r = rng.random()
        if r < 0.08:
            obj = dict(obj)
            del obj[key]
        elif r < 0.12:
            obj = {**obj, rng.choice(["extra", "x", ""]): rng.choice(INTERESTING)}
        else:
            obj = {**obj, key: mutate_json(obj[key], rng, size, depth + 1)}
        return obj
    if isinstance(obj, list) and obj and depth < 6 and rng.random() < 0.7:
        out = list(obj)
        i = rng.randrange(len(out))
        out[i] = mutate_json(out[i], rng, size, depth + 1)
        return out
    return mutate_value(obj, rng, size)


def split_blob(data: bytes):
    """(config dict, header JSON, data part after the aligned header) of a codec blob."""
    if len(data) < _BLOB_PREFIX.size + _FOOTER.size or data[:8] != b"VECPRESS":
        return None
    _, version, hlen, _ = _BLOB_PREFIX.unpack_from(data, 0)
    end = _BLOB_PREFIX.size + hlen
    if end > len(data) - _FOOTER.size:
        return None
    try:
        meta = json.loads(data[_BLOB_PREFIX.size : end])
    except (ValueError, RecursionError):
        return None
    return version, meta, data[_align(end) : len(data) - _FOOTER.size]


def join_blob(version: int, header: bytes, rest: bytes) -> bytes:
    head = _BLOB_PREFIX.pack(b"VECPRESS", version, len(header), zlib.crc32(header)) + header
    out = head + bytes(_align(len(head)) - len(head)) + rest
    return out + _FOOTER.pack(len(out) + _FOOTER.size, BLOB_END)


def mutate_blob(blob: bytes, rng: random.Random, mutate_bytes) -> bytes:
    """Change the codec blob's JSON or one of its arrays; recompute its checksums."""
    parts = split_blob(blob)
    if parts is None:
        return mutate_bytes(blob, len(blob) + 64)
    version, meta, rest = parts
    rest = bytearray(rest)
    entries = meta.get("arrays") if isinstance(meta, dict) else None
    r = rng.random()
    if r < 0.45:
        meta = mutate_json(meta, rng, len(blob))
    elif r < 0.55:
        header = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
        header = deepen(header, rng) if r < 0.47 else mutate_bytes(header, len(header) + 64)
        return join_blob(version, header, bytes(rest))
    elif isinstance(entries, list) and entries:  # change an array's values, fix its CRC
        e = rng.choice(entries)
        try:
            off, n = int(e["offset"]), int(e["nbytes"])
        except (KeyError, TypeError, ValueError):
            return join_blob(version, json.dumps(meta).encode(), bytes(rest))
        if 0 <= off and off + n <= len(rest) and n:
            new = mutate_bytes(bytes(rest[off : off + n]), n)
            new = (new + bytes(n))[:n]
            rest[off : off + n] = new
            e["crc32"] = zlib.crc32(new)
    if isinstance(entries, list) and rng.random() < 0.7:  # keep the array CRCs valid
        for e in entries:
            try:
                off, n = int(e["offset"]), int(e["nbytes"])
                if 0 <= off and off + n <= len(rest):
                    e["crc32"] = zlib.crc32(bytes(rest[off : off + n]))
            except (KeyError, TypeError, ValueError):
                pass
    header = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    return join_blob(version, header, bytes(rest))


def resize(meta: dict, sections: dict, rng: random.Random) -> None:
    """Change the vector count consistently (ids, norms, codes and shapes follow)."""
    count, cs = meta.get("count"), meta.get("code_size")
    if not (isinstance(count, int) and isinstance(cs, int) and 0 < cs < 1 << 16):
        return
    if not 0 <= count <= 1 << 16:  # a hostile count: leave it (allocating it is not the test)
        return
    new = rng.choice([0, 1, 2, max(0, count - 1), count + 1, count + 5])
    ids = np.frombuffer(sections.get("ids", b""), "<i8")
    fresh = np.arange(new, dtype="<i8") * rng.choice([1, 3]) + rng.choice([0, 100])
    fresh[: min(new, ids.size)] = ids[: min(new, ids.size)]
    if new and rng.random() < 0.2:
        fresh[-1] = rng.choice([fresh[0], -1, 2**62])  # duplicate / negative / large
    sections["ids"] = fresh.tobytes()
    meta["count"] = new
    meta["next_id"] = int(fresh.max()) + 1 if new and fresh.max() >= 0 else meta.get("next_id")
    grow = bytes(rng.getrandbits(8) for _ in range(cs * 5))
    if "codes" in sections:
        sections["codes"] = (sections["codes"] + grow)[: new * cs]
    if "norms" in sections:
        extra = np.array([rng.choice([0.0, 1.0, 3.5, -1.0, float("nan")]) for _ in range(5)])
        sections["norms"] = (sections["norms"] + extra.astype("<f4").tobytes())[: new * 4]
    rcs = meta.get("rerank_code_size")
    if "rerank_codes" in sections and isinstance(rcs, int) and 0 < rcs < 1 << 16:
        sections["rerank_codes"] = (sections["rerank_codes"] + grow * 4)[: new * rcs]
    if "list_offsets" in sections:  # IVF: the lists still end at count
        offsets = np.minimum(np.frombuffer(sections["list_offsets"], "<i8"), new)
        offsets[-1:] = new
        sections["list_offsets"] = offsets.tobytes()
    for e in _entries(meta):
        if e["name"] in ("ids", "norms"):
            e["shape"] = [new]
        elif e["name"] == "codes":
            e["shape"] = [new, cs]
        elif e["name"] == "rerank_codes":
            e["shape"] = [new, rcs]


def mutate_index(data: bytes, max_size: int, seed: int, mutate_bytes) -> bytes:
    """The header-mode custom mutator (deterministic given ``seed``; never raises)."""
    try:
        return _mutate_index(data, max_size, seed, mutate_bytes)
    except Exception:  # a mutated structure the editor cannot follow: plain bytes
        return mutate_bytes(data, max_size)


def _mutate_index(data: bytes, max_size: int, seed: int, mutate_bytes) -> bytes:
    rng = random.Random(seed)
    parts = split_index(data)
    if parts is None or rng.random() < 0.05:
        return mutate_bytes(data, max_size)
    meta, header, sections = parts
    version = struct.unpack_from("<I", data, 8)[0]
    if rng.random() < 0.05:  # a version-2 header under a version-1 prefix, and so on
        version = rng.choice([1, 2, 3])
    r = rng.random()
    if meta is None or r < 0.2:  # byte-level edit of the JSON text; sections stay put
        if rng.random() < 0.1:
            new_header = deepen(header, rng)
        else:
            new_header = mutate_bytes(header, len(header) + 128)
        hlen = struct.unpack_from("<Q", data, 16)[0]
        body = data[_align(_PREFIX.size + hlen) : len(data) - _FOOTER.size]
        out = join_index(new_header, body, version)
    else:
        relayout, fix_crc = rng.random() < 0.85, rng.random() < 0.85
        if r < 0.5:  # a value of the index header
            meta = mutate_json(meta, rng, len(data))
        elif r < 0.7 and "codec" in sections:  # a codec blob inside the index
            name = rng.choice([n for n in ("codec", "rerank_codec") if n in sections])
            sections[name] = mutate_blob(sections[name], rng, mutate_bytes)
        elif r < 0.85 and sections:  # a data section's bytes
            name = rng.choice(sorted(sections))
            raw = sections[name]
            new = mutate_bytes(raw, len(raw) + 64)
            blob = name in ("codec", "rerank_codec")  # blobs may change size; arrays may not
            sections[name] = new if blob else (new + bytes(len(raw)))[: len(raw)]
        else:
            resize(meta, sections, rng)
        if not isinstance(meta, dict):
            meta = {"sections": []}
        out = build_index(meta, sections, relayout=relayout, fix_crc=fix_crc, version=version)
    return out if len(out) <= max_size else mutate_bytes(data, max_size)


# -- seeds --------------------------------------------------------------------------
def make_corpus(folder: Path = CORPUS) -> list[Path]:
    """Write the seed files: the reference files of every format version and small fresh
    indexes (the last one in blocks of 4 KiB, so its data sections have several)."""
    import vecpress
    from vecpress.files import storage

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    made = []
    for ref in REFERENCES:
        made.append(folder / ref.name)
        shutil.copyfile(ref, made[-1])
    seeds = [  # (spec, metric, n, d, second tier and IVF options)
        ("f32", "ip", 6, 8, {}),
        ("center,int8", "cosine", 10, 16, {}),
        ("tq4", "l2", 8, 16, {}),
        ("sign", "ip", 5, 16, {}),
        ("lvq4", "l2", 7, 12, {}),
        ("hd1,tqp3", "cosine", 5, 16, {}),
        ("qjl1", "ip", 4, 8, {}),
        ("f16", "l2", 0, 8, {}),  # trained but empty
        ("hd2,rq1", "l2", 9, 16, {"rerank_spec": "int8"}),
        ("rq2", "ip", 10, 8, {"ivf": 2}),
        ("hd2,rq1", "cosine", 12, 16, {"ivf": 3, "rerank_spec": "f16", "ivf_residual": False}),
        ("rq2", "l2", 700, 8, {"ivf": 3, "rerank_spec": "int8", "block_size": 4096}),
    ]
    for spec, metric, n, d, options in seeds:
        block_size = options.pop("block_size", storage.BLOCK_SIZE)
        index = vecpress.Index(spec, metric=metric, seed=int(rng.integers(1000)), **options)
        x = rng.standard_normal((max(n, 4), d)).astype(np.float32)
        if n:
            index.add(x[:n], ids=np.arange(n) * 2 + 1)
            index.remove([3])
        else:
            index.train(x)
        extra = "".join(f"_{k}-{v}" for k, v in options.items() if k != "ivf_residual")
        if block_size != storage.BLOCK_SIZE:
            extra += f"_blocks-{block_size}"
        path = folder / f"{spec.replace(',', '_')}_{metric}_{n}x{d}{extra}.vpi"
        index.save(path, block_size=block_size)
        made.append(path)
    return made


def cap_address_space(margin_mb: int) -> None:
    """Cap the address space at its current size + ``margin_mb``: an allocation far beyond
    the input's size then raises ``MemoryError`` (a crash with its input saved) instead
    of tripping libFuzzer's RSS limit, which does not always record the input."""
    import resource

    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    cap = vm + (margin_mb << 20)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    print(f"INFO: address space capped at {cap >> 20} MiB (current + {margin_mb} MiB)")


def compiled_modules() -> list[str]:
    """vecpress modules that define numba functions: instrumenting their bytecode breaks numba."""
    spec = importlib.util.find_spec("vecpress")
    root = Path(next(iter(spec.submodule_search_locations)))
    out = []
    for f in sorted(root.rglob("*.py")):
        if "numba" in f.read_text(encoding="utf-8", errors="replace"):
            parts = f.relative_to(root.parent).with_suffix("").parts
            out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def main() -> None:
    args = sys.argv[1:]
    if "--make-corpus" in args:
        for p in make_corpus():
            print(p.relative_to(HERE.parent), p.stat().st_size)
        return
    if "--replay" in args:
        target = Target()
        for name in args[args.index("--replay") + 1 :]:
            print(name, target(Path(name).read_bytes()))
        return
    mode, margin_mb = "raw", 512
    for a in list(args):
        if a.startswith("--mode="):
            mode = a.split("=", 1)[1]
            args.remove(a)
        elif a.startswith("--margin-mb="):
            margin_mb = int(a.split("=", 1)[1])
            args.remove(a)
    if mode not in ("raw", "header"):
        raise SystemExit(f"--mode must be raw or header, found {mode!r}")

    import atheris

    with atheris.instrument_imports(include=["vecpress"], exclude=compiled_modules()):
        import vecpress

    vecpress.set_num_threads(1)
    warnings.simplefilter("ignore", RuntimeWarning)  # NaN arithmetic on forged codes
    target = Target()
    for seed_file in sorted(CORPUS.glob("*.vpi")):  # warm up (kernels compile) before the cap
        target(seed_file.read_bytes())
    cap_address_space(margin_mb)
    kwargs = {}
    if mode == "header":
        kwargs["custom_mutator"] = lambda data, max_size, seed: mutate_index(
            data, max_size, seed, atheris.Mutate
        )
    atheris.Setup([sys.argv[0], *args], target, **kwargs)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
