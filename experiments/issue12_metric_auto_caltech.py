"""Issue 12 evidence: ``--metric auto`` on Caltech-101 (EfficientNet-Lite0, GAP, ImageNet weights).

Caltech-101 is embedded once without normalisation (``model.normalize=false``); the normalised
set is the same rows L2-normalised (exactly what ``normalize=true`` computes). Each set is then
evaluated with ``index.metric=auto`` on the class-disjoint protocol: the first half of the classes
(natural order) is the training side, the last ``--val-fraction`` of those the val classes the
metric is chosen on (all-vs-all, MAP@R monitored), the other half the unseen test classes. The
script prints, for both sets, the four metrics' val scores side by side (``metric_choice.json``),
the chosen metric's test scores, and for reference all four metrics' test scores::

    python experiments/issue12_metric_auto_caltech.py --output runs/exp12
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from lookalike.embed.spec import EmbedSpec
from lookalike.embed.store import EmbeddingSet
from lookalike.models.spec import ModelSpec
from lookalike.pipeline.embedding import embed_images
from lookalike.pipeline.evaluate import EvaluateConfig, run_evaluation
from lookalike.pipeline.metric_choice import choose_metric_on

CALTECH = Path(__file__).resolve().parents[2] / "shared" / "data" / "caltech101"
COLUMNS = ("map@r", "recall@1", "recall@5", "map")


def raw_embeddings(output: Path, source: Path) -> EmbeddingSet:
    """Lite0 GAP embeddings of every image, not normalised (resumable)."""
    folder = output / "caltech_raw"
    if (folder / "manifest.json").exists():
        return EmbeddingSet.load(folder)
    model = ModelSpec("efficientnet_lite:lite0", pool="gap", normalize=False)
    return embed_images(source, folder, model=model, embed=EmbedSpec(num_workers=1, device="cpu"))


def from_partial_shards(folder: Path, output: Path) -> EmbeddingSet:
    """The finished shards of an interrupted embedding run (``.caltech_raw.partial/shards``): a
    prefix of the images in walk order, i.e. whole classes in alphabetical order (the last one
    cut), for a machine too loaded to embed everything in time. Labels are the class folders."""
    parts, ids = [], []
    for shard in sorted(folder.glob("shard_*.npz")):
        with np.load(shard) as data:
            if len(data["skipped_rows"]):
                raise ValueError(f"{shard} skipped images; use the finished folder instead")
            parts.append(data["embeddings"])
            ids += [str(i) for i in data["ids"]]
            fingerprint = str(data["fingerprint"])
    labels = [i.split("/", 1)[0] for i in ids]
    subset = EmbeddingSet(np.concatenate(parts), ids, ids, labels,
                          {"fingerprint": fingerprint, "subset": f"first {len(ids)} images"})
    subset.save(output)
    return subset


def normalised(raw: EmbeddingSet, folder: Path) -> Path:
    """The rows L2-normalised, saved as their own folder (the fingerprint marks them)."""
    unit = raw.embeddings / np.linalg.norm(raw.embeddings, axis=1, keepdims=True)
    info = {**raw.info, "fingerprint": f"{raw.fingerprint}-l2normalised"}
    EmbeddingSet(unit, raw.ids, raw.paths, raw.labels, info).save(folder)
    return folder


def table(title: str, scores: dict[str, dict[str, float]], chosen: str) -> str:
    lines = [f"{title}", "| metric | " + " | ".join(COLUMNS) + " | chosen |",
             "|---" * (len(COLUMNS) + 2) + "|"]
    for name, values in scores.items():
        cells = " | ".join(f"{values[c]:.4f}" for c in COLUMNS)
        lines.append(f"| {name} | {cells} | {'yes' if name == chosen else ''} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("runs/exp12"))
    parser.add_argument("--source", type=Path, default=CALTECH)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--partial-shards", type=Path, default=None,
                        help="Use the finished shards of an interrupted embedding run (a subset).")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    if args.partial_shards is not None:
        raw = from_partial_shards(args.partial_shards, args.output / "caltech_raw")
        print(f"subset: {len(raw)} images of {len(set(raw.labels))} classes (alphabetical prefix)")
    else:
        raw = raw_embeddings(args.output, args.source)
    folders = {"unnormalised": args.output / "caltech_raw",
               "normalised": normalised(raw, args.output / "caltech_unit")}
    results = {}
    for name, folder in folders.items():
        started = time.perf_counter()
        config = EvaluateConfig(
            embeddings=str(folder), protocol="class_disjoint",
            protocol_args={"train_fraction": 0.5, "val_fraction": args.val_fraction},
            output=str(args.output / f"eval_{name}"), report=False,
        )
        config.index.metric = "auto"
        outcome = run_evaluation(config)
        choice = outcome.metric_choice
        assert choice is not None and outcome.inputs is not None
        test = choose_metric_on(outcome.inputs.query, outcome.inputs.gallery, exclude_self=True,
                                split="test")
        print(table(f"\n{name}: val split ({choice.n_queries} images, all-vs-all), "
                    f"chosen {choice.metric}", choice.scores, choice.metric))
        print(table(f"{name}: test split ({test.n_queries} images), for reference",
                    test.scores, choice.metric))
        results[name] = {"val": choice.to_dict(), "test_all_metrics": test.to_dict(),
                         "test_chosen": outcome.metrics, "seconds": time.perf_counter() - started}
    (args.output / "metric_auto.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
