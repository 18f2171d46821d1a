"""OpenTelemetry tracing: one span tree per exchange, no credential in it, free when off."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from exchanger import tracing
from tests.fakes.github import FakeGitHub
from tests.fakes.issuer import FakeIssuer
from tests.gateway import Gateway


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    assert tracing.configure({}, exporter=exporter)
    try:
        yield exporter
    finally:
        tracing.shutdown()


def test_off_span_is_the_shared_no_op() -> None:
    assert not tracing.enabled()
    assert not tracing.configure({})  # no OTLP endpoint
    assert not tracing.configure(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"}
    )
    first = tracing.span("verify")
    assert first is tracing.NOOP
    assert tracing.span("github", operation="GET /app", status=200) is first
    assert tracing.exchange("token", "req-1") is tracing.NOOP
    with first as entered:
        entered.set_attribute("status", 200)
    assert entered is first


def _tree(finished: tuple[ReadableSpan, ...]) -> dict[str, list[str]]:
    names = {span.context.span_id: span.name for span in finished if span.context}
    children: dict[str, list[str]] = {}
    for span in finished:
        if span.parent is not None and span.parent.span_id in names:
            children.setdefault(names[span.parent.span_id], []).append(span.name)
    return children


def test_an_exchange_is_one_span_tree_without_credentials(
    app_gateway: Gateway,
    github: FakeGitHub,
    issuer: FakeIssuer,
    spans: InMemorySpanExporter,
) -> None:
    oidc_token = issuer.mint()
    with app_gateway.client() as client:
        response = client.post(
            "/token",
            json={},
            headers={"Authorization": f"Bearer {oidc_token}", "X-Request-Id": "trace-me-1"},
        )
    assert response.status_code == 200, response.text
    minted = response.json()["token"]

    finished = spans.get_finished_spans()
    (exchange,) = [span for span in finished if span.name == "exchange token"]
    assert exchange.parent is None
    attributes = dict(exchange.attributes or {})
    assert attributes["request_id"] == "trace-me-1"
    assert attributes["endpoint"] == "token"
    assert attributes["status"] == 200
    assert attributes["decided_by"] == "policy"

    children = _tree(finished)["exchange token"]
    assert children[:2] == ["verify", "decide"]
    assert "github" in children
    calls = [
        dict(span.attributes or {})
        for span in finished
        if span.name == "github" and span.parent == exchange.context
    ]
    assert {"operation": "POST /app/installations/{}/access_tokens", "status": 201} in calls

    for span in finished:
        texts = [str(value) for value in (span.attributes or {}).values()]
        texts += [str(v) for event in span.events for v in (event.attributes or {}).values()]
        texts += [event.name for event in span.events]
        texts += [span.name, str(span.status.description)]
        for text in texts:
            assert minted not in text
            assert oidc_token not in text
