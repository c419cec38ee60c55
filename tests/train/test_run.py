"""``run_training`` end to end: outputs, best checkpoint, early stopping, resume after SIGKILL,
and the example configs."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from lookalike.config import resolve_config, save_config
from lookalike.data.protocols import make_split
from lookalike.data.sources import load_source
from lookalike.losses import create_loss
from lookalike.models import load_embedder
from lookalike.models.training_checkpoint import load_embedder_from_checkpoint, read_checkpoint
from lookalike.train.config import TrainConfig, check_config
from lookalike.train.finetune import FINETUNE_STRATEGIES
from lookalike.train.optim import OPTIMIZERS, SCHEDULES
from lookalike.train.run import run_training
from naive_metrics import naive_retrieval_metrics
from tiny_training import tiny_config, write_images

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.mark.slow
def test_run_writes_outputs_and_the_best_checkpoint_follows_the_monitor(tmp_path: Path) -> None:
    config = tiny_config(write_images(tmp_path / "img"), tmp_path / "run")
    outcome = run_training(config)
    out = tmp_path / "run"
    for name in ("config.yaml", "metrics.json", "history.csv", "curves.png", "run.json"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert resolve_config(TrainConfig, out / "config.yaml") == config

    history = outcome_history(out)
    assert [row["epoch"] for row in history] == [0, 1, 2] and outcome.epochs == 3
    scores = [row["val/map@r"] for row in history]
    assert outcome.best_epoch == int(np.argmax(scores))  # first of equal maxima
    assert read_checkpoint(outcome.best_checkpoint)["epoch"] == outcome.best_epoch
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == pytest.approx(
        {
            key.removeprefix("val/"): value
            for key, value in history[outcome.best_epoch].items()
            if key.startswith("val/")
        }
    )
    run = json.loads((out / "run.json").read_text())
    assert run["kind"] == "train" and run["best_epoch"] == outcome.best_epoch

    # the exported model is the best checkpoint, and its val metrics are the logged ones: the val
    # images (class_disjoint: 2 held-out classes, all against all) embedded one by one with the
    # model's eval transform, then scored by the naive reference
    best = load_embedder_from_checkpoint(outcome.best_checkpoint)
    exported = load_embedder(outcome.model_dir)
    assert exported.fingerprint() == best.fingerprint()
    assert exported.preprocessing.input_size == 32
    images = load_source(config.data.source)
    split = make_split(images, config.data.protocol, **config.data.protocol_args)
    assert config.data.protocol == "class_disjoint" and config.data.val_split == "val"
    val = split.val.records
    assert len(val) == 12 and len({r.label for r in val}) == 2
    transform = exported.eval_transform()
    exported.eval()
    with torch.no_grad():
        embeddings = torch.cat(
            [exported(transform(Image.open(r.path).convert("RGB"))[None]) for r in val]
        ).numpy()
    ids, labels = [r.id for r in val], [r.label for r in val]
    expected = naive_retrieval_metrics(
        embeddings, labels, embeddings, labels, query_ids=ids, gallery_ids=ids
    )
    assert expected["n_queries"] == 12 and expected["n_queries_without_positives"] == 0
    assert {key: metrics[key] for key in expected} == pytest.approx(expected, abs=1e-6)


def outcome_history(out: Path) -> list[dict[str, float]]:
    import csv

    with open(out / "history.csv", newline="") as handle:
        return [
            {k: (int(float(v)) if k == "epoch" else float(v)) for k, v in row.items() if v != ""}
            for row in csv.DictReader(handle)
        ]


@pytest.mark.slow
def test_early_stopping_stops_when_the_monitor_stops_improving(tmp_path: Path) -> None:
    # n_queries never changes: epoch 0 sets the best, epoch 1 does not improve, patience 1
    config = tiny_config(
        write_images(tmp_path / "img"), tmp_path / "run",
        "trainer.monitor=n_queries", "trainer.early_stopping_patience=1", "trainer.max_epochs=6",
    )
    outcome = run_training(config)
    assert outcome.stopped_early
    assert outcome.epochs == 2
    assert outcome.best_epoch == 0
    assert outcome.metrics["n_queries"] == 12


RESUME_SCRIPT = """
import sys, time, torch
torch.set_num_threads(1)
from lookalike.config import resolve_config
from lookalike.train import callbacks
from lookalike.train.config import TrainConfig
from lookalike.train.run import run_training

