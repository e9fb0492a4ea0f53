"""The JSON API against its OpenAPI description, by schemathesis, on a running service process:
every operation, valid and invalid input, no 5xx, responses as described."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.core.failures import FailureGroup, ServerError
from schemathesis.core.transport import Response
from schemathesis.specs.openapi.checks import positive_data_acceptance

from appliance.room import openapi

from .process import GENEROUS_LIMITS, RoomProcess, room_process, write_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoomProcess]:
    tmp = tmp_path_factory.mktemp("room-openapi")
    with room_process(write_config(tmp, GENEROUS_LIMITS)) as running:
        yield running
        assert "Traceback" not in running.log, running.log


# The description as the code builds it; test_served_description_is_this_one checks that the
# service serves exactly this. (Loaded here rather than from the running service because the
# pytest plugin needs the operations at collection time.)
schema = schemathesis.openapi.from_dict(openapi.document())


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms(case: schemathesis.Case, service: RoomProcess) -> None:
    excluded = []
    if case.operation.path == "/api/v1/device/token":
        # RFC 8628 section 3.5: a well-formed poll for an unknown or pending code is a 400
        # (invalid_grant, authorization_pending...), so "valid data gets 2xx" does not apply.
        excluded.append(positive_data_acceptance)
    case.call_and_validate(base_url=service.url, excluded_checks=excluded)


def test_schemathesis_reaches_every_operation_and_every_body() -> None:
    """test_api_conforms runs on every described operation, and generates a JSON body for each
    that takes one (the device flow and the viewer session)."""
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {(op.method.upper(), op.path) for op in operations} == {
        (method.upper(), path) for path, item in openapi.document()["paths"].items() for method in item
    }
    with_body = {op.path for op in operations if any(b.media_type == "application/json" for b in op.body)}
    assert with_body == {"/api/v1/device/authorize", "/api/v1/device/token", "/api/v1/viewer/session"}


def test_the_default_checks_fail_a_server_error() -> None:
    """call_and_validate's default checks include not_a_server_error: a 500, even with a body
    as described, fails (so "no 5xx" is checked on every generated case)."""
    case = schema["/api/v1/health"]["GET"].Case()
    response = Response(
        status_code=500,
        headers={"content-type": ["application/json"]},
        content=b'{"status": "ok", "version": "1"}',
        request=requests.Request("GET", "http://127.0.0.1/api/v1/health").prepare(),
        elapsed=0.01,
        verify=True,
    )
    with pytest.raises(FailureGroup) as info:
        case.validate_response(response)
    assert any(isinstance(failure, ServerError) for failure in info.value.exceptions)


def test_served_description_is_this_one(service: RoomProcess) -> None:
    assert requests.get(service.url + "/api/v1/openapi.json", timeout=10).json() == openapi.document()


def test_the_description_is_served_and_lists_every_api_route(service: RoomProcess) -> None:
    doc = requests.get(service.url + "/api/v1/openapi.json", timeout=10).json()
    assert doc["openapi"].startswith("3.1")
    assert set(doc["paths"]) == {
        "/api/v1/device/authorize",
        "/api/v1/device/token",
        "/api/v1/device/me",
        "/api/v1/device/revoke",
        "/api/v1/viewer/session",
        "/api/v1/ws",
        "/api/v1/health",
        "/api/v1/openapi.json",
    }


def test_unknown_api_paths_and_methods_are_json_4xx(service: RoomProcess) -> None:
    r = requests.get(service.url + "/api/v1/nothing", timeout=10)
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = requests.delete(service.url + "/api/v1/device/authorize", timeout=10)
    assert r.status_code == 405 and "POST" in r.headers["Allow"]
    assert r.json()["error"] == "method_not_allowed"


def test_it_listens_where_it_said(service: RoomProcess, tmp_path: Path) -> None:
    assert requests.get(service.url + "/api/v1/health", timeout=10).json()["status"] == "ok"
