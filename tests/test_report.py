"""``vecpress.advisor.report``: the HTML page, its embedded plots, the Pareto helper, the atomic
write, and the page as a real browser (headless Chromium) renders it."""

from __future__ import annotations

import base64
import math
import os
import shutil
import struct
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np
import pytest

from vecpress.advisor import report
from vecpress.advisor.report import MISSING, pareto_front, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLOT_IDS = ("plot-bytes", "plot-speed", "plot-spectrum")
EVIL = '<script>alert("x")</script> & co'
DATASET = {"name": "glove50", "n": 390_000, "d": 50, "queries": 1000, "metric": "cosine", "k": 10}


# -- synthetic inputs ------------------------------------------------------------


def record(label: str, bytes_per_vector: int, recall: float, qps_1t: float | None, **kw) -> dict:
    """One result record with every key of the advisor's schema."""
    r = {
        "label": label,
        "spec": label,
        "peer": None,
        "rerank_spec": None,
        "rerank": None,
        "ivf": None,
        "nprobe": None,
        "code_size": bytes_per_vector,
        "bytes_per_vector": bytes_per_vector,
        "shared_bytes": 400,
        "recall_at_k": recall,
        "recall_se": math.sqrt(recall * (1 - recall) / 1000),
        "recall_k_at_r": min(1.0, recall + 0.04),
        "graph_recall": None,
        "mse": (1 - recall) * 1e-3,
        "ip_bias": -2e-5,
        "ip_spread": (1 - recall) * 0.05,
        "encode_us": 0.8,
        "qps_1t": qps_1t,
        "qps": None if qps_1t is None else 1.9 * qps_1t,
        "threads": 2,
        "peak_rss_mb": 310.5,
        "k": 10,
    }
    r.update(kw)
    return r


def make_results() -> list[dict]:
    """A dozen vecpress configurations (GloVe-50-like numbers) and two peers."""
    rows = [
        record("f16", 100, 0.9990, 1200.0),
        record("int8", 54, 0.9900, 2600.0),
        record("e4m3", 54, 0.9700, 2500.0),
        record("center,hd2,rq8", 66, 0.9950, 2400.0),
        record("int4", 29, 0.9000, 3900.0),
        record("center,hd2,rq4", 39, 0.9430, 4100.0),
        record("center,hd2,tq4", 39, 0.9380, 4000.0),
        record("center,hd2,rq2", 23, 0.8000, 5200.0),
        record("center,hd2,rq1", 15, 0.6200, 9000.0),
        record(EVIL, 11, 0.5500, 11000.0, spec="center,hd2,sign"),
        record(
            "center,hd2,rq4 + rerank f32",
            239,
            0.9922,
            1373.0,
            spec="center,hd2,rq4",
            rerank_spec="f32",
            rerank=20,
        ),
        record(
            "center,hd2,rq4 + rerank rq8",
            97,
            0.9850,
            2000.0,
            spec="center,hd2,rq4",
            rerank_spec="center,hd2,rq8",
            rerank=20,
        ),
        record("IVF2048,int8 nprobe=64", 58, 0.9000, 12300.0, spec="int8", ivf=2048, nprobe=64),
        # measured recall only: every other number missing
        record(
            "hd2,rq3 (recall only)",
            31,
            0.8800,
            None,
            spec="hd2,rq3",
            recall_se=None,
            recall_k_at_r=None,
            mse=None,
            ip_bias=None,
            ip_spread=None,
            encode_us=None,
            peak_rss_mb=None,
        ),
        record("faiss:SQ8", 50, 0.9890, 1500.0, peer="faiss", graph_recall=0.97),
        record("sentence-transformers:ubinary", 7, 0.3100, 15000.0, peer="sentence-transformers"),
    ]
    return rows


def make_recommendation(results: list[dict]) -> dict:
    by_label = {r["label"]: r for r in results}
    return {
        "objective": "target_recall",
        "target": 0.94,
        "choice": dict(by_label["center,hd2,rq4"]),  # a copy, as after a JSON round trip
        "runner_up": by_label["int8"],
        "build_command": "vecpress build base.npy --spec center,hd2,rq4 --metric cosine -o i.vpi",
        "search_command": "vecpress search i.vpi queries.npy -k 10 -o out.npy",
        "evaluated": len(results),
        "space_size": 96,
        "note": "recall within one standard error of the target <b>check</b>",
    }


