"""``export`` as a library call: a model to an ONNX folder, checked against PyTorch, maybe int8.

:func:`export_model` writes the graph (:mod:`lookalike.models.onnx.export`) into a folder built
beside the target, runs it with ONNX Runtime on a sample and checks it against the PyTorch model
(:func:`~lookalike.pipeline.export_checks.check_parity`: largest embedding difference, identical
top-k lists). With ``quantize="int8"`` the checked fp32 graph is then quantised
(:func:`~lookalike.models.onnx.quantize.quantize_int8`, calibrated on the user's images) and its
retrieval cost measured against fp32 on held-out images. The description (preprocessing,
fingerprint, both reports) and the manifest are written last and the folder swapped in whole: a
failed check leaves nothing behind (and an earlier export untouched).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from lookalike.data.dataset import ImageDataset, collate_skipping_broken
from lookalike.data.records import ImageSet
from lookalike.data.sources import load_source
from lookalike.embed.extract import EmbedderLike, embed_image_set
from lookalike.models import Embedder
from lookalike.models.onnx.export import DEFAULT_OPSET, export_graph
from lookalike.models.onnx.folder import ONNX_FILE, ONNX_KIND, finish_folder, is_onnx_folder
from lookalike.models.onnx.quantize import CALIBRATION_METHODS, QUANTIZATION_MODES, quantize_int8
from lookalike.models.onnx.runtime import OnnxEmbedder
from lookalike.models.preprocessing import eval_transform
from lookalike.models.spec import ModelSpec, build_embedder
from lookalike.pipeline.export_checks import (
    ParityError,
    ParityReport,
    RetrievalCost,
    check_parity,
    retrieval_cost,
)
from lookalike.utils.folders import atomic_folder, check_replaceable, file_sha256
from lookalike.utils.progress import ProgressFactory, tracker

logger = logging.getLogger(__name__)

FORMATS = ("onnx",)
QUANTIZATIONS = (None, "int8")
_RANDOM_SAMPLE = "random tensors"


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_model` wrote and measured.

    Attributes:
        folder: The export folder.
        fingerprint: The export's fingerprint (the PyTorch model's for fp32).
        precision: ``"fp32"`` or ``"int8"``.
        parity: fp32 export against PyTorch.
        quantization: ``{"mode", "method", "calibration_images"}`` for int8, else None.
        retrieval_cost: int8 against fp32 on held-out images, else None.
    """

    folder: Path
    fingerprint: str
    precision: str
    parity: ParityReport
    quantization: dict[str, Any] | None = None
    retrieval_cost: RetrievalCost | None = None


