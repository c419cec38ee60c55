"""Training the head on cached backbone features trains exactly as the image path does (same
head weights, same val metrics, same exported embedder), and is used only where it would."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from lookalike.models import load_embedder
from lookalike.models.embedder import create_embedder
from lookalike.models.spec import build_embedder
from lookalike.runs import FEATURE_CACHE_DIR
from lookalike.train import cached_features, frozen_features, run
from lookalike.train.cache_policy import cache_setting
from lookalike.train.cached_features import CachedFeatureDataModule, CachedFeatureModule
from lookalike.train.config import check_config
from lookalike.train.finetune import FinetuneSpec, apply_finetune
from lookalike.train.frozen_features import PooledFeatures
from lookalike.train.run import run_training
from lookalike.utils.folders import verify_folder
from tiny_training import tiny_config, write_images

FROZEN_PLAIN = ("finetune.strategy=frozen", "data.augment=none", "trainer.max_epochs=2")


def history(output: Path) -> list[dict[str, str]]:
    with (output / "history.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_cached_features_train_the_same_head_as_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = write_images(tmp_path / "img")
    embedded: list[int] = []
    embed = cached_features.embed_features

    def counting(stem: PooledFeatures, image_set, config, device, folder):  # type: ignore[no-untyped-def]
        embedded.append(len(image_set))
        return embed(stem, image_set, config, device, folder)

    monkeypatch.setattr(cached_features, "embed_features", counting)
    on_images = run_training(
        tiny_config(images, tmp_path / "images", *FROZEN_PLAIN, "trainer.cache_features=false")
    )
    assert embedded == []
    on_features = run_training(
        tiny_config(images, tmp_path / "features", *FROZEN_PLAIN, "trainer.cache_features=true")
    )
    assert embedded == [24, 12]  # the train and val images, once each

    a, b = load_embedder(on_images.model_dir), load_embedder(on_features.model_dir)
    # the exported model is the whole embedder: the same frozen backbone, the head trained alike
    for (name, left), (_, right) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        torch.testing.assert_close(left, right, rtol=1e-4, atol=1e-5, msg=name)
    L.seed_everything(0, verbose=False)  # the run's seed: the weights it started from
    initial = build_embedder(tiny_config(images, tmp_path / "unused").model)
    for name, value in initial.backbone.state_dict().items():
        torch.testing.assert_close(b.backbone.state_dict()[name], value, rtol=0, atol=0)
    for name, value in initial.head.state_dict().items():
        assert not torch.allclose(b.head.state_dict()[name], value), f"head {name} did not train"

    rows_a, rows_b = history(tmp_path / "images"), history(tmp_path / "features")
    assert len(rows_a) == len(rows_b) == 2
    for row_a, row_b in zip(rows_a, rows_b, strict=True):
        for key in ("val/map@r", "val/recall@1", "val/map", "train/loss"):
            assert float(row_a[key]) == pytest.approx(float(row_b[key]), rel=1e-4, abs=1e-6), key
    assert on_images.metrics == pytest.approx(on_features.metrics, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize(
    ("overrides", "cached"),
    [
        (FROZEN_PLAIN, True),
        ((*FROZEN_PLAIN, "trainer.cache_features=false"), False),
        (("finetune.strategy=frozen", "data.augment=weak"), False),
        (("finetune.strategy=full", "data.augment=none"), False),
        ((*FROZEN_PLAIN, "finetune.train_norm_layers=true"), False),
        ((*FROZEN_PLAIN, "model.pool=gem"), False),
        ((*FROZEN_PLAIN, "data.two_views=true"), False),
    ],
)
def test_auto_caches_only_where_training_stays_the_same(
    tmp_path: Path, overrides: tuple[str, ...], cached: bool
) -> None:
    config = tiny_config(write_images(tmp_path / "img"), tmp_path / "run", *overrides)
    module, datamodule = run._build_module_and_data(config)
    assert isinstance(module, CachedFeatureModule) is cached
    assert isinstance(datamodule, CachedFeatureDataModule) is cached
    if cached:
        batch = next(iter(datamodule.train_dataloader()))
        assert batch["images"].shape == (8, module.embedder.backbone.feature_dim)
        assert batch["labels"].shape == (8,)


def test_cache_true_names_the_setting_that_prevents_it(tmp_path: Path) -> None:
    config = tiny_config(
        write_images(tmp_path / "img"), tmp_path / "run", "finetune.strategy=frozen",
        "data.augment=weak", "trainer.cache_features=true",
    )
    with pytest.raises(ValueError, match=r"cache_features=true but data.augment is 'weak'"):
        run._build_module_and_data(config)


def test_cache_setting_values(tmp_path: Path) -> None:
    assert [cache_setting(v) for v in ("auto", True, "False", " TRUE ")] == [
        "auto", "true", "false", "true",
    ]
    with pytest.raises(ValueError, match="trainer.cache_features"):
        cache_setting("sometimes")
    config = tiny_config(tmp_path, tmp_path / "run", "trainer.cache_features=sometimes")
    with pytest.raises(ValueError, match="unknown trainer.cache_features 'sometimes'"):
        check_config(config)


def test_a_backbone_random_in_training_mode_is_found_and_cached_only_when_asked(
    tmp_path: Path,
) -> None:
    # EfficientNet-Lite applies drop connect functionally (no module to find): the probe sees it
    lite = create_embedder("efficientnet_lite:lite0", weights=None, head="linear:8")
    lite.preprocessing = replace(lite.preprocessing, input_size=64)
    apply_finetune(lite, FinetuneSpec(strategy="frozen"))
    state = torch.random.get_rng_state()
    assert "random in training mode" in (frozen_features.stochastic_backbone(lite) or "")
    assert torch.equal(torch.random.get_rng_state(), state) and lite.training
    still = create_embedder("efficientnet_lite:lite0", weights=None, head="linear:8",
                            drop_connect_rate=0.0)
    still.preprocessing = replace(still.preprocessing, input_size=64)
    apply_finetune(still, FinetuneSpec(strategy="frozen"))
    assert frozen_features.stochastic_backbone(still) is None

    images = write_images(tmp_path / "img")
    lite_model = ("model.backbone=efficientnet_lite:lite0", "data.m=4")
    auto = tiny_config(images, tmp_path / "a", *FROZEN_PLAIN, *lite_model)
    assert not isinstance(run._build_module_and_data(auto)[0], CachedFeatureModule)
    asked = tiny_config(images, tmp_path / "b", *FROZEN_PLAIN, *lite_model,
                        "trainer.cache_features=true")
    assert isinstance(run._build_module_and_data(asked)[0], CachedFeatureModule)


def test_dropout_and_stochastic_depth_count_as_stochastic() -> None:
    class DropPath(nn.Module):  # timm's layer keeps its rate as drop_prob
        drop_prob = 0.1

    backbone = nn.Sequential(nn.Dropout(0.0), nn.Dropout2d(0.2), DropPath(), nn.Identity())
    assert frozen_features.stochastic_layers(backbone) == ["1", "2"]


def test_a_killed_cached_run_resumes_without_embedding_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = write_images(tmp_path / "img")
    config = tiny_config(images, tmp_path / "run", *FROZEN_PLAIN, "trainer.cache_features=true")
    cache = tmp_path / "run" / FEATURE_CACHE_DIR

    class Killed(Exception):
        pass

    def killed(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise Killed  # the process dies once the features are cached, before training

    with monkeypatch.context() as patch:
        patch.setattr(L.Trainer, "fit", killed)
        with pytest.raises(Killed):
            run_training(config)
    for split in ("train", "val"):
        verify_folder(cache / split, "embeddings")  # whole, verified embedding folders

    forwards: list[int] = []  # images the frozen backbone embeds (not its training-mode probe)
    embedding: list[bool] = []
    forward, embed = PooledFeatures.forward, cached_features.embed_image_set

    def counting(self, images):  # type: ignore[no-untyped-def]
        if embedding:
            forwards.append(len(images))
        return forward(self, images)

    def tracking(*args, **kwargs):  # type: ignore[no-untyped-def]
        embedding.append(True)
        try:
            return embed(*args, **kwargs)
        finally:
            embedding.pop()

    monkeypatch.setattr(PooledFeatures, "forward", counting)
    monkeypatch.setattr(cached_features, "embed_image_set", tracking)
    outcome = run_training(config)
    assert forwards == []  # every feature came from the cache the killed run left
    assert outcome.epochs == 2 and not cache.exists()  # removed once training ended
