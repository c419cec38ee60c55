"""``wise-ft`` as a library call: interpolate two saved models over a grid of mixing coefficients,
evaluate each on retrieval sets, keep the one validation prefers, and draw the curve.

::

    pretrained/ ─┐
                 ├─ theta(alpha) for alpha in the grid ─ embed each set ─ metrics ─► curve.csv
    finetuned/ ──┘                                                                 ► curve.png
                        the alpha with the best validation ``monitor`` ─ saved ─► model/

WiSE-FT (Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022) chooses the mixing
coefficient on held-out in-distribution data; its figures plot in-distribution against
out-of-distribution accuracy as ``alpha`` moves from the pre-trained to the fine-tuned model. Here
every set is a retrieval evaluation (:class:`RetrievalSet`), the one selecting ``alpha`` included,
and ``curve.png`` shows each set's metric against ``alpha`` and, given two report sets, the first
against the second.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from matplotlib.figure import Figure

from lookalike.data.protocols import make_split
from lookalike.embed.spec import EmbedSpec
from lookalike.models.checkpoint import load_embedder, save_embedder
from lookalike.models.embedder import Embedder
from lookalike.models.spec import build_embedder
from lookalike.models.wise_ft import wise_ft
from lookalike.pipeline.embedding import embed_images
from lookalike.report.plots import figure_to_png
from lookalike.train.config import TrainConfig
from lookalike.train.data import resize_preprocessing
from lookalike.train.module import validation_metrics
from lookalike.train.run import TrainOutcome
from lookalike.train.unlabelled import load_images
from lookalike.train.validation import (
    DEFAULT_PRECISION_KS,
    DEFAULT_VAL_KS,
    ValidationSet,
    validation_set,
)
from lookalike.utils.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from lookalike.utils.progress import ProgressFactory

logger = logging.getLogger(__name__)

DEFAULT_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
CURVE_CSV = "curve.csv"
CURVE_PLOT = "curve.png"
SUMMARY_FILE = "wise_ft.json"
MODEL_DIR = "model"
PRETRAINED_DIR = "pretrained"
"""Where a training run with ``wise_ft.enabled`` keeps the model it started from."""
WISE_FT_DIR = "wise_ft"
"""Where it writes the curve and the chosen model."""


@dataclass
class RetrievalSet:
    """A labelled retrieval evaluation the interpolated models are scored on.

    Attributes:
        name: Its name in the curve ("val", "caltech_unseen", "ood" ...).
        source: Image source spec (as ``data.source``).
        protocol: Split protocol of the source.
        protocol_args: Protocol options.
        part: "val" (the split's val images, all-vs-all) or "test" (its query/gallery).
        ks: Cut-offs of Recall@K (a training run's ``trainer.val_k``).
        precision_ks: Cut-offs of Precision@K (``trainer.precision_k``).
    """

    name: str
    source: Any
    protocol: str = "all_vs_all"
    protocol_args: dict[str, Any] = field(default_factory=dict)
    part: str = "test"
    ks: tuple[int, ...] = DEFAULT_VAL_KS
    precision_ks: tuple[int, ...] = DEFAULT_PRECISION_KS

    def load(self) -> ValidationSet:
        """The images and their query/gallery roles."""
        split = make_split(load_images(self.source), self.protocol, **self.protocol_args)
        found = validation_set(split, self.part)
        if found is None:
            raise ValueError(f"retrieval set {self.name!r}: part must be 'val' or 'test'")
        return replace(found, ks=tuple(self.ks), precision_ks=tuple(self.precision_ks))


@dataclass
class WiseFTOutcome:
    """The curve over the mixing coefficient and the model validation chose.

    Attributes:
        rows: One dict per alpha: ``alpha`` and ``<set name>/<metric>`` for every set.
        best_alpha: The alpha with the best ``monitor`` on the selection set (the largest of ties).
        monitor: The metric that chose it.
        model_dir: The saved model at ``best_alpha``.
        curve_csv: ``curve.csv``.
        curve_plot: ``curve.png``.
    """

    rows: list[dict[str, float]]
    best_alpha: float
    monitor: str
    model_dir: Path
    curve_csv: Path
    curve_plot: Path


def retrieval_metrics_of(
    embedder: Embedder,
    retrieval: ValidationSet,
    embed: EmbedSpec | None = None,
    progress: ProgressFactory | None = None,
) -> dict[str, float]:
    """Embed ``retrieval``'s images with ``embedder`` and score its queries against its gallery."""
    found = embed_images(retrieval.images, None, model=embedder, embed=embed, progress=progress)
    row_of = {image_id: row for row, image_id in enumerate(retrieval.images.ids)}
    embeddings = np.zeros((len(retrieval.images), found.dim), dtype=np.float32)
    embedded = np.zeros(len(retrieval.images), dtype=bool)
    rows = np.array([row_of[image_id] for image_id in found.ids], dtype=np.int64)
    embeddings[rows] = found.embeddings
    embedded[rows] = True
    return validation_metrics(retrieval, embeddings, embedded)


def wise_ft_curve(
    pretrained: Embedder | str | Path,
    finetuned: Embedder | str | Path,
    output: str | Path,
    select_on: RetrievalSet,
    report_on: Sequence[RetrievalSet] = (),
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    monitor: str = "map@r",
    embed: EmbedSpec | None = None,
    progress: ProgressFactory | None = None,
) -> WiseFTOutcome:
    """Score ``theta(alpha)`` for every alpha and keep the one ``select_on`` prefers.

    Args:
        pretrained: The model fine-tuning started from (or its saved folder).
        finetuned: The fine-tuned model (or its folder), of the same architecture.
        output: Folder for ``model/`` (the chosen model), ``curve.csv``, ``curve.png`` and
            ``wise_ft.json``.
        select_on: The validation set that chooses alpha (in-distribution, never the test set).
        report_on: Further sets scored on the same grid (in-domain test, out-of-domain).
        alphas: Mixing coefficients in ``[0, 1]``.
        monitor: Metric of ``select_on`` to maximise ("map@r", "recall@1", "map" ...).
        embed: Batch size, workers and device of the embedding.
        progress: Asked for one "embedding" step per set and alpha.

    Raises:
        ValueError: No alpha, an alpha outside ``[0, 1]``, different architectures, or an unknown
            ``monitor``.
    """
    grid = sorted({float(alpha) for alpha in alphas})
    if not grid:
        raise ValueError("wise-ft needs at least one mixing coefficient alpha")
    start = pretrained if isinstance(pretrained, Embedder) else load_embedder(pretrained)
    tuned = finetuned if isinstance(finetuned, Embedder) else load_embedder(finetuned)
    sets = [select_on, *report_on]
    names = [retrieval.name for retrieval in sets]
    if len(set(names)) != len(names):
        raise ValueError(f"retrieval set names must be distinct, got {names}")
    loaded = [retrieval.load() for retrieval in sets]
    rows: list[dict[str, float]] = []
    for alpha in grid:
        model = wise_ft(start, tuned, alpha)
        row = {"alpha": alpha}
        for retrieval, images in zip(sets, loaded, strict=True):
            metrics = retrieval_metrics_of(model, images, embed, progress)
            if monitor not in metrics:
                raise ValueError(f"unknown monitor {monitor!r}; valid: {', '.join(metrics)}")
            row.update({f"{retrieval.name}/{key}": float(value) for key, value in metrics.items()})
        logger.info("WiSE-FT alpha %.3f: %s", alpha, row)
        rows.append(row)
    key = f"{select_on.name}/{monitor}"
    best = max(rows, key=lambda row: (row[key], row["alpha"]))
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    model_dir = save_embedder(wise_ft(start, tuned, best["alpha"]), output / MODEL_DIR)
    csv_path, plot_path = output / CURVE_CSV, output / CURVE_PLOT
    atomic_write_text(csv_path, _curve_csv(rows))
    atomic_write_bytes(plot_path, figure_to_png(curve_figure(rows, names, monitor)))
    atomic_write_json(output / SUMMARY_FILE, {
        "best_alpha": best["alpha"], "monitor": monitor, "selected_on": select_on.name,
        "alphas": grid, "rows": rows,
    })
    return WiseFTOutcome(rows, best["alpha"], monitor, model_dir, csv_path, plot_path)


def _curve_csv(rows: list[dict[str, float]]) -> str:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def curve_figure(rows: list[dict[str, float]], names: Sequence[str], monitor: str) -> Figure:
    """Each set's ``monitor`` against alpha; beside it, with at least two report sets, the first
    report set against the second (the paper's in-/out-of-distribution plot)."""
    alphas = [row["alpha"] for row in rows]
    report = list(names[1:])
    figure = Figure(figsize=(11.0 if len(report) >= 2 else 6.0, 4.0))
    axes = figure.add_subplot(1, 2 if len(report) >= 2 else 1, 1)
    for name in names:
        axes.plot(alphas, [row[f"{name}/{monitor}"] for row in rows], marker="o", label=name)
    axes.set_xlabel("alpha (0 = pre-trained, 1 = fine-tuned)")
    axes.set_ylabel(monitor)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    if len(report) >= 2:
        pair = figure.add_subplot(1, 2, 2)
        first = [row[f"{report[0]}/{monitor}"] for row in rows]
        second = [row[f"{report[1]}/{monitor}"] for row in rows]
        pair.plot(first, second, marker="o", color="tab:purple")
        for alpha, x, y in zip(alphas, first, second, strict=True):
            pair.annotate(f"{alpha:g}", (x, y), textcoords="offset points", xytext=(4, 4),
                          fontsize="small")
        pair.set_xlabel(f"{report[0]} {monitor}")
        pair.set_ylabel(f"{report[1]} {monitor}")
        pair.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def save_training_start(config: TrainConfig) -> Path:
    """Save the model a training run starts from as ``output/pretrained`` (kept on a rerun).

    The embedder is built right after seeding with ``trainer.seed``, as the run builds it, so a
    head that starts from random weights starts from the same ones.
    """
    folder = Path(config.output) / PRETRAINED_DIR
    if not folder.is_dir():
        L.seed_everything(config.trainer.seed, workers=True, verbose=False)
        embedder = build_embedder(config.model)
        embedder.preprocessing = resize_preprocessing(
            embedder.preprocessing, config.data.image_size
        )
        save_embedder(embedder, folder)
    return folder


def wise_ft_after_training(
    config: TrainConfig, outcome: TrainOutcome, progress: ProgressFactory | None = None
) -> TrainOutcome:
    """Interpolate the run's best model with its start, choose alpha on the run's validation set,
    and return the outcome with ``model_dir`` pointing at the chosen model."""
    data = config.data
    chosen = wise_ft_curve(
        Path(config.output) / PRETRAINED_DIR,
        outcome.model_dir,
        Path(config.output) / WISE_FT_DIR,
        RetrievalSet("val", data.source, data.protocol, dict(data.protocol_args), data.val_split,
                     tuple(config.trainer.val_k), tuple(config.trainer.precision_k)),
        alphas=config.wise_ft.alphas,
        monitor=config.trainer.monitor.removeprefix("val/"),
        embed=EmbedSpec(batch_size=data.val_batch_size or data.batch_size,
                        num_workers=data.num_workers),
        progress=progress,
    )
    logger.info("WiSE-FT chose alpha %.3f on validation", chosen.best_alpha)
    return replace(outcome, model_dir=chosen.model_dir)

