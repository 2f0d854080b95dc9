"""The one framing of codec blobs and index files (vecpress.container)."""

from __future__ import annotations

import numpy as np
import pytest

import vecpress
from vecpress import container
from vecpress.errors import FormatError
from vecpress.files import storage


def test_blobs_and_index_files_share_one_framing():
    assert isinstance(container.BLOB, container.Framing)
    assert isinstance(storage.FRAMING, container.Framing)
    assert storage.FRAMING.magic != container.BLOB.magic


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
