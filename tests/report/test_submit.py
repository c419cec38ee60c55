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
    headers: dict[str, str] = field(default_factory=dict)
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
        def do_GET(self) -> None:  # where a followed redirect would land
            state.requests.append((dict(self.headers), b""))
            self.answer(200, b"landed")

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
                for name, value in state.headers.items():
                    self.send_header(name, value)
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
    response = submit_file(submission, server.url, extra_fields={"description": "run 7"},
                           allow_insecure=True)
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
    submit_file(submission, server.url, token_env="MY_TOKEN", field_name="submission",
                allow_insecure=True)
    [(headers, body)] = server.requests
    assert list(parse_multipart(headers["Content-Type"], body)) == ["submission"]


def test_refused_token_is_a_clear_error(
    server: ServerState, submission: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOOKALIKE_SUBMIT_TOKEN", "wrong-token")
    refused = r"refused the token in LOOKALIKE_SUBMIT_TOKEN \(HTTP 403\): invalid token request"
    with pytest.raises(SubmissionError, match=refused) as info:
        submit_file(submission, server.url, allow_insecure=True)
    assert "\n" not in str(info.value)
    assert "wrong-token" not in str(info.value)
    assert server.url in str(info.value)


def test_server_error_quotes_status_and_first_200_chars(
    server: ServerState, submission: Path
) -> None:
    server.status = 500
    server.answer = b"x" * 150 + b"y" * 150
    with pytest.raises(SubmissionError, match="HTTP 500") as info:
        submit_file(submission, server.url, allow_insecure=True)
    message = str(info.value)
    assert "x" * 150 + "y" * 50 in message and "y" * 51 not in message


def test_timeout_names_url_and_seconds(server: ServerState, submission: Path) -> None:
    server.sleep_s = 10.0
    with pytest.raises(SubmissionError, match=r"did not answer within 0.5 s") as info:
        submit_file(submission, server.url, timeout=0.5, allow_insecure=True)
    assert server.url in str(info.value)


def test_connection_refused_names_url(submission: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bound_not_listening:
        bound_not_listening.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound_not_listening.getsockname()[1]}/submit"
        with pytest.raises(SubmissionError, match=f"could not connect to {re.escape(url)}"):
            submit_file(submission, url, timeout=2.0, allow_insecure=True)


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


def test_plain_http_is_refused_before_anything_is_sent(
    server: ServerState, submission: Path
) -> None:
    with pytest.raises(SubmissionError, match="refusing to send the token in clear") as info:
        submit_file(submission, server.url)
    assert "--allow-insecure" in str(info.value) and TOKEN not in str(info.value)
    assert server.requests == []


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_a_failure_and_is_not_followed(
    server: ServerState, submission: Path, status: int
) -> None:
    server.status = status
    server.headers = {"Location": server.url + "/elsewhere"}
    with pytest.raises(SubmissionError, match=f"HTTP {status}, a redirect to") as info:
        submit_file(submission, server.url, allow_insecure=True)
    assert "\n" not in str(info.value) and "/elsewhere" in str(info.value)
    assert len(server.requests) == 1  # the POST only: the redirect was not followed


@pytest.mark.parametrize("status", [304, 404, 418, 503])
def test_any_status_but_2xx_is_a_failure(
    server: ServerState, submission: Path, status: int
) -> None:
    server.status = status
    with pytest.raises(SubmissionError, match=f"HTTP {status}"):
        submit_file(submission, server.url, allow_insecure=True)


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_every_2xx_is_delivered(server: ServerState, submission: Path, status: int) -> None:
    server.status = status
    server.answer = b"" if status == 204 else b"ok"
    assert submit_file(submission, server.url, allow_insecure=True).status_code == status


@pytest.mark.parametrize("timeout", [0.0, -1.0, float("nan"), float("inf")])
def test_timeout_must_be_positive_and_finite(submission: Path, timeout: float) -> None:
    with pytest.raises(SubmissionError, match="timeout must be a positive number"):
        submit_file(submission, "https://127.0.0.1:9/submit", timeout=timeout)


@pytest.mark.parametrize(
    "extra,status,expected_exit,needle",
    [
        ([], 200, 2, "refusing to send the token in clear"),
        (["--allow-insecure"], 200, 0, "submitted submission.csv: HTTP 200"),
        (["--allow-insecure"], 301, 2, "HTTP 301, a redirect to"),
        (["--allow-insecure"], 302, 2, "HTTP 302, a redirect to"),
        (["--allow-insecure"], 500, 2, "HTTP 500"),
    ],
)
def test_submit_verb_exit_codes(
    server: ServerState, submission: Path, extra: list[str], status: int, expected_exit: int,
    needle: str,
) -> None:
    from typer.testing import CliRunner

    from lookalike.cli.main import app

    server.status = status
    server.headers = {"Location": "https://example.invalid/"} if 300 <= status < 400 else {}
    result = CliRunner().invoke(app, ["submit", str(submission), "--url", server.url, *extra])
    assert result.exit_code == expected_exit, result.output
    assert needle in result.output and "Traceback" not in result.output
    if expected_exit:
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), result.output
