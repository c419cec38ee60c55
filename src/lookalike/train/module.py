"""The LightningModule: an embedder trained by a retrieval loss, validated by retrieval metrics.

Each epoch starts by reseeding from ``(seed, epoch)`` (so a run resumed from its last checkpoint
draws exactly what an uninterrupted one would) and by applying the fine-tuning strategy for that
epoch. After the first backward pass of a new set of trainable blocks, every block the strategy
made trainable must have received a gradient, or training stops with
:class:`~lookalike.train.inspect.GradientFlowError`: a pipeline that silently trains only its
head is the costliest bug of retrieval fine-tuning.

A semi-supervised step receives ``{"labelled": batch, "unlabelled": batch}`` (Lightning's
``CombinedLoader``): both are embedded in one pass, the loss gets the labelled embeddings and
labels, and the weak/strong :class:`~lookalike.losses.base.ViewPairs` of every image of both.
The checkpoint keeps the loss's answering classifier (its class weights as a
:class:`~lookalike.models.classifier.Classifier`, with the class names), which the export saves
beside the model.
"""

from __future__ import annotations

import io
import logging
import random
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lookalike.losses.base import RetrievalLoss, ViewPairs
from lookalike.models.embedder import Embedder
from lookalike.models.training_checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_KEY,
    CLASSIFIER_KEY,
)
from lookalike.train.distributed import gather_optional, gather_rows
from lookalike.train.finetune import FinetuneSpec, apply_finetune, set_frozen_eval
from lookalike.train.inspect import (
    check_gradient_flow,
    render_parameter_table,
    trainable_parameter_table,
)
from lookalike.train.optim import OptimSpec, create_optimizer, create_scheduler
from lookalike.train.seeding import mix_seed
from lookalike.train.validation import ValidationRanking, ValidationSet, rank_validation

logger = logging.getLogger(__name__)


def reseed(seed: int, epoch: int) -> None:
    """Seed Python, numpy and torch (all devices) from ``(seed, epoch)``."""
    value = mix_seed(seed, epoch)
    random.seed(value)
    np.random.seed(value % (1 << 32))
    torch.manual_seed(value)


def validation_metrics(
    val_set: ValidationSet, embeddings: np.ndarray, embedded: np.ndarray, metric: str = "cosine"
) -> dict[str, float]:
    """Retrieval metrics of the val queries against the val gallery (one exact ranking), at the
    set's cut-offs (:func:`~lookalike.train.validation.rank_validation`).

    Args:
        val_set: The val images, their query/gallery roles and the metrics' cut-offs.
        embeddings: ``(N, D)`` float32 embedding of every row of ``val_set.images``.
        embedded: ``(N,)`` bool, False for rows whose image could not be read (left out).
        metric: Similarity for ranking ("cosine", "ip", "l2", "l1").
    """
    return rank_validation(val_set, embeddings, embedded, metric).metrics


