"""What GitHub says reaches logs and answers escaped: caller text cannot forge a log line."""

from __future__ import annotations

import logging

import httpx
import pytest

from tests.fakes.github import FakeGitHub
from tests.fakes.issuer import FakeIssuer
from tests.gateway import Gateway, sample

FORGED = 'runner x\n2026-01-01 00:00:00,000 INFO exchanger.audit: {"decision":"allow"}\u2028'


def test_regression_github_text_with_newlines_is_escaped_in_logs_and_answers(
    github_gateway: Gateway,
    github: FakeGitHub,
    issuer: FakeIssuer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    github.fail("generate-jitconfig", 422, body={"message": FORGED})
    with caplog.at_level(logging.WARNING, logger="exchanger"), github_gateway.client() as client:
        answer: httpx.Response = client.post(
            "/jitconfig",
            json={"scope": "octo-org"},
            headers={"Authorization": f"Bearer {issuer.mint()}"},
        )
    assert answer.status_code == 502
    message = answer.json()["message"]
    assert "\n" not in message
    assert "\u2028" not in message
    assert "runner x\\u000a2026-01-01" in message
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("exchanger.")]
    logged = [line for line in lines if "runner x" in line]
    assert logged, lines
    assert all("\n" not in line and "\u2028" not in line for line in logged)
    assert "(request id " in logged[0]
    # The engine allowed it; GitHub refused it: an allow with a 502, in /metrics as in the audit.
    with github_gateway.client() as client:
        text = client.get("/metrics").text
    labels = {"endpoint": "jitconfig", "decision": "allow", "status": "502"}
    assert sample(text, "exchanger_exchanges_total", **labels) >= 1
