"""What the OpenAPI documents (``/schema/openapi.json``) say the handlers answer. Documentation only.

The handlers return pre-encoded msgspec JSON (``Response[bytes]``) and read request bodies and headers raw, so
Litestar cannot infer the shapes from their signatures: each route names them with ``responses=``, and with an
``operation_class`` (``documented``) what else a client must know: a body or a parameter Litestar does not parse,
and the headers of its answers (rate limits, Retry-After). None of this is used to answer a request.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    RequestBody,
    Schema,
)

from contracts.http import ErrorBody

ERRORS = {
    400: "Malformed request (not JSON, a bad header or parameter)",
    401: "No voter token, or one that is refused",
    403: "A cross-origin POST or DELETE from an origin that is not allowed",
    404: "Unknown comparison or tool",
    408: "The body did not arrive in time",
    413: "The body is too large",
    415: "The body is not application/json",
    422: "The body has the wrong shape, or an Idempotency-Key is reused for another request",
    429: "Rate limited (Retry-After)",
    503: "Temporarily unavailable (Retry-After); for a vote: surely not stored",
    504: "The vote was sent to the stream and no answer came in time: it may be stored. Send the same request again"
    " with the same Idempotency-Key (Retry-After); it is counted once",
}
"""Every ErrorBody status a route may answer, with a description."""


def answers(success: Mapping[int, tuple[type[msgspec.Struct] | None, str]], *errors: int) -> dict[int, ResponseSpec]:
    """The ``responses=`` of a route: its successes (a body struct, or None for no body) and ErrorBody refusals."""
    specs = {
        status: ResponseSpec(data_container=body, description=description, generate_examples=False)
        for status, (body, description) in success.items()
    }
    for status in errors:
        specs[status] = ResponseSpec(data_container=ErrorBody, description=ERRORS[status], generate_examples=False)
    return specs


_KEYWORDS = {
    "title": "title",
    "description": "description",
    "enum": "enum",
    "required": "required",
    "pattern": "pattern",
    "maxLength": "max_length",
    "minLength": "min_length",
}


def _schema(node: dict[str, Any]) -> Schema:
    fields: dict[str, Any] = {}
    for key, value in node.items():
        if key == "type":
            fields["type"] = OpenAPIType(value)
        elif key == "properties":
            fields["properties"] = {name: _schema(sub) for name, sub in value.items()}
        elif key == "additionalProperties" and isinstance(value, bool):
            fields["additional_properties"] = value
        elif key in _KEYWORDS:
            fields[_KEYWORDS[key]] = value
        else:
            raise ValueError(f"JSON Schema keyword {key!r} is not translated")
    return Schema(**fields)


def struct_schema(struct: type[msgspec.Struct]) -> Schema:
    """The OpenAPI schema of a flat struct, from msgspec's own JSON Schema (the decoder's rules, exactly)."""
    _, components = msgspec.json.schema_components([struct])
    return _schema(components[struct.__name__])


def json_body(struct: type[msgspec.Struct], description: str) -> RequestBody:
    return RequestBody(
        content={"application/json": OpenAPIMediaType(schema=struct_schema(struct))},
        description=description,
        required=True,
    )


def _rate_limit(required: bool) -> dict[str, OpenAPIHeader]:
    text = Schema(type=OpenAPIType.STRING)
    absent = "" if required else " Absent when no limit applies (limits off)."
    return {
        "RateLimit": OpenAPIHeader(
            schema=text,
            required=required,
            description=(
                "The most restrictive rate limit that applies, as of this answer (draft-ietf-httpapi-ratelimit-"
                'headers): `"voter";r=9;t=2` is 9 requests left under the policy named voter, whole again in 2 s.'
                + absent
            ),
        ),
        "RateLimit-Policy": OpenAPIHeader(
            schema=text,
            required=required,
            description='That limit\'s policy: `"voter";q=30;w=60` is 30 requests per 60 s.' + absent,
        ),
    }


RATE_LIMIT = _rate_limit(required=False)
"""The rate-limit headers of an answer that went through the limiter, if any limit applied."""

RETRY_AFTER = {
    "Retry-After": OpenAPIHeader(
        schema=Schema(type=OpenAPIType.STRING, pattern="^[0-9]+$"),
        required=True,
        description="Seconds to wait before trying again (also the body's `retry_after`).",
    )
}

RATE_LIMITED = {**_rate_limit(required=True), **RETRY_AFTER}
"""The headers of a 429: the limit that refused, and when to retry."""


def documented(
    *,
    body: RequestBody | None = None,
    parameters: Sequence[Parameter] = (),
    headers: Mapping[int, Mapping[str, OpenAPIHeader]] | None = None,
) -> type[Operation]:
    """An ``operation_class`` for a route: the operation Litestar builds, with a body, parameters and the headers of
    its answers (by status) that the handler's signature does not show."""
    answer_headers = dict(headers or {})

    @dataclass
    class DocumentedOperation(Operation):
        def __post_init__(self) -> None:
            if body is not None:
                self.request_body = body
            if parameters:
                self.parameters = [*(self.parameters or ()), *parameters]
            for status, named in answer_headers.items():
                response = (self.responses or {})[str(status)]
                assert isinstance(response, OpenAPIResponse), f"{status} is documented by the route"
                response.headers = {**(response.headers or {}), **named}

    return DocumentedOperation
