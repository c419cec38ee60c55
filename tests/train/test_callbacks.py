"""Atomic checkpoints, a .ckpt alone rebuilding the embedder, and the history with its curves."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from lookalike.losses import create_loss
from lookalike.models import create_embedder, load_embedder
from lookalike.models.preprocessing import Preprocessing
from lookalike.models.training_checkpoint import load_embedder_from_checkpoint, read_checkpoint
from lookalike.train import callbacks
from lookalike.train.callbacks import (
    AtomicCheckpointIO,
    HistoryCallback,
    plot_curves,
    remove_stale_temporaries,
)
from lookalike.train.dataset import collate_train
from lookalike.train.export import export_checkpoint
from lookalike.train.finetune import FinetuneSpec
from lookalike.train.module import RetrievalModule
from lookalike.train.optim import OptimSpec


def test_failed_checkpoint_write_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    io = AtomicCheckpointIO()
    target = tmp_path / "ckpt" / "last.ckpt"
    io.save_checkpoint({"step": torch.tensor(1)}, target)
    before = target.read_bytes()

    def torn_save(obj: object, path: Path) -> None:
        Path(path).write_bytes(before[: len(before) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(callbacks.torch, "save", torn_save)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"step": torch.tensor(2)}, target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]
    monkeypatch.undo()
    io.save_checkpoint({"step": torch.tensor(3)}, target)
    assert int(torch.load(target, weights_only=True)["step"]) == 3


def test_stale_temporaries_of_a_killed_write_are_removed(tmp_path: Path) -> None:
    (tmp_path / ".last.ckpt.a1b2.tmp").write_bytes(b"half")
    (tmp_path / "best.ckpt").write_bytes(b"whole")
    removed = remove_stale_temporaries(tmp_path)
    assert [p.name for p in removed] == [".last.ckpt.a1b2.tmp"]
    assert [p.name for p in tmp_path.iterdir()] == ["best.ckpt"]
    assert remove_stale_temporaries(tmp_path / "absent") == []


def trained_checkpoint(
    tmp_path: Path, backbone: str, finetune: FinetuneSpec
) -> tuple[RetrievalModule, Path]:
    torch.manual_seed(0)
    embedder = create_embedder(backbone, weights=None, head="linear:16")
    embedder.preprocessing = Preprocessing(input_size=32, mean=(0.4, 0.5, 0.6), crop_pct=1.0)
    loss = create_loss("arcface", embedding_dim=16, num_classes=3)
    optim = OptimSpec(lr=1e-2, head_lr=1e-2, schedule="constant")
    module = RetrievalModule(embedder, loss, finetune, optim)
    images = torch.randn(6, 3, 32, 32)
    items = [{"image": images[i], "index": i, "label": i % 3} for i in range(6)]
    trainer = L.Trainer(
        accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, plugins=[AtomicCheckpointIO()],
    )
    trainer.fit(module, DataLoader(items, batch_size=3, collate_fn=collate_train))
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    return module, path


def test_a_checkpoint_alone_rebuilds_the_embedder(tmp_path: Path) -> None:
    spec = FinetuneSpec("last_n", last_n=1)
    module, path = trained_checkpoint(tmp_path, "timm:test_resnet", spec)
    rebuilt = load_embedder_from_checkpoint(path)
    trained = module.embedder.eval()
    assert rebuilt.preprocessing == trained.preprocessing
    assert rebuilt.config == trained.config
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(images), trained(images), rtol=0, atol=0)
    assert rebuilt.fingerprint() == trained.fingerprint()

    assert load_embedder(path).fingerprint() == trained.fingerprint()
    folder = export_checkpoint(path, tmp_path / "exported")
    loaded = load_embedder(folder)
    assert loaded.fingerprint() == trained.fingerprint()
    with pytest.raises(ValueError, match="not a lookalike training checkpoint"):
        torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
        read_checkpoint(tmp_path / "other.ckpt")
    with pytest.raises(FileNotFoundError):
        load_embedder_from_checkpoint(tmp_path / "missing.ckpt")


def test_a_lora_checkpoint_rebuilds_the_merged_embedder(tmp_path: Path) -> None:
    module, path = trained_checkpoint(tmp_path, "timm:test_vit", FinetuneSpec("lora", lora_r=2))
    assert any("lora_" in key for key in read_checkpoint(path)["state_dict"])
    rebuilt = load_embedder_from_checkpoint(path)
    assert not any("lora_" in key for key in rebuilt.state_dict())
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = module.embedder.eval()(images)
        torch.testing.assert_close(rebuilt(images), expected, rtol=1e-4, atol=1e-5)
    plain = create_embedder("timm:test_vit", weights=None, head="linear:16")
    with torch.no_grad():
        assert not torch.allclose(plain(images), expected, atol=1e-3)


def test_history_writes_csv_and_png_and_survives_a_state_round_trip(tmp_path: Path) -> None:
    history = HistoryCallback(tmp_path)
    history.rows = [
        {"epoch": 0.0, "train/loss": 2.0, "val/map@r": 0.1, "val/n_queries": 4.0,
         "lr/group0": 1e-3},
        {"epoch": 1.0, "train/loss": 1.5, "lr/group0": 5e-4},
        {"epoch": 2.0, "train/loss": 1.0, "val/map@r": 0.3, "val/n_queries": 4.0, "lr/group0": 0.0},
    ]
    history.write()
    with open(tmp_path / "history.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["val/map@r"] for row in rows] == ["0.1", "", "0.3"]
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    restored = HistoryCallback(tmp_path)
    restored.load_state_dict(history.state_dict())
    assert restored.rows == history.rows
    assert plot_curves(history.rows[:1])[:4] == b"\x89PNG"