save = callbacks.AtomicCheckpointIO.save_checkpoint
def save_then_stall(self, checkpoint, path, storage_options=None):
    save(self, checkpoint, path, storage_options)
    if str(path).endswith("last.ckpt"):
        time.sleep(600)  # killed here, after the first epoch's checkpoint
callbacks.AtomicCheckpointIO.save_checkpoint = save_then_stall
run_training(resolve_config(TrainConfig, sys.argv[1]))
"""


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_to_the_same_final_weights(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    images = write_images(tmp_path / "img")
    # dropout-free model, but augmentation, sampling and the ArcFace centres all draw randomness
    options = ("data.augment=strong", "optim.warmup_steps=2")
    straight = run_training(tiny_config(images, tmp_path / "straight", *options))

    killed_config = tiny_config(images, tmp_path / "killed", *options)
    save_config(killed_config, tmp_path / "killed.yaml")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    process = subprocess.Popen(
        [sys.executable, "-c", RESUME_SCRIPT, str(tmp_path / "killed.yaml")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not last.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    _, stderr = process.communicate()
    assert last.is_file(), stderr.decode()[-2000:]
    assert process.returncode == -signal.SIGKILL
    assert read_checkpoint(last)["epoch"] == 0
    assert not (tmp_path / "killed" / "run.json").exists()
    (last.parent / ".last.ckpt.x1y2.tmp").write_bytes(b"torn")  # as a kill mid-write leaves

    with caplog.at_level(logging.DEBUG, logger="lookalike.train.module"):
        resumed = run_training(killed_config)
    started = [r.getMessage() for r in caplog.records if r.getMessage().endswith(" starts")]
    assert started == ["epoch 1 starts", "epoch 2 starts"]  # resumed, not retrained from 0
    assert resumed.epochs == straight.epochs == 3
    assert sorted(p.name for p in last.parent.iterdir()) == ["best.ckpt", "last.ckpt"]
    final = read_checkpoint(last)["state_dict"]
    reference = read_checkpoint(straight.last_checkpoint)["state_dict"]
    assert final.keys() == reference.keys()
    for key in reference:
        torch.testing.assert_close(final[key], reference[key], rtol=0, atol=0, msg=key)
    assert outcome_history(tmp_path / "killed") == outcome_history(tmp_path / "straight")


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_config_resolves(path: Path) -> None:
    config = resolve_config(TrainConfig, path)
    check_config(config)
    assert yaml.safe_load(path.read_text())["output"] == config.output
    create_loss(config.loss, embedding_dim=8, num_classes=5)
    assert config.finetune.strategy in FINETUNE_STRATEGIES
    assert config.optim.name in OPTIMIZERS and config.optim.schedule in SCHEDULES


def test_there_is_a_config_per_recipe() -> None:
    names = {p.stem for p in CONFIGS.glob("*.yaml")}
    assert {
        "frozen_clip_linear", "cnn_gem_arcface", "vit_triplet_hard", "clip_image_text",
        "hybrid_ce_contrastive", "caltech101_lite0",
    } <= names


def test_bad_settings_fail_with_one_line(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, tmp_path / "run", "data.sampler=balanced")
    with pytest.raises(ValueError, match="data.sampler 'balanced'; valid: random, m_per_class"):
        run_training(config)
    with pytest.raises(ValueError, match="multiple of data.m"):
        check_config(tiny_config(tmp_path, tmp_path / "run", "data.m=3"))
    with pytest.raises(ValueError, match="data.source is not set"):
        check_config(TrainConfig())


@pytest.mark.parametrize("path", sorted((CONFIGS / "spaces").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_search_space_names_real_config_keys(path: Path) -> None:
    from lookalike.pipeline.sweep_space import load_space

    params = load_space(path)
    assert params, f"{path} defines no parameter"
