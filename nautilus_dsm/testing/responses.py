"""The answers of the Binance imitation: status, body, content type and headers of one request.

REST, Vision and the server's routing build them; the HTTP handler sends them.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec


@dataclass
class Response:
    """One answer of the imitation, before it is written to the socket."""

    status: int
    body: bytes
    content_type: str = "application/json;charset=UTF-8"
    headers: dict[str, str] | None = None


def json_response(status: int, payload: object, headers: dict[str, str] | None = None) -> Response:
    """Return ``payload`` encoded as a JSON answer."""
    return Response(status, msgspec.json.encode(payload), headers=headers)


def error_response(status: int, code: int, msg: str) -> Response:
    """Return Binance's JSON error answer ``{"code": code, "msg": msg}``."""
    return json_response(status, {"code": code, "msg": msg})


def not_found() -> Response:
    """Return the plain-text 404 of a path the imitation does not serve."""
    return Response(404, b"Not Found", content_type="text/plain")
