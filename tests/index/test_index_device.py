"""Index devices: auto resolves to the CPU here, a GPU without CUDA or FAISS GPU is one clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lookalike.cli.main import app
from lookalike.embed.store import EmbeddingSet
from lookalike.index import devices
from lookalike.index.devices import check_index_device, resolve_index_device
from lookalike.pipeline.indexing import build_index, search_index

needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only errors")


def _set(rows: int, prefix: str) -> EmbeddingSet:
    vectors = np.random.default_rng(rows).normal(size=(rows, 8)).astype(np.float32)
    ids = [f"{prefix}{i}" for i in range(rows)]
    return EmbeddingSet(vectors, ids, ids, ["a"] * rows, {"fingerprint": "f00d"})


@needs_no_cuda
def test_auto_is_the_cpu_without_cuda_and_search_runs_there(tmp_path: Path) -> None:
    assert resolve_index_device("auto", "flat") == "cpu"
    assert resolve_index_device("auto", "exact_torch") == "cpu"
    index, folder = build_index(_set(20, "g"), tmp_path / "index", device="auto")
    assert index.device == "cpu"
    outcome = search_index(folder, _set(3, "q"), tmp_path / "r.csv", k=2, device="auto")
    assert outcome.result.indices.shape == (3, 2)


@needs_no_cuda
def test_cuda_without_a_gpu_is_one_line_naming_the_device(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="device 'cuda' requested but this machine has no usable CUDA device"):
        build_index(_set(20, "g"), tmp_path / "index", device="cuda")
    assert not (tmp_path / "index").exists()
    build_index(_set(20, "g"), tmp_path / "index")
    result = CliRunner().invoke(app, ["search", str(tmp_path / "index"), str(tmp_path / "q"), "--device", "cuda:1"])
    assert result.exit_code != 0
    assert "cuda:1" in result.output and "Traceback" not in result.output


def test_gpu_without_faiss_gpu_support_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(devices, "faiss_gpu_available", lambda: False)
    with pytest.raises(ValueError, match="needs FAISS built with GPU support.*faiss-gpu-cu12.*--device cpu"):
        check_index_device("cuda", "flat")
    with pytest.raises(ValueError, match="FAISS has no GPU version of the 'hnsw' index"):
        check_index_device("cuda:0", "hnsw")
    assert check_index_device("cuda", "exact_torch") == "cuda"  # torch alone runs it
    assert resolve_index_device("auto", "flat") == "cpu"  # auto never picks what cannot run
    assert resolve_index_device("auto", "hnsw") == "cpu"
    assert resolve_index_device("auto", "exact_torch") == "cuda"
    monkeypatch.setattr(devices, "faiss_gpu_available", lambda: True)
    assert resolve_index_device("auto", "flat") == "cuda"
    assert check_index_device("cuda", "ivf_flat") == "cuda"
