"""Per-epoch artefacts (``trainer.keep_every_epoch``): every epoch's checkpoint, and every
validated epoch's metrics and query→gallery results, so any epoch can be searched with, compared
or submitted after the run.

::

    checkpoints/epoch_N.ckpt           the model after epoch N (N from 0, as in history.csv)
    epochs/epoch_N/metrics.json        that epoch's validation metrics (float64, as computed)
    epochs/epoch_N/results_epoch_N.json  query/gallery validation only: the competition JSON
                                       {query: [gallery_1, ..., gallery_k]} of that epoch's ranking
    epochs/epoch_N/manifest.json       written last; the folder is swapped in whole

The results are the validation's own ranking (the one its metrics read), not a second search.
Every file is written atomically and each ``epoch_N`` folder is swapped in whole
(:func:`~lookalike.utils.folders.atomic_folder`), before ``last.ckpt`` of that epoch is saved:
a run killed at any instant resumes from the last finished epoch and rewrites what follows it.
When training starts at epoch N (0, or the epoch a resumed run starts at), the ``epoch_M``
folders with M >= N are removed: they belong to an earlier run in this folder, and left there
they would be submitted with this run's.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import ModelCheckpoint

from lookalike.report.submission import competition_names, write_competition_json
from lookalike.runs import EPOCHS_DIR, METRICS_FILE
from lookalike.train.validation import ValidationRanking, ValidationSet
from lookalike.utils.atomic import atomic_write_json
from lookalike.utils.folders import atomic_folder, write_manifest

logger = logging.getLogger(__name__)

EPOCH_KIND = "epoch"


def epoch_name(epoch: int) -> str:
    """``epoch_N``: the name of epoch ``N``'s checkpoint (``.ckpt``) and folder."""
    return f"epoch_{epoch}"


def results_file_name(epoch: int) -> str:
    """``results_epoch_N.json``."""
    return f"results_{epoch_name(epoch)}.json"


def epoch_folder(output: str | os.PathLike[str], epoch: int) -> Path:
    """``output/epochs/epoch_N``."""
    return Path(output) / EPOCHS_DIR / epoch_name(epoch)


