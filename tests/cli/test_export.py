"""``lookalike export`` and ``--runtime onnxruntime``: the export re-embeds as PyTorch does, and
bad input is one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lookalike.cli.main import app
from lookalike.embed.store import EmbeddingSet
from lookalike.models import create_embedder, save_embedder

runner = CliRunner()
CPU = ["--workers", "0", "--device", "cpu"]


def _one_line_error(args: list[str]) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["export", "/no/such/model", "-o", "{tmp}/out"], "/no/such/model is neither a saved model"),
        (["export", "timm:test_resnet", "-o", "{tmp}/out", "--format", "tflite"], "unknown export format 'tflite'"),
        (["export", "timm:test_resnet", "-o", "{tmp}/out", "--quantize", "int8"], "--calibration IMAGES"),
        (["export", "timm:test_resnet", "-o", "{tmp}/out", "--opset", "11", "--weights", "none"], "opset must be an integer >= 18"),
        (["embed", "{images}", "-o", "{tmp}/emb", "--runtime", "onnxruntime", "--model", "timm:test_resnet"], "lookalike export MODEL --format onnx"),
        (["embed", "{images}", "-o", "{tmp}/emb", "--runtime", "tvm"], "unknown runtime 'tvm'"),
    ],
)
def test_bad_input_is_one_line(args: list[str], needle: str, image_folder: Path, tmp_path: Path) -> None:
    line = _one_line_error(
        [a.replace("{tmp}", str(tmp_path)).replace("{images}", str(image_folder)) for a in args]
    )
    assert needle in line
    assert not (tmp_path / "out").exists()


def test_export_then_embed_with_onnx_runtime_matches_pytorch(image_folder: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = save_embedder(create_embedder("timm:test_resnet", pool="gap", weights=None), tmp_path / "model")
    result = runner.invoke(
        app, ["export", str(model), "-o", str(tmp_path / "onnx"), "--sample", str(image_folder)]
    )
    assert result.exit_code == 0, result.output
    assert "top-10 lists identical" in result.output and "fp32 ONNX export" in result.output
    for name, extra in (("torch", []), ("onnx", ["--runtime", "onnxruntime"])):
        checkpoint = model if name == "torch" else tmp_path / "onnx"
        args = ["embed", image_folder, "-o", tmp_path / f"emb_{name}", "--checkpoint", checkpoint, *CPU, *extra]
        outcome = runner.invoke(app, [str(a) for a in args])
        assert outcome.exit_code == 0, outcome.output
    torch_set, onnx_set = EmbeddingSet.load(tmp_path / "emb_torch"), EmbeddingSet.load(tmp_path / "emb_onnx")
    np.testing.assert_allclose(onnx_set.embeddings, torch_set.embeddings, atol=1e-5, rtol=1e-5)
    assert onnx_set.fingerprint == torch_set.fingerprint and onnx_set.ids == torch_set.ids
    line = _one_line_error(["embed", image_folder, "-o", tmp_path / "x", "--checkpoint", tmp_path / "onnx", "--runtime", "torch"])
    assert "is an ONNX export" in line
