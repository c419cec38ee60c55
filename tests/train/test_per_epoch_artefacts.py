"""``trainer.keep_every_epoch``: every epoch's checkpoint, metrics and competition JSON, each
epoch's results checked against ``lookalike search`` of that epoch's checkpoint; validation at
any K list; resuming rewrites the epochs after the checkpoint it resumes from."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lookalike.config import resolve_config
from lookalike.embed.spec import EmbedSpec
from lookalike.models.spec import ModelSpec
from lookalike.models.training_checkpoint import read_checkpoint
from lookalike.pipeline.embedding import embed_images
from lookalike.pipeline.indexing import build_index, search_index
from lookalike.train.config import TrainConfig, check_config
from lookalike.train.epoch_artefacts import epoch_folder, results_file_name
from lookalike.train.run import run_training
from lookalike.utils.folders import verify_folder
from tiny_training import TINY_SETTINGS

K = 5


def write_split(root: Path) -> Path:
    """A query/gallery competition: 4 train classes x 6 images; 4 test classes with 2 queries
    and 4 gallery images each, plus 2 unlabelled gallery distractors. File names are unique."""
    rng = np.random.default_rng(1)
    rows = []
    for c in range(8):
        colour = rng.integers(0, 255, 3)
        roles = ["train"] * 6 if c < 4 else ["query"] * 2 + ["gallery"] * 4
        for i, role in enumerate(roles):
            folder = root / role / f"c{c}"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{role}_c{c}_{i}.png"
            pixels = np.clip(colour + rng.integers(-70, 70, (32, 32, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(path)
            rows.append((str(path), f"c{c}", role))
    for i in range(2):
        path = root / "gallery" / f"distractor_{i}.png"
        Image.fromarray(rng.integers(0, 255, (32, 32, 3)).astype(np.uint8)).save(path)
        rows.append((str(path), "", "gallery"))
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split"])
        writer.writerows(rows)
    return manifest


def split_config(manifest: Path, output: Path, *overrides: str) -> TrainConfig:
    return resolve_config(
        TrainConfig,
        overrides=[
            f"data.source=csv:{manifest}",
            "data.protocol=given",
            "data.val_split=test",
            *TINY_SETTINGS,
            "optim.lr=1e-3",
            "optim.head_lr=1e-2",
            "trainer.keep_every_epoch=true",
            f"trainer.results_k={K}",
            "trainer.val_k=[1,2,3]",
            "trainer.precision_k=[2,3]",
            "trainer.monitor=recall@2",
            f"output={output}",
            *overrides,
        ],
    )


def history(out: Path) -> list[dict[str, str]]:
    with open(out / "history.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def reference_search(ckpt: Path, data: Path, work: Path) -> tuple[dict[str, list[str]], dict]:
    """``lookalike embed`` of the gallery and ``lookalike search`` of the queries with the
    epoch's checkpoint, as a user would run them: query name -> gallery names, and the JSON."""
    model = ModelSpec(checkpoint=str(ckpt))
    embed = EmbedSpec(batch_size=4, num_workers=0, device="cpu")
    source = f"csv:{data / 'manifest.csv'}"
    gallery = embed_images(source, None, split="gallery", model=model, embed=embed)
    _, index = build_index(gallery, work / "index", kind="flat", metric="cosine")
    queries = embed_images(source, None, split="query", model=model, embed=embed)
    search_index(index, queries, work / "results.json", k=K, use_threshold=False)
    table = json.loads((work / "results.json").read_text())
    named = {
        Path(queries.paths[queries.ids.index(query)]).name: [
            Path(entry["gallery_path"]).name for entry in entries
        ]
        for query, entries in table.items()
    }
    return named, table