def export_model(
    model: str | os.PathLike[str] | ModelSpec | Embedder,
    output: str | os.PathLike[str],
    *,
    format: str = "onnx",
    opset: int = DEFAULT_OPSET,
    sample: str | os.PathLike[str] | ImageSet | None = None,
    sample_size: int = 64,
    tolerance: float = 1e-4,
    k: int = 10,
    quantize: str | None = None,
    quantize_mode: str = "static",
    calibration: str | os.PathLike[str] | ImageSet | None = None,
    calibration_size: int = 128,
    calibration_method: str = "minmax",
    holdout: str | os.PathLike[str] | ImageSet | None = None,
    holdout_size: int = 500,
    batch_size: int = 32,
    progress: ProgressFactory | None = None,
) -> ExportResult:
    """Export ``model`` to an ONNX folder at ``output``, checked against PyTorch.

    Args:
        model: A saved model folder or training checkpoint, a backbone name (pretrained
            weights, pooling "auto"), a :class:`ModelSpec`, or a built :class:`Embedder`.
        output: The export folder (replaced whole if it is an earlier export).
        format: ``"onnx"``.
        opset: ONNX opset (18 or later).
        sample: Images the parity check embeds (any source spec); None: ``sample_size`` random
            tensors, or the calibration images when quantising.
        sample_size: Images of ``sample`` used, spread evenly over it.
        tolerance: Largest accepted ``|onnx - torch|`` of an embedding entry.
        k: Top-k lists compared per sample image.
        quantize: None (fp32) or ``"int8"``.
        quantize_mode: ``"static"`` (calibrated, QDQ, per-channel) or ``"dynamic"``.
        calibration: Images that calibrate static int8 (any source spec).
        calibration_size: Images of ``calibration`` used to calibrate, spread evenly over it.
        calibration_method: minmax, percentile or entropy.
        holdout: Images the int8 retrieval cost is measured on; None: up to ``holdout_size``
            images of ``calibration`` not used to calibrate (the calibration images themselves
            when none is left).
        holdout_size: Images of the holdout used, spread evenly over it.
        batch_size: Images per forward pass.
        progress: Asked for one step per pass over images ("parity: PyTorch" ...).

    Returns:
        The :class:`ExportResult`.

    Raises:
        ParityError: The export does not match PyTorch (nothing is written).
        ValueError: An unknown format, quantisation or method, a bad setting, static int8
            without calibration images, or ``output`` holding something else.
        FileNotFoundError: The model or an image source does not exist.
    """
    _check_settings(
        format, quantize, quantize_mode, calibration_method, calibration, holdout, tolerance,
        {"sample_size": sample_size, "calibration_size": calibration_size,
         "holdout_size": holdout_size, "batch_size": batch_size, "k": k},
    )  # fmt: skip
    target = Path(output)
    check_replaceable(target, ONNX_KIND)
    embedder = _embedder(model)
    calibration_set = _images(calibration, calibration_size) if calibration is not None else None
    sample_set = _images(sample, sample_size) if sample is not None else calibration_set
    with atomic_folder(target) as build, tempfile.TemporaryDirectory(prefix="lookalike-") as scratch:
        fp32_path = (Path(scratch) if quantize else build) / ONNX_FILE
        export_graph(embedder, fp32_path, opset=opset)
        fingerprint = embedder.fingerprint()
        description: dict[str, Any] = {
            "config": embedder.config,
            "preprocessing": embedder.preprocessing.to_dict(),
            "embedding_dim": embedder.embedding_dim,
            "normalize": bool(embedder.normalize),
            "fingerprint": fingerprint,
            "source_fingerprint": fingerprint,
            "precision": "fp32",
            "opset": opset,
        }
        exported = OnnxEmbedder(fp32_path, description)
        parity = _parity(embedder, exported, sample_set, sample_size, tolerance, k, batch_size, progress)
        description["parity"] = parity.to_dict()
        quantization, cost = None, None
        if quantize:
            int8_path = build / ONNX_FILE
            seen = quantize_int8(
                fp32_path,
                int8_path,
                mode=quantize_mode,
                calibration_batches=None if calibration_set is None else _batches(
                    calibration_set, embedder, batch_size,
                    tracker(progress, "calibrating int8", len(calibration_set)),
                ),
                method=calibration_method,
            )
            quantization = {"mode": quantize_mode, "method": calibration_method,
                            "calibration_images": seen}  # fmt: skip
            digest = hashlib.sha256(
                f"{description['source_fingerprint']}|int8|{file_sha256(int8_path)}".encode()
            )
            description.update(precision="int8", fingerprint=digest.hexdigest()[:16],
                               quantization=quantization)  # fmt: skip
            quantized = OnnxEmbedder(int8_path, description)
            evaluation, evaluated_on = _holdout(holdout, holdout_size, calibration, calibration_set)
            cost = _retrieval_cost(exported, quantized, evaluation, evaluated_on, batch_size, progress)
            description["retrieval_cost"] = cost.to_dict()
        finish_folder(build, description)
    logger.info("exported %s to %s (%s)", embedder.config.get("backbone"), target, description["precision"])
    return ExportResult(
        target, description["fingerprint"], description["precision"], parity, quantization, cost
    )


def _check_settings(
    format: str,
    quantize: str | None,
    mode: str,
    method: str,
    calibration: object,
    holdout: object,
    tolerance: float,
    counts: dict[str, int],
) -> None:
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; valid: {', '.join(FORMATS)}")
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"unknown quantisation {quantize!r}; valid: int8 (or none for fp32)")
    if mode not in QUANTIZATION_MODES:
        raise ValueError(f"unknown quantisation mode {mode!r}; valid: {', '.join(QUANTIZATION_MODES)}")
    if method not in CALIBRATION_METHODS:
        raise ValueError(
            f"unknown calibration method {method!r}; valid: {', '.join(CALIBRATION_METHODS)}"
        )
    if quantize and mode == "static" and calibration is None:
        raise ValueError(
            "static int8 quantisation is calibrated on your images: give calibration images "
            "(--calibration IMAGES), or use the dynamic mode"
        )
    if quantize and calibration is None and holdout is None:
        raise ValueError(
            "int8's retrieval cost is measured on your images: give calibration or holdout images"
        )
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not tolerance >= 0:  # NaN fails too
        raise ValueError(f"tolerance must be a number >= 0, got {tolerance!r}")


def _embedder(model: str | os.PathLike[str] | ModelSpec | Embedder) -> Embedder:
    """The PyTorch embedder ``model`` names (see :func:`export_model`)."""
    if isinstance(model, Embedder):
        return model.eval()  # what is exported and checked is the inference graph
    if isinstance(model, ModelSpec):
        spec = model
    else:
        path = Path(model)
        if path.exists() or path.suffix == ".ckpt" or ":" not in str(model):
            spec = ModelSpec(checkpoint=str(model))
        else:
            spec = ModelSpec(backbone=str(model))
    if spec.checkpoint and is_onnx_folder(spec.checkpoint):
        raise ValueError(
            f"{spec.checkpoint} is already an ONNX export; export the PyTorch model it came from"
        )
    if spec.checkpoint and not Path(spec.checkpoint).exists():
        raise FileNotFoundError(
            f"{spec.checkpoint} is neither a saved model, a training checkpoint nor a backbone "
            "name (prefix:model, e.g. efficientnet_lite:lite0)"
        )
    embedder = build_embedder(spec)
    if not isinstance(embedder, Embedder):
        raise ValueError(f"{spec.checkpoint} is not a PyTorch model; export a PyTorch model")  # noqa: TRY004
    return embedder.eval()


