"""The optional bearer token in front of the write endpoints (add, delete, compact).

The token comes from the environment (``LOOKALIKE_SERVE_TOKEN`` by default, see
:class:`~lookalike.serve.settings.ServeSettings`), never from the command line, where other
users of the machine could read it. Without a token the write endpoints are open, which is safe
only because the server binds to localhost unless told otherwise.
"""

from __future__ import annotations

import hmac

from fastapi import Request

from lookalike.serve.errors import ApiError

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="lookalike"'}


def require_token(request: Request) -> None:
    """FastAPI dependency: 401 without ``Authorization: Bearer <token>``, 403 with a wrong one."""
    expected = request.app.state.serve.token
    if expected is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise ApiError(401, "this endpoint needs 'Authorization: Bearer <token>'", _CHALLENGE)
    if not hmac.compare_digest(given.strip().encode("utf-8"), expected.encode("utf-8")):
        raise ApiError(403, "the bearer token is wrong", _CHALLENGE)
