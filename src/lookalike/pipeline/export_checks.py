"""What an export is checked with: parity against PyTorch, and the retrieval cost of int8.

- **Parity** (fp32): the same images through PyTorch and ONNX Runtime give embeddings whose
  largest absolute difference is at most a tolerance, and the top-k lists of every image among
  the others (cosine, itself excluded, :func:`lookalike.ranking.rank`) are identical. A position
  where the lists differ is forgiven only when the two items' PyTorch scores differ by no more
  than ``tie`` (1e-5 in cosine): a near-tie that float rounding may order either way. This is a
  check of its own: embeddings within the tolerance entry by entry can still reorder neighbours
  (a cosine moves by up to ``2 * sqrt(D) * tolerance``).
- **Retrieval cost** (int8): both graphs embed the same held-out images; Recall@1 and MAP@R
  (Musgrave et al., "A Metric Learning Reality Check", ECCV 2020) of every image against all the
  others are reported side by side, with the share of images whose nearest neighbour is unchanged
  and the cosine between each image's two embeddings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from lookalike.metrics.retrieval import evaluate_retrieval
from lookalike.ranking import rank


class ParityError(ValueError):
    """An export whose ONNX Runtime outputs differ from PyTorch's (one line, nothing written)."""


@dataclass(frozen=True)
class ParityReport:
    """How closely the export follows PyTorch on a sample.

    Attributes:
        images: Images in the sample.
        sample: Where they came from (a source spec, or ``"random tensors"``).
        max_abs_difference: Largest ``|onnx - torch|`` over every embedding entry.
        tolerance: The largest difference accepted.
        k: Neighbours compared per image.
        topk_identical: Every image's top-k list is the same (ties within rounding forgiven).
        mismatched_images: Images whose top-k lists differ beyond ties.
    """

    images: int
    sample: str
    max_abs_difference: float
    tolerance: float
    k: int
    topk_identical: bool
    mismatched_images: int

    @property
    def passed(self) -> bool:
        return self.max_abs_difference <= self.tolerance and self.topk_identical

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def check_parity(
    reference: np.ndarray,
    candidate: np.ndarray,
    *,
    tolerance: float,
    k: int,
    sample: str,
    tie: float = 1e-5,
) -> ParityReport:
    """Compare ``(N, D)`` embeddings of the same images from PyTorch (``reference``) and the
    export (``candidate``); see the module docstring for the rule."""
    if reference.shape != candidate.shape:
        raise ParityError(
            f"the export gives embeddings of shape {candidate.shape}, PyTorch {reference.shape}"
        )
    difference = float(np.abs(reference - candidate).max()) if reference.size else 0.0
    if not np.isfinite(difference):
        difference = float("inf")
    count = len(reference)
    depth = max(1, min(k, count - 1))
    mismatched = 0
    if count > 1 and np.isfinite(difference):
        own = np.arange(count)
        expected = rank(reference, reference, metric="cosine", k=depth, exclude_rows=own)
        found = rank(candidate, candidate, metric="cosine", k=depth, exclude_rows=own)
        unit = reference / np.maximum(np.linalg.norm(reference, axis=1, keepdims=True), 1e-12)
        for query in range(count):
            want, got = expected.neighbours.indices[query], found.neighbours.indices[query]
            differ = np.flatnonzero(want != got)
            if not len(differ):
                continue
            score_want = unit[want[differ]] @ unit[query]
            score_got = unit[got[differ]] @ unit[query]
            if np.any(np.abs(score_want - score_got) > tie):
                mismatched += 1
    elif count > 1:
        mismatched = count
    return ParityReport(
        images=count,
        sample=sample,
        max_abs_difference=difference,
        tolerance=float(tolerance),
        k=depth,
        topk_identical=mismatched == 0,
        mismatched_images=mismatched,
    )


@dataclass(frozen=True)
class RetrievalCost:
    """int8 beside fp32 on the same images (every image against all the others).

    Attributes:
        images: Images embedded by both.
        evaluated_on: ``"holdout"`` (images not used to calibrate) or ``"calibration"``.
        fp32: ``{"recall@1", "map@r"}`` of the fp32 export (empty for unlabelled images).
        int8: The same of the int8 export.
        top1_agreement: Share of images whose nearest other image is the same under both.
        cosine_min: Smallest cosine between an image's fp32 and int8 embeddings.
        cosine_mean: Their mean.
    """

    images: int
    evaluated_on: str
    fp32: dict[str, float]
    int8: dict[str, float]
    top1_agreement: float
    cosine_min: float
    cosine_mean: float

    @property
    def recall_at_1_drop(self) -> float | None:
        """fp32's Recall@1 minus int8's, in points (None without labels)."""
        if "recall@1" not in self.fp32:
            return None
        return 100.0 * (self.fp32["recall@1"] - self.int8["recall@1"])

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "recall_at_1_drop_points": self.recall_at_1_drop}


def retrieval_cost(
    fp32: np.ndarray, int8: np.ndarray, labels: list[str | None], evaluated_on: str
) -> RetrievalCost:
    """Compare ``(N, D)`` fp32 and int8 embeddings of the same ``N`` images (``labels`` may be
    all None: then only agreement and cosine are reported)."""
    count = len(fp32)
    own = np.arange(count)
    metrics: dict[str, dict[str, float]] = {"fp32": {}, "int8": {}}
    if count > 1 and all(label is not None for label in labels):
        for name, embeddings in (("fp32", fp32), ("int8", int8)):
            summary = evaluate_retrieval(
                embeddings, labels, embeddings, labels, ks=(1,), precision_ks=(), self_index=own
            )
            metrics[name] = {"recall@1": summary["recall@1"], "map@r": summary["map@r"]}
    agreement = 1.0
    if count > 1:
        first = rank(fp32, fp32, metric="cosine", k=1, exclude_rows=own).neighbours.indices[:, 0]
        second = rank(int8, int8, metric="cosine", k=1, exclude_rows=own).neighbours.indices[:, 0]
        agreement = float(np.mean(first == second))
    unit32 = fp32 / np.maximum(np.linalg.norm(fp32, axis=1, keepdims=True), 1e-12)
    unit8 = int8 / np.maximum(np.linalg.norm(int8, axis=1, keepdims=True), 1e-12)
    cosine = (unit32 * unit8).sum(axis=1)
    return RetrievalCost(
        images=count,
        evaluated_on=evaluated_on,
        fp32=metrics["fp32"],
        int8=metrics["int8"],
        top1_agreement=agreement,
        cosine_min=float(cosine.min()) if count else float("nan"),
        cosine_mean=float(cosine.mean()) if count else float("nan"),
    )