@pytest.mark.slow
def test_every_epoch_keeps_its_checkpoint_metrics_and_the_results_search_gives(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    manifest = write_split(data)
    out = tmp_path / "run"
    config = split_config(manifest, out)
    outcome = run_training(config)
    assert outcome.epochs == 3

    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["best.ckpt", "epoch_0.ckpt", "epoch_1.ckpt", "epoch_2.ckpt", "last.ckpt"]
    rows = history(out)
    # validation at the configured K lists only, in history.csv and in every epoch's metrics
    assert {"val/recall@1", "val/recall@2", "val/recall@3", "val/precision@2",
            "val/precision@3"} <= set(rows[0])
    assert "val/recall@5" not in rows[0] and "val/precision@10" not in rows[0]

    with open(manifest, newline="") as handle:
        labels = {Path(r[0]).name: r[1] or None for r in csv.reader(handle) if r[0] != "path"}
    previous_weights = None
    every_results = []
    for epoch in range(3):
        ckpt = out / "checkpoints" / f"epoch_{epoch}.ckpt"
        assert read_checkpoint(ckpt)["epoch"] == epoch
        weights = torch.cat([t.flatten() for t in read_checkpoint(ckpt)["state_dict"].values()
                             if t.is_floating_point()])
        if previous_weights is not None:  # each epoch's checkpoint is its own model
            assert not torch.equal(weights, previous_weights)
        previous_weights = weights

        folder = epoch_folder(out, epoch)
        verify_folder(folder, kind="epoch")
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["epoch"] == epoch
        for key in ("recall@1", "recall@2", "recall@3", "precision@2", "precision@3", "map@r"):
            assert metrics[key] == pytest.approx(float(rows[epoch][f"val/{key}"]), abs=1e-6)

        results = json.loads((folder / results_file_name(epoch)).read_text())
        every_results.append(results)
        reference, _ = reference_search(ckpt, data, tmp_path / f"ref{epoch}")
        assert set(results) == set(reference) and len(results) == 8
        assert results == reference

        # the epoch's metrics follow from the searched ranking (distractors are never relevant)
        recall = {k: [] for k in (1, 2, 3)}
        precision = {k: [] for k in (2, 3)}
        for query, ranked in reference.items():
            hits = [labels[name] == labels[query] for name in ranked]
            for k, found in recall.items():
                found.append(any(hits[:k]))
            for k, fractions in precision.items():
                fractions.append(sum(hits[:k]) / k)
        for k, values in recall.items():
            assert metrics[f"recall@{k}"] == pytest.approx(np.mean(values), abs=1e-9)
        for k, values in precision.items():
            assert metrics[f"precision@{k}"] == pytest.approx(np.mean(values), abs=1e-9)

    # the epochs rank differently, so comparing each with its own checkpoint's search tells them apart
    assert every_results[0] != every_results[2]
    # the monitored metric picked the best checkpoint
    scores = [float(row["val/recall@2"]) for row in rows]
    assert outcome.best_epoch == int(np.argmax(scores))

    # resume: a run killed during epoch 2 (epoch 1 its last finished) rewrites epoch 2 alike
    kept = (epoch_folder(out, 2) / results_file_name(2)).read_text()
    shutil.rmtree(epoch_folder(out, 2))
    (out / "checkpoints" / "epoch_2.ckpt").unlink()
    shutil.copy(out / "checkpoints" / "epoch_1.ckpt", out / "checkpoints" / "last.ckpt")
    # an epoch an earlier, longer run left in the folder is not this run's: it goes
    stale = epoch_folder(out, 7)
    shutil.copytree(epoch_folder(out, 1), stale)
    kept_1 = (epoch_folder(out, 1) / results_file_name(1)).read_text()
    run_training(config)
    assert not stale.exists()
    assert (epoch_folder(out, 1) / results_file_name(1)).read_text() == kept_1
    verify_folder(epoch_folder(out, 2), kind="epoch")
    assert (epoch_folder(out, 2) / results_file_name(2)).read_text() == kept
    assert (out / "checkpoints" / "epoch_2.ckpt").is_file()
    assert [row["epoch"] for row in history(out)] == ["0.0", "1.0", "2.0"]


def test_repeated_file_names_are_refused_before_training(tmp_path: Path) -> None:
    data = tmp_path / "data"
    manifest = write_split(data)
    # a second gallery image named like the first, in another folder
    first = data / "gallery" / "c4" / "gallery_c4_2.png"
    twin = data / "gallery" / "c5" / "gallery_c4_2.png"
    shutil.copy(first, twin)
    with open(manifest, "a", newline="") as handle:
        csv.writer(handle).writerow([str(twin), "c5", "gallery"])
    config = split_config(manifest, tmp_path / "run")
    with pytest.raises(ValueError, match=r"'gallery_c4_2.png' appears more than once .*"
                       r"c4/gallery_c4_2.png and .*c5/gallery_c4_2.png.*names='relpath'"):
        run_training(config)
    assert not (tmp_path / "run" / "checkpoints" / "epoch_0.ckpt").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.val_k=[0,5]"], "trainer.val_k must be a list of positive integers"),
        (["trainer.val_k=[]"], "trainer.val_k must be a list of positive integers"),
        (["trainer.precision_k=[-1]"], "trainer.precision_k must be a list of positive"),
        (["trainer.monitor=recall@5"], "trainer.monitor 'recall@5' is not a validation metric"),
        (["trainer.results_names=path"], "unknown trainer.results_names 'path'"),
        (["trainer.results_k=0"], "trainer.results_k must be >= 1"),
    ],
)
def test_bad_validation_settings_are_one_line_errors(
    tmp_path: Path, overrides: list[str], message: str
) -> None:
    config = split_config(tmp_path / "manifest.csv", tmp_path / "run", *overrides)
    with pytest.raises(ValueError, match=message):
        check_config(config)


def test_default_cutoffs_accept_every_reported_key(tmp_path: Path) -> None:
    for monitor in ("map@r", "recall@10", "precision@10", "map@5", "weighted_topk", "n_queries"):
        config = split_config(tmp_path / "m.csv", tmp_path / "run", "trainer.val_k=[1,5,10]",
                              "trainer.precision_k=[10]", f"trainer.monitor={monitor}")
        check_config(config)
