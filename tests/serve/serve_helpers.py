"""Helpers of the server tests: the tiny CLIP, generated images, and real servers on
127.0.0.1 (uvicorn in a thread, or ``lookalike serve`` in a subprocess)."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
import uvicorn
from PIL import Image

from lookalike.models import Embedder, create_embedder

CLIP_ARCH = "open_clip:ViT-B-32"
# A CLIP of a few thousand parameters per tower (random weights: nothing is downloaded); its
# tokenizer is ViT-B-32's, so the text tower keeps the 77-token, 49408-word vocabulary.
TINY_CLIP: dict[str, Any] = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
CLASSES = {"cat": (200, 30, 30), "dog": (30, 200, 30), "fox": (30, 30, 200)}
PER_CLASS = 4
REPO = Path(__file__).resolve().parents[2]


def build_tiny_clip() -> Embedder:
    torch.manual_seed(0)
    return create_embedder(CLIP_ARCH, weights=None, **TINY_CLIP).eval()


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def noise_png(seed: int, size: tuple[int, int] = (40, 48)) -> bytes:
    """A PNG of random pixels: different seeds embed to clearly different vectors."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return png_bytes(Image.fromarray(pixels))


def write_catalogue_images(root: Path) -> Path:
    """3 classes x 4 images: a class colour under heavy noise, so each image is distinct."""
    rng = np.random.default_rng(0)
    for name, colour in CLASSES.items():
        (root / name).mkdir(parents=True)
        for i in range(PER_CLASS):
            noise = rng.integers(-90, 90, (40, 48, 3))
            pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{name}_{i}.png")
    return root


def catalogue_image(catalogue: Path, name: str = "cat", number: int = 0) -> bytes:
    return (catalogue / name / f"{name}_{number}.png").read_bytes()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """Run ``app`` with a real uvicorn on 127.0.0.1 (an ephemeral port); yield its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def start_server_process(
    index_dir: Path, port: int, *arguments: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``lookalike serve INDEX_DIR --port PORT ...`` in a subprocess (its output in a file)."""
    command = [sys.executable, "-m", "lookalike.cli.main", "serve", str(index_dir),
               "--port", str(port), "--log-level", "warning", *arguments]  # fmt: skip
    environment = {**os.environ, **(env or {})}
    with open(index_dir.parent / f"server-{port}.log", "wb") as log:  # the child keeps its copy
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    """Poll ``/readyz`` until it answers 200; fail if the process dies first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the server at {url} was not ready after {timeout} s")


def kill_hard(process: subprocess.Popen[bytes]) -> None:
    """``kill -9`` and reap."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(30)
