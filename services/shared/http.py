"""HTTP plumbing shared by both APIs: JSON errors for every failure, and msgspec-encoded replies.

Every error, ours or Litestar's (unknown route, wrong method, body too large), is answered with the same
``ErrorBody`` JSON shape; an unexpected exception is logged and answered as a JSON 500, never an HTML page.
"""

import json
import logging
from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ExceptionHandlersMap

from contracts.http import ErrorBody
from services.shared.observed_asgi import note_refusal

log = logging.getLogger(__name__)

_encoder = msgspec.json.Encoder()

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_body",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(Exception):
    """An expected failure, answered as ``status`` with an ErrorBody."""

    def __init__(
        self,
        status: int,
        error: str,
        detail: str,
        *,
        retry_after: int | None = None,
        headers: Mapping[str, str] | None = None,
        limit: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.body = ErrorBody(error=error, detail=detail, retry_after=retry_after)
        self.headers = dict(headers or {})
        self.limit = limit
        """For a 429: the policy name of the rate limit that refused (counted per limit in the metrics)."""
        if retry_after is not None:
            self.headers.setdefault("Retry-After", str(retry_after))


T = TypeVar("T")


_any_json = msgspec.json.Decoder(msgspec.Raw)
"""Checks that a body is JSON at all, without building it."""


def decode_body(body: bytes, decoder: msgspec.json.Decoder[T], invalid: str = "invalid_body") -> T:
    """Strictly decode a JSON body: 400 when it is not JSON, 422 (error code ``invalid``) when its shape is wrong."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        # The typed decoder stops at the first value of the wrong type ("[" is "got array"): read to the end
        # first, so a broken body is called broken (only refusals pay for the second read).
        _require_json(body)
        raise ApiError(422, invalid, str(exc)) from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None
    except UnicodeDecodeError:  # invalid UTF-8 inside a JSON string
        raise ApiError(400, "malformed_json", "the body is not valid UTF-8") from None


def _require_json(body: bytes) -> None:
    try:
        _any_json.decode(body)
    except msgspec.ValidationError:
        pass  # JSON, with a number out of range: for the typed decoder to name
    except RecursionError:
        pass  # JSON nested deeper than msgspec goes: the shape is wrong whatever comes after
    except msgspec.DecodeError as exc:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None
    except UnicodeDecodeError:
        raise ApiError(400, "malformed_json", "the body is not valid UTF-8") from None


def _refuse_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen[key] = value
    return seen


class _DuplicateKey(Exception):
    pass


def duplicate_key(body: bytes, keys: tuple[bytes, ...]) -> str | None:
    """A key that appears twice in one JSON object of ``body`` (already known to be valid JSON), or None.

    A cheap look first: only bodies that name one of ``keys`` twice, or hold an escape, are parsed again.
    """
    if b"\\u" not in body and all(body.count(b'"' + key + b'"') < 2 for key in keys):
        return None
    try:
        json.loads(body, object_pairs_hook=_refuse_repeats)
    except _DuplicateKey as exc:
        return str(exc.args[0])
    return None


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response[bytes]:
    return Response(content=_encoder.encode(body), status_code=status, media_type="application/json", headers=headers)


def error_response(error: ApiError) -> Response[bytes]:
    return json_response(error.body, error.status, error.headers)


def _on_api_error(request: Request[Any, Any, Any], exc: ApiError) -> Response[bytes]:
    note_refusal(request.scope, exc.body.error, exc.limit)
    return error_response(exc)


def _on_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    status = exc.status_code
    error = _STATUS_CODES.get(status, "error")
    note_refusal(request.scope, error)
    detail = exc.detail
    if isinstance(exc, ValidationException) and status == 400:
        detail = f"{exc.detail}: {exc.extra}" if exc.extra else exc.detail
    headers = dict(exc.headers or {})
    return json_response(
        ErrorBody(error=error, detail=detail or "request refused"),
        status,
        headers,
    )


def _on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    note_refusal(request.scope, "internal_error")
    return json_response(ErrorBody(error="internal_error", detail="internal error; it has been logged"), 500)


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    ApiError: _on_api_error,
    HTTPException: _on_http_exception,
    Exception: _on_unexpected,
}


def error_answer(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """The answer to ``exc`` from ``EXCEPTION_HANDLERS``, the handler of its nearest class, as Litestar picks it; for
    a route that answers without Litestar's exception middleware (services/votes/routes.py, ``AnswerVote``)."""
    for kind in type(exc).__mro__:
        handler = EXCEPTION_HANDLERS.get(kind)
        if handler is not None:
            return handler(request, exc)
    raise AssertionError("Exception has a handler")  # pragma: no cover
