"""Review of ``submit-all`` against a scripted HTTP server on 127.0.0.1: a file is recorded as
sent only when the server answered 2xx, a failure (an error status, a redirect, a connection
dropped before any answer) stops the run with one line and leaves the file pending, and over
any number of reruns the server accepts each file exactly once, with the bytes the record's
SHA-256 names."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from submit_server import QuietHandler, no_proxies, serving, uploaded_file
from typer.testing import CliRunner

from lookalike.cli.main import app
from lookalike.pipeline.submit_all import SCORES_FILE, SubmitAllStopped, read_scores, submit_all
from lookalike.utils.folders import write_manifest

TOKEN = "review-token"


@dataclass
class Script:
    """What the server answers to each upload in turn ("ok" once the list runs out):
    "ok", an HTTP status number, "redirect" or "drop" (read the upload, close without answering).
    """

    url: str = ""
    answers: list[str | int] = field(default_factory=list)
    accepted: list[tuple[str, bytes]] = field(default_factory=list)
    attempts: int = 0
    followed: int = 0


@pytest.fixture
def script(monkeypatch: pytest.MonkeyPatch) -> Iterator[Script]:
    no_proxies(monkeypatch)
    monkeypatch.setenv("LOOKALIKE_SUBMIT_TOKEN", TOKEN)
    state = Script()

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path == "/elsewhere":
                state.followed += 1
                self._answer(200, b'{"score": 1.0}')
                return
            assert self.headers["Authorization"] == f"Bearer {TOKEN}"
            state.attempts += 1
            answer = state.answers.pop(0) if state.answers else "ok"
            if answer == "drop":
                self.close_connection = True
                self.connection.close()
                return
            if answer == "redirect":
                self.send_response(307)
                self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if answer != "ok":
                self._answer(int(answer), b'{"detail": "scripted failure"}')
                return
            name, content = uploaded_file(self.headers["Content-Type"], body)
            state.accepted.append((name, content))
            score = len(content) / 1000
            self._answer(200, json.dumps({"score": score}).encode())

    with serving(Handler) as url:
        state.url = url
        yield state


def epochs(run: Path, count: int) -> list[Path]:
    files = []
    for epoch in range(count):
        folder = run / "epochs" / f"epoch_{epoch}"
        folder.mkdir(parents=True)
        results = folder / f"results_epoch_{epoch}.json"
        results.write_text(json.dumps({"q.jpg": [f"g{epoch}.jpg"] * (epoch + 1)}) + "\n")
        write_manifest(folder, "epoch", extra={"epoch": epoch})
        files.append(results)
    return files


def accepted_names(run: Path) -> list[str]:
    return [r.file for r in read_scores(run / SCORES_FILE) if r.accepted]


@pytest.mark.parametrize("failure", [500, 429, "redirect", "drop"])
def test_a_failed_upload_is_never_marked_sent_and_every_file_is_accepted_once(
    tmp_path: Path, script: Script, failure: str | int
) -> None:
    run = tmp_path / "run"
    files = epochs(run, 4)
    script.answers = ["ok", failure]
    with pytest.raises(SubmitAllStopped) as stopped:
        submit_all(run, script.url, allow_insecure=True)
    message = str(stopped.value)
    assert "\n" not in message
    assert "stopped at epochs/epoch_1/results_epoch_1.json" in message
    assert "1 of 4 pending files submitted" in message
    assert stopped.value.submitted == 1
    assert script.attempts == 2 and script.followed == 0  # stopped there; no redirect followed
    assert accepted_names(run) == ["epochs/epoch_0/results_epoch_0.json"]
    records = read_scores(run / SCORES_FILE)
    if failure == "drop":  # no answer: no status to record, the file simply stays pending
        assert len(records) == 1
    else:
        assert [r.status for r in records] == [200, 307 if failure == "redirect" else failure]
        assert records[1].score is None and not records[1].accepted

    outcome = submit_all(run, script.url, allow_insecure=True)
    assert [r.file for r in outcome.submitted] == [
        f"epochs/epoch_{e}/results_epoch_{e}.json" for e in (1, 2, 3)]
    assert outcome.skipped == ["epochs/epoch_0/results_epoch_0.json"]
    again = submit_all(run, script.url, allow_insecure=True)
    assert again.submitted == [] and len(again.skipped) == 4

    # the server accepted each file exactly once, in epoch order, with the bytes recorded
    assert [name for name, _ in script.accepted] == [f.name for f in files]
    sent = {name: hashlib.sha256(content).hexdigest() for name, content in script.accepted}
    for record in read_scores(run / SCORES_FILE):
        if record.accepted:
            assert record.sha256 == sent[Path(record.file).name]
            assert record.score == len(dict(script.accepted)[Path(record.file).name]) / 1000
    assert accepted_names(run) == [f"epochs/epoch_{e}/results_epoch_{e}.json" for e in range(4)]


def test_the_command_line_exits_non_zero_with_one_line_when_the_server_drops(
    tmp_path: Path, script: Script
) -> None:
    run = tmp_path / "run"
    epochs(run, 2)
    script.answers = ["drop"]
    result = CliRunner().invoke(app, ["submit-all", str(run), "--url", script.url,
                                      "--allow-insecure"])
    assert result.exit_code != 0
    assert "0 of 2 pending files submitted" in result.output
    assert "Traceback" not in result.output
    assert accepted_names(run) == []


@pytest.mark.parametrize("first", ["folder", "run"])
def test_a_file_accepted_through_the_folder_of_runs_or_the_run_is_not_sent_again(
    tmp_path: Path, script: Script, first: str
) -> None:
    runs = tmp_path / "runs"
    epochs(runs / "a", 2)
    epochs(runs / "b", 1)
    if first == "folder":
        submit_all(runs, script.url, allow_insecure=True)
        assert len(script.accepted) == 3
        outcome = submit_all(runs / "a", script.url, allow_insecure=True)
        assert outcome.submitted == [] and len(outcome.skipped) == 2
    else:
        submit_all(runs / "a", script.url, allow_insecure=True)
        assert len(script.accepted) == 2
        outcome = submit_all(runs, script.url, allow_insecure=True)
        assert [r.file for r in outcome.submitted] == ["b/epochs/epoch_0/results_epoch_0.json"]
        assert outcome.skipped == ["a/epochs/epoch_0/results_epoch_0.json",
                                   "a/epochs/epoch_1/results_epoch_1.json"]
    assert len(script.accepted) == 3  # each file accepted once
    # a rewritten file is still sent again, whichever record named it
    (runs / "a" / "epochs" / "epoch_1" / "results_epoch_1.json").write_text('{"q.jpg": []}\n')
    write_manifest(runs / "a" / "epochs" / "epoch_1", "epoch", extra={"epoch": 1})
    outcome = submit_all(runs / "a", script.url, allow_insecure=True)
    assert [r.file for r in outcome.submitted] == ["epochs/epoch_1/results_epoch_1.json"]


def test_a_foreign_scores_file_beside_the_run_is_not_read(tmp_path: Path, script: Script) -> None:
    runs = tmp_path / "runs"
    epochs(runs / "a", 1)
    (runs / SCORES_FILE).write_text("team,score\nus,0.9\n")  # someone else's file
    outcome = submit_all(runs / "a", script.url, allow_insecure=True)
    assert len(outcome.submitted) == 1
    (runs / "a" / SCORES_FILE).write_text("team,score\nus,0.9\n")  # the run's own: refused
    with pytest.raises(ValueError, match="move it aside"):
        submit_all(runs / "a", script.url, allow_insecure=True)
