"""Fixtures of the server tests: a tiny random-weight CLIP model, a small catalogue it embedded,
and an app over a fresh copy of that catalogue for each test."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from serve_helpers import build_tiny_clip, write_catalogue_images

from lookalike import EmbedSpec, build_index, embed_images
from lookalike.models import Embedder, save_embedder
from lookalike.serve import ServeSettings, create_app


@pytest.fixture(scope="session")
def tiny_clip() -> Embedder:
    """The tiny random-weight CLIP embedder (image and text towers)."""
    return build_tiny_clip()


@pytest.fixture(scope="session")
def clip_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_clip: Embedder) -> Path:
    """The tiny CLIP saved as a model folder (what ``--checkpoint`` loads)."""
    return save_embedder(tiny_clip, tmp_path_factory.mktemp("model") / "tiny_clip")


@pytest.fixture(scope="session")
def catalogue_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_catalogue_images(tmp_path_factory.mktemp("catalogue") / "images")


@pytest.fixture(scope="session")
def clip_index_template(
    tmp_path_factory: pytest.TempPathFactory, tiny_clip: Embedder, catalogue_images: Path
) -> Path:
    """A flat cosine index of the 12 catalogue images, embedded by the tiny CLIP."""
    gallery = embed_images(
        catalogue_images, None, model=tiny_clip, embed=EmbedSpec(num_workers=0, device="cpu")
    )
    _, folder = build_index(gallery, tmp_path_factory.mktemp("index") / "index", kind="flat")
    return folder


@pytest.fixture
def clip_index(tmp_path: Path, clip_index_template: Path) -> Path:
    """A fresh copy of the catalogue's index (tests add, delete and compact in it)."""
    return Path(shutil.copytree(clip_index_template, tmp_path / "index"))


ClientFactory = Callable[..., Any]


@pytest.fixture
def make_client(tiny_clip: Embedder) -> Iterator[ClientFactory]:
    """``make_client(index_dir, model=tiny_clip, **settings)``: a context manager giving a
    TestClient of a fresh app (lifespan run, so the batchers work and the journal closes)."""

    @contextmanager
    def factory(index_dir: Path, model: Any = "tiny", **settings: Any) -> Iterator[TestClient]:
        app = create_app(
            index_dir,
            model=tiny_clip if model == "tiny" else model,
            settings=ServeSettings(
                **{"batch_wait_ms": 1.0, "token": "", "device": "cpu", **settings}
            ),
        )
        with TestClient(app) as client:
            yield client

    yield factory


@pytest.fixture
def clip_client(make_client: ClientFactory, clip_index: Path) -> Iterator[TestClient]:
    """A client of the tiny CLIP catalogue with default settings."""
    with make_client(clip_index) as client:
        yield client
