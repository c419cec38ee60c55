"""``train`` as one library call: fine-tune, test the best model, report.

::

    config ─ run_training ─► checkpoints, model/, metrics.json (best val epoch), history.csv
                         └─► run_evaluation(best model, the protocol's test split) ─► test/
                              (ranked once: test/ranking.npz, metrics, results, report)
                         └─► a seeded sample of training images embedded ─► embeddings/train
                         └─► run.json points at the test split's embeddings and ranking
                         └─► report.html (curves, test grids, train/test embedding map)

The test split is listed and split once, by the evaluation; its embedder is the exported model
the evaluation loaded, reused for the training sample. The report reads the saved ranking.

Unlike an ``evaluate`` folder, a training run folder is not built aside and swapped in: Lightning
writes it in place over many epochs, and a rerun resumes from its ``checkpoints/last.ckpt``. So
:func:`train` removes the folder's manifest before training and writes it (every file, the
checkpoints, ``model/`` and ``test/`` included) once the report is written: a folder without a
manifest is an unfinished run, which readers refuse.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np

from lookalike.config import resolve_config
from lookalike.data.records import ImageSet
from lookalike.embed.spec import EmbedSpec
from lookalike.models.spec import ModelSpec
from lookalike.pipeline.embedding import embed_images
from lookalike.pipeline.evaluate import EvaluateConfig, EvaluateOutcome, run_evaluation
from lookalike.pipeline.wise_ft import save_training_start, wise_ft_after_training
from lookalike.report.html import build_report
from lookalike.runs import TEST_DIR, RunRecord
from lookalike.train.config import TrainConfig, check_config
from lookalike.train.run import TrainOutcome, run_training
from lookalike.utils.devices import free_cached_gpu_memory
from lookalike.utils.folders import read_manifest
from lookalike.utils.progress import ProgressFactory

logger = logging.getLogger(__name__)

TRAIN_SAMPLE_DIR = "train"


@dataclass
class TrainingResult:
    """What :func:`train` produced.

    Attributes:
        training: The training run (checkpoints, exported model, best validation metrics).
        test: The best model evaluated on the protocol's test split (None when not asked).
        report_path: The training run's ``report.html`` (None when not asked).
    """

    training: TrainOutcome
    test: EvaluateOutcome | None = None
    report_path: Path | None = None


def evaluate_trained_model(
    config: TrainConfig,
    outcome: TrainOutcome,
    train_sample: int = 2000,
    seed: int = 0,
    progress: ProgressFactory | None = None,
) -> EvaluateOutcome:
    """Evaluate ``outcome``'s exported model on the test split of ``config``'s data.

    The training run's ``run.json`` is then pointed at the test split's embeddings and ranking,
    and a seeded sample of the training images is embedded for the report's map.

    Args:
        config: The resolved training config (its data source and protocol give the test split).
        outcome: What :func:`~lookalike.train.run.run_training` returned.
        train_sample: Training images embedded for the report's map (seeded sample).
        seed: Seed of that sample.
        progress: Receives the progress of the evaluation's ranking.

    Returns:
        The test evaluation (its folder is ``outcome.output / "test"``).
    """
    data = config.data
    embed = EmbedSpec(
        batch_size=data.val_batch_size or data.batch_size, num_workers=data.num_workers
    )
    started = time.monotonic()
    evaluation = run_evaluation(
        EvaluateConfig(
            source=data.source,
            protocol=data.protocol,
            protocol_args=dict(data.protocol_args),
            model=ModelSpec(checkpoint=str(outcome.model_dir)),
            embed=embed,
            output=str(outcome.output / TEST_DIR),
        ),
        progress=progress,
    )
    record = RunRecord(outcome.output)
    tested = RunRecord(evaluation.output)
    settings = tested.read_settings()
    if settings is None:
        raise FileNotFoundError(f"the test evaluation left no run.json in {evaluation.output}")

    def from_test(value: str | None) -> str | None:
        path = tested.resolve(value)
        return None if path is None else record.relative(path)

    fields = {
        "query_embeddings": from_test(settings.query_embeddings),
        "gallery_embeddings": from_test(settings.gallery_embeddings),
        "ranking": from_test(settings.ranking),
        "exclude_self": settings.exclude_self,
        "metric": settings.metric,
        "threshold": None,
        "k": settings.k,
        "test_metrics": evaluation.metrics,
        "test_seconds": round(time.monotonic() - started, 3),
    }
    inputs = evaluation.inputs
    split_train = inputs.split.train if inputs is not None and inputs.split is not None else None
    if split_train is not None and len(split_train) and inputs.embedder is not None:
        rows = np.random.default_rng(seed).permutation(len(split_train))[:train_sample]
        sample = ImageSet([split_train.records[i] for i in np.sort(rows)], "train")
        folder = record.embeddings_dir(TRAIN_SAMPLE_DIR)
        embed_images(sample, folder, model=inputs.embedder, embed=embed, progress=progress)
        fields["train_embeddings"] = record.relative(folder)
    record.update_settings(**fields)
    return evaluation


def train(
    config: TrainConfig | str | Path,
    overrides: Sequence[str] = (),
    *,
    test: bool = True,
    report: bool = True,
    train_sample: int = 2000,
    progress: ProgressFactory | None = None,
    callbacks: Sequence[L.Callback] = (),
) -> TrainingResult:
    """Train as ``config`` says, evaluate the best model on the test split, write the report.

    Args:
        config: A :class:`~lookalike.train.config.TrainConfig`, or a YAML file of its fields
            (see ``configs/``).
        overrides: Dotted ``key=value`` settings applied on top (``"optim.lr=1e-4"``).
        test: Evaluate the best model on the protocol's test split (``run/test/``); with
            ``wise_ft.enabled`` the interpolated model validation chose.
        report: Write ``report.html`` into the run folder.
        train_sample: Training images embedded for the report's embedding map.
        progress: Receives the progress of the test evaluation.
        callbacks: Lightning callbacks added to the run's own (a sweep's pruning callback).

    Returns:
        The training run, its test evaluation and its report.
    """
    if isinstance(config, TrainConfig):
        config = resolve_config(TrainConfig, overrides=overrides, base=config)
    else:
        config = resolve_config(TrainConfig, config, overrides)
    check_config(config)
    RunRecord(config.output).unfinish()
    if config.wise_ft.enabled:
        save_training_start(config)
    outcome = run_training(config, callbacks)
    if not outcome.is_global_zero:  # a DDP worker: rank 0 tests, reports and finishes the run
        return TrainingResult(outcome)
    test = test and config.data.protocol != "train_only"  # nothing to test on: self-supervised
    if config.wise_ft.enabled:
        outcome = wise_ft_after_training(config, outcome, progress)
    free_cached_gpu_memory()  # the test evaluation starts from an empty cache
    evaluation = (
        evaluate_trained_model(config, outcome, train_sample, progress=progress) if test else None
    )
    report_path = build_report(outcome.output, verify=False) if report else None
    RunRecord(outcome.output).finish(read_manifest(outcome.model_dir).fingerprint)
    return TrainingResult(outcome, evaluation, report_path)
