"""OAuth 2.0 Token Exchange (RFC 8693) on /oauth2/token, spoken by oauthlib's client code."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from oauthlib.oauth2.rfc6749 import errors
from oauthlib.oauth2.rfc6749.parameters import parse_token_response, prepare_token_request

from tests.fakes.github import FakeGitHub
from tests.fakes.issuer import FakeIssuer
from tests.gateway import REGISTRY_PASSWORD, Gateway

GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ID_TOKEN = "urn:ietf:params:oauth:token-type:id_token"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def exchange(gateway: Gateway, body: str) -> httpx.Response:
    with gateway.client() as client:
        return client.post("/oauth2/token", content=body, headers=FORM)


def ask(gateway: Gateway, token: str, **params: Any) -> httpx.Response:
    """A token-exchange request as oauthlib prepares it."""
    body = prepare_token_request(GRANT, subject_token=token, subject_token_type=ID_TOKEN, **params)
    return exchange(gateway, body)


def test_installation_token_through_a_standard_client(
    app_gateway: Gateway, github: FakeGitHub, issuer: FakeIssuer
) -> None:
    response = ask(
        app_gateway,
        issuer.mint(),
        resource="https://github.com/octo-org/octo-repo",
        scope=["contents:read"],
        requested_token_type=ACCESS_TOKEN,
    )
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    token = parse_token_response(response.text, scope=["contents:read"])
    assert token["issued_token_type"] == ACCESS_TOKEN
    assert token["token_type"] == "Bearer"
    assert 0 < token["expires_in"] <= 3600
    assert token["scope"] == ["contents:read"]
    granted = github.describe_token(token["access_token"])
    assert granted is not None
    assert (granted["repositories"], granted["permissions"]) == (
        ["octo-repo"],
        {"contents": "read"},
    )


def test_owner_target_takes_the_whole_grant(
    app_gateway: Gateway, github: FakeGitHub, issuer: FakeIssuer
) -> None:
    response = ask(app_gateway, issuer.mint(), audience="https://github.com/octo-org")
    assert response.status_code == 200, response.text
    granted = github.describe_token(response.json()["access_token"])
    assert granted is not None
    assert granted["repositories"] == ["octo-repo", "docs"]


def test_secret_field_as_the_access_token(gateway: Gateway, issuer: FakeIssuer) -> None:
    response = ask(gateway, issuer.mint(), resource="urn:exchanger:secret:registry/password")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "access_token": REGISTRY_PASSWORD,
        "issued_token_type": ACCESS_TOKEN,
        "token_type": "N_A",
    }


def test_runner_registration_token(
    app_gateway: Gateway, github: FakeGitHub, issuer: FakeIssuer
) -> None:
    response = ask(
        app_gateway, issuer.mint(), resource="urn:exchanger:runner:register:octo-org/octo-repo"
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["token_type"], answer["issued_token_type"]) == ("N_A", ACCESS_TOKEN)
    assert answer["expires_in"] > 0


# (form built by hand, or None for oauthlib's; params; status; RFC 6749 error)
ERRORS: list[Any] = [
    pytest.param(
        "grant_type=client_credentials", {}, 400, "unsupported_grant_type", id="wrong-grant"
    ),
    pytest.param(
        f"grant_type={GRANT}&subject_token_type={ID_TOKEN}",
        {},
        400,
        "invalid_request",
        id="no-subject-token",
    ),
    pytest.param(
        None, {"subject_token_type": "urn:x"}, 400, "invalid_request", id="wrong-subject-token-type"
    ),
    pytest.param(None, {"scope_twice": True}, 400, "invalid_request", id="duplicate-parameter"),
    pytest.param(None, {"client_secret": "x"}, 400, "invalid_request", id="unknown-parameter"),
    pytest.param(
        None,
        {"actor_token": "x", "actor_token_type": ID_TOKEN},
        400,
        "invalid_request",
        id="actor-token",
    ),
    pytest.param('{"grant_type": 1}', {}, 400, "invalid_request", id="not-a-form"),
    pytest.param(None, {"token": "not-a-jwt"}, 400, "invalid_grant", id="bad-subject-token"),
    pytest.param(None, {"resource": None}, 400, "invalid_target", id="no-target"),
    pytest.param(
        None, {"resource": "https://example.com/x"}, 400, "invalid_target", id="unknown-target"
    ),
    pytest.param(
        None,
        {"resource": ["urn:exchanger:secret:a/b", "urn:exchanger:secret:c/d"]},
        400,
        "invalid_target",
        id="two-secrets",
    ),
    pytest.param(
        None,
        {"resource": "urn:exchanger:secret:registry"},
        400,
        "invalid_target",
        id="secret-without-field",
    ),
    pytest.param(
        None,
        {"resource": "urn:exchanger:secret:npm-publish/token"},
        400,
        "invalid_target",
        id="denied-secret",
    ),
    pytest.param(
        None,
        {"resource": "urn:exchanger:secret:nope/x"},
        400,
        "invalid_target",
        id="unknown-secret",
    ),
    pytest.param(None, {"scope": ["contents:read"]}, 400, "invalid_scope", id="scope-on-a-secret"),
    pytest.param(
        None, {"requested_token_type": "urn:x"}, 400, "invalid_target", id="other-token-type"
    ),
]


@pytest.mark.parametrize(("form", "params", "status", "error"), ERRORS)
def test_errors_are_rfc_6749(
    gateway: Gateway,
    issuer: FakeIssuer,
    form: str | None,
    params: dict[str, Any],
    status: int,
    error: str,
) -> None:
    if form is None:
        fields: dict[str, Any] = {
            "subject_token": params.pop("token", issuer.mint()),
            "subject_token_type": params.pop("subject_token_type", ID_TOKEN),
            "resource": "urn:exchanger:secret:registry/password",
        }
        twice = params.pop("scope_twice", False)
        fields.update(params)
        if fields["resource"] is None:
            del fields["resource"]
        form = prepare_token_request(GRANT, **fields)
        if twice:
            form += "&grant_type=" + GRANT
    response = exchange(gateway, form)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error, body
    assert set(body) == {"error", "error_description"}
    assert response.headers["cache-control"] == "no-store"


def test_unknown_and_denied_targets_look_the_same(gateway: Gateway, issuer: FakeIssuer) -> None:
    denied = ask(gateway, issuer.mint(), resource="urn:exchanger:secret:npm-publish/token")
    unknown = ask(gateway, issuer.mint(), resource="urn:exchanger:secret:nope/token")
    assert (denied.status_code, denied.json()) == (unknown.status_code, unknown.json())


@pytest.mark.parametrize(
    ("params", "exception"),
    [
        pytest.param({"token": "not-a-jwt"}, errors.InvalidGrantError, id="invalid-grant"),
        pytest.param({"scope": ["contents:read"]}, errors.InvalidScopeError, id="invalid-scope"),
    ],
)
def test_a_standard_client_reads_the_errors(
    gateway: Gateway, issuer: FakeIssuer, params: dict[str, Any], exception: type[Exception]
) -> None:
    token = params.pop("token", issuer.mint())
    response = ask(gateway, token, resource="urn:exchanger:secret:registry/password", **params)
    with pytest.raises(exception):
        parse_token_response(response.text)