def make_diagnostics(d: int = 50) -> dict:
    spectrum = (0.2 * 0.93 ** np.arange(d)).tolist()
    return {
        "n": 390_000,
        "d": d,
        "norms": {"min": 0.98, "p01": 0.99, "p50": 1.0, "p99": 1.0, "max": 1.01, "mean": 1.0},
        "anisotropy": 0.12,
        "spectrum": spectrum,
        "effective_rank": 31.4,
        "coding_gain_db": 2.7,
        "coding_gain_bits": 0.45,
        "gaussianity": {"raw": 1.9, "rotated": 0.41, "random_directions": 0.44},
        "gaussian_reference": 0.31,
        "pca_recall": [
            {"d": 6, "recall_at_k": 0.31},
            {"d": 12, "recall_at_k": 0.55},
            {"d": 25, "recall_at_k": 0.83},
            {"d": 38, "recall_at_k": 0.95},
        ],
        "advice": [
            "centre first: the mean vector is 12% of the typical norm (use the `center` stage)",
            "a random rotation suffices & more <em>",
        ],
        "sample": 20_000,
        "metric": "cosine",
    }


def full_report(path, **kw):
    results = make_results()
    args = {
        "results": results,
        "recommendation": make_recommendation(results),
        "diagnostics": make_diagnostics(),
        "dataset": DATASET,
        "title": "GloVe-50 <report>",
    }
    args.update(kw)
    return write_report(path, **args)


# -- a small DOM reader ---------------------------------------------------------------


