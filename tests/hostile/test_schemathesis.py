"""Schemathesis against the OpenAPI documents both services serve (``/schema/openapi.json``), a bounded number of
examples per operation, generated inside the documented contract. (Requests outside it are
tests/hostile/test_nasty_requests.py and test_body_fuzz.py.)

- No request, documented or not, gets a 5xx; and every 4xx is the JSON ``{"error", "detail"}`` shape.
- Every response matches the schema the document gives for it (status, content type and body).

The live stream (``/community/stream``) is left out: a request that hits a real comparison stays open, by design.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import Case, GenerationMode
from schemathesis.checks import CheckFunction, not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.core.transport import Response
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from infra.stack.servers import ServerAddresses
from services.serve import ServiceName
from tests.support import Pipeline, new_voter, running_pipeline

EXAMPLES = 50
"""Per operation: about 450 requests in all, a few seconds."""
SERVICES: list[ServiceName] = ["votes", "read"]


@pytest.fixture(scope="module")
def pipeline(servers: ServerAddresses, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    log_dir: Path = tmp_path_factory.mktemp("schemathesis-logs")
    with running_pipeline(servers, log_dir, SHIPSKIP_RATE_LIMITS="off") as running:
        yield running


@pytest.fixture(scope="module")
def token(pipeline: Pipeline) -> str:
    with httpx.Client(timeout=10) as client:
        return new_voter(client, pipeline.votes_url)


Operation = schemathesis.APIOperation[Any, Any, Any, Any]


def operations(url: str) -> list[Operation]:
    schema = schemathesis.openapi.from_url(url + "/schema/openapi.json")
    found = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        found.append(result.ok())
    return [operation for operation in found if not operation.path.endswith("/stream")]


def json_refusal(response: Response) -> None:
    if 400 <= response.status_code < 500:
        assert response.headers.get("content-type", [""])[0].startswith("application/json"), response.text
        body = response.json()
        assert isinstance(body["error"], str), body
        assert isinstance(body["detail"], str), body


def run(base_url: str, token: str, operation: Operation, conform: bool) -> None:
    checks: list[CheckFunction] = [not_a_server_error]
    if conform:
        checks += [status_code_conformance, content_type_conformance, response_schema_conformance]

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.large_base_example],
    )
    @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
    def check(case: Case[Any]) -> None:
        response = case.call(base_url=base_url, headers={"X-Voter-Token": token}, timeout=20)
        case.validate_response(response, checks=checks)
        json_refusal(response)

    check()


@pytest.mark.parametrize("service", SERVICES)
def test_no_request_gets_a_5xx_and_refusals_are_json(pipeline: Pipeline, token: str, service: ServiceName) -> None:
    url = pipeline.processes[service].url
    tested = operations(url)
    assert len(tested) >= 4
    for operation in tested:
        run(url, token, operation, conform=False)
    assert pipeline.processes[service].alive()


@pytest.mark.parametrize("service", SERVICES)
def test_every_response_matches_its_documented_schema(pipeline: Pipeline, token: str, service: ServiceName) -> None:
    url = pipeline.processes[service].url
    for operation in operations(url):
        run(url, token, operation, conform=True)
