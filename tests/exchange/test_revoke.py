"""Self-revocation: a job gives up the installation token it received (POST /revoke)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from tests.fakes.github import FakeGitHub
from tests.fakes.issuer import FakeIssuer
from tests.gateway import Gateway, post


def installation_token(gateway: Gateway, issuer: FakeIssuer) -> str:
    minted = post(gateway, "/token", issuer.mint(), {})
    assert minted.status_code == 200, minted.text
    token: str = minted.json()["token"]
    return token


def test_a_job_revokes_its_token_and_github_refuses_it_afterwards(
    app_gateway: Gateway,
    github: FakeGitHub,
    issuer: FakeIssuer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = installation_token(app_gateway, issuer)
    assert github.describe_token(token) is not None
    with caplog.at_level(logging.INFO):
        answer = post(app_gateway, "/revoke", issuer.mint(), {"token": token})
    assert (answer.status_code, answer.content) == (204, b"")
    assert github.revocations == [token]
    assert not github.token_is_active(token)
    audit = [json.loads(r.getMessage()) for r in caplog.records if r.name == "exchanger.audit"]
    assert audit[-1]["endpoint"] == "revoke"
    assert (audit[-1]["decision"], audit[-1]["decided_by"], audit[-1]["status"]) == (
        "allow",
        "self_revocation",
        204,
    )
    assert audit[-1]["request"] == {"revoke": "installation_token"}
    assert token not in caplog.text


def test_revoking_again_or_an_unknown_token_is_done_too(
    app_gateway: Gateway, github: FakeGitHub, issuer: FakeIssuer
) -> None:
    token = installation_token(app_gateway, issuer)
    for _ in range(2):
        assert post(app_gateway, "/revoke", issuer.mint(), {"token": token}).status_code == 204
    unknown = post(app_gateway, "/revoke", issuer.mint(), {"token": "ghs_" + "0" * 36})
    assert unknown.status_code == 204


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({}, id="no-token"),
        pytest.param({"token": ""}, id="empty"),
        pytest.param({"token": 7}, id="not-a-string"),
        pytest.param({"token": "ghs_a b"}, id="space"),
        pytest.param({"token": "ghs_" + "x" * 509}, id="too-long"),
        pytest.param({"token": "ghp_personalAccessToken"}, id="not-an-installation-token"),
        pytest.param({"token": "gho_oauthToken"}, id="oauth-token"),
        pytest.param({"token": "ghs_t", "repositories": ["x"]}, id="unknown-field"),
    ],
)
def test_a_bad_revocation_body_is_400_and_reaches_no_github(
    app_gateway: Gateway, github: FakeGitHub, issuer: FakeIssuer, body: Any
) -> None:
    answer = post(app_gateway, "/revoke", issuer.mint(), body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_request"
    assert github.requests == []


def test_revocation_needs_a_verified_identity(
    app_gateway: Gateway, github: FakeGitHub, issuer: FakeIssuer
) -> None:
    assert post(app_gateway, "/revoke", None, {"token": "t"}).status_code == 401
    assert post(app_gateway, "/revoke", issuer.forge_hmac(), {"token": "t"}).status_code == 401
    assert github.requests == []


def test_github_down_while_revoking_is_503(
    app_gateway: Gateway, github: FakeGitHub, issuer: FakeIssuer
) -> None:
    github.fail("installation/token", 503, times=None)
    answer = post(app_gateway, "/revoke", issuer.mint(), {"token": "ghs_" + "1" * 36})
    assert answer.status_code == 503
    assert int(answer.headers["retry-after"]) >= 1