class RetrievalModule(L.LightningModule):
    """Train ``embedder`` with ``loss``; validate with retrieval metrics logged as ``val/<key>``.

    Args:
        embedder: The model; images ``(B, 3, H, W)`` -> embeddings ``(B, D)``.
        loss: The retrieval loss (its own parameters, e.g. ArcFace centres, train too).
        finetune: Which parameters train in each epoch.
        optim: Optimiser and schedule.
        val_set: The retrieval val set, or ``None`` (no validation).
        seed: Base seed of the per-epoch reseeding.
        metric: Similarity used to rank the val gallery.
        classes: Class names in label-code order (kept with the exported classifier).
        views_are_positives: In a semi-supervised step, the labelled images' second (strong)
            views also go to the loss as ``positive_embeddings`` (a loss that needs pairs).
    """

    def __init__(
        self,
        embedder: Embedder,
        loss: RetrievalLoss,
        finetune: FinetuneSpec,
        optim: OptimSpec,
        val_set: ValidationSet | None = None,
        seed: int = 0,
        metric: str = "cosine",
        classes: Sequence[str] = (),
        views_are_positives: bool = False,
    ) -> None:
        super().__init__()
        self.embedder = embedder
        self.loss = loss
        self.finetune = finetune
        self.optim = optim
        self.val_set = val_set
        self.seed = seed
        self.metric = metric
        self.classes = [str(name) for name in classes]
        self.views_are_positives = views_are_positives
        # LoRA adds parameters: they must exist before the optimiser and checkpoint restore
        self.trainable_blocks = apply_finetune(embedder, finetune, epoch=0)
        self.check_gradients = True
        self.last_val_metrics: dict[str, float] = {}
        self.last_val_ranking: ValidationRanking | None = None
        self._val_rows: list[Tensor] = []
        self._val_embeddings: list[Tensor] = []
        logger.info("%s", parameter_table_text(embedder, loss))

    def forward(self, images: Tensor) -> Tensor:
        """``(B, 3, H, W)`` -> ``(B, D)`` embeddings."""
        return self.embedder(images)

    def on_train_epoch_start(self) -> None:
        epoch = self.current_epoch
        logger.debug("epoch %d starts", epoch)
        reseed(self.seed, epoch)
        blocks = apply_finetune(self.embedder, self.finetune, epoch=epoch)
        if blocks != self.trainable_blocks:
            logger.info("epoch %d: trainable blocks now %s", epoch, ", ".join(blocks) or "none")
            self.check_gradients = True
        self.trainable_blocks = blocks
        self.train()
        set_frozen_eval(self.embedder)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        if "labelled" in batch:
            return self.semi_supervised_step(batch["labelled"], batch["unlabelled"], batch_idx)
        images = batch["images"]
        if images is None:
            logger.warning("training batch %d has no readable image; skipped", batch_idx)
            return None
        views = batch.get("views")
        captions = batch.get("captions")
        # under DDP the loss sees the global batch, as one process would (train/distributed.py)
        embeddings = gather_rows(self.embedder(images))
        parts = self.loss(
            embeddings,
            gather_optional(batch.get("labels")),
            positive_embeddings=None if views is None else gather_rows(self.embedder(views)),
            text_embeddings=None if captions is None else gather_rows(self.embed_text(captions)),
            step=self.global_step,
        )
        self.log_parts(parts, int(embeddings.shape[0]))
        return parts["loss"]

    def semi_supervised_step(
        self, labelled: dict[str, Any], unlabelled: dict[str, Any], batch_idx: int
    ) -> Tensor | None:
        """One step on a labelled batch and an unlabelled one, each image with a weak view
        (``images``) and a strong view (``views``); all four embedded in one forward pass."""
        if labelled["images"] is None:
            logger.warning("training batch %d has no readable labelled image; skipped", batch_idx)
            return None
        groups = [labelled["images"], labelled["views"]]
        if unlabelled["images"] is not None:
            groups += [unlabelled["images"], unlabelled["views"]]
        sizes = [int(group.shape[0]) for group in groups]
        pieces = torch.split(self.embedder(torch.cat(groups)), sizes)
        weak, strong = pieces[0], pieces[1]
        if len(pieces) == 4:
            weak, strong = torch.cat([weak, pieces[2]]), torch.cat([strong, pieces[3]])
        labelled_embeddings = gather_rows(pieces[0])
        parts = self.loss(
            labelled_embeddings,
            gather_optional(labelled.get("labels")),
            positive_embeddings=gather_rows(pieces[1]) if self.views_are_positives else None,
            view_pairs=ViewPairs(gather_rows(weak), gather_rows(strong)),
            step=self.global_step,
        )
        self.log_parts(parts, int(labelled_embeddings.shape[0]))
        return parts["loss"]

    def log_parts(self, parts: dict[str, Tensor], size: int) -> None:
        """Log every named part (and diagnostic) of the loss as ``train/<name>``."""
        for name, value in parts.items():
            self.log(f"train/{name}", value.detach(), on_step=True, on_epoch=True,
                     prog_bar=name == "loss", batch_size=size, sync_dist=True)

    def embed_text(self, captions: list[str]) -> Tensor:
        """``B`` captions -> ``(B, D)`` L2-normalised embeddings of the backbone's text tower."""
        tower = text_tower(self.embedder)
        tokens = self.embedder.backbone.tokenizer(captions).to(self.device)
        return F.normalize(tower.encode_text(tokens), dim=-1)

    def on_after_backward(self) -> None:
        if self.check_gradients:
            check_gradient_flow(self.embedder, self.trainable_blocks)
            self.check_gradients = False
            logger.info("gradient flow checked: %d trainable blocks", len(self.trainable_blocks))

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = create_optimizer(self.embedder, self.loss, self.optim, self.finetune)
        total_steps = int(self.trainer.estimated_stepping_batches)
        scheduler = create_scheduler(optimizer, self.optim, total_steps)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }

    def on_validation_epoch_start(self) -> None:
        self._val_rows, self._val_embeddings = [], []

    def validation_step(self, batch: tuple[Any, Tensor, list], batch_idx: int) -> None:
        images, indices, _ = batch
        if images is None:
            return
        self._val_rows.append(indices.cpu())
        self._val_embeddings.append(self.embedder(images).float().cpu())

    def on_validation_epoch_end(self) -> None:
        if self.val_set is None or self.trainer.sanity_checking:
            return
        rows = torch.cat(self._val_rows) if self._val_rows else torch.zeros(0, dtype=torch.int64)
        width = self.embedder.embedding_dim
        found = torch.cat(self._val_embeddings) if self._val_embeddings else torch.zeros(0, width)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, (rows, found))
            rows = torch.cat([part[0] for part in gathered])
            found = torch.cat([part[1] for part in gathered])
        count = len(self.val_set.images)
        embeddings = np.zeros((count, width), dtype=np.float32)
        embedded = np.zeros(count, dtype=bool)
        embeddings[rows.numpy()] = found.numpy()
        embedded[rows.numpy()] = True
        self.last_val_ranking = rank_validation(self.val_set, embeddings, embedded, self.metric)
        metrics = self.last_val_ranking.metrics
        self.last_val_metrics = metrics
        self.log_dict({f"val/{key}": float(value) for key, value in metrics.items()})
        self._val_rows, self._val_embeddings = [], []

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = {
            "format": CHECKPOINT_FORMAT,
            "embedder_config": self.embedder.config,
            "preprocessing": self.embedder.preprocessing.to_dict(),
            "embedding_dim": self.embedder.embedding_dim,
            "finetune": asdict(self.finetune),
        }
        part = self.loss.answering_classifier()
        if part is not None and self.classes:
            classifier = part.export_classifier(self.classes)
            checkpoint[CHECKPOINT_KEY][CLASSIFIER_KEY] = {
                "description": classifier.description(),
                "state": {key: value.cpu() for key, value in classifier.state_dict().items()},
            }


def parameter_table_text(embedder: Embedder, loss: nn.Module | None = None) -> str:
    """The trainable-parameter table per block as plain text, for the log."""
    from rich.console import Console

    console = Console(file=io.StringIO(), width=100, color_system=None)
    console.print(render_parameter_table(trainable_parameter_table(embedder, loss)))
    return console.file.getvalue()


def text_tower(embedder: Embedder) -> nn.Module:
    """The text model beside the image backbone (open_clip's), for image-text losses."""
    tower = getattr(embedder.backbone, "text_model", None)
    if tower is None or not hasattr(tower, "encode_text"):
        raise ValueError(
            f"backbone {embedder.config.get('backbone')!r} has no text tower; image-text "
            "training needs an open_clip backbone (open_clip:ARCH/TAG)"
        )
    return tower
