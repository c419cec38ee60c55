"""After ``train``: score the exported model on the protocol's test split, for the run's report.

The training run validates on its val split while it trains; this runs ``evaluate`` with the best
checkpoint on the held-out query/gallery split (``run/test/``, with its own metrics, results and
report) and embeds a seeded sample of the training images, then points the training run's
``run.json`` at these embeddings so that its report shows test-set grids, per-class recall and an
embedding map with train and test coloured apart.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.data.protocols import make_split
from lookalike.data.records import ImageSet
from lookalike.data.sources import load_source
from lookalike.embed.extract import embed_image_set
from lookalike.embed.spec import EmbedSpec
from lookalike.models.spec import ModelSpec, build_embedder
from lookalike.pipeline.evaluate import RUN_FILE, EvaluateConfig, EvaluateOutcome, run_evaluation
from lookalike.train.config import TrainConfig
from lookalike.train.run import TrainOutcome
from lookalike.utils.atomic import atomic_write_json

logger = logging.getLogger(__name__)

TEST_DIR = "test"
TRAIN_EMBEDDINGS = "embeddings/train"


def evaluate_trained_model(
    config: TrainConfig, outcome: TrainOutcome, train_sample: int = 2000, seed: int = 0
) -> EvaluateOutcome:
    """Evaluate ``outcome``'s exported model on the test split of ``config``'s data.

    Args:
        config: The resolved training config (its data source and protocol give the test split).
        outcome: What :func:`~lookalike.train.run.run_training` returned.
        train_sample: Training images embedded for the report's map (seeded sample).
        seed: Seed of that sample.

    Returns:
        The test evaluation (its folder is ``outcome.output / "test"``).
    """
    data = config.data
    embed = EmbedSpec(
        batch_size=data.val_batch_size or data.batch_size, num_workers=data.num_workers
    )
    evaluation = run_evaluation(
        EvaluateConfig(
            source=data.source,
            protocol=data.protocol,
            protocol_args=dict(data.protocol_args),
            model=ModelSpec(checkpoint=str(outcome.model_dir)),
            embed=embed,
            output=str(outcome.output / TEST_DIR),
        )
    )
    split = make_split(load_source(data.source), data.protocol, **data.protocol_args)
    record: dict[str, Any] = json.loads((outcome.output / RUN_FILE).read_text())
    tested = json.loads((evaluation.output / RUN_FILE).read_text())
    for key in ("query_embeddings", "gallery_embeddings"):
        record[key] = _under(TEST_DIR, tested[key])
    record.update(
        exclude_self=tested["exclude_self"],
        metric=tested["metric"],
        threshold=None,
        k=tested["k"],
        test_metrics=evaluation.metrics,
    )
    if split.train is not None and len(split.train):
        rows = np.random.default_rng(seed).permutation(len(split.train))[:train_sample]
        sample = ImageSet([split.train.records[i] for i in np.sort(rows)], "train")
        embed_image_set(
            build_embedder(ModelSpec(checkpoint=str(outcome.model_dir))),
            sample,
            output_dir=outcome.output / TRAIN_EMBEDDINGS,
            batch_size=embed.batch_size,
            num_workers=embed.num_workers,
        )
        record["train_embeddings"] = TRAIN_EMBEDDINGS
    atomic_write_json(outcome.output / RUN_FILE, record)
    return evaluation


def _under(prefix: str, folder: str) -> str:
    """A run-relative folder of the test run, made relative to the training run."""
    return folder if Path(folder).is_absolute() else f"{prefix}/{folder}"
