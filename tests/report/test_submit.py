"""submit_file against a real HTTP server on 127.0.0.1 (an ephemeral port), shut down after."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from lookalike.report.submit import SubmissionError, SubmitResponse, submit_file

TOKEN = "s3cret-token"


@dataclass
class ServerState:
    """What the test server does and what it saw."""

    url: str = ""
    status: int = 200
    answer: bytes = b'{"accepted": true}'
    sleep_s: float = 0.0
    wake: threading.Event = field(default_factory=threading.Event)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """``{field: (filename, content)}`` from a multipart/form-data body (RFC 7578), by hand."""
    boundary = content_type.split("boundary=", 1)[1].strip('"').encode()
    parts = body.split(b"--" + boundary)
    assert parts[-1] == b"--\r\n"
    fields = {}
    for part in parts[1:-1]:
        assert part.startswith(b"\r\n") and part.endswith(b"\r\n")
        head, _, content = part[2:-2].partition(b"\r\n\r\n")
        name = re.search(rb'; name="([^"]*)"', head).group(1).decode()
        filename = re.search(rb'; filename="([^"]*)"', head)
        fields[name] = (filename.group(1).decode() if filename else None, content)
    return fields


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                 "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LOOKALIKE_SUBMIT_TOKEN", TOKEN)


@pytest.fixture
def server() -> Iterator[ServerState]:
    state = ServerState()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.requests.append((dict(self.headers), body))
            if state.sleep_s:
                state.wake.wait(state.sleep_s)
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self.answer(403, b"invalid token\nrequest a new one")
            else:
                self.answer(state.status, state.answer)

        def answer(self, status: int, body: bytes) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:  # the client gave up (timeout test)
                pass

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/submit"
    try:
        yield state
    finally:
        state.wake.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def submission(tmp_path: Path) -> Path:
    """A CSV whose bytes include CR LF, NUL, "--" and non-UTF-8 bytes."""
    rng = np.random.default_rng(0)
    data = b"Id,Predicted\r\nq0,a b\r\n--\x00\xff" + rng.integers(0, 256, 50_000).astype(
        np.uint8
    ).tobytes()
    path = tmp_path / "submission.csv"
    path.write_bytes(data)
    return path


def test_upload_arrives_intact_with_token(server: ServerState, submission: Path) -> None:
    response = submit_file(submission, server.url, extra_fields={"description": "run 7"})
    assert response == SubmitResponse(200, '{"accepted": true}')
    [(headers, body)] = server.requests
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["Content-Type"].startswith("multipart/form-data")
    fields = parse_multipart(headers["Content-Type"], body)
    assert fields["file"] == ("submission.csv", submission.read_bytes())
    assert fields["description"] == (None, b"run 7")


def test_field_name_and_token_env_are_configurable(
    server: ServerState, submission: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LOOKALIKE_SUBMIT_TOKEN")
    monkeypatch.setenv("MY_TOKEN", TOKEN)
    submit_file(submission, server.url, token_env="MY_TOKEN", field_name="submission")
    [(headers, body)] = server.requests
    assert list(parse_multipart(headers["Content-Type"], body)) == ["submission"]


def test_refused_token_is_a_clear_error(
    server: ServerState, submission: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOOKALIKE_SUBMIT_TOKEN", "wrong-token")
    refused = r"refused the token in LOOKALIKE_SUBMIT_TOKEN \(HTTP 403\): invalid token request"
    with pytest.raises(SubmissionError, match=refused) as info:
        submit_file(submission, server.url)
    assert "\n" not in str(info.value)
    assert "wrong-token" not in str(info.value)
    assert server.url in str(info.value)


def test_server_error_quotes_status_and_first_200_chars(
    server: ServerState, submission: Path
) -> None:
    server.status = 500
    server.answer = b"x" * 150 + b"y" * 150
    with pytest.raises(SubmissionError, match="HTTP 500") as info:
        submit_file(submission, server.url)
    message = str(info.value)
    assert "x" * 150 + "y" * 50 in message and "y" * 51 not in message


def test_timeout_names_url_and_seconds(server: ServerState, submission: Path) -> None:
    server.sleep_s = 10.0
    with pytest.raises(SubmissionError, match=r"did not answer within 0.5 s") as info:
        submit_file(submission, server.url, timeout=0.5)
    assert server.url in str(info.value)


def test_connection_refused_names_url(submission: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bound_not_listening:
        bound_not_listening.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound_not_listening.getsockname()[1]}/submit"
        with pytest.raises(SubmissionError, match=f"could not connect to {re.escape(url)}"):
            submit_file(submission, url, timeout=2.0)


def test_missing_token(submission: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOOKALIKE_SUBMIT_TOKEN")
    with pytest.raises(SubmissionError, match="^set LOOKALIKE_SUBMIT_TOKEN to your API token$"):
        submit_file(submission, "http://127.0.0.1:9/submit")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SubmissionError, match="missing.csv does not exist"):
        submit_file(tmp_path / "missing.csv", "http://127.0.0.1:9/submit")


def test_bad_url(submission: Path) -> None:
    with pytest.raises(SubmissionError, match="not a valid http"):
        submit_file(submission, "ftp://127.0.0.1/submit")
