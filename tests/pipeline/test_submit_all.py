"""``submit-all`` against a real HTTP server on 127.0.0.1 that scores every file it receives:
each reply recorded, already-submitted files skipped, a refusal stops cleanly."""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from submit_server import QuietHandler, no_proxies, serving, uploaded_file
from typer.testing import CliRunner

from lookalike.cli.main import app
from lookalike.pipeline.submit_all import (
    SCORE_COLUMNS,
    SCORES_FILE,
    SubmitAllStopped,
    find_results_files,
    read_scores,
    score_from_reply,
    submit_all,
)
from lookalike.utils.folders import write_manifest

TOKEN = "s3cret-token"


def server_score(content: bytes) -> float:
    """The score the test server gives a file: a function of its bytes, recomputed by tests."""
    return int.from_bytes(hashlib.sha256(content).digest()[:4], "big") / 2**32


@dataclass
class Server:
    """What the server does and what it received."""

    url: str = ""
    accept: int = 1000  # files accepted before it answers 429
    reply: str = "score"  # "score", "nested" (result.public) or "text"
    received: list[tuple[str, bytes]] = field(default_factory=list)
    refused: int = 0


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    no_proxies(monkeypatch)
    monkeypatch.setenv("LOOKALIKE_SUBMIT_TOKEN", TOKEN)
    state = Server()

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self._answer(403, b'{"detail": "bad token"}')
                return
            if len(state.received) >= state.accept:
                state.refused += 1
                self._answer(429, b'{"detail": "daily submission limit reached"}')
                return
            name, content = uploaded_file(self.headers["Content-Type"], body)
            state.received.append((name, content))
            score = server_score(content)
            answer = {
                "score": {"score": score, "message": "ok"},
                "nested": {"result": {"public": score, "private": None}},
                "text": f"scored {score}",
            }[state.reply]
            data = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
            self._answer(200, data)

    with serving(Handler) as url:
        state.url = url
        yield state


def write_epochs(run: Path, epochs: int) -> list[Path]:
    """``epochs/epoch_N/`` as training writes them: metrics, results, manifest last."""
    files = []
    for epoch in range(epochs):
        folder = run / "epochs" / f"epoch_{epoch}"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({"recall@1": epoch / 10}))
        results = folder / f"results_epoch_{epoch}.json"
        ranked = {f"q{i}.jpg": [f"g{(i + epoch + j) % 7}.jpg" for j in range(3)] for i in range(4)}
        results.write_text(json.dumps(ranked, indent=2) + "\n")
        write_manifest(folder, "epoch", extra={"epoch": epoch})
        files.append(results)
    return files


