"""What the votes API's OpenAPI document (``/schema/openapi.json``) says beyond its handlers' signatures: how a
voter is named (the security schemes), the Idempotency-Key, and the headers of the answers. Documentation only;
the shared pieces (the rate-limit and Retry-After headers, ``documented``) are in services/shared/openapi.py."""

from litestar.enums import ParamType
from litestar.openapi.spec import (
    OpenAPIHeader,
    OpenAPIType,
    Parameter,
    Reference,
    Schema,
    SecurityRequirement,
    SecurityScheme,
)

from services.votes.request_parts import IDEMPOTENCY_HEADER, MAX_IDEMPOTENCY_KEY, VOTER_COOKIE, VOTER_HEADER

DESCRIPTION = f"""Votes on the comparisons of the catalogue.

A voter is a signed token: `POST /v1/voters` issues one, in its body (`voter_token`) and as the `{VOTER_COOKIE}`
cookie. Every vote names its voter by the `{VOTER_HEADER}` header or, failing that, the cookie (the security
schemes). A vote is answered 202 once it is stored in the vote stream; 200 when it changes nothing; 503 when it
could not be stored (nothing was: send it again). Send an `{IDEMPOTENCY_HEADER}` to make a retry safe.

`DELETE /v1/voters/me` forgets the voter: their ballots leave every tally, the cookie is cleared and the token is
refused from then on (401 `voter_forgotten`).

Requests are rate limited per voter, per client address and per comparison: answers that went through a limit
carry `RateLimit` and `RateLimit-Policy`; a refusal is 429 with `Retry-After`. Every refusal is a JSON
`{{"error", "detail"}}`."""

VOTER_SCHEMES: dict[str, SecurityScheme | Reference] = {
    "VoterToken": SecurityScheme(
        type="apiKey",
        name=VOTER_HEADER,
        security_scheme_in="header",
        description="The voter token from POST /v1/voters (its `voter_token`); read before the cookie.",
    ),
    "VoterCookie": SecurityScheme(
        type="apiKey",
        name=VOTER_COOKIE,
        security_scheme_in="cookie",
        description="The same token in the cookie POST /v1/voters sets (HttpOnly): what a browser page sends.",
    ),
}
"""The security schemes of the document (``OpenAPIConfig(components=...)``)."""

VOTER: list[SecurityRequirement] = [{"VoterToken": []}, {"VoterCookie": []}]
"""The ``security=`` of a route that needs a voter: either scheme."""

IDEMPOTENCY_KEY = Parameter(
    name=IDEMPOTENCY_HEADER,
    param_in=ParamType.HEADER,
    required=False,
    description=(
        "Makes a retry safe: the same key with the same request (method, path and body) is answered as the first "
        "was and its vote is stored once; the same key with another request is refused (422 "
        "`idempotency_key_reused`). Kept per voter for the vote stream's duplicate window (2 minutes by default)."
    ),
    schema=Schema(type=OpenAPIType.STRING, min_length=1, max_length=MAX_IDEMPOTENCY_KEY),
)

SET_VOTER_COOKIE = {
    "Set-Cookie": OpenAPIHeader(
        schema=Schema(type=OpenAPIType.STRING),
        description=(
            f"`{VOTER_COOKIE}=<the token>; Max-Age=<its lifetime in s>; Path=/; HttpOnly`, and `Secure; "
            "SameSite=None` where the service runs with secure cookies (else `SameSite=Lax`)."
        ),
        required=True,
    )
}

CLEAR_VOTER_COOKIE = {
    "Set-Cookie": OpenAPIHeader(
        schema=Schema(type=OpenAPIType.STRING),
        description=(
            f'`{VOTER_COOKIE}=""; Max-Age=0; Path=/; HttpOnly` (with the attributes POST /v1/voters gives it): the'
            " browser drops the forgotten token."
        ),
        required=True,
    )
}
