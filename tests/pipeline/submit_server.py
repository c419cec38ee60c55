"""A scripted competition server on 127.0.0.1 for the ``submit-all`` tests: the threaded HTTP
server, its answer helper, and the uploaded file read back from a multipart body."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                   "all_proxy")  # fmt: skip


def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests to 127.0.0.1 go straight to the test server, whatever the environment says."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def uploaded_file(content_type: str, body: bytes) -> tuple[str, bytes]:
    """The uploaded file's name and content from a multipart/form-data body."""
    boundary = content_type.split("boundary=", 1)[1].strip('"').encode()
    for part in body.split(b"--" + boundary)[1:-1]:
        head, _, content = part[2:-2].partition(b"\r\n\r\n")
        name = re.search(rb'; filename="([^"]*)"', head)
        if name:
            return name.group(1).decode(), content
    raise AssertionError("no file in the upload")


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that answers with a status and a body, and logs nothing."""

    def _answer(self, status: int, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """``handler`` served on an ephemeral 127.0.0.1 port in a thread; yields its ``/submit``
    URL and stops the server after the block."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/submit"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
