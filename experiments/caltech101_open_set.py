"""Open-set retrieval on Caltech-101: rejection threshold and re-ranking, measured on unseen data.

Protocol (seeded): the 101 object classes are split in two halves, *validation* and *test*.
In each half, every class gives 20 % of its images as queries and the rest as gallery; 30 % of
the half's classes are then removed from the gallery, so their queries become distractors, and
half of ``BACKGROUND_Google`` (clutter) joins each half's queries as further distractors. The
threshold is tuned on the validation half only (MAP@5 with "no match" a valid answer, Kaggle's
rule) and applied to the test half; re-ranking steps are scored on the test half's genuine queries.

    python experiments/caltech101_open_set.py --embeddings EMB_DIR   # from `lookalike embed`

The embedding folder is any ``lookalike embed`` output of ``../shared/data/caltech101``.
"""

from __future__ import annotations

import argparse

import numpy as np

from lookalike.embed.store import EmbeddingSet
from lookalike.pipeline.open_set import RejectionSpec, rejection_metrics, tune_rejection
from lookalike.pipeline.postprocess import PostprocessSpec, compare_variants
from lookalike.ranking import rank

BACKGROUND = "BACKGROUND_Google"


def open_set_half(
    embeddings: EmbeddingSet, classes: list[str], background: list[int], seed: int
) -> tuple[EmbeddingSet, EmbeddingSet]:
    """Queries (distractors unlabelled) and gallery of one half, as the module docstring says."""
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[int]] = {}
    for row, label in enumerate(embeddings.labels):
        if label in classes:
            by_class.setdefault(label, []).append(row)
    held = set(rng.choice(classes, size=round(0.3 * len(classes)), replace=False).tolist())
    queries, gallery, distractors = [], [], []
    for label in classes:
        rows = rng.permutation(by_class[label])
        cut = max(1, round(0.2 * len(rows)))
        (distractors if label in held else queries).extend(rows[:cut].tolist())
        if label not in held:
            gallery.extend(rows[cut:].tolist())
    query_set = embeddings.select(np.array(queries + distractors + background))
    unknown = len(distractors) + len(background)
    query_set.labels = list(query_set.labels[: len(queries)]) + [None] * unknown
    return query_set, embeddings.select(np.array(gallery))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embeddings", required=True)
    parser.add_argument("--objective", default="map@5")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    embeddings = EmbeddingSet.load(args.embeddings)
    classes = sorted({label for label in embeddings.labels if label != BACKGROUND})
    order = np.random.default_rng(args.seed).permutation(len(classes))
    halves = [sorted(classes[i] for i in order[: len(classes) // 2]), sorted(classes[i] for i in order[len(classes) // 2 :])]
    background = [row for row, label in enumerate(embeddings.labels) if label == BACKGROUND]
    background = np.random.default_rng(args.seed).permutation(background).tolist()
    val_q, val_g = open_set_half(embeddings, halves[0], background[::2], args.seed + 1)
    test_q, test_g = open_set_half(embeddings, halves[1], background[1::2], args.seed + 2)
    print(f"validation: {len(val_q)} queries ({sum(l is None for l in val_q.labels)} distractors), {len(val_g)} gallery")
    print(f"test:       {len(test_q)} queries ({sum(l is None for l in test_q.labels)} distractors), {len(test_g)} gallery")

    # The validation queries already hold distractors, so no class is held out again.
    tuned = tune_rejection(val_q, val_g, RejectionSpec(objective=args.objective, holdout_fraction=0.0))
    print(f"threshold tuned on validation ({args.objective}): {tuned.threshold:.4f} "
          f"(validation {tuned.baseline:.4f} -> {tuned.value:.4f}); "
          f"90th-percentile rule: {tuned.percentile_threshold:.4f}")

    ranking = rank(test_q.embeddings, test_g.embeddings, test_q.labels, test_g.labels, k=10)
    rows = {
        "no rejection": None,
        "tuned threshold": tuned.threshold,
        "percentile rule": tuned.percentile_threshold,
    }
    print("\nTest half, all queries (distractors answer 'no match'):")
    print(f"{'':18s} {'MAP@5':>8s} {'weighted top-k':>15s} {'accept F1':>10s}")
    for name, threshold in rows.items():
        metrics = rejection_metrics(ranking, tuned.threshold if threshold is None else threshold)
        suffix = "_no_rejection" if threshold is None else "_rejection"
        print(f"{name:18s} {metrics['map@5' + suffix]:8.4f} {metrics['weighted_topk' + suffix]:15.1f} {metrics['f1' + suffix]:10.4f}")
    print(f"open-set ROC AUC {metrics['open_set_auc']:.4f}, FNMR at FMR 1%: {metrics['fnmr@fmr=0.01']:.4f}")

    genuine = test_q.select(np.flatnonzero([label is not None for label in test_q.labels]))
    spec = PostprocessSpec(whitening=True, dba=True, qe=True, k_reciprocal=True, whitening_shrinkage=0.1, depth=100)
    table = compare_variants(genuine, test_g, spec)
    print(f"\nTest half, {len(genuine)} genuine queries, re-ranking steps (each on its top-100):")
    print(f"{'':34s} {'R@1':>7s} {'MAP@5':>7s} {'MAP@R':>7s} {'weighted':>9s}")
    for name, metrics in table.items():
        print(f"{name:34s} {metrics['recall@1']:7.4f} {metrics['map@5']:7.4f} {metrics.get('map@r', float('nan')):7.4f} {metrics['weighted_topk']:9.1f}")


if __name__ == "__main__":
    main()
