"""Upload a submission file to a competition server over HTTP.

The file goes as ``multipart/form-data`` with ``Authorization: Bearer <token>``; the token is
read from an environment variable so that it never appears on a command line or in a config.
Plain ``http://`` is refused unless asked for (the token would travel in clear), and only a 2xx
answer counts as delivered: a redirect is not followed (it would resend the file and token to
another address) and is reported like any other refusal. Every failure becomes one
:class:`SubmissionError` whose message says what to do.
"""

from __future__ import annotations

import logging
import mimetypes
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

logger = logging.getLogger(__name__)

DEFAULT_TOKEN_ENV = "LOOKALIKE_SUBMIT_TOKEN"
_BODY_EXCERPT_CHARS = 200


class SubmissionError(RuntimeError):
    """A submission could not be delivered or was refused; the message is one line.

    Attributes:
        status_code: The HTTP status of the server's answer, None when there was none (the
            file, token or URL was refused before sending, or the server could not be reached).
    """

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class SubmitResponse:
    """The server's answer to an accepted submission.

    Attributes:
        status_code: The HTTP status (2xx).
        body: The response body as text.
    """

    status_code: int
    body: str


def _excerpt(body: str) -> str:
    return " ".join(body.split())[:_BODY_EXCERPT_CHARS]


def submit_file(
    path: str | os.PathLike[str],
    url: str,
    *,
    token_env: str = DEFAULT_TOKEN_ENV,
    field_name: str = "file",
    timeout: float = 30.0,
    extra_fields: dict[str, str] | None = None,
    allow_insecure: bool = False,
) -> SubmitResponse:
    """POST ``path`` to ``url`` as a multipart upload authorised by a bearer token.

    Args:
        path: The submission file (CSV, JSON ...).
        url: The ``http://`` or ``https://`` endpoint that accepts submissions.
        token_env: Environment variable holding the API token.
        field_name: Form field the file is sent in.
        timeout: Seconds to wait for connecting, sending and each read.
        extra_fields: Further form fields (a description, a team name ...).
        allow_insecure: Send over plain ``http://`` (the token travels unencrypted).

    Returns:
        The server's status code and body.

    Raises:
        SubmissionError: The file or token is missing, the URL is not ``https://`` (nor
            ``http://`` with ``allow_insecure``), the server cannot be reached or does not
            answer in time, or it answers with anything but HTTP 2xx (redirects included).
    """
    path = Path(path)
    if not path.is_file():
        raise SubmissionError(f"submission file {path} does not exist; write it first")
    token = os.environ.get(token_env, "").strip()
    if not token:
        raise SubmissionError(f"set {token_env} to your API token")
    _check_url(url, allow_insecure)
    if not 0 < timeout < float("inf"):
        raise SubmissionError(f"timeout must be a positive number of seconds, got {timeout!r}")
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    try:
        with open(path, "rb") as handle:
            response = httpx.post(
                url,
                files={field_name: (path.name, handle, content_type)},
                data=extra_fields or {},
                headers={"Authorization": f"Bearer {token}"},
                timeout=timeout,
                follow_redirects=False,
            )
    except httpx.TimeoutException as exc:
        raise SubmissionError(
            f"{url} did not answer within {timeout:g} s; retry later or pass a larger timeout"
        ) from exc
    except httpx.ConnectError as exc:
        raise SubmissionError(f"could not connect to {url}: {exc}") from exc
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise SubmissionError(f"{url!r} is not a valid http:// or https:// URL") from exc
    except httpx.HTTPError as exc:
        raise SubmissionError(f"submitting to {url} failed: {exc}") from exc
    body = response.text
    if response.status_code in (401, 403):
        raise SubmissionError(
            f"{url} refused the token in {token_env} (HTTP {response.status_code}): "
            f"{_excerpt(body)}",
            response.status_code,
        )
    if 300 <= response.status_code < 400:
        target = response.headers.get("location", "nowhere given")
        raise SubmissionError(
            f"{url} answered HTTP {response.status_code}, a redirect to {target}; not followed "
            "and not submitted: check the URL and submit to the final address if you trust it",
            response.status_code,
        )
    if not 200 <= response.status_code < 300:
        raise SubmissionError(
            f"{url} answered HTTP {response.status_code}: {_excerpt(body)}", response.status_code
        )
    logger.info("submitted %s to %s: HTTP %d", path, url, response.status_code)
    return SubmitResponse(status_code=response.status_code, body=body)


def _check_url(url: str, allow_insecure: bool) -> None:
    """Refuse a URL that is not https (or http when allowed) before anything is sent."""
    scheme = urlsplit(url).scheme.lower()
    if scheme == "http" and not allow_insecure:
        raise SubmissionError(
            f"refusing to send the token in clear to {url}: use https://, or pass "
            "--allow-insecure (allow_insecure=True) for a server you trust on this network"
        )
    if scheme not in ("http", "https") or not urlsplit(url).hostname:
        raise SubmissionError(f"{url!r} is not a valid http:// or https:// URL")
