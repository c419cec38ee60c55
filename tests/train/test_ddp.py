"""DDP for real: ``lookalike train`` on two CPU processes (gloo) ends with the weights and the
validation metrics of one process training on the same global batches.

Two processes of 4 images each against one process of 8: the sampler gives rank ``r`` the
``r``-th half of the batch one process would draw, the loss sees the gathered global batch (a
pair loss plus ArcFace, whose class centres are the loss's own parameters), and validation
gathers both ranks' embeddings back into dataset order (an odd number of val images, so the
ranks' shares differ) before ranking.
"""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from lookalike.config import resolve_config
from lookalike.data.protocols import make_split
from lookalike.data.sources import load_source
from lookalike.models.spec import build_embedder
from lookalike.train.config import TrainConfig
from lookalike.train.run import run_training
from tiny_training import write_images

LOOKALIKE = Path(sys.executable).with_name("lookalike")

# ArcFace (per-image terms, its class centres train) + multi-similarity (couples every pair of
# the batch: on half a batch it is a different loss); no dropout, no augmentation, GroupNorm.
CONFIG = {
    "model": {"backbone": "timm:test_efficientnet_gn", "weights": "none", "head": "linear:16"},
    "data": {
        "protocol_args": {"train_fraction": 0.75, "val_fraction": 0.34},
        "image_size": 32,
        "m": 2,
        "num_workers": 0,
        "augment": "none",
        "val_batch_size": 4,
    },
    "loss": {
        "name": "hybrid",
        "parts": [{"name": "arcface"}, {"name": "multi_similarity", "weight": 0.5}],
    },
    "optim": {"name": "adamw", "lr": 1e-3, "head_lr": 1e-2, "loss_lr": 1e-2},
    "trainer": {
        "max_epochs": 2,
        "deterministic": True,
        "accelerator": "cpu",
        "loggers": ["csv"],
    },
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def final_state(run: Path) -> dict[str, torch.Tensor]:
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu",
                            weights_only=False)
    return {key: value.float() for key, value in checkpoint["state_dict"].items()}


def validation_rows(run: Path) -> list[dict[str, float]]:
    with open(run / "history.csv", newline="") as handle:
        return [
            {key: float(value) for key, value in row.items() if key.startswith("val/") and value}
            for row in csv.DictReader(handle)
        ]


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_on_the_same_global_batch(tmp_path: Path) -> None:
    images = write_images(tmp_path / "img")
    for c in (1, 3, 5, 7):  # a 7th image in half the classes: the val set has an odd size
        Image.open(images / f"c{c}" / "0.png").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(
            images / f"c{c}" / "6.png"
        )
    config_file = tmp_path / "ddp.yaml"
    config_file.write_text(yaml.safe_dump(CONFIG))
    source = f"data.source=folder:{images}"
    split = make_split(load_source(f"folder:{images}"), "class_disjoint",
                       **CONFIG["data"]["protocol_args"])
    assert len(split.val) % 2 == 1 and len(split.train) >= 16

    single = resolve_config(
        TrainConfig, config_file,
        [source, "data.batch_size=8", "trainer.devices=1", f"output={tmp_path / 'single'}"],
    )
    run_training(single)

    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    done = subprocess.run(
        [str(LOOKALIKE), "train", "--config", str(config_file), "--no-test", "--no-report",
         "-o", str(tmp_path / "ddp"), source, "data.batch_size=4", "trainer.devices=2",
         "trainer.strategy=ddp"],
        check=False, env=env, capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in done.stdout + done.stderr

    one, two = final_state(tmp_path / "single"), final_state(tmp_path / "ddp")
    assert one.keys() == two.keys()
    L.seed_everything(single.trainer.seed, workers=True, verbose=False)  # as run_training does
    start = {f"embedder.{k}": v.float() for k, v in build_embedder(single.model).state_dict().items()}
    assert start.keys() <= one.keys()
    moved = max(float((one[key] - start[key]).abs().max()) for key in start)
    assert moved > 1e-2  # training moved the weights far beyond the tolerance below
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5, msg=key)

    # every epoch's validation: the same metrics from the two ranks' gathered embeddings
    single_rows, ddp_rows = validation_rows(tmp_path / "single"), validation_rows(tmp_path / "ddp")
    assert len(single_rows) == len(ddp_rows) == 2
    assert single_rows[0]["val/n_queries"] == len(split.val)
    for expected, found in zip(single_rows, ddp_rows, strict=True):
        assert found.keys() == expected.keys()
        assert np.allclose([found[k] for k in expected], list(expected.values()), atol=1e-6)
