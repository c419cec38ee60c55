"""Settings of a ``lookalike train`` run: typed defaults under a YAML file and dotted overrides.

``resolve_config(TrainConfig, "configs/cnn_gem_arcface.yaml", ["optim.lr=3e-4"])`` gives a
:class:`TrainConfig`; :func:`lookalike.train.run.run_training` runs it and saves it resolved as
``output/config.yaml``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from lookalike.models.spec import ModelSpec
from lookalike.report.submission import NAME_MODES
from lookalike.train.augment import AUGMENTATIONS
from lookalike.train.finetune import FinetuneSpec
from lookalike.train.loggers import LOGGERS
from lookalike.train.optim import OptimSpec
from lookalike.train.validation import check_cutoffs, validation_metric_names
from lookalike.utils.cores import parse_workers
from lookalike.utils.devices import check_accelerator

logger = logging.getLogger(__name__)

SAMPLERS = ("random", "m_per_class")
VAL_SPLITS = ("val", "test", "none")
PRECISIONS = ("32", "bf16-mixed", "16-mixed")
MONITOR_MODES = ("max", "min")
CACHE_FEATURES = ("auto", "true", "false")


@dataclass
class UnlabelledSpec:
    """Unlabelled images drawn beside the labelled ones in every step (semi-supervised training).

    Each step takes a labelled batch and an unlabelled batch of ``ratio`` times its size
    (Lightning's ``CombinedLoader``); every image of both gives a weak and a strong view, the
    view pairs that consistency losses compare.

    Attributes:
        sources: Where the unlabelled images come from, any of: ``"split:test"`` (the query and
            gallery images of the protocol's test split, labels dropped: transductive), a folder
            of images (``"images:PATH"`` or a plain path; searched recursively, any class folders
            ignored), or a source spec (``"folder:PATH"``, ``"csv:FILE"``, a mapping such as
            ``{type: folder, root: ..., distractor_classes: [...]}``) whose labels are dropped.
            Images that train or validate with labels are always left out.
        ratio: Unlabelled images per labelled image in a step (> 0; the competition used 1).
    """

    sources: list[Any] = field(default_factory=list)
    ratio: float = 1.0


@dataclass
class DataSpec:
    """Which images train and validate, and how they are batched and augmented.

    Attributes:
        source: Image source spec ("folder:PATH", "csv:FILE", "sop:ROOT", a path, or a mapping
            ``{"type": "folder", "root": PATH, "exclude_classes": [...]}``).
        protocol: Split protocol ("given", "all_vs_all", "per_class", "class_disjoint").
        protocol_args: Protocol options (``train_fraction``, ``val_fraction``, ``seed`` ...).
        val_split: Retrieval set validated every epoch: "val" (the protocol's val set, each image
            a query against all others), "test" (its query/gallery; model selection on the test
            set, for quick experiments only) or "none".
        batch_size: Images per micro-batch (per device).
        val_batch_size: Images per validation batch; ``batch_size`` when ``None``.
        num_workers: DataLoader worker processes per training process, or "auto": the core
            budget of :func:`lookalike.utils.cores.plan_cores` for this process's share of the
            machine's cores (its cores over the processes training on it) on its device: on a
            GPU every core but one feeds it, on the CPU most cores go to the model.
        sampler: "random" or "m_per_class" (``m`` images of each class per batch; pml's
            ``MPerClassSampler``).
        m: Images per class in a batch of the "m_per_class" sampler.
        augment: Train augmentation set: "weak", "strong" or "none" (the eval transform).
        image_size: Input side in pixels instead of the model's own (saved with the model).
        two_views: Give every image a second augmented view (SimCLR-style positives).
        augment_options: Keyword options of the ``augment`` entry.
        view_augment: Augmentation of the second view: ``None`` for ``augment`` (SimCLR-style
            views), except in view pairs for consistency, where ``None`` means "rand_augment".
        view_augment_options: Keyword options of the ``view_augment`` entry (``{"magnitude": 12,
            "erasing": 0.5}``).
        unlabelled: Unlabelled images for semi-supervised training (none by default).
    """

    source: Any = None
    protocol: str = "class_disjoint"
    protocol_args: dict[str, Any] = field(default_factory=dict)
    val_split: str = "val"
    batch_size: int = 32
    val_batch_size: int | None = None
    num_workers: Any = "auto"
    sampler: str = "m_per_class"
    m: int = 4
    augment: str = "weak"
    image_size: int | None = None
    two_views: bool = False
    augment_options: dict[str, Any] = field(default_factory=dict)
    view_augment: str | None = None
    view_augment_options: dict[str, Any] = field(default_factory=dict)
    unlabelled: UnlabelledSpec = field(default_factory=UnlabelledSpec)


@dataclass
class TrainerSpec:
    """Lightning ``Trainer`` settings, validation and early stopping.

    Attributes:
        max_epochs: Epochs to train.
        accumulate_grad_batches: Micro-batches per optimiser step.
        precision: "32", "bf16-mixed" or "16-mixed" (mixed precision needs CUDA; on the CPU
            "16-mixed" falls back to "32" with a warning, "bf16-mixed" is kept as asked).
        accelerator: Lightning accelerator ("auto", "cpu", "gpu").
        devices: Devices per node ("auto", a count, or a list of indices).
        num_nodes: Machines.
        strategy: Lightning strategy ("auto", "ddp", "fsdp" ...).
        seed: Seed of every random draw (reseeded per epoch, so a resumed run matches).
        deterministic: Ask torch for deterministic algorithms.
        monitor: Key of ``metrics.json`` (``"map@r"``, ``"recall@1"`` ...) that picks the best
            checkpoint and drives early stopping; a key with a "/" names a logged value as is.
        monitor_mode: "max" or "min".
        early_stopping_patience: Validations without improvement before stopping; ``None`` off.
        val_every_n_epochs: Validate every this many epochs.
        limit_train_batches: Lightning's limit (a fraction or a count) on batches per epoch.
        log_every_n_steps: Logging interval of training values.
        loggers: "csv" always; add "tensorboard", "wandb" or "mlflow" (their packages needed).
        val_k: Cut-offs of the Recall@K validated every epoch (``history.csv`` columns
            ``val/recall@K``; any of them can be the ``monitor``).
        precision_k: Cut-offs of the Precision@K validated every epoch (may be empty).
        keep_every_epoch: Keep every epoch's checkpoint (``checkpoints/epoch_N.ckpt``) and, per
            validated epoch, ``epochs/epoch_N/`` with its ``metrics.json`` and, for a
            query/gallery split (``data.val_split: test``), ``results_epoch_N.json`` (the
            competition JSON, ``lookalike submit-all`` sends them); N counts from 0 as in
            ``history.csv``.
        results_k: Gallery items per query in ``results_epoch_N.json``.
        results_names: How ``results_epoch_N.json`` names images: "basename" (file names, the
            competition format; they must be unique), "relpath" (paths relative to the deepest
            folder holding all the query, or all the gallery, images) or "id".
        grad_checkpointing: Recompute the backbone's activations in the backward pass instead
            of keeping them (timm, open_clip and Hugging Face backbones), trading compute for
            memory for models that do not fit otherwise.
        cache_features: Train the head on backbone features embedded once
            (:mod:`lookalike.train.cached_features`): "auto" when that trains exactly as the
            image path (frozen backbone, ``data.augment: none``, one process), "true" (refused,
            naming the setting, where it would not), or "false".
    """

    max_epochs: int = 10
    accumulate_grad_batches: int = 1
    precision: str = "32"
    accelerator: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    seed: int = 0
    deterministic: bool = False
    monitor: str = "map@r"
    monitor_mode: str = "max"
    early_stopping_patience: int | None = None
    val_every_n_epochs: int = 1
    limit_train_batches: Any = None
    log_every_n_steps: int = 10
    loggers: list[str] = field(default_factory=lambda: ["csv"])
    val_k: list[int] = field(default_factory=lambda: [1, 5, 10])
    precision_k: list[int] = field(default_factory=lambda: [10])
    keep_every_epoch: bool = False
    results_k: int = 10
    results_names: str = "basename"
    grad_checkpointing: bool = False
    cache_features: str = "auto"


@dataclass
class WiseFTSpec:
    """Weight-space ensembling of the fine-tuned and the pre-trained weights after training
    (WiSE-FT, Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022).

    The model training starts from is saved as ``output/pretrained``; after training every
    ``theta(alpha) = (1 - alpha) theta_pretrained + alpha theta_finetuned`` of ``alphas`` is scored
    on the validation set, the best by ``trainer.monitor`` is saved as ``output/wise_ft/model``
    (with ``curve.csv`` and ``curve.png``) and is the model the test split evaluates. The
    classifier of the loss is not interpolated: the chosen model is saved without one.

    Attributes:
        enabled: Do it.
        alphas: Mixing coefficients tried, in ``[0, 1]`` (1 is the fine-tuned model).
    """

    enabled: bool = False
    alphas: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])


@dataclass
class TrainConfig:
    """A training run.

    Attributes:
        model: The embedder to train (a new one, or ``checkpoint`` to continue from a saved one).
        data: Images, split, batching and augmentation.
        loss: Loss spec for :func:`lookalike.losses.create_loss` (``{"name": "arcface", ...}``).
        finetune: Which parameters train (full, frozen, last_n, freeze_then_unfreeze, lora).
        optim: Optimiser, learning rates and schedule.
        trainer: Lightning trainer, validation and early stopping.
        wise_ft: Weight-space ensembling with the pre-trained weights after training.
        output: Run folder (checkpoints, exported model, metrics, curves, resolved config).
    """

    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    loss: dict[str, Any] = field(default_factory=lambda: {"name": "multi_similarity"})
    finetune: FinetuneSpec = field(default_factory=FinetuneSpec)
    optim: OptimSpec = field(default_factory=OptimSpec)
    trainer: TrainerSpec = field(default_factory=TrainerSpec)
    wise_ft: WiseFTSpec = field(default_factory=WiseFTSpec)
    output: str = "runs/train"


def check_config(config: TrainConfig) -> None:
    """One-line ``ValueError`` for a setting outside its valid names or range."""
    choices = (
        ("data.sampler", config.data.sampler, SAMPLERS),
        ("data.augment", config.data.augment, AUGMENTATIONS.names()),
        ("data.view_augment", config.data.view_augment or config.data.augment,
         AUGMENTATIONS.names()),
        ("data.val_split", config.data.val_split, VAL_SPLITS),
        ("trainer.precision", str(config.trainer.precision), PRECISIONS),
        ("trainer.monitor_mode", config.trainer.monitor_mode, MONITOR_MODES),
        ("trainer.cache_features", str(config.trainer.cache_features).lower(), CACHE_FEATURES),
    )
    for name, value, valid in choices:
        if value not in valid:
            raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
    unknown = [name for name in config.trainer.loggers if name not in LOGGERS]
    if unknown:
        valid = ", ".join(LOGGERS.names())
        raise ValueError(f"unknown trainer.loggers {unknown[0]!r}; valid: {valid}")
    positive = (
        ("data.batch_size", config.data.batch_size),
        ("data.m", config.data.m),
        ("trainer.max_epochs", config.trainer.max_epochs),
        ("trainer.accumulate_grad_batches", config.trainer.accumulate_grad_batches),
        ("trainer.val_every_n_epochs", config.trainer.val_every_n_epochs),
    )
    for name, value in positive:
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if config.data.sampler == "m_per_class" and config.data.batch_size % config.data.m:
        raise ValueError(
            f"data.batch_size {config.data.batch_size} must be a multiple of data.m "
            f"{config.data.m} for the m_per_class sampler"
        )
    parse_workers(config.data.num_workers, "data.num_workers")
    if not config.data.source:
        raise ValueError("data.source is not set: give the images to train on (folder:PATH ...)")
    if config.wise_ft.enabled and config.data.val_split == "none":
        raise ValueError("wise_ft.enabled chooses alpha on validation: set data.val_split")
    if not config.data.unlabelled.ratio > 0:
        raise ValueError(f"data.unlabelled.ratio must be > 0, got {config.data.unlabelled.ratio}")
    check_accelerator(config.trainer.accelerator, config.trainer.devices)
    check_validation(config)


def check_validation(config: TrainConfig) -> None:
    """One-line ``ValueError`` for validation cut-offs that are not positive integers, a
    ``trainer.monitor`` the validation does not report, or an unknown results naming."""
    trainer = config.trainer
    ks = check_cutoffs(trainer.val_k, "trainer.val_k")
    precision_ks = check_cutoffs(trainer.precision_k, "trainer.precision_k", allow_empty=True)
    if trainer.results_k < 1:
        raise ValueError(f"trainer.results_k must be >= 1, got {trainer.results_k}")
    if trainer.results_names not in NAME_MODES:
        raise ValueError(
            f"unknown trainer.results_names {trainer.results_names!r}; valid: "
            f"{', '.join(NAME_MODES)}"
        )
    names = validation_metric_names(ks, precision_ks)
    if config.data.val_split != "none" and "/" not in trainer.monitor and (
        trainer.monitor not in names
    ):
        raise ValueError(
            f"trainer.monitor {trainer.monitor!r} is not a validation metric at trainer.val_k "
            f"{list(ks)} / trainer.precision_k {list(precision_ks)}; valid: {', '.join(names)}"
        )


def resolve_precision(precision: str, accelerator: str) -> str:
    """The precision Lightning runs: mixed float16 needs CUDA, so it falls back to "32" on CPU.

    Args:
        precision: The configured precision.
        accelerator: The configured accelerator ("auto" uses CUDA when available).

    Returns:
        ``precision``, or "32" for "16-mixed" where no CUDA device will be used.
    """
    on_cuda = accelerator in ("gpu", "cuda") or (
        accelerator == "auto" and torch.cuda.is_available()
    )
    if precision == "16-mixed" and not on_cuda:
        logger.warning("precision 16-mixed needs CUDA; training in 32-bit on the CPU instead")
        return "32"
    return precision


def monitor_key(monitor: str) -> str:
    """The logged name of a ``metrics.json`` key: ``"map@r"`` -> ``"val/map@r"``."""
    return monitor if "/" in monitor else f"val/{monitor}"
