"""Every error the server answers is JSON with one line: ``{"error": "...", "status": 4xx}``.

Routes raise :class:`ApiError` (an HTTP exception with a one-line message); request validation
failures (a ``k`` out of range, a missing field) and unknown paths come through the same
handlers, so a client parses one shape whatever went wrong.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

logger = logging.getLogger(__name__)

_LOCATIONS = ("body", "query", "path", "form", "header")


class ApiError(HTTPException):
    """An HTTP error with a one-line message for the client.

    Args:
        status_code: The 4xx (or 5xx) status.
        message: What went wrong and, where it helps, what to do; newlines are folded.
    """

    def __init__(self, status_code: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(status_code=status_code, detail=one_line(message), headers=headers)


def one_line(text: Any) -> str:
    """``text`` with its whitespace runs (newlines included) folded to single spaces."""
    return " ".join(str(text).split())


def error_response(status_code: int, message: str, headers: Any = None) -> JSONResponse:
    """The JSON body every error has."""
    return JSONResponse(
        {"error": one_line(message), "status": status_code}, status_code, headers=headers
    )


def validation_message(error: RequestValidationError) -> str:
    """The first validation problem as ``field: reason`` (FastAPI's default is a list)."""
    problems = error.errors()
    if not problems:
        return "invalid request"
    first = problems[0]
    location = [str(part) for part in first.get("loc", ()) if part not in _LOCATIONS]
    field = ".".join(location)
    reason = first.get("msg", "invalid value")
    more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
    return f"{field}: {reason}{more}" if field else f"{reason}{more}"


def install_error_handlers(app: FastAPI) -> None:
    """Answer HTTP errors, validation failures and unexpected exceptions as one-line JSON."""

    async def http_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, HTTPException)
        message = error.detail if isinstance(error.detail, str) else str(error.detail)
        return error_response(error.status_code, message, getattr(error, "headers", None))

    async def invalid_request(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        return error_response(422, validation_message(error))

    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unexpected error answering %s %s", request.method, request.url.path)
        return error_response(500, f"internal error ({type(error).__name__}); see the server log")

    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(Exception, unexpected)