def scores_table(run: Path) -> list[dict[str, str]]:
    with open(run / SCORES_FILE, newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == SCORE_COLUMNS
        return list(reader)


def submit(run: Path, server: Server, **options: object):  # type: ignore[no-untyped-def]
    return submit_all(run, server.url, allow_insecure=True, **options)  # type: ignore[arg-type]


def test_every_epoch_is_submitted_and_its_score_recorded(tmp_path: Path, server: Server) -> None:
    run = tmp_path / "run"
    files = write_epochs(run, 12)  # epoch 10 sorts after epoch 2, not before
    outcome = submit(run, server)
    assert [name for name, _ in server.received] == [f.name for f in files]
    assert [content for _, content in server.received] == [f.read_bytes() for f in files]
    rows = scores_table(run)
    assert [row["file"] for row in rows] == [f"epochs/epoch_{e}/results_epoch_{e}.json"
                                             for e in range(12)]
    for row, path in zip(rows, files):
        assert row["status"] == "200"
        assert float(row["score"]) == server_score(path.read_bytes())
        assert row["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert row["submitted_at"].endswith("+00:00") and float(row["seconds"]) >= 0
    assert [r.score for r in outcome.submitted] == [float(row["score"]) for row in rows]
    assert outcome.skipped == []

    # a rerun sends nothing: every file is recorded as accepted with the same content
    again = submit(run, server)
    assert len(server.received) == 12 and again.submitted == [] and len(again.skipped) == 12
    assert len(scores_table(run)) == 12


def test_a_refusal_stops_cleanly_and_a_rerun_sends_only_the_rest(
    tmp_path: Path, server: Server
) -> None:
    run = tmp_path / "run"
    files = write_epochs(run, 4)
    server.accept = 2
    with pytest.raises(SubmitAllStopped, match=r"stopped at epochs/epoch_2/results_epoch_2.json"
                       r".*HTTP 429.*2 of 4 pending files submitted") as stopped:
        submit(run, server)
    assert stopped.value.status_code == 429 and stopped.value.submitted == 2
    assert server.refused == 1  # it stopped at the refusal, the fourth file was not tried
    rows = scores_table(run)
    assert [row["status"] for row in rows] == ["200", "200", "429"]
    assert rows[2]["score"] == "" and "daily submission limit" in rows[2]["reply"]

    server.accept = 1000
    outcome = submit(run, server)
    assert [name for name, _ in server.received] == [f.name for f in files]
    assert [r.file for r in outcome.submitted] == [
        "epochs/epoch_2/results_epoch_2.json", "epochs/epoch_3/results_epoch_3.json"]
    assert len(outcome.skipped) == 2
    assert [row["status"] for row in scores_table(run)] == ["200", "200", "429", "200", "200"]


def test_a_rewritten_file_is_sent_again(tmp_path: Path, server: Server) -> None:
    run = tmp_path / "run"
    files = write_epochs(run, 2)
    submit(run, server)
    files[1].write_text('{"q0.jpg": ["g6.jpg"]}\n')  # the epoch rerun: new content, new manifest
    write_manifest(files[1].parent, "epoch")
    outcome = submit(run, server)
    assert [r.file for r in outcome.submitted] == ["epochs/epoch_1/results_epoch_1.json"]
    assert outcome.submitted[0].score == server_score(files[1].read_bytes())


def test_a_damaged_file_is_refused_before_anything_is_sent(tmp_path: Path, server: Server) -> None:
    run = tmp_path / "run"
    files = write_epochs(run, 3)
    files[2].write_text(files[2].read_text().replace("g", "x"))
    with pytest.raises(ValueError, match="results_epoch_2.json .*rerun the job"):
        submit(run, server)
    assert server.received == [] and not (run / SCORES_FILE).exists()


def test_a_folder_of_runs_is_sent_run_by_run(tmp_path: Path, server: Server) -> None:
    write_epochs(tmp_path / "runs" / "b", 2)
    write_epochs(tmp_path / "runs" / "a", 2)
    names = [p.relative_to(tmp_path / "runs").as_posix()
             for p in find_results_files(tmp_path / "runs")]
    assert names == ["a/epochs/epoch_0/results_epoch_0.json", "a/epochs/epoch_1/results_epoch_1.json",
                     "b/epochs/epoch_0/results_epoch_0.json", "b/epochs/epoch_1/results_epoch_1.json"]
    outcome = submit(tmp_path / "runs", server)
    assert [r.file for r in outcome.submitted] == names


@pytest.mark.parametrize("reply", ["nested", "text"])
def test_the_score_key_path_and_replies_without_a_score(
    tmp_path: Path, server: Server, reply: str
) -> None:
    run = tmp_path / "run"
    files = write_epochs(run, 1)
    server.reply = reply
    outcome = submit(run, server, score_key="result.public")
    expected = server_score(files[0].read_bytes()) if reply == "nested" else None
    assert outcome.submitted[0].score == expected
    assert read_scores(run / SCORES_FILE)[0].score == expected


def test_score_from_reply() -> None:
    assert score_from_reply('{"score": 0.5}') == 0.5
    assert score_from_reply('{"public_score": "0.25"}') == 0.25
    assert score_from_reply('{"score": null, "public_score": 3}') == 3.0
    assert score_from_reply('{"a": {"b": 7}}', "a.b") == 7.0
    assert score_from_reply('{"a": {"b": true}}', "a.b") is None
    assert score_from_reply('{"score": 0.5}', "a.b") is None
    assert score_from_reply("not json") is None


def test_a_run_without_results_files_is_a_one_line_error(tmp_path: Path, server: Server) -> None:
    (tmp_path / "run").mkdir()
    with pytest.raises(ValueError, match="trainer.keep_every_epoch=true and data.val_split=test"):
        submit(tmp_path / "run", server)


def test_the_command_line_prints_scores_and_one_line_on_refusal(
    tmp_path: Path, server: Server
) -> None:
    run = tmp_path / "run"
    files = write_epochs(run, 3)
    server.accept = 1
    runner = CliRunner()
    result = runner.invoke(app, ["submit-all", str(run), "--url", server.url, "--allow-insecure"])
    assert result.exit_code == 2
    assert "1 of 3 pending files submitted" in result.output
    assert "Traceback" not in result.output

    server.accept = 1000
    result = runner.invoke(app, ["submit-all", str(run), "--url", server.url, "--allow-insecure"])
    assert result.exit_code == 0, result.output
    score = server_score(files[2].read_bytes())
    assert f"epochs/epoch_2/results_epoch_2.json: HTTP 200, score {score:g}" in result.output
    assert "2 submitted, 1 already submitted" in result.output
