"""The HTTP surface through a real uvicorn server over TLS: secrets, errors, headers, audit."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx
import pytest
from starlette.requests import Request

from exchanger.app import on_unexpected
from tests.fakes.issuer import FakeIssuer
from tests.gateway import REGISTRY_PASSWORD, Gateway, running_gateway, sample, write_config


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def get(gateway: Gateway, path: str, **kwargs: object) -> httpx.Response:
    with gateway.client() as client:
        return client.get(path, **kwargs)  # type: ignore[arg-type]


def test_secret_field_is_raw_text_without_newline(gateway: Gateway, issuer: FakeIssuer) -> None:
    response = get(gateway, "/secrets/registry/password", headers=bearer(issuer.mint()))
    assert response.status_code == 200
    assert response.text == REGISTRY_PASSWORD
    assert response.headers["content-type"].startswith("text/plain")
    assert response.headers["cache-control"] == "no-store"


def test_secret_object_is_json_of_all_fields(gateway: Gateway, issuer: FakeIssuer) -> None:
    response = get(gateway, "/secrets/registry", headers=bearer(issuer.mint()))
    assert response.status_code == 200
    assert response.json() == {"username": "ci-bot", "password": REGISTRY_PASSWORD}
    assert response.headers["cache-control"] == "no-store"


def test_match_pattern_grant_for_release_tags(gateway: Gateway, issuer: FakeIssuer) -> None:
    token = issuer.mint(ref="refs/tags/v2")
    assert get(gateway, "/secrets/npm-publish/token", headers=bearer(token)).status_code == 200
    other = issuer.mint(ref="refs/heads/main")
    assert get(gateway, "/secrets/npm-publish/token", headers=bearer(other)).status_code == 403


def _comparable(response: httpx.Response) -> tuple[int, bytes, list[tuple[str, str]]]:
    # The request id and the server's clock differ between any two responses, by design.
    varying = {"x-request-id", "date"}
    headers = sorted((k, v) for k, v in response.headers.items() if k not in varying)
    return response.status_code, response.content, headers


@pytest.mark.parametrize(
    ("path", "claims"),
    [
        pytest.param("/secrets/no-such-secret", {}, id="unknown-secret"),
        pytest.param("/secrets/registry/no-such-field", {}, id="unknown-field"),
        pytest.param("/secrets/npm-publish", {}, id="exists-but-not-granted"),
        pytest.param("/secrets/registry", {"event_name": "pull_request"}, id="denied-by-deny"),
        pytest.param("/secrets/registry", {"repository_id": "75"}, id="other-repository"),
    ],
)
def test_unknown_and_denied_are_byte_identical(
    gateway: Gateway, issuer: FakeIssuer, path: str, claims: dict[str, Any]
) -> None:
    reference = get(gateway, "/secrets/does-not-exist", headers=bearer(issuer.mint()))
    response = get(gateway, path, headers=bearer(issuer.mint(**claims)))
    assert response.status_code == 403
    assert response.json() == {"error": "access_denied", "message": "no policy allows this request"}
    assert _comparable(response) == _comparable(reference)


def test_request_id_echoed_when_well_formed(gateway: Gateway) -> None:
    response = get(gateway, "/healthz", headers={"X-Request-Id": "ci-run_42.attempt-1"})
    assert response.headers["x-request-id"] == "ci-run_42.attempt-1"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("x" * 129, id="too-long"),
        pytest.param("bad id", id="space"),
        pytest.param("a\u00e9", id="non-ascii"),
        pytest.param("", id="empty"),
    ],
)
def test_request_id_replaced_when_malformed(gateway: Gateway, value: str) -> None:
    headers = [(b"X-Request-Id", value.encode("utf-8"))]
    response = get(gateway, "/healthz", headers=headers)
    fresh = response.headers["x-request-id"]
    assert fresh != value
    assert 0 < len(fresh) <= 128


def test_every_response_has_a_request_id(gateway: Gateway, issuer: FakeIssuer) -> None:
    for path in ("/healthz", "/readyz", "/secrets/registry", "/nope"):
        assert get(gateway, path).headers.get("x-request-id")


def test_health_and_readiness(gateway: Gateway, issuer: FakeIssuer) -> None:
    assert get(gateway, "/healthz").status_code == 200
    ready = get(gateway, "/readyz")
    assert ready.status_code == 200
    assert ready.json()["issuers"] == {issuer.url: True}


def test_readyz_503_until_keys_were_fetched(
    issuer: FakeIssuer, ca: object, config_dir: object
) -> None:
    issuer.mode = "down"
    path = write_config(config_dir, issuer.url)  # type: ignore[arg-type]
    with running_gateway(path, ca, ready=False) as cold:  # type: ignore[arg-type]
        response = get(cold, "/readyz")
        assert response.status_code == 503
        assert response.json()["issuers"] == {issuer.url: False}


def test_body_over_limit_is_413_before_token_check(gateway: Gateway) -> None:
    with gateway.client() as client:
        big = client.request("GET", "/secrets/registry", content=b"x" * 70_000)
        chunked = client.request(
            "GET", "/secrets/registry", content=iter([b"x" * 40_000, b"y" * 40_000])
        )
    for response in (big, chunked):
        assert response.status_code == 413
        assert response.json()["error"] == "request_too_large"


def test_token_in_query_string_is_refused(gateway: Gateway, issuer: FakeIssuer) -> None:
    token = issuer.mint()
    response = get(gateway, f"/secrets/registry?token={token}", headers=bearer(token))
    assert response.status_code == 400
    assert token not in response.text


def test_unknown_route_and_method_answer_json(gateway: Gateway) -> None:
    with gateway.client() as client:
        missing = client.get("/admin")
        wrong_method = client.post("/secrets/registry")
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"] == "method_not_allowed"


def test_audit_line_per_exchange_without_values(
    gateway: Gateway, issuer: FakeIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    token = issuer.mint()
    with caplog.at_level(logging.INFO, logger="exchanger.audit"):
        ok = get(gateway, "/secrets/registry/password", headers=bearer(token))
        denied = get(gateway, "/secrets/registry", headers=bearer(issuer.mint(repository_id="9")))
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "exchanger.audit"]
    assert [line["status"] for line in lines] == [200, 403]
    allow, deny = lines
    assert allow["decision"] == "allow"
    assert allow["policy"] == "registry-from-main"
    assert allow["request"] == {"secret": "registry", "field": "password"}
    assert allow["request_id"] == ok.headers["x-request-id"]
    assert allow["repository_id"] == "74"
    assert deny["decision"] == "deny"
    assert deny["policy"] is None
    assert (allow["decided_by"], deny["decided_by"]) == ("policy", "no_policy")
    assert (allow["error"], allow["reason"]) == (None, None)
    assert (deny["error"], deny["reason"]) == ("access_denied", "no policy allows this request")
    assert deny["request_id"] == denied.headers["x-request-id"]
    expected_keys = {
        "ts", "event", "request_id", "endpoint", "decision", "decided_by", "status", "error",
        "reason", "policy", "request",
        "iss", "sub", "repository", "repository_id", "ref", "workflow_ref", "run_id", "actor",
        "duration_ms",
    }  # fmt: skip
    assert set(allow) == expected_keys
    text = caplog.text
    assert REGISTRY_PASSWORD not in text
    assert token.split(".")[2] not in text


def test_metrics_count_exchanges_by_endpoint_decision_status(
    gateway: Gateway, issuer: FakeIssuer
) -> None:
    labels = {"endpoint": "secrets", "decision": "allow", "status": "200"}
    before = sample(get(gateway, "/metrics").text, "exchanger_exchanges_total", **labels)
    get(gateway, "/secrets/registry/username", headers=bearer(issuer.mint()))
    get(gateway, "/secrets/registry/username")
    response = get(gateway, "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert sample(text, "exchanger_exchanges_total", **labels) == before + 1
    denied = {"endpoint": "secrets", "decision": "deny", "status": "401"}
    assert sample(text, "exchanger_exchanges_total", **denied) >= 1
    assert "exchanger_exchange_duration_seconds_bucket" in text
    assert 'exchanger_jwks_refreshes_total{issuer="' in text
    assert REGISTRY_PASSWORD not in text


def test_regression_lone_surrogate_claim_is_denied_not_500(
    gateway: Gateway, issuer: FakeIssuer
) -> None:
    """JSON may escape a lone surrogate, which RE2 cannot take: no match, never a crash."""
    token = issuer.mint(ref="refs/tags/v\ud800")
    response = get(gateway, "/secrets/registry", headers=bearer(token))
    assert response.status_code == 403
    assert get(gateway, "/secrets/registry", headers=bearer(issuer.mint())).status_code == 200


def test_a_500_logs_its_traceback_and_answers_bare_json(caplog: pytest.LogCaptureFixture) -> None:
    request = Request({"type": "http", "method": "GET", "path": "/x", "headers": []})
    try:
        raise ZeroDivisionError("a bug")
    except ZeroDivisionError as exc:
        with caplog.at_level(logging.ERROR, logger="exchanger"):
            response = asyncio.run(on_unexpected(request, exc))
    assert (response.status_code, response.body) == (
        500,
        b'{"error":"internal_error","message":"internal error"}',
    )
    (record,) = caplog.records
    assert record.getMessage() == "unexpected ZeroDivisionError while serving /x"
    assert record.exc_info is not None
    assert "raise ZeroDivisionError" in caplog.text
