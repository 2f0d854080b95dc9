"""``pip install vecpress`` alone works: the optional extras (the integrations, the
report's plots, parquet, sentence models) are imported only by the modules that need
them, and those modules say which extra to install. Checked in a fresh interpreter
where the extras' packages cannot be imported."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCKED = ["langchain_core", "llama_index", "fastapi", "uvicorn", "pydantic", "matplotlib",
           "pyarrow", "sentence_transformers", "torch", "ray", "constriction"]  # fmt: skip

SCRIPT = textwrap.dedent(
    """
    import importlib, sys, tempfile
    import numpy as np

    BLOCKED = {blocked!r}

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"blocked for the test: {{name}}")
            return None

    sys.meta_path.insert(0, Block())
    import vecpress
    from vecpress import Collection, Index

    x = np.random.default_rng(0).standard_normal((300, 32)).astype(np.float32)
    idx = Index("hd2,rq4", metric="cosine", rerank_spec="f32")
    idx.add(x)
    assert idx.search(x[:2], 3).ids[:, 0].tolist() == [0, 1]
    col = Collection.create(tempfile.mkdtemp(), spec="hd2,rq4", dim=32, flush_rows=100)
    col.add(x, ids=[str(i) for i in range(300)], texts=["t"] * 300)
    assert col.search(x[5:6], 1).ids[0][0] == "5"
    for module, extra in [("vecpress.integrations.langchain", "langchain"),
                          ("vecpress.integrations.llama_index", "llama-index"),
                          ("vecpress.service.app", "serve"),
                          ("vecpress.distributed", "ray")]:
        try:
            importlib.import_module(module)
        except ImportError as e:
            assert f"vecpress[{{extra}}]" in str(e), str(e)
        else:
            raise SystemExit(f"{{module}} imported without its extra")
    import vecpress.archive
    try:
        vecpress.archive.compress(x[:10], mse=1.0)
    except ImportError as e:
        assert "vecpress[archive]" in str(e), str(e)
    else:
        raise SystemExit("vecpress.archive compressed without its extra")
    from vecpress.cli import main
    assert main(["serve", tempfile.mkdtemp(), "--port", "0"]) == 2  # says: install the extra
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not loaded, loaded
    print("ok")
    """
)


def test_the_core_works_without_any_extra():
    script = SCRIPT.format(blocked=BLOCKED)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=600)  # fmt: skip
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-3000:]
    assert "pip install 'vecpress[serve]'" in run.stderr