class EpochCheckpoint(ModelCheckpoint):
    """``epoch_N.ckpt`` after every training epoch, none removed.

    Its own ``state_key`` keeps its state apart from ``last.ckpt``'s callback, which has the
    same monitor and period.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        super().__init__(
            dirpath=folder,
            filename="epoch_{epoch}",
            monitor=None,
            save_top_k=-1,
            save_last=False,
            auto_insert_metric_name=False,
            enable_version_counter=False,
            every_n_epochs=1,
            save_on_train_epoch_end=True,
        )

    @property
    def state_key(self) -> str:
        return self._generate_state_key(every_epoch=True, every_n_epochs=self._every_n_epochs)


class EpochArtefacts(L.Callback):
    """``epochs/epoch_N/`` for every validated epoch: ``metrics.json`` and, with
    ``write_results``, ``results_epoch_N.json`` (see the module docstring).

    Args:
        output: The run folder.
        val_set: The validation set; its images name the results' queries and gallery items.
        write_results: Write the results file (a query/gallery split: ``data.val_split: test``).
        k: Gallery items per query in the results file.
        names: How images are named: "basename", "relpath" (relative to the deepest folder
            holding all queries, resp. all gallery images) or "id" (the source's image id).

    Raises:
        ValueError: With ``write_results``, two validation images of one name (the message
            names both files and says which ``names`` to use), checked before training starts.
    """

    def __init__(
        self,
        output: str | os.PathLike[str],
        val_set: ValidationSet,
        write_results: bool = True,
        k: int = 10,
        names: str = "basename",
    ) -> None:
        if k < 1:
            raise ValueError(f"trainer.results_k must be >= 1, got {k}")
        self.output = Path(output)
        self.write_results = write_results
        self.k = k
        self.names = names
        records = val_set.images.records
        items = [record.id if names == "id" else str(record.path) for record in records]
        self._items = items
        self._queries = len(val_set.query_rows)
        # relative paths are taken from the folders of the whole set, so that every epoch names
        # an image alike even when some image could not be read
        relative = names == "relpath"
        self._query_root = _deepest_folder(self._pick(val_set.query_rows)) if relative else None
        self._gallery_root = (
            _deepest_folder(self._pick(val_set.gallery_rows)) if relative else None
        )
        if write_results:  # a name clash is found now, not after the first epoch
            competition_names(self._pick(val_set.query_rows), names, "query", self._query_root)
            competition_names(
                self._pick(val_set.gallery_rows), names, "gallery", self._gallery_root
            )
        self._validated = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank == 0:
            remove_epochs_from(self.output, trainer.current_epoch)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validated = not trainer.sanity_checking

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        validated, self._validated = self._validated, False
        if not validated or trainer.global_rank != 0:
            return
        ranking: ValidationRanking | None = getattr(pl_module, "last_val_ranking", None)
        if ranking is None:
            return
        self.write(trainer.current_epoch, trainer.global_step, ranking)

    def write(self, epoch: int, step: int, validation: ValidationRanking) -> Path:
        """Write ``epochs/epoch_<epoch>/`` from one validation; return the folder."""
        target = epoch_folder(self.output, epoch)
        with atomic_folder(target) as built:
            metrics: dict[str, Any] = {key: float(v) for key, v in validation.metrics.items()}
            atomic_write_json(built / METRICS_FILE, {**metrics, "epoch": epoch, "step": step})
            if self.write_results:
                self._write_results(built / results_file_name(epoch), validation)
            write_manifest(built, EPOCH_KIND, extra={"epoch": epoch, "step": step})
        logger.info("epoch %d: metrics and results in %s", epoch, target)
        return target

    def _write_results(self, path: Path, validation: ValidationRanking) -> None:
        missing = self._queries - len(validation.query_rows)
        if missing:  # a competition may refuse a file that lacks queries: say so
            logger.warning(
                "%d of %d queries could not be read and are not in %s; fix or replace them "
                "before submitting it", missing, self._queries, path.name,
            )
        # the ranking's neighbour rows index the gallery rows that were embedded
        write_competition_json(
            path,
            validation.ranking.neighbours.top(self.k),
            self._pick(validation.query_rows),
            self._pick(validation.gallery_rows),
            names=self.names,  # type: ignore[arg-type]
            k=self.k,
            query_root=self._query_root,
            gallery_root=self._gallery_root,
        )

    def _pick(self, rows: np.ndarray) -> list[str]:
        return [self._items[row] for row in rows]


def remove_epochs_from(output: str | os.PathLike[str], first: int) -> list[Path]:
    """Remove ``output/epochs/epoch_M`` for every M >= ``first``; return what was removed.

    Called as training starts at epoch ``first``: such folders were written by an earlier run in
    this folder (this one writes its own as it reaches them), and must not be mixed with it.
    """
    removed = []
    epochs = Path(output) / EPOCHS_DIR
    for child in sorted(epochs.iterdir()) if epochs.is_dir() else []:
        match = re.fullmatch(r"epoch_(\d+)", child.name)
        if match and int(match.group(1)) >= first and child.is_dir():
            logger.warning(
                "removing %s: an earlier run in %s wrote it, and this one starts at epoch %d",
                child, output, first,
            )
            shutil.rmtree(child)
            removed.append(child)
    return removed


def _deepest_folder(paths: Sequence[str]) -> str | None:
    """The deepest folder holding every path (None for none)."""
    if not paths:
        return None
    return os.path.commonpath([os.path.dirname(os.path.abspath(path)) for path in paths])


def epoch_callbacks(
    output: str | os.PathLike[str],
    checkpoints: str | os.PathLike[str],
    val_set: ValidationSet | None,
    write_results: bool,
    k: int,
    names: str,
) -> list[L.Callback]:
    """The callbacks of ``trainer.keep_every_epoch``: the epoch folders (when validating) and
    the per-epoch checkpoints, in the order the trainer must run them (before ``last.ckpt``)."""
    callbacks: list[L.Callback] = []
    if val_set is not None:
        callbacks.append(EpochArtefacts(output, val_set, write_results, k, names))
    callbacks.append(EpochCheckpoint(checkpoints))
    return callbacks
