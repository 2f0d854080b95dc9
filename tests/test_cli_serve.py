"""``vecpress serve``: its flags are checked before anything starts, the token file is
read strictly, and the process serves with the token it was given."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
import httpx
import numpy as np

from _live import served_process
from vecpress import Collection
from vecpress.cli import main
from vecpress.cli.serve_command import _is_loopback, _warm_up, read_token
from vecpress.service.registry import Registry


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--port", "70000"], "--port"),
        (["--port", "http"], "--port"),
        (["--max-body-mb", "inf"], "--max-body-mb"),
        (["--max-body-mb", "-1"], "--max-body-mb"),
        (["--log-level", "loud"], "--log-level"),
    ],
)
def test_bad_flags_are_refused_by_the_parser(tmp_path, capsys, flags, named):
    with pytest.raises(SystemExit) as e:
        main(["serve", str(tmp_path), *flags])
    assert e.value.code == 2 and named in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--max-k", "20000"], "max_k must be in [1, 10000]"),
        (["--max-batch", "0"], "max_batch"),
        (["--readers", "0"], "readers"),
    ],
)
def test_bad_limits_are_clear_errors(tmp_path, capsys, flags, named):
    assert main(["serve", str(tmp_path / "root"), "--port", "0", *flags]) == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err


def test_the_token_file_is_read_strictly(tmp_path, capsys):
    f = tmp_path / "token"
    f.write_text("  s3cret  \nsecond line ignored\n")
    assert read_token(str(f)) == "s3cret"
    for content, named in ((b"\n\n", "holds no token"), (b"\xff\xfe", "not UTF-8")):
        f.write_bytes(content)
        with pytest.raises(ValueError, match=named):
            read_token(str(f))
        assert main(["serve", str(tmp_path / "root"), "--token-file", str(f)]) == 2
        assert named in capsys.readouterr().err
    assert main(["serve", str(tmp_path / "root"), "--token-file", str(tmp_path / "absent")]) == 2
    assert "absent" in capsys.readouterr().err


def test_loopback_hosts():
    assert all(_is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "127.0.0.2"))
    assert not any(_is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.4", "example.org"))


def test_the_process_serves_with_its_token(tmp_path):
    f = tmp_path / "token"
    f.write_text("from-a-file\n")
    with served_process(tmp_path / "root", "--token-file", str(f)) as (url, _):
        assert httpx.get(f"{url}/collections", timeout=30).status_code == 401
        good = {"Authorization": "Bearer from-a-file"}
        assert httpx.get(f"{url}/collections", headers=good, timeout=30).json() == {
            "collections": []
        }


def _docs(root, name: str, n: int) -> np.ndarray:
    """A collection ``name`` under ``root`` of ``n`` 16-d rows (one segment)."""
    x = np.random.default_rng(len(name)).standard_normal((n, 16)).astype(np.float32)
    col = Collection.create(root / name, spec="hd2,rq4", dim=16, flush_rows=100)
    col.add(x, ids=[f"{name}{i}" for i in range(n)])
    col.close()
    return x


def test_warmup_goes_through_every_collection(tmp_path, capsys):
    """``--warmup``'s step: every collection under the root searched through one of its
    readers (which keeps the segments it opened), each named with its seconds."""
    for name in ("a", "b", "c"):
        _docs(tmp_path, name, 150)
    (segment,) = (tmp_path / "c" / "segments").iterdir()
    segment.write_bytes(segment.read_bytes()[:100])  # damaged: reported, then skipped
    registry = Registry(tmp_path, readers=1)
    _warm_up(registry)
    err = capsys.readouterr().err
    assert "warmed up a in" in err and "warmed up b in" in err
    assert "could not warm up c: FormatError" in err and "warmed up c in" not in err
    assert "3 collection(s) warmed up in" in err
    with registry.get("a").reader() as col:
        assert len(col._segments) == 1  # opened by the warm-up, kept for the searches
    registry.close()


def test_the_process_warms_up_then_serves(tmp_path):
    x = _docs(tmp_path / "root", "docs", 150)
    with served_process(tmp_path / "root", "--warmup") as (url, _):
        body = {"vectors": x[3:4].tolist(), "k": 1}
        got = httpx.post(f"{url}/collections/docs/search", json=body, timeout=60).json()
        assert [hit["id"] for hit in got["results"][0]] == ["docs3"]
