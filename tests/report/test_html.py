"""build_report end to end on a tiny run folder, plus a headless Chromium render."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from lookalike.embed.store import EmbeddingSet
from lookalike.ranking import rank
from lookalike.report.html import build_report
from lookalike.report.markup import format_value
from lookalike.runs import RunRecord
from lookalike.search.topk import search_embeddings
from lookalike.search.writers import ranked_rows
from lookalike.utils.folders import ArtefactError

CLASSES = {"red": (220, 40, 40), "green": (40, 180, 40), "blue": (40, 60, 220)}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _image(path: Path, colour: tuple[int, int, int], shape: int) -> str:
    image = Image.new("RGB", (40, 32), (250, 250, 250))
    draw = ImageDraw.Draw(image)
    box = (6, 4, 34, 28)
    (draw.ellipse if shape % 2 else draw.rectangle)(box, fill=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return str(path)


def make_run(root: Path, *, train: bool = True, threshold: float | None = 0.5) -> Path:
    """A run folder: 3 classes x 4 gallery images, 7 queries (q_wrong is red but looks green,
    q_none is an unlabelled distractor), metrics, variants, results with a no_match, history."""
    rng = np.random.default_rng(0)
    axes = {name: np.eye(4)[i] for i, name in enumerate(CLASSES)}
    images = root / "images"
    gallery_rows, gallery_ids, gallery_paths, gallery_labels = [], [], [], []
    for name, colour in CLASSES.items():
        for i in range(4):
            gallery_ids.append(f"g_{name}_{i}")
            gallery_paths.append(_image(images / f"g_{name}_{i}.png", colour, i))
            gallery_labels.append(name)
            gallery_rows.append(axes[name] + 0.1 * rng.standard_normal(4))
    gallery = EmbeddingSet(np.array(gallery_rows), gallery_ids, gallery_paths, gallery_labels)
    query_specs = [
        ("q_red_0", "red", axes["red"]), ("q_red_1", "red", axes["red"]),
        ("q_green_0", "green", axes["green"]), ("q_blue_0", "blue", axes["blue"]),
        ("q_blue_1", "blue", axes["blue"]),
        ("q_wrong", "red", axes["green"]), ("q_none", None, np.array([0, 0, 0, 1.0])),
    ]
    query = EmbeddingSet(
        np.array([v + 0.05 * rng.standard_normal(4) for _, _, v in query_specs]),
        [q for q, _, _ in query_specs],
        [_image(images / f"{q}.png", CLASSES.get(label or "", (90, 90, 90)), 1)
         for q, label, _ in query_specs],
        [label for _, label, _ in query_specs],
    )
    run = root / "run"
    query.save(run / "emb" / "query")
    gallery.save(run / "emb" / "gallery")
    settings = {
        "kind": "train" if train else "evaluate", "query_embeddings": "emb/query",
        "gallery_embeddings": "emb/gallery", "exclude_self": False, "metric": "cosine",
        "threshold": threshold, "k": 3,
    }
    if train:
        EmbeddingSet(rng.standard_normal((20, 4)), [f"t{i}" for i in range(20)],
                     [f"t{i}.png" for i in range(20)], ["red"] * 20).save(run / "emb" / "train")
        settings["train_embeddings"] = "emb/train"
        pd.DataFrame({
            "epoch": [0, 0, 1, 1], "step": [10, 20, 30, 40],
            "train/loss": [1.0, 0.8, 0.6, 0.5], "val/map@r": [np.nan, 0.4, np.nan, 0.6],
        }).to_csv(run / "history.csv", index=False)
    # The job's own ranking, saved beside run.json: the report reads it and never ranks.
    rank(query.embeddings, gallery.embeddings, query.labels, gallery.labels, k=10).save(
        run / "ranking.npz"
    )
    settings["ranking"] = "ranking.npz"
    (run / "run.json").write_text(json.dumps(settings))
    (run / "metrics.json").write_text(json.dumps(
        {"recall@1": 0.8333, "recall@5": 1.0, "map@r": 0.61234, "n_queries": 6}))
    pd.DataFrame({"variant": ["baseline", "+qe"], "map@r": [0.61234, 0.65432],
                  "n_queries": [6, 6]}).to_csv(run / "variants.csv", index=False)
    (run / "config.yaml").write_text("model:\n  backbone: <timm:resnet18>\n")
    (run / "skipped.csv").write_text("id,path,reason\nbad,bad.png,cannot identify image\n")
    # The served ranking: the library's own search, with "no match" first for the distractor.
    result = search_embeddings(query, gallery, k=3)
    rows = ranked_rows(result, query.ids, gallery.ids, gallery.paths)
    served = pd.DataFrame(rows)
    served.loc[served["query_id"] == "q_none", "rank"] += 1
    no_match = {"query_id": "q_none", "rank": 1, "gallery_id": "no_match", "gallery_path": "",
                "score": np.nan}
    served = pd.concat([served, pd.DataFrame([no_match])])
    served = served[served["rank"] <= 3]
    served.to_csv(run / "results.csv", index=False)
    RunRecord(run).finish()  # as the job does, last
    return run


@pytest.fixture
def no_umap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import umap`` fail, so the map uses the fast PCA fallback."""
    monkeypatch.setitem(sys.modules, "umap", None)


