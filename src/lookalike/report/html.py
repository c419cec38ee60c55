"""One self-contained HTML page per run: metrics, error analysis, plots and result grids.

``build_report(run_dir)`` verifies the run folder against its manifest and reads it
(:mod:`lookalike.report.run_folder`), including the ranking the job saved (``ranking.npz``: the
report never ranks), and writes ``run_dir/report.html`` atomically, then the run's manifest again
(a report cut off before that is rewritten by the next ``report``). Every image is inlined as a base64 data URI and the page has no external CSS or
JavaScript, so it can be mailed or archived as one file. A small inline script records how many
images decoded (``<body data-images-loaded>``), which the browser test reads back.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from lookalike.embed.store import EmbeddingSet
from lookalike.ranking import Ranking
from lookalike.report import sections
from lookalike.report.analysis import analyse_ranking
from lookalike.report.markup import escape, note
from lookalike.report.run_folder import RunFolder, load_run_folder
from lookalike.runs import REPORT_FILE, RUN_KIND, RunRecord
from lookalike.utils.atomic import atomic_write_text
from lookalike.utils.folders import write_manifest

logger = logging.getLogger(__name__)

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1280px; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #666; font-style: italic; } .best { font-weight: bold; }
img { max-width: 100%; height: auto; display: block; margin: 0.5em 0; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 0.85em; }
nav a { margin-right: 1em; } .scroll { max-height: 28em; overflow-y: auto; display: inline-block; }
"""

SCRIPT = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var loaded = images.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.dataset.imagesTotal = String(images.length);
  document.body.dataset.imagesLoaded = String(loaded.length);
});
"""


def _load_set(folder: RunFolder, key: str, notes: list[str]) -> EmbeddingSet | None:
    try:
        return folder.load_embeddings(key)
    except FileNotFoundError as error:
        logger.warning("%s", error)
        notes.append(f"{key}: {error}")
        return None


def _load_ranking(
    folder: RunFolder,
    query: EmbeddingSet | None,
    gallery: EmbeddingSet | None,
    notes: list[str],
) -> Ranking | None:
    """The run's saved ranking, checked against the embeddings it ranked; None with a note."""
    if query is None or gallery is None:
        return None
    ranking = folder.load_ranking()
    if ranking is None:
        notes.append("ranking.npz is absent: rerun the job to get per-query analysis and grids")
        return None
    if ranking.num_queries != len(query) or ranking.num_gallery != len(gallery):
        raise ValueError(
            f"the ranking in {folder.root} holds {ranking.num_queries} x {ranking.num_gallery} "
            f"items but run.json names {len(query)} queries and {len(gallery)} gallery items; "
            "rerun the job"
        )
    return ranking


def render_page(title: str, subtitle: str, parts: Sequence[tuple[str, str, str]]) -> str:
    """The whole document: a title, a table of contents, then ``(anchor, heading, body)`` parts."""
    navigation = " ".join(f'<a href="#{escape(a)}">{escape(h)}</a>' for a, h, _ in parts)
    body = "\n".join(
        f'<section id="{escape(a)}"><h2>{escape(h)}</h2>\n{content}</section>'
        for a, h, content in parts
    )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n"
        f"<body><h1>{escape(title)}</h1><div>{subtitle}</div><nav>{navigation}</nav>\n{body}\n"
        f"<script>{SCRIPT}</script></body></html>\n"
    )


def build_report(
    run_dir: str | Path,
    output: Path | None = None,
    *,
    max_points: int = 3000,
    grid_queries: int = 5,
    k: int | None = None,
    seed: int = 0,
    verify: bool = True,
) -> Path:
    """Write the HTML report of a run folder.

    Args:
        run_dir: The folder an ``evaluate`` or ``train`` job wrote (see
            :mod:`lookalike.report.run_folder` for the files it may hold).
        output: Where to write the page; ``run_dir/report.html`` by default.
        max_points: Points drawn at most on the embedding map (a seeded subsample).
        grid_queries: Queries per grid (best, worst and random).
        k: Results shown per query; ``run.json``'s ``k`` (else 10) by default.
        seed: Seed of the subsample, the map, the random queries and the sampled pairs.
        verify: Check the run folder against its manifest first (and write the manifest again
            after a report written into it); the job still writing the folder, which reports on
            it before its manifest exists, passes False.

    Returns:
        The written page.

    Raises:
        FileNotFoundError: ``run_dir`` is not a run folder.
        ValueError: A file of the run folder is malformed; or (an ``ArtefactError``) the folder
            is unfinished or a file differs from its manifest.
    """
    if grid_queries < 0:
        raise ValueError(f"grid_queries must be >= 0, got {grid_queries}")
    if k is not None and k < 1:
        raise ValueError(f"k must be a positive integer, got {k}")
    target = Path(output) if output is not None else Path(run_dir) / REPORT_FILE
    in_folder = target.resolve() == (Path(run_dir) / REPORT_FILE).resolve()
    if verify and not Path(run_dir).is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist; pass the folder of a run")
    ignore = (REPORT_FILE,) if in_folder else ()
    manifest = RunRecord(run_dir).verify(ignore) if verify else None
    folder = load_run_folder(run_dir, verify=False)
    settings = folder.settings
    metric = settings.metric if settings else "cosine"
    top_k = k or (settings.k if settings else 10)
    notes: list[str] = []
    query = _load_set(folder, "query_embeddings", notes) if settings else None
    gallery = _load_set(folder, "gallery_embeddings", notes) if settings else None
    train = _load_set(folder, "train_embeddings", notes) if settings else None
    exclude_self = bool(settings and settings.exclude_self)
    ranking = _load_ranking(folder, query, gallery, notes)
    analysis = analyse_ranking(ranking, top_k) if ranking is not None else None

    parts = [
        ("metrics", "Metrics", sections.metrics_section(folder)),
        ("per-class", "Recall@1 per class", sections.per_class_section(query, analysis)),
        ("training", "Training curves", sections.training_section(folder)),
        ("map", "Embedding map", sections.projection_section(
            query, gallery, train, metric, exclude_self, max_points, seed)),
        ("grids", "Queries and their results", sections.grids_section(
            folder, query, gallery, analysis, top_k, grid_queries, seed)),
        ("confusions", "Most confused classes", sections.confusion_section(query, analysis)),
        ("predicted", "Predicted classes", sections.predicted_section(analysis)),
        ("similarities", "Similarities", sections.similarity_section(
            query, gallery, metric, exclude_self, settings.threshold if settings else None, seed)),
        ("skipped", "Skipped images", sections.skipped_section(folder)),
        ("config", "Configuration", sections.config_section(folder)),
    ]
    kind = settings.kind if settings else "unknown"
    subtitle = escape(
        f"{kind} run in {folder.root.resolve()} · metric {metric} · k {top_k}"
        + (f" · threshold {settings.threshold:g}" if settings and settings.threshold is not None
           else "")
    )
    if folder.missing:
        subtitle += note("absent files: " + ", ".join(folder.missing))
    for line in notes:
        subtitle += note(line)
    page = render_page(f"lookalike {kind} report: {folder.root.resolve().name}", subtitle, parts)
    atomic_write_text(target, page)
    if manifest is not None and in_folder:
        write_manifest(folder.root, RUN_KIND, manifest.fingerprint, manifest.extra)
    logger.info("wrote the report to %s", target)
    return target