class Dom(HTMLParser):
    """Elements by id, every <img>, and every table's header and body rows as cell texts."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.ids: dict[str, tuple[str, dict]] = {}
        self.imgs: list[dict] = []
        self.tables: dict[str | None, dict[str, list[list[str]]]] = {}
        self.items: list[str] = []
        self._table = self._part = self._row = self._cell = self._li = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            assert a["id"] not in self.ids, f"duplicate id {a['id']}"
            self.ids[a["id"]] = (tag, a)
        if tag == "img":
            self.imgs.append(a)
        elif tag == "table":
            self._table = a.get("id")
            self.tables[self._table] = {"head": [], "body": []}
            self._part = "body"
        elif tag in ("thead", "tbody"):
            self._part = "head" if tag == "thead" else "body"
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "li":
            self._li = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[self._table][self._part].append(self._row)
            self._row = None
        elif tag == "li" and self._li is not None:
            self.items.append("".join(self._li).strip())
            self._li = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._li is not None:
            self._li.append(data)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> tuple[str, str]:
    """The full report (all inputs given): its path and text."""
    path = tmp_path_factory.mktemp("report") / "report.html"
    out = full_report(path)
    assert out == path
    return str(path), path.read_text(encoding="utf-8")


# -- the page ---------------------------------------------------------------------


def test_one_self_contained_file_with_three_plots(page):
    path, text = page
    assert os.listdir(os.path.dirname(path)) == ["report.html"]
    assert text.startswith("<!DOCTYPE html>")
    assert text.count("data:image/png;base64,") == 3
    dom = Dom(text)
    assert [img.get("id") for img in dom.imgs] == list(PLOT_IDS)
    for img in dom.imgs:
        assert img["src"].startswith("data:image/png;base64,")
        assert len(img["alt"]) > 20
    # nothing fetched from anywhere, no script
    for needle in ("<script", "<link", "http://", "https://", "@import", "url("):
        assert needle not in text.lower(), needle
    for section in ("recommendation", "results", "diagnostics"):
        assert section in dom.ids


def test_page_order(page):
    _, text = page
    marks = [
        "<h1>",
        'id="recommendation"',
        'id="plot-bytes"',
        'id="plot-speed"',
        'id="plot-spectrum"',
        'id="results"',
        'id="diagnostics"',
    ]
    positions = [text.index(m) for m in marks]
    assert positions == sorted(positions)


def test_embedded_pngs_decode(page):
    dom = Dom(page[1])
    for img in dom.imgs:
        data = base64.b64decode(img["src"].split(",", 1)[1], validate=True)
        assert data[:8] == PNG_SIGNATURE
        assert len(data) > 5_000, (img["id"], len(data))
        assert png_size(data) == (int(img["width"]), int(img["height"]))


def test_results_table_has_one_row_per_record_sorted_by_bytes(page):
    dom = Dom(page[1])
    table = dom.tables["results"]
    assert len(table["head"]) == 1
    head = table["head"][0]
    assert head[:4] == ["label", "bytes/vector", "ratio", "recall@10"]
    assert head[-1] == "frontier"
    assert len(head) == 15
    rows = table["body"]
    assert len(rows) == len(make_results())
    assert all(len(r) == 15 for r in rows)
    sizes = [int(r[1].replace(",", "")) for r in rows]
    assert sizes == sorted(sizes)
    # ratio = 4 d / bytes; frontier marks agree with pareto_front
    by_label = {r[0]: r for r in rows}
    assert by_label["int8"][2] == f"{200 / 54:.1f}×"
    assert by_label["f16"][2] == "2.0×"
    front = {r["label"] for r in pareto_front(make_results(), "bytes_per_vector", "recall_at_k")}
    assert {r[0] for r in rows if r[-1] == "✓"} == {
        label if not label.startswith("<script>") else label + "center,hd2,sign" for label in front
    }


def test_chosen_row_is_highlighted(page):
    _, text = page
    assert text.count('<tr class="chosen">') == 1
    start = text.index('<tr class="chosen">')
    assert "center,hd2,rq4</td>" in text[start : text.index("</tr>", start)]


def test_strings_are_escaped(page):
    _, text = page
    assert EVIL not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co" in text
    assert "<b>check</b>" not in text and "&lt;b&gt;check&lt;/b&gt;" in text
    assert "<em>" not in text and "&lt;em&gt;" in text
    assert "<title>GloVe-50 &lt;report&gt;</title>" in text
    dom = Dom(text)
    assert EVIL + "center,hd2,sign" in {r[0] for r in dom.tables["results"]["body"]}


def test_missing_values_render_as_a_dash(tmp_path, page):
    dom = Dom(page[1])
    row = next(r for r in dom.tables["results"]["body"] if r[0].startswith("hd2,rq3"))
    # ±, k@R, graph recall, MSE, IP bias, IP spread, encode µs, q/s 1T, q/s all, RSS
    assert row[4:14] == [MISSING] * 10
    assert row[3] == "0.8800"
    # absent keys, NaN and Inf too; no ratio without d
    sparse = [
        {"label": "bare", "bytes_per_vector": 8, "recall_at_k": float("nan"), "mse": math.inf}
    ]
    text = write_report(tmp_path / "r.html", results=sparse).read_text(encoding="utf-8")
    (row,) = Dom(text).tables["results"]["body"]
    assert row == ["bare", "8", *[MISSING] * 12, ""]
    assert "data:image/png" not in text  # nothing to plot: no recall measured


def test_recommendation_box(page):
    _, text = page
    start = text.index('id="recommendation"')
    box = text[start : text.index("</section>", start)]
    assert "recall@10 ≥ 0.94" in box
    assert "16 configurations measured (search space: 96)" in box
    assert '<p class="choice">center,hd2,rq4</p>' in box
    assert "39 B" in box and f"{200 / 39:.1f}×" in box
    assert "0.9430" in box and f"± {math.sqrt(0.943 * 0.057 / 1000):.4f}" in box
    assert "4,100" in box and "7,790" in box  # qps on 1 and 2 threads
    assert "Runner-up: <strong>int8</strong>" in box
    assert "<pre>vecpress build base.npy --spec center,hd2,rq4" in box
    assert "<pre>vecpress search i.vpi queries.npy -k 10 -o out.npy</pre>" in box
    assert "recall within one standard error" in box


def test_time_budget_and_skipped_configurations(tmp_path):
    results = make_results()
    rec = make_recommendation(results) | {
        "seconds": 212.4,
        "max_seconds": 235.0,
        "skipped": [{"label": "opq384x4", "predicted_s": 610.0, "reason": "predicted 610 s, "
                     "40 s of the budget left <x>"}],
    }  # fmt: skip
    text = write_report(tmp_path / "r.html", results=results, recommendation=rec).read_text(
        encoding="utf-8"
    )
    assert "configurations in 212 s (time budget 235 s)" in text
    assert "Skipped for time: 1 configuration<" in text
    assert "<li>opq384x4: predicted 610 s, 40 s of the budget left &lt;x&gt;</li>" in text
    # without them (an older advice file, or the budget mode's plain record), no such lines
    plain = write_report(tmp_path / "p.html", results=results, recommendation=make_recommendation(
        results)).read_text(encoding="utf-8")  # fmt: skip
    assert "Skipped for time" not in plain and "time budget" not in plain


def test_budget_objective_and_no_choice(tmp_path):
    results = make_results()[:3]
    rec = {"objective": "budget_bytes", "target": 64, "choice": None, "runner_up": None}
    text = write_report(tmp_path / "r.html", results=results, recommendation=rec).read_text(
        encoding="utf-8"
    )
    assert "at most 64 bytes per vector" in text
    assert "No configuration meets the objective." in text
    assert text.count("data:image/png;base64,") == 2


def test_sections_are_omitted_without_their_inputs(tmp_path):
    text = full_report(tmp_path / "r.html", recommendation=None, diagnostics=None).read_text(
        encoding="utf-8"
    )
    dom = Dom(text)
    assert "recommendation" not in dom.ids
    assert "diagnostics" not in dom.ids
    assert "plot-spectrum" not in dom.ids
    assert [img["id"] for img in dom.imgs] == ["plot-bytes", "plot-speed"]
    assert "results" in dom.ids
    assert 'class="chosen"' not in text


def test_diagnostics_table_and_advice(page):
    dom = Dom(page[1])
    kv = {row[0]: row[1] for row in dom.tables[None]["body"]}
    assert kv["effective rank"] == "31.4 of 50"
    assert kv["anisotropy (|mean| / mean norm)"] == "0.120"
    assert "2.70 dB" in kv["transform coding gain over a random rotation"]
    assert "after hd2 0.41" in kv["Epps–Pulley statistic (lower = more Gaussian)"]
    assert "d′=38: 0.950" in kv["recall@10 after PCA to d′"]
    assert dom.items == make_diagnostics()["advice"]


def test_diagnostics_with_missing_keys(tmp_path):
    diag = {"d": 8, "advice": ["only advice"], "new_measure": 1.5}
    text = write_report(
        tmp_path / "r.html", results=make_results()[:2], diagnostics=diag
    ).read_text(encoding="utf-8")
    dom = Dom(text)
    assert "diagnostics" in dom.ids and "plot-spectrum" not in dom.ids
    assert dom.items == ["only advice"]
    kv = {row[0]: row[1] for row in dom.tables[None]["body"]}
    assert kv == {"dimensions": "8", "new_measure": "1.5"}
    # d comes from the diagnostics when the data set has none: ratio 32 / 54
    assert f"{32 / 54:.1f}×" in text
    # only a PCA curve: still a spectrum image
    diag = {"pca_recall": [{"d": 4, "recall_at_k": 0.5}, {"d": 8, "recall_at_k": 0.9}]}
    text = write_report(
        tmp_path / "r.html", results=make_results()[:2], diagnostics=diag
    ).read_text(encoding="utf-8")
    assert 'id="plot-spectrum"' in text


def test_sixty_points(tmp_path):
    """A dense grid renders, with one row per record (labels are placed without overlap)."""
    rng = np.random.default_rng(0)
    results = []
    for i in range(60):
        b = int(rng.integers(8, 400))
        recall = float(min(0.999, 1 - 0.6 * math.exp(-b / 60) + rng.normal(0, 0.03)))
        results.append(record(f"config-{i:02d}", b, recall, float(3e5 / b)))
    text = write_report(tmp_path / "r.html", results=results, dataset=DATASET).read_text(
        encoding="utf-8"
    )
    assert len(Dom(text).tables["results"]["body"]) == 60
    assert text.count("data:image/png;base64,") == 2


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize(
    "rows",
    [
        [record("only", 29, 0.9, 4000.0)],
        [record("a", 32, 0.9, 1e3), record("b", 32, 0.9, 1e3)],  # one x, one y: no range
        [record("$x$ cost", 29, 0.9, 4e3), record("a$b", 30, 0.95, 100.0, peer="p$q")],
        [record("zero", 0, 0.9, 0.0), record("negative", -3, 0.5, None)],  # nothing to plot
        [],
    ],
    ids=["one", "same-point", "dollar-signs", "non-positive", "empty"],
)
def test_degenerate_inputs_render_without_warnings(tmp_path, rows):
    rec = {"objective": "target_recall", "target": 0.99, "choice": rows[0] if rows else None}
    text = write_report(
        tmp_path / "r.html", results=rows, recommendation=rec, dataset=DATASET
    ).read_text(encoding="utf-8")
    plotted = sum(1 for r in rows if r["bytes_per_vector"] > 0)
    assert text.count("data:image/png;base64,") == (2 if plotted else 0)
    assert len(Dom(text).tables["results"]["body"]) == len(rows)


def test_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="results must be a list of dicts"):
        write_report(tmp_path / "r.html", results={"label": "x"})
    with pytest.raises(TypeError, match=r"results\[1\] must be a dict"):
        write_report(tmp_path / "r.html", results=[{}, 3])
    with pytest.raises(TypeError, match="diagnostics must be a dict or None"):
        write_report(tmp_path / "r.html", results=[], diagnostics=[1])
    assert os.listdir(tmp_path) == []


# -- matplotlib ---------------------------------------------------------------------------


def test_missing_matplotlib_is_an_import_error_with_the_install_hint(tmp_path, monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError) as e:
        write_report(tmp_path / "r.html", results=make_results()[:2])
    assert str(e.value) == 'the HTML report needs matplotlib: pip install "vecpress[report]"'
    assert os.listdir(tmp_path) == []


def test_pyplot_and_user_settings_are_left_alone(tmp_path):
    import matplotlib

    had_pyplot = "matplotlib.pyplot" in sys.modules
    with matplotlib.rc_context({"lines.linewidth": 7.0, "font.size": 21.0}):
        write_report(tmp_path / "r.html", results=make_results()[:3])
        assert matplotlib.rcParams["lines.linewidth"] == 7.0
        assert matplotlib.rcParams["font.size"] == 21.0
    if not had_pyplot:
        assert "matplotlib.pyplot" not in sys.modules


# -- pareto_front ----------------------------------------------------------------------------


def pts(*xy):
    return [{"x": x, "y": y, "i": i} for i, (x, y) in enumerate(xy)]


def ids(front):
    return [p["i"] for p in front]


def test_pareto_front_removes_dominated_points():
    p = pts((16, 0.8), (32, 0.9), (24, 0.7), (64, 0.88), (128, 0.99), (8, 0.5))
    assert ids(pareto_front(p, "x", "y")) == [5, 0, 1, 4]
    front = pareto_front(p, "x", "y")
    assert all(a is b for a, b in zip(front, [p[5], p[0], p[1], p[4]], strict=True))


def test_pareto_front_maximising_x():
    # speed: higher qps and higher recall both better
    p = pts((1000, 0.99), (5000, 0.95), (4000, 0.90), (20000, 0.80), (800, 0.98))
    assert ids(pareto_front(p, "x", "y", minimise_x=False)) == [0, 1, 3]


def test_pareto_front_ties():
    # identical points are both kept; equal x keeps the higher y; equal y keeps the better x
    p = pts((10, 0.5), (10, 0.5), (10, 0.4), (20, 0.5), (20, 0.7))
    assert ids(pareto_front(p, "x", "y")) == [0, 1, 4]
    assert ids(pareto_front(p, "x", "y", minimise_x=False)) == [4]
    q = pts((10, 0.5), (20, 0.5), (20, 0.5))
    assert ids(pareto_front(q, "x", "y", minimise_x=False)) == [1, 2]


def test_pareto_front_skips_missing_values():
    p = [*pts((10, 0.5), (20, 0.9)), {"x": None, "y": 1.0}, {"x": 5, "y": math.nan}, {"y": 1}]
    assert ids(pareto_front(p, "x", "y")) == [0, 1]
    assert pareto_front([], "x", "y") == []


# -- atomic write -------------------------------------------------------------------------------


def test_write_replaces_an_existing_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "r.html"
    path.write_text("old")
    write_report(path, results=make_results()[:2])
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert os.listdir(tmp_path) == ["r.html"]


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "r.html"
    path.write_text("old")

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report.page.os, "replace", fail)
    with pytest.raises(OSError, match=r"r\.html"):
        write_report(path, results=make_results()[:2])
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["r.html"]


def test_missing_directory_names_the_path(tmp_path):
    path = tmp_path / "nowhere" / "r.html"
    with pytest.raises(FileNotFoundError, match="nowhere") as e:
        write_report(path, results=make_results()[:2])
    assert str(path) in str(e.value)
    assert not (tmp_path / "nowhere").exists()


# -- a real browser ----------------------------------------------------------------------------


def chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        *args,
    ]
    # Chromium prints warnings on stderr (dbus, GPU); only the exit status and output count.
    done = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return done


def test_chromium_renders_the_page(tmp_path, page):
    url = "file://" + page[0]
    dom = chromium(tmp_path, "--dump-dom", url).stdout.decode("utf-8")
    for needle in (*(f'id="{i}"' for i in PLOT_IDS), 'id="results"', 'id="recommendation"'):
        assert needle in dom
    assert len(Dom(dom).tables["results"]["body"]) == len(make_results())

    shot = tmp_path / "shot.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,3000", url)
    data = shot.read_bytes()
    assert len(data) > 500
    width, height = png_size(data)
    assert width >= 600 and height >= 1500
    from matplotlib.image import imread

    pixels = imread(shot)[..., :3]
    assert pixels.std() > 0.05  # not blank
    assert (pixels.min(axis=2) < 0.9).mean() > 0.02  # a good share of non-white pixels
    colours = np.unique((pixels[::4, ::4] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 100  # plots, not just text