def _images(source: str | os.PathLike[str] | ImageSet, size: int) -> ImageSet:
    """``size`` images of ``source``, spread evenly over it (every class of a sorted folder)."""
    images = source if isinstance(source, ImageSet) else load_source(source)
    if not len(images):
        raise ValueError(f"{source} holds no image")
    chosen = _spread(images, size)
    return chosen if isinstance(source, ImageSet) else ImageSet(chosen.records, f"images of {source}")


def _spread(images: ImageSet, size: int) -> ImageSet:
    if len(images) <= size:
        return images
    rows = np.unique(np.linspace(0, len(images) - 1, size).round().astype(int))
    return images.select(rows.tolist())


def _batches(
    images: ImageSet, embedder: EmbedderLike, batch_size: int, advance: Callable[[int], None]
) -> Iterator[np.ndarray]:
    """Preprocessed ``(B, 3, S, S)`` float32 batches of the readable images of ``images``."""
    loader = DataLoader(
        ImageDataset(images, eval_transform(embedder.preprocessing)),
        batch_size=batch_size,
        collate_fn=collate_skipping_broken,
    )
    for batch, indices, broken in loader:
        advance(len(indices) + len(broken))
        if batch is not None:
            yield batch.numpy()


def _embed(
    embedder: EmbedderLike, images: ImageSet, batch_size: int, advance: Callable[[int], None]
) -> tuple[np.ndarray, list[str | None]]:
    """``(N, D)`` embeddings and labels of the readable images, through ``embed_image_set``."""
    result = embed_image_set(
        embedder, images, batch_size=batch_size, device="cpu", channels_last=False,
        progress=advance,
    )  # fmt: skip
    return result.embeddings, list(result.labels)


def _parity(
    embedder: Embedder,
    exported: OnnxEmbedder,
    sample: ImageSet | None,
    sample_size: int,
    tolerance: float,
    k: int,
    batch_size: int,
    progress: ProgressFactory | None,
) -> ParityReport:
    """Embed the sample (images, or seeded random tensors) with both; fail unless they agree."""
    if sample is None:
        size = embedder.preprocessing.input_size
        generator = torch.Generator().manual_seed(0)
        inputs = torch.randn(sample_size, 3, size, size, generator=generator)
        with torch.inference_mode():
            reference = torch.cat([embedder(part) for part in inputs.split(batch_size)]).numpy()
        candidate = torch.cat([exported(part) for part in inputs.split(batch_size)]).numpy()
        name = _RANDOM_SAMPLE
    else:
        reference, _ = _embed(embedder, sample, batch_size, tracker(progress, "parity: PyTorch", len(sample)))
        candidate, _ = _embed(exported, sample, batch_size, tracker(progress, "parity: ONNX Runtime", len(sample)))
        name = sample.name
    report = check_parity(reference, candidate, tolerance=tolerance, k=k, sample=name)
    if not report.passed:
        raise ParityError(
            f"the ONNX export of {embedder.config.get('backbone')} does not match PyTorch on "
            f"{report.images} {name}: max |difference| {report.max_abs_difference:.2e} "
            f"(tolerance {tolerance:.0e}), top-{report.k} lists differ for "
            f"{report.mismatched_images} images; nothing was written"
        )
    return report


def _holdout(
    holdout: str | os.PathLike[str] | ImageSet | None,
    holdout_size: int,
    calibration: str | os.PathLike[str] | ImageSet | None,
    calibration_set: ImageSet | None,
) -> tuple[ImageSet, str]:
    """The images the int8 retrieval cost is measured on, and which they are."""
    if holdout is not None:
        return _images(holdout, holdout_size), "holdout"
    if calibration is None or calibration_set is None:
        raise ValueError("measuring int8's retrieval cost needs images: give a holdout source")
    everything = calibration if isinstance(calibration, ImageSet) else load_source(calibration)
    used = set(calibration_set.ids)
    rest = ImageSet([r for r in everything.records if r.id not in used], everything.name)
    if len(rest) >= 2:
        return _spread(rest, holdout_size), "holdout"
    return calibration_set, "calibration"


def _retrieval_cost(
    fp32: OnnxEmbedder,
    int8: OnnxEmbedder,
    images: ImageSet,
    evaluated_on: str,
    batch_size: int,
    progress: ProgressFactory | None,
) -> RetrievalCost:
    reference, labels = _embed(fp32, images, batch_size, tracker(progress, "int8 check: fp32", len(images)))
    quantized, _ = _embed(int8, images, batch_size, tracker(progress, "int8 check: int8", len(images)))
    return retrieval_cost(reference, quantized, labels, evaluated_on)
