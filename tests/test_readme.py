"""The README's Python examples run as written, and say what they do.

The code blocks are read from README.md and run in order in one namespace (as a
reader pastes them into one session), in a temporary folder; what their comments
claim is checked on the namespace afterwards.
"""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def test_the_readme_doctests_pass(tmp_path, monkeypatch):
    """The ``pycon`` blocks (``>>>`` sessions) run as doctests, output checked."""
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"^```pycon\n(.*?)^```", README.read_text(), flags=re.S | re.M)
    assert blocks
    parser, runner = doctest.DocTestParser(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for i, block in enumerate(blocks):
        runner.run(parser.get_doctest(block, {}, f"README pycon block {i + 1}", "README.md", 0))
    assert runner.summarize(verbose=False).failed == 0


def test_the_readme_has_python_examples():
    assert len(_blocks()) >= 4


def test_the_readme_examples_run_as_written(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    # Ray (>= 2.60) announces with a WARNING that a new local cluster uses token
    # authentication unless RAY_AUTH_MODE chooses it; a process that started a cluster
    # before has it set (so the test passed or failed by which tests ran first in its
    # process): choose Ray's default here
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    ns: dict = {}
    for i, block in enumerate(_blocks()):
        try:
            exec(compile(block, f"README.md python block {i + 1}", "exec"), ns)
        except Exception as e:  # pragma: no cover - the message says which block
            pytest.fail(f"README python block {i + 1} fails: {type(e).__name__}: {e}")
    # what the comments say
    assert ns["codes"].shape == (10_000, 198) and ns["codes"].dtype == np.uint8
    assert ns["scores"].shape == (5, 10_000) and ns["scores"].dtype == np.float32
    assert ns["x_hat"].shape == (10_000, 384)
    assert ns["same"].spec == "center,hd2,rq4"
    assert ns["res"].ids.shape == (5, 10)
    hits = ns["hits"]
    assert hits.ids[1][0] == "doc2" and all("doc1" not in row for row in hits.ids)
    recent = ns["recent"]
    assert all(m["year"] >= 2023 for row in recent.metadata for m in row)
    assert all(len(row) == 3 and None not in row for row in recent.ids)
    assert len(ns["col"]) == 5_999 and len(ns["col"].segments()) == 1
    assert [d.id for d in ns["docs"]] == ["doc1"] and [d.id for d in ns["mmr"]] == ["doc1"]
    assert [n.node.get_content() for n in ns["nodes"]] == ["vecpress compresses vectors"]
    found = ns["found"]
    assert all(len(row) == 10 and None not in row for row in found.ids)
    assert all(m["year"] >= 2023 for row in found.metadata for m in row)
    assert len(ns["llama_store"].client) == 1
    memory = ns["vecpress"].Index("hd2,rq4", metric="cosine", rerank_spec="f32")
    memory.add(ns["x"][:100])
    want = {"codes": 196, "rerank": 1536, "ids": 8, "norms": 0, "per_vector": 1740}
    assert {k: memory.memory[k] for k in want} == want
    # no library printed a warning (faiss warns when k-means has too few rows a list)
    out, err = capfd.readouterr()
    assert "WARNING" not in out + err


def test_the_center_row_states_each_codecs_extra_bytes():
    """The README's `center` row: +2 bytes for the codecs it lists as float16, +4 for
    those it lists as float32 (checked against Codec.code_size_of at d = 384)."""
    from vecpress import Codec

    row = next(line for line in README.read_text().splitlines() if line.startswith("| `center`"))
    two = ["int4", "lvq4", "rq4", "tq4", "tqp4", "kl4", "lvq4x4", "e4m3", "e5m2", "sign"]
    four = ["int8", "rq5", "f16", "bf16", "f32", "qjl256", "pq48x4", "opq48x4"]
    for q, extra in [(q, 2) for q in two] + [(q, 4) for q in four]:
        size = Codec.code_size_of(f"center,{q}", 384) - Codec.code_size_of(q, 384)
        assert size == extra, q
        name = re.sub(r"\d.*", "", q) if not q.startswith("lvq4x") else "two-level `lvq`"
        assert f"`{name}`" in row or name in row, q
