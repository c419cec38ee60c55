"""CLIP's loss on image-caption pairs through ``run_training``: a manifest with a caption column,
a tiny open_clip model with random weights, two training steps.

The loss of the first batch is checked against a naive symmetric InfoNCE computed here from CLIP's
own image embedding (the visual tower's projected output), its own text embedding (``encode_text``
on open_clip's tokenizer) and the loss's temperature; then which parameters got gradients and moved,
as the fine-tuning strategy says.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from lookalike.models.spec import ModelSpec
from lookalike.train.config import DataSpec, TrainConfig, TrainerSpec
from lookalike.train.finetune import FinetuneSpec
from lookalike.train.module import RetrievalModule
from lookalike.train.run import run_training

ARCH = "ViT-B-32"
# the tokenizer of ViT-B-32 gives 77 tokens from a 49408-word vocabulary: the text tower keeps both
TINY_CLIP: dict[str, Any] = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
CAPTIONS = [
    "a red square", "a green circle", "a blue triangle", "a yellow star",
    "a black cat", "a white dog", "an orange fish", "a purple bird",
]  # fmt: skip
BATCH = 4
INIT_TEMPERATURE = 0.07


def write_manifest(root: Path) -> Path:
    """8 captioned training images and 2 evaluation images (32 px noise), as a CSV manifest."""
    rng = np.random.default_rng(0)
    rows = ["path,label,split,caption"]
    for i in range(len(CAPTIONS) + 2):
        pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"{i}.png")
        if i < len(CAPTIONS):
            rows.append(f"{i}.png,c{i % 2},train,{CAPTIONS[i]}")
        else:
            rows.append(f"{i}.png,c{i % 2},,")
    manifest = root / "captions.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def naive_symmetric_infonce(images: Tensor, texts: Tensor, scale: float) -> float:
    """Mean of the image->text and text->image cross-entropies against the diagonal, by loops."""
    logits = (scale * images.double() @ texts.double().T).tolist()
    batch = len(logits)
    image_to_text = sum(
        math.log(sum(math.exp(v) for v in logits[i])) - logits[i][i] for i in range(batch)
    )
    text_to_image = sum(
        math.log(sum(math.exp(logits[i][j]) for i in range(batch))) - logits[j][j]
        for j in range(batch)
    )
    return (image_to_text + text_to_image) / (2 * batch)


class Recorder:
    """Wraps ``RetrievalModule.training_step`` and ``on_after_backward`` to record, per step, the
    loss, the naive reference on the same batch and weights, and the gradients."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.module: RetrievalModule | None = None
        self.losses: list[float] = []
        self.references: list[float] = []
        self.scales: list[float] = []
        self.grads: list[dict[str, Tensor | None]] = []
        self.initial: dict[str, Tensor] = {}
        step, after_backward = RetrievalModule.training_step, RetrievalModule.on_after_backward

        def training_step(module: RetrievalModule, batch: dict[str, Any], index: int) -> Tensor:
            if self.module is None:
                self.module = module
                self.initial = {n: p.detach().clone() for n, p in module.named_parameters()}
            self.references.append(self.reference(module, batch))
            loss = step(module, batch, index)
            assert loss is not None
            self.losses.append(float(loss.detach()))
            return loss

        def on_after_backward(module: RetrievalModule) -> None:
            self.grads.append(
                {
                    name: None if p.grad is None else p.grad.detach().clone()
                    for name, p in module.named_parameters()
                }
            )
            after_backward(module)

        monkeypatch.setattr(RetrievalModule, "training_step", training_step)
        monkeypatch.setattr(RetrievalModule, "on_after_backward", on_after_backward)

    def reference(self, module: RetrievalModule, batch: dict[str, Any]) -> float:
        backbone = module.embedder.backbone
        with torch.no_grad():
            pooled, _ = backbone.model(batch["images"])  # CLIP's projected image embedding
            tokens = open_clip.get_tokenizer(ARCH)(batch["captions"])
            texts = backbone.text_model.encode_text(tokens, normalize=True)
            scale = min(float(module.loss.logit_scale.exp()), module.loss.max_scale)
        self.scales.append(scale)
        return naive_symmetric_infonce(F.normalize(pooled, dim=-1), texts, scale)


def clip_config(tmp_path: Path, strategy: str) -> TrainConfig:
    return TrainConfig(
        model=ModelSpec(
            backbone=f"open_clip:{ARCH}", pool="auto", head="none", weights="none",
            backbone_kwargs=TINY_CLIP,
        ),
        data=DataSpec(
            source=f"csv:{write_manifest(tmp_path)}", protocol="all_vs_all", val_split="none",
            batch_size=BATCH, num_workers=0, sampler="random", augment="weak",
        ),
        loss={"name": "clip", "pairs": "text", "init_temperature": INIT_TEMPERATURE},
        finetune=FinetuneSpec(strategy=strategy, lora_r=4),
        trainer=TrainerSpec(max_epochs=1, accelerator="cpu", devices=1, limit_train_batches=2),
        output=str(tmp_path / "run"),
    )  # fmt: skip


def _moved(recorder: Recorder, name: str) -> bool:
    assert recorder.module is not None
    current = dict(recorder.module.named_parameters())[name].detach()
    return not torch.equal(current, recorder.initial[name])


TEXT = "embedder.backbone.text_model."
TEMPERATURE = "loss.logit_scale"
UNUSED = {f"{TEXT}logit_scale"}  # CLIP's own scale: the loss's learned temperature replaces it


@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_clip_on_captions_matches_naive_infonce_and_trains_as_the_strategy_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, strategy: str
) -> None:
    recorder = Recorder(monkeypatch)
    outcome = run_training(clip_config(tmp_path, strategy))
    assert outcome.model_dir.is_dir()

    # (1) the loss of each batch is the naive symmetric InfoNCE of that batch
    assert len(recorder.losses) == 2
    assert recorder.scales[0] == pytest.approx(1 / INIT_TEMPERATURE, rel=1e-6)
    for loss, reference in zip(recorder.losses, recorder.references, strict=True):
        assert loss == pytest.approx(reference, rel=1e-5)
    assert recorder.scales[1] != recorder.scales[0]  # the temperature was stepped

    # (2) gradients reach what the strategy trains, and only that
    first = recorder.grads[0]
    module = recorder.module
    assert module is not None
    text = [n for n, _ in module.named_parameters() if n.startswith(TEXT) and n not in UNUSED]
    assert len(text) > 10
    assert first[TEMPERATURE] is not None and float(first[TEMPERATURE].abs()) > 0
    assert _moved(recorder, TEMPERATURE)
    if strategy == "full":
        for name in text:
            grad = first[name]
            assert grad is not None and grad.abs().sum() > 0, name
            assert _moved(recorder, name), name
    else:
        assert all(first[name] is None and not _moved(recorder, name) for name in text)
        adapters = [n for n in first if "lora_" in n]
        assert adapters and all(not n.startswith(TEXT) for n in adapters)
        assert all(_moved(recorder, n) for n in adapters)
    for name in UNUSED:
        assert first[name] is None