def _images(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', page)


def test_report_shows_metrics_sections_and_inline_images(tmp_path: Path, no_umap: None) -> None:
    run = make_run(tmp_path)
    path = build_report(run)
    assert path == run / "report.html"
    page = path.read_text()
    for value in (0.8333, 1.0, 0.61234, 0.65432):
        assert f">{format_value(value)}<" in page
    assert ">0.6123<" in page and ">0.6543<" in page
    assert "train run" in page
    assert '<td class="num best">0.6543</td>' in page  # best variant in bold
    for heading in ("Recall@1 per class", "Training curves", "Embedding map", "Best queries",
                    "Worst queries", "Random queries", "Most confused classes",
                    "Predicted classes", "Similarities", "Skipped images", "Configuration"):
        assert f">{heading}<" in page
    assert "&lt;timm:resnet18&gt;" in page  # config escaped
    assert "cannot identify image" in page
    # Self-contained: every image is a decodable data URI, nothing is fetched.
    sources = _images(page)
    assert len(sources) >= 8
    for source in sources:
        header, data = source.split(",", 1)
        assert header in ("data:image/png;base64", "data:image/jpeg;base64")
        assert Image.open(io.BytesIO(base64.b64decode(data))).size[0] > 0
    assert "http://" not in page and "https://" not in page and "<link" not in page
    # The confusion table names the one wrong query: red → green.
    confusion = re.search(r'<table id="confusion-table">.*?</table>', page).group(0)
    assert re.findall(r"<td[^>]*>([^<]*)</td>", confusion) == ["red", "green", "1"]
    # Per-class table, worst first: red has 2 of 3 right.
    per_class = re.search(r'<table id="per-class-table">.*?</table>', page).group(0)
    assert re.findall(r"<td[^>]*>([^<]*)</td>", per_class)[:4] == ["red", "3", "2", "0.6667"]


def test_worst_grid_lists_the_wrong_query_first(tmp_path: Path, no_umap: None) -> None:
    page = build_report(make_run(tmp_path), grid_queries=2).read_text()
    worst = page.split(">Worst queries<", 1)[1]
    first_cells = re.findall(r"<td[^>]*>([^<]*)</td>", worst)[:5]
    assert first_cells[0] == "q_wrong" and first_cells[1] == "red"
    assert first_cells[4] == "served"


def test_missing_optional_files_are_reported(tmp_path: Path, no_umap: None) -> None:
    run = make_run(tmp_path, train=False, threshold=None)
    for name in ("variants.csv", "skipped.csv", "config.yaml", "results.csv"):
        (run / name).unlink()
    for image in (tmp_path / "images").glob("g_red_*.png"):
        image.unlink()
    RunRecord(run).finish()  # a run that wrote none of them
    output = tmp_path / "elsewhere" / "page.html"
    page = build_report(run, output, k=2).read_text()
    assert "history.csv is absent" in page and "config.yaml is absent" in page
    assert "absent files: variants.csv, results.csv, history.csv, config.yaml, skipped.csv" in page
    assert "Post-processing variants" not in page
    assert "image file(s) not found: shown as grey tiles" in page
    # Without results.csv the grids fall back to the exact ranking.
    assert ">exact<" in page and ">served<" not in page
    assert not (run / "report.html").exists()


def test_run_without_embeddings_still_reports_metrics(tmp_path: Path, no_umap: None) -> None:
    run = make_run(tmp_path, train=False)
    shutil.rmtree(run / "emb" / "query")
    RunRecord(run).finish()  # embeddings kept outside the run, since removed
    page = build_report(run).read_text()
    assert ">0.8333<" in page
    assert "query_embeddings" in page and "emb/query does not exist" in page
    assert "needs labelled query and gallery embeddings" in page


def test_not_a_run_folder(tmp_path: Path) -> None:
    with pytest.raises(ArtefactError, match="manifest.json is missing"):
        build_report(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_report(tmp_path / "nope")
    assert list(tmp_path.iterdir()) == []


def test_the_report_verifies_the_run_and_keeps_its_manifest_current(
    tmp_path: Path, no_umap: None
) -> None:
    run = make_run(tmp_path, train=False)
    build_report(run)
    assert "report.html" in RunRecord(run).verify().files
    (run / "report.html").write_text("cut short")  # a report killed before its manifest
    build_report(run)
    RunRecord(run).verify()
    (run / "metrics.json").write_text("{}")
    with pytest.raises(ArtefactError, match="metrics.json has 2 bytes"):
        build_report(run)
    (run / "metrics.json").unlink()
    with pytest.raises(ArtefactError, match="metrics.json is missing"):
        build_report(run, tmp_path / "elsewhere.html")
    assert not (tmp_path / "elsewhere.html").exists()


def _chromium(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--virtual-time-budget=5000", *arguments],
        capture_output=True, text=True, timeout=120, check=False,
    )


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_chromium_loads_every_image_and_shows_metrics(tmp_path: Path, no_umap: None) -> None:
    path = build_report(make_run(tmp_path))
    expected = len(_images(path.read_text()))
    done = _chromium("--dump-dom", path.resolve().as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert f'data-images-total="{expected}"' in dom
    assert f'data-images-loaded="{expected}"' in dom
    metrics = re.search(r'<table id="metrics-table">.*?</table>', dom, re.DOTALL).group(0)
    assert "recall@1" in metrics and "0.8333" in metrics and "0.6123" in metrics


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_chromium_screenshot_is_not_blank(tmp_path: Path, no_umap: None) -> None:
    path = build_report(make_run(tmp_path))
    shot = tmp_path / "shot.png"
    done = _chromium(f"--screenshot={shot}", "--window-size=1280,2400", path.resolve().as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[0] >= 2000
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 50  # text, plots and thumbnails, not one flat colour
