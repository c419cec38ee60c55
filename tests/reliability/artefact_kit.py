"""What the reliability tests share: pristine artefacts made by the real CLI, ways to damage a file,
and the expectations a refused command must meet.

The artefacts are small but real: a saved model (resnet18 with random weights at 64 px), the
embedding folder ``lookalike embed`` writes with it (two shards), a flat and an exact index over
it, and the run folder ``lookalike evaluate`` writes (with its report).
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner, Result

from lookalike.cli.main import app
from lookalike.models import create_embedder, save_embedder
from lookalike.utils.folders import MANIFEST_FILE, partial_path, read_manifest

RUNNER = CliRunner()
DAMAGES = ("truncated", "zeroed", "bit-flipped", "deleted")
CPU = ["--workers", "0", "--device", "cpu"]
QUIET_EVALUATE = ["embed.num_workers=0", "embed.device=cpu", "report=false"]


@dataclass(frozen=True)
class Artefacts:
    """The pristine folders (never damaged: each case damages a copy)."""

    root: Path
    images: Path
    model: Path
    embeddings: Path
    flat_index: Path
    exact_index: Path
    run: Path


def invoke(*args: object) -> Result:
    """Run ``lookalike ARGS`` in this process."""
    return RUNNER.invoke(app, [str(a) for a in args])


def write_images(root: Path, classes: int = 4, per_class: int = 4) -> Path:
    """``classes`` x ``per_class`` noisy colour images of 40 x 32 px."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True)
        colour = rng.integers(0, 255, 3)
        for i in range(per_class):
            pixels = np.clip(colour + rng.integers(-40, 40, (32, 40, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(folder / f"c{c}_{i}.png")
    return root


def save_tiny_model(folder: Path) -> Path:
    """resnet18 with seeded random weights, evaluated at 64 px."""
    import torch

    torch.manual_seed(0)
    embedder = create_embedder("timm:resnet18", pool="gap", weights=None)
    embedder.preprocessing = replace(embedder.preprocessing, input_size=64)
    return save_embedder(embedder, folder)


def build_artefacts(root: Path) -> Artefacts:
    """Every artefact kind, written by the CLI as a user would."""
    images = write_images(root / "images")
    model = save_tiny_model(root / "model")
    embeddings, flat, exact, run = (root / name for name in ("emb", "idx_flat", "idx_exact", "run"))
    checked(invoke("embed", images, "-o", embeddings, "--checkpoint", model, *CPU,
                   "--batch-size", "4", "--shard-size", "8"))
    checked(invoke("index", embeddings, "-o", flat, "--threshold", "0.5"))
    checked(invoke("index", embeddings, "-o", exact, "--kind", "exact_torch", "--threshold", "0.5"))
    umap = sys.modules.get("umap", False)
    sys.modules["umap"] = None  # type: ignore[assignment]  # the PCA map: no numba compile
    try:
        checked(invoke("evaluate", "--embeddings", embeddings, "--protocol", "all_vs_all",
                       "-o", run, "embed.device=cpu", "k=3"))
    finally:
        if umap is False:
            del sys.modules["umap"]
        else:
            sys.modules["umap"] = umap  # type: ignore[assignment]
    return Artefacts(root, images, model, embeddings, flat, exact, run)


def checked(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


def artefact_files(folder: Path) -> list[str]:
    """Every file of a finished folder: those its manifest lists, and the manifest."""
    return [*sorted(read_manifest(folder).files), MANIFEST_FILE]


def damage(path: Path, how: str) -> None:
    """Damage one file in place: cut it in half, zero it, flip one bit, or delete it."""
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "zeroed":
        path.write_bytes(bytes(len(data)))
    elif how == "bit-flipped":
        flipped = bytearray(data)
        flipped[len(flipped) // 2] ^= 0x10
        path.write_bytes(bytes(flipped))
    elif how == "deleted":
        path.unlink()
    else:
        raise ValueError(f"unknown damage {how!r}")


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` (hidden ones too) with its bytes."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def assert_refused(result: Result, damaged: Path, outputs: list[Path]) -> None:
    """Exit status 2, one ``error:`` line naming ``damaged``, no traceback, no output written."""
    text = result.output
    assert result.exit_code == 2, text
    assert "Traceback" not in text, text
    assert result.exception is None or isinstance(result.exception, SystemExit), text
    errors = [line for line in text.splitlines() if "error:" in line]
    assert len(errors) == 1, text
    assert str(damaged) in errors[0], text
    for output in outputs:
        assert not output.exists(), f"{output} was written: {text}"
        assert not partial_path(output).exists(), f"{partial_path(output)} was written: {text}"


def copy_artefact(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target
