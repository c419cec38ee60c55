"""The README's promise: a new pooling is one registered class, usable by name everywhere."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from lookalike.models import create_embedder
from lookalike.models.pooling import POOLINGS

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_pooling_example_registers_and_embeds() -> None:
    block = next(
        code for code in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
        if "POOLINGS.register" in code
    )
    namespace: dict[str, object] = {}
    try:
        exec(compile(block, str(README), "exec"), namespace)  # the documented snippet, verbatim
        embedder = create_embedder("timm:resnet18", pool="softmax_pool", weights=None).eval()
        features = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            maps = embedder.backbone(features)
            expected = (maps.flatten(2) * maps.flatten(2).softmax(-1)).sum(-1)
            expected = torch.nn.functional.normalize(expected, dim=-1)
            torch.testing.assert_close(embedder(features), expected)
        assert "softmax_pool" in POOLINGS.names()
    finally:
        POOLINGS._entries.pop("softmax_pool", None)
