"""``lookalike serve``: registered, documented, thin (it fills ServeSettings and calls
``run_server``), and its user errors are one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from lookalike.cli.main import app
from lookalike.models.spec import ModelSpec
from lookalike.serve import ServeSettings, server

runner = CliRunner()


def test_serve_is_a_verb_with_help() -> None:
    result = runner.invoke(app, ["serve", "--help"])
    assert result.exit_code == 0, result.output
    for option in ("--model", "--checkpoint", "--host", "--port", "--batch-max", "--batch-wait-ms"):
        assert option in result.output


def test_options_become_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[dict[str, Any]] = []

    def fake_run_server(index_dir, model, settings, host, port, log_level, on_start):
        calls.append({"model": model, "settings": settings, "host": host, "port": port})
        on_start(f"http://{host}:{port}/")

    monkeypatch.setattr(server, "run_server", fake_run_server)
    monkeypatch.setattr("lookalike.serve.run_server", fake_run_server)
    arguments = ["serve", str(tmp_path), "--model", "timm:resnet18", "--weights", "none",
                 "--batch-max", "1", "--batch-wait-ms", "0", "--port", "9001", "--max-k", "50",
                 "--compact-every", "0", "--state-dir", str(tmp_path / "state")]  # fmt: skip
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    (call,) = calls
    assert "serving" in result.output and "http://127.0.0.1:9001/" in result.output
    assert call["host"] == "127.0.0.1" and call["port"] == 9001  # localhost unless told
    assert call["model"] == ModelSpec("timm:resnet18", "auto", "none", "none", None)
    settings: ServeSettings = call["settings"]
    assert (settings.batch_max, settings.batch_wait_ms, settings.max_k) == (1, 0.0, 50)
    assert settings.cors_origins == [] and settings.compact_every == 0
    assert settings.state_dir == str(tmp_path / "state")
    no_model = runner.invoke(app, ["serve", str(tmp_path)])
    assert no_model.exit_code == 0 and calls[-1]["model"] is None


def test_user_errors_are_one_line(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["serve", str(tmp_path / "nothing")])
    assert missing.exit_code == 2
    assert missing.output.startswith("error:") and missing.output.count("\n") == 1
    both = runner.invoke(app, ["serve", str(tmp_path), "--model", "a:b", "--checkpoint", "c"])
    assert both.exit_code == 2 and "not both" in both.output
