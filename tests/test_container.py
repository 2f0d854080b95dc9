"""The one framing of codec blobs and index files (vecpress.container)."""

from __future__ import annotations

import numpy as np
import pytest

import vecpress
from vecpress import container, storage
from vecpress.errors import FormatError


def test_blobs_and_index_files_share_one_framing():
    assert isinstance(container.BLOB, container.Framing)
    assert isinstance(storage.FRAMING, container.Framing)
    assert storage.FRAMING.magic != container.BLOB.magic


def _padding_offsets(data: bytes) -> list[int]:
    """Offsets of the zero padding bytes of a blob (between header, sections, footer)."""
    _, meta, hlen = container.BLOB.read_header(lambda o, n: data[o : o + n], len(data), "x")
    start = container.BLOB.first_section(hlen)
    used = [(0, container.BLOB.prefix.size + hlen)]
    used += [(start + e["offset"], start + e["offset"] + e["nbytes"]) for e in meta["arrays"]]
    used.append((len(data) - container.FOOTER.size, len(data)))
    free = np.ones(len(data), bool)
    for lo, hi in used:
        free[lo:hi] = False
    return np.flatnonzero(free).tolist()


def test_a_flipped_padding_byte_of_a_codec_blob_is_caught():
    """Every byte outside the CRC-checked header and arrays must be zero (the blob did not
    check its padding: a flip there went unnoticed)."""
    x = np.random.default_rng(0).standard_normal((50, 10)).astype(np.float32)
    data = vecpress.Codec.from_spec("center,hd2,rq4").fit(x).to_bytes()
    pads = _padding_offsets(data)
    assert len(pads) > 20
    for off in pads:
        bad = bytearray(data)
        bad[off] ^= 0x10
        with pytest.raises(FormatError, match="padding"):
            vecpress.Codec.from_bytes(bytes(bad))


def test_the_framing_refuses_a_file_of_the_other_kind(tmp_path):
    x = np.random.default_rng(1).standard_normal((20, 8)).astype(np.float32)
    blob = vecpress.Codec.from_spec("f16").fit(x).to_bytes()
    path = tmp_path / "c.vpi"
    path.write_bytes(blob)
    with pytest.raises(FormatError, match="it is a codec blob"):
        vecpress.open(path)
    index = vecpress.Index("f16", metric="ip")
    index.add(x)
    index.save(tmp_path / "i.vpi")
    with pytest.raises(FormatError, match="bad magic"):
        vecpress.Codec.from_bytes((tmp_path / "i.vpi").read_bytes())
