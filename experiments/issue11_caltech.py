"""Issue 11 evidence on Caltech-101 with EfficientNet-Lite0 on the CPU (offline ImageNet weights).

Subcommands (each prints one JSON line of results and appends it to ``OUTPUT/results.jsonl``):

- ``frozen``: the pre-trained model on the unseen classes 52-101 (class-disjoint, the existing
  recipe's split), the reference every other number is read against;
- ``finetune``: the existing recipe (``configs/caltech101_lite0.yaml``: multi-similarity, last 6
  blocks, frozen BatchNorm) with or without consistency regularisation whose unlabelled images are
  the test-class images without labels (``data.unlabelled.sources=[split:test]``), trained at
  ``--image-size`` for ``--steps`` steps and evaluated at ``--eval-size`` on the unseen classes;
- ``simsiam``: SimSiam from the ImageNet weights on every Caltech image without labels
  (``images:`` source, ``train_only`` protocol), then kNN retrieval on the unseen classes;
- ``wise-ft``: the curve over alpha between the pre-trained model and a fine-tuned one on the
  val classes (which choose alpha), a sample of the unseen classes (in-domain) and an
  out-of-domain set: Debian's Fashion-MNIST test split (``--ood fashion-mnist``, the default) or
  Caltech classes rendered as 32-px greyscale (``--ood grey32``, see :func:`ood_manifest`);
- ``answers``: seen classes with distractors from frozen embeddings: a per-class split of all 101
  classes (half of each class trains an MLP head and is the kNN gallery), ``BACKGROUND_Google``
  as distractor queries; MAP@5 with a "no match" probability/similarity threshold tuned on one
  half of the queries and applied to the other, for kNN answers, head answers and their fusion.

::

    python experiments/issue11_caltech.py frozen --output runs/exp11
    python experiments/issue11_caltech.py finetune --variant consistency_mse --output runs/exp11
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lookalike.config import resolve_config
from lookalike.data.fashion_mnist import export_fashion_mnist
from lookalike.data.protocols import make_split
from lookalike.data.sources import load_source
from lookalike.embed.spec import EmbedSpec
from lookalike.embed.store import EmbeddingSet
from lookalike.losses import create_loss
from lookalike.models import create_embedder, load_embedder, save_embedder
from lookalike.models.embedder import Embedder
from lookalike.pipeline.predict import tune_answer_threshold
from lookalike.pipeline.wise_ft import RetrievalSet, retrieval_metrics_of, wise_ft_curve
from lookalike.search.class_answers import (
    fuse_class_scores,
    knn_class_votes,
    nearest_class_scores,
    top_classes,
)
from lookalike.search.open_set_scores import create_objective
from lookalike.search.topk import search_embeddings
from lookalike.train.config import TrainConfig
from lookalike.train.module import validation_metrics
from lookalike.train.run import run_training
from lookalike.train.validation import validation_set

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "caltech101"
BACKGROUND = "BACKGROUND_Google"
SOURCE = {"type": "folder", "root": str(DATA), "exclude_classes": [BACKGROUND]}
SPLIT = {"train_fraction": 0.5, "val_fraction": 0.1}
RECIPE = Path(__file__).resolve().parents[1] / "configs" / "caltech101_lite0.yaml"
REPORTED = ("recall@1", "map", "map@r")


def embed_spec() -> EmbedSpec:
    return EmbedSpec(batch_size=64, num_workers=1)


def at_size(embedder: Embedder, size: int) -> Embedder:
    """The model evaluated at ``size`` pixels (trained smaller, tested at its native 224)."""
    embedder.preprocessing = replace(embedder.preprocessing, input_size=size)
    return embedder


def unseen_metrics(embedder: Embedder) -> dict[str, float]:
    """Recall@1, mAP, MAP@R on the unseen classes 52-101, each image against all others."""
    split = make_split(load_source(SOURCE), "class_disjoint", **SPLIT)
    metrics = retrieval_metrics_of(embedder, validation_set(split, "test"), embed_spec())
    return {key: round(float(metrics[key]), 4) for key in REPORTED}


def record(output: Path, row: dict[str, Any]) -> None:
    output.mkdir(parents=True, exist_ok=True)
    with open(output / "results.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")
    print(json.dumps(row))


def frozen(args: argparse.Namespace) -> None:
    """The pre-trained model on the unseen classes; from ``--embeddings`` (every Caltech image,
    ``lookalike embed``) when given, else embedded here."""
    started = time.monotonic()
    if args.embeddings is None:
        embedder = create_embedder("efficientnet_lite:lite0", pool="gap").eval()
        metrics = unseen_metrics(at_size(embedder, args.eval_size))
    else:
        split = make_split(load_source(SOURCE), "class_disjoint", **SPLIT)
        retrieval = validation_set(split, "test")
        every = EmbeddingSet.load(args.embeddings)
        row_of = {Path(path).resolve(): row for row, path in enumerate(every.paths)}
        rows = np.array([row_of[Path(r.path).resolve()] for r in retrieval.images.records])
        found = validation_metrics(retrieval, every.embeddings[rows], np.ones(len(rows), bool))
        metrics = {key: round(float(found[key]), 4) for key in REPORTED}
    record(args.output, {"experiment": "frozen", "eval_size": args.eval_size, **metrics,
                         "cpu_seconds": round(time.monotonic() - started)})


def finetune_overrides(args: argparse.Namespace, output: Path) -> list[str]:
    epochs = max(1, args.steps // args.steps_per_epoch)
    overrides = [
        f"data.image_size={args.image_size}", "data.val_split=none", "data.num_workers=1",
        f"data.batch_size={args.batch_size}", f"trainer.max_epochs={epochs}",
        f"trainer.limit_train_batches={args.steps_per_epoch}", "trainer.log_every_n_steps=5",
        f"optim.warmup_steps={min(20, args.steps // 5)}", f"output={output}",
    ]
    if args.variant == "recipe":
        return overrides
    consistency = {
        "consistency_mse": "{name: consistency_mse, classifier: bce, weight: %g, rampup_steps: %d}",
        "consistency_cosine": "{name: consistency_cosine, weight: %g, rampup_steps: %d}",
    }[args.variant] % (args.weight, args.steps // 4)
    parts = "{name: multi_similarity, miner: multi_similarity}"
    if args.variant == "consistency_mse":
        parts += ", {name: bce}"
    return [*overrides, "loss.name=hybrid", "loss.miner=null", f"loss.parts=[{parts}, {consistency}]",
            "data.unlabelled.sources=[split:test]", f"data.unlabelled.ratio={args.ratio}",
            "data.view_augment=rand_augment"]


def finetune(args: argparse.Namespace) -> None:
    started = time.monotonic()
    output = args.output / f"finetune_{args.variant}_{args.image_size}px_{args.steps}"
    config = resolve_config(TrainConfig, RECIPE, finetune_overrides(args, output))
    config.loss = {key: value for key, value in config.loss.items() if value is not None}
    outcome = run_training(config)
    trained = time.monotonic() - started
    metrics = unseen_metrics(at_size(load_embedder(outcome.model_dir), args.eval_size))
    record(args.output, {
        "experiment": "finetune", "variant": args.variant, "steps": args.steps,
        "image_size": args.image_size, "eval_size": args.eval_size, "batch_size": args.batch_size,
        "unlabelled_ratio": args.ratio if args.variant != "recipe" else 0, **metrics,
        "train_seconds": round(trained), "cpu_seconds": round(time.monotonic() - started),
        "model": str(outcome.model_dir),
    })


def simsiam(args: argparse.Namespace) -> None:
    started = time.monotonic()
    output = args.output / f"simsiam_{args.image_size}px_{args.steps}"
    epochs = max(1, args.steps // args.steps_per_epoch)
    config = resolve_config(TrainConfig, overrides=[
        f"data.source=images:{DATA}", "data.protocol=train_only", "data.val_split=none",
        "data.sampler=random", f"data.batch_size={args.batch_size}", "data.num_workers=1",
        f"data.image_size={args.image_size}", "data.augment=strong",
        "model.backbone=efficientnet_lite:lite0", "model.pool=gap",
        "loss.name=simsiam", "loss.projection_dim=256", "loss.hidden_dim=1024",
        "loss.predictor_dim=64", "finetune.strategy=last_n", "finetune.last_n=6",
        "finetune.freeze_batchnorm=true", "optim.name=sgd", f"optim.lr={args.lr}",
        f"optim.head_lr={args.lr}", "optim.loss_lr=0.05", "optim.weight_decay=1e-4",
        f"trainer.max_epochs={epochs}", f"trainer.limit_train_batches={args.steps_per_epoch}",
        "trainer.log_every_n_steps=5", f"output={output}",
    ])
    outcome = run_training(config)
    trained = time.monotonic() - started
    history = (outcome.output / "history.csv").read_text().splitlines()
    metrics = unseen_metrics(at_size(load_embedder(outcome.model_dir), args.eval_size))
    record(args.output, {
        "experiment": "simsiam", "steps": args.steps, "image_size": args.image_size,
        "eval_size": args.eval_size, "batch_size": args.batch_size, "lr": args.lr, **metrics,
        "history": history, "train_seconds": round(trained),
        "cpu_seconds": round(time.monotonic() - started), "model": str(outcome.model_dir),
    })


def ood_manifest(output: Path, classes: list[str], per_class: int, size: int) -> Path:
    """Out-of-domain set: Caltech classes the fine-tune never saw, rendered as ``size``-pixel
    greyscale images (a Fashion-MNIST-like domain: tiny, colourless), ``per_class`` each. Written
    under ``output`` (outside the repository's data), listed in a CSV manifest."""
    from PIL import Image

    folder = output / f"ood_grey{size}"
    rows = ["path,label"]
    for label in classes:
        files = sorted((DATA / label).glob("*.jpg"))[:per_class]
        (folder / label).mkdir(parents=True, exist_ok=True)
        for path in files:
            target = folder / label / f"{path.stem}.png"
            if not target.exists():
                image = Image.open(path).convert("L").resize((size, size), Image.BILINEAR)
                image.convert("RGB").save(target)
            rows.append(f"{target.resolve()},{label}")
    manifest = output / f"ood_grey{size}.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def sample_manifest(output: Path, classes: list[str], per_class: int) -> Path:
    rows = ["path,label"]
    for label in classes:
        rows += [f"{path},{label}" for path in sorted((DATA / label).glob("*.jpg"))[:per_class]]
    manifest = output / "in_domain_sample.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def wise_ft_experiment(args: argparse.Namespace) -> None:
    started = time.monotonic()
    split = make_split(load_source(SOURCE), "class_disjoint", **SPLIT)
    unseen = sorted(split.query.classes())
    in_domain = sample_manifest(args.output, unseen[::2], args.per_class)
    if args.ood == "fashion-mnist":
        ood_name = "fashion_mnist"
        ood_source = str(export_fashion_mnist(args.output / "fashion_mnist", "test",
                                              limit_per_class=args.ood_per_class))
    else:
        ood_name = "ood_grey32"
        ood_source = f"csv:{ood_manifest(args.output, unseen[1::2], args.per_class, 32)}"
    start = args.output / "pretrained_lite0"
    if not start.exists():
        save_embedder(create_embedder("efficientnet_lite:lite0", pool="gap").eval(), start)
    tuned = at_size(load_embedder(args.finetuned), args.eval_size)
    tuned_folder = save_embedder(tuned, args.output / "finetuned_at_eval_size")
    outcome = wise_ft_curve(
        start, tuned_folder, args.output / ("wise_ft" if ood_name == "ood_grey32" else f"wise_ft_{ood_name}"),
        RetrievalSet("val", SOURCE, "class_disjoint", dict(SPLIT), "val"),
        [RetrievalSet("unseen_caltech", f"csv:{in_domain}"), RetrievalSet(ood_name, ood_source)],
        alphas=args.alphas, embed=embed_spec(),
    )
    record(args.output, {
        "experiment": "wise_ft", "out_of_domain": ood_name, "finetuned": str(args.finetuned), "best_alpha": outcome.best_alpha,
        "rows": [{key: round(value, 4) for key, value in row.items()
                  if key == "alpha" or key.split("/")[1] in REPORTED} for row in outcome.rows],
        "curve": str(outcome.curve_csv), "cpu_seconds": round(time.monotonic() - started),
    })


def answers(args: argparse.Namespace) -> None:
    """Seen classes with distractors, from the frozen embeddings of every Caltech image."""
    started = time.monotonic()
    every = EmbeddingSet.load(args.embeddings)
    labels = ["__distractor__" if label == BACKGROUND else label for label in every.labels]
    rng = np.random.default_rng(args.seed)
    train_rows, query_rows = [], []
    for label in sorted(set(labels) - {"__distractor__"}):
        rows = rng.permutation([i for i, value in enumerate(labels) if value == label])
        cut = len(rows) // 2
        train_rows += rows[:cut].tolist()
        query_rows += rows[cut:].tolist()
    distractors = rng.permutation([i for i, value in enumerate(labels) if value == "__distractor__"])
    gallery = every.select(np.array(sorted(train_rows)))
    classes = sorted({str(label) for label in gallery.labels})
    head, loss_seconds = train_head(gallery, classes, args)
    halves = []
    for part in (0, 1):
        rows = np.array(query_rows[part::2] + distractors[part::2].tolist())
        chosen = every.select(rows)
        chosen.labels = [None if labels[i] == "__distractor__" else labels[i] for i in rows]
        halves.append(chosen)
    scores: dict[str, list[np.ndarray]] = {"knn": [], "head": [], "fusion": []}
    for queries in halves:
        neighbours = search_embeddings(queries, gallery, k=args.neighbours)
        with torch.no_grad():
            probabilities = head.class_probabilities(torch.from_numpy(queries.embeddings)).numpy()
        votes = knn_class_votes(neighbours, gallery.labels, classes, args.temperature)
        scores["knn"].append(nearest_class_scores(neighbours, gallery.labels, classes))
        scores["head"].append(probabilities)
        scores["fusion"].append(fuse_class_scores(probabilities, votes, args.vote_weight))
    objective = create_objective("map@5")
    row: dict[str, Any] = {"experiment": "answers", "classes": len(classes),
                           "gallery": len(gallery), "queries": [len(h) for h in halves],
                           "distractor_queries": len(distractors), "head": args.head}
    for name, (val_scores, test_scores) in scores.items():
        val_answers = top_classes(val_scores, classes, 5)
        tuned = tune_answer_threshold(val_answers, halves[0].labels)
        test_answers = top_classes(test_scores, classes, 5)
        test_labels = [None if label is None else str(label) for label in halves[1].labels]
        value = objective.evaluate(test_answers.result, test_labels, classes, tuned.threshold)
        lowest = float(np.nextafter(np.float32(np.nanmin(np.where(
            np.isfinite(test_answers.result.scores), test_answers.result.scores, np.inf))),
            np.float32(-np.inf)))
        plain = objective.evaluate(test_answers.result, test_labels, classes, lowest)
        top1 = float(np.mean([answer[0] == label for answer, label in
                              zip(test_answers.labels(), test_labels, strict=True) if label]))
        row[name] = {"threshold": round(tuned.threshold, 4), "val_map@5": round(tuned.value, 4),
                     "test_map@5_no_rejection": round(plain, 4), "test_map@5": round(value, 4),
                     "test_top1_genuine": round(top1, 4)}
    row["head_train_seconds"] = round(loss_seconds)
    row["cpu_seconds"] = round(time.monotonic() - started)
    record(args.output, row)


def train_head(
    gallery: EmbeddingSet, classes: list[str], args: argparse.Namespace
) -> tuple[Any, float]:
    """An MLP (or BCE) classifier head trained on frozen embeddings with the library's loss."""
    started = time.monotonic()
    spec = {"name": args.head, "hidden": [512], "dropout": 0.3}
    loss = create_loss(spec, embedding_dim=gallery.dim, num_classes=len(classes))
    codes = torch.tensor([classes.index(str(label)) for label in gallery.labels])
    rows = torch.from_numpy(gallery.embeddings)
    optimizer = torch.optim.AdamW(loss.parameters(), lr=1e-3, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(args.seed)
    loss.train()
    for _ in range(args.head_epochs):
        for batch in torch.randperm(len(rows), generator=generator).split(128):
            optimizer.zero_grad()
            loss(rows[batch], codes[batch])["loss"].backward()
            optimizer.step()
    return loss.eval(), time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["frozen", "finetune", "simsiam", "wise-ft", "answers"])
    parser.add_argument("--output", type=Path, default=Path("runs/exp11"))
    parser.add_argument("--variant", default="consistency_mse",
                        choices=["recipe", "consistency_mse", "consistency_cosine"])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--steps-per-epoch", type=int, default=25)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--eval-size", type=int, default=224)
    parser.add_argument("--weight", type=float, default=100.0)
    parser.add_argument("--ratio", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--finetuned", type=Path)
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--ood", default="fashion-mnist", choices=["fashion-mnist", "grey32"],
                        help="Out-of-domain set of the WiSE-FT curve (Debian's Fashion-MNIST test "
                             "split, or Caltech classes rendered as 32-px greyscale).")
    parser.add_argument("--ood-per-class", type=int, default=40)
    parser.add_argument("--embeddings", type=Path)
    parser.add_argument("--head", default="cross_entropy", choices=["cross_entropy", "bce"])
    parser.add_argument("--head-epochs", type=int, default=30)
    parser.add_argument("--neighbours", type=int, default=20)
    parser.add_argument("--temperature", type=float, default=0.05)
    parser.add_argument("--vote-weight", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    commands = {"frozen": frozen, "finetune": finetune, "simsiam": simsiam,
                "wise-ft": wise_ft_experiment, "answers": answers}
    commands[args.command](args)


if __name__ == "__main__":
    main()
