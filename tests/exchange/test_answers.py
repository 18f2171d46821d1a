"""GitHub's answers are checked against what was asked, end to end over TLS.

A token broader than asked is revoked with itself and never handed out; a JIT runner
that landed elsewhere than asked is deleted; either way the caller gets 502 naming the
mismatch, one line is logged, `/metrics` counts it, and no credential is ever shown.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.fakes.github import API_VERSION, AppCredentials, FakeGitHub
from tests.fakes.issuer import FakeIssuer
from tests.fakes.tls import TestCA
from tests.gateway import INSTALLATION_ID, Gateway, post, sample, ssl_context

REVOKE = "apps/revoke-installation-access-token"
ACCESS_TOKENS = "apps/create-installation-access-token"
JIT_REPO = "actions/generate-runner-jitconfig-for-repo"
REGISTRATION = "actions/create-registration-token-for-repo"
#: What the default /token request asks (the grant of `runners-for-repo`).
ASKED_PERMISSIONS = {"contents": "read", "pull_requests": "write", "issues": "read"}


def metrics(gateway: Gateway) -> str:
    with gateway.client() as client:
        return client.get("/metrics").text


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Everything the gateway logs, down to its debug lines."""
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="exchanger")
    return caplog


@pytest.fixture
def fake_client(github: FakeGitHub, ca: TestCA) -> Iterator[httpx.Client]:
    """A well-behaved client of the fake GitHub, to see what it now makes of a credential."""
    assert github.api_url is not None
    headers = {
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": API_VERSION,
        "User-Agent": "exchanger-tests",
    }
    with httpx.Client(
        base_url=github.api_url, verify=ssl_context(ca), headers=headers, timeout=10
    ) as client:
        yield client


def assert_no_credentials(
    github: FakeGitHub,
    logs: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    *responses: httpx.Response,
) -> None:
    """No credential GitHub minted, nor the gateway's own, in a log line, output or answer."""
    captured = capfd.readouterr()
    seen = [logs.text, captured.out, captured.err, *(r.text for r in responses)]
    for secret in github.minted_secrets():
        assert not any(secret in text for text in seen)


def operations(github: FakeGitHub) -> list[str | None]:
    return [r.operation for r in github.requests]


# --- installation tokens ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("skew", "kind", "words"),
    [
        pytest.param({"permissions": {"administration": "write"}}, "permission",
                     "administration:write was not asked for", id="extra-permission"),
        pytest.param({"permissions": {"metadata": "write"}}, "permission",
                     "metadata:write was not asked for", id="metadata-above-githubs-own"),
        pytest.param({"permissions": {"contents": "write"}}, "permission_level",
                     "contents:write where read was asked", id="higher-level"),
        pytest.param({"repositories": ["secret-repo"]}, "repository",
                     "1 repository not asked for: octo-org/secret-repo", id="extra-repository"),
        pytest.param({"repositories": ["partner-org/octo-repo"]}, "repository",
                     "1 repository of another account", id="another-accounts-repository"),
        pytest.param({"selection_all": True}, "repository_selection",
                     "all repositories where 2 repositories were asked", id="selection-all"),
    ],
)  # fmt: skip
def test_broader_token_is_revoked_and_refused(
    app_gateway: Gateway,
    github: FakeGitHub,
    issuer: FakeIssuer,
    fake_client: httpx.Client,
    logs: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    skew: dict[str, Any],
    kind: str,
    words: str,
) -> None:
    before = metrics(app_gateway)
    revoked_before = github.revocations
    github.skew_tokens(**skew)

    response = post(app_gateway, "/token", issuer.mint(), {})

    assert response.status_code == 502, response.text
    assert response.json() == {
        "error": "upstream_error",
        "message": f"GitHub's token was broader than asked ({words}); it was revoked",
    }
    token = github.installation_tokens[-1]
    assert github.revocations == [*revoked_before, token]  # revoked with that very token
    assert operations(github)[-2:] == [ACCESS_TOKENS, REVOKE]
    assert not github.token_is_active(token)
    refused = fake_client.post(
        "/repos/octo-org/octo-repo/actions/runners/registration-token",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert refused.status_code == 401  # GitHub no longer takes it
    (line,) = [r for r in logs.records if "refused GitHub's installation token" in r.getMessage()]
    assert line.levelno == logging.WARNING
    assert f"installation {INSTALLATION_ID}: {words}" in line.getMessage()
    assert line.getMessage().endswith("revoked it")
    after = metrics(app_gateway)
    assert sample(after, "exchanger_broader_answers_total", kind=kind) == (
        sample(before, "exchanger_broader_answers_total", kind=kind) + 1
    )
    assert sample(
        after, "exchanger_revocations_total", target="installation_token", result="ok"
    ) == 1 + sample(before, "exchanger_revocations_total", target="installation_token", result="ok")
    assert_no_credentials(github, logs, capfd, response, refused)


def test_every_mismatch_of_one_answer_is_named(
    app_gateway: Gateway, github: FakeGitHub, issuer: FakeIssuer
) -> None:
    github.skew_tokens(permissions={"issues": "write", "actions": "read"}, repositories=["infra"])
    response = post(app_gateway, "/token", issuer.mint(), {"permissions": {"issues": "read"}})
    assert response.status_code == 502, response.text
    assert response.json()["message"] == (
        "GitHub's token was broader than asked (actions:read was not asked for; issues:write "
        "where read was asked; 1 repository not asked for: octo-org/infra); it was revoked"
    )
    assert github.revocations[-1] == github.installation_tokens[-1]


@pytest.mark.parametrize(
    ("skew", "permissions"),
    [
        pytest.param({"permissions": {"issues": None}},
                     {"contents": "read", "pull_requests": "write"}, id="dropped-permission"),
        pytest.param({"permissions": {"pull_requests": "read"}},
                     {"contents": "read", "pull_requests": "read", "issues": "read"},
                     id="lower-level"),
        pytest.param({"permissions": {"metadata": "read"}},
                     {**ASKED_PERMISSIONS, "metadata": "read"}, id="githubs-own-metadata-read"),
    ],
)  # fmt: skip
def test_narrower_answer_passes_as_github_states_it(
    app_gateway: Gateway,
    github: FakeGitHub,
    issuer: FakeIssuer,
    logs: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    skew: dict[str, Any],
    permissions: dict[str, str],
) -> None:
    revoked_before = github.revocations
    github.skew_tokens(**skew)

    response = post(app_gateway, "/token", issuer.mint(), {})

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["permissions"] == permissions
    assert sorted(answer["repositories"]) == ["octo-org/docs", "octo-org/octo-repo"]
    assert github.token_is_active(answer["token"])
    assert github.revocations == revoked_before
    assert REVOKE not in operations(github)
    assert not any("refused" in r.getMessage() for r in logs.records)
    assert_no_credentials(github, logs, capfd)


def test_all_repositories_asked_allows_selection_all_but_not_another_account(
    app_gateway: Gateway, github: FakeGitHub, issuer: FakeIssuer
) -> None:
    everything = issuer.mint(repository_id="99")  # a grant of repositories: "*"
    github.skew_tokens(selection_all=True)
    fine = post(app_gateway, "/token", everything, {"repositories": "*"})
    github.skew_tokens(repositories=["partner-org/octo-repo"])
    foreign = post(app_gateway, "/token", everything, {"repositories": "*"})

    assert fine.status_code == 200, fine.text
    assert fine.json()["repositories"] == "*"
    assert foreign.status_code == 502, foreign.text
    assert "1 repository of another account" in foreign.json()["message"]
    assert github.revocations[-1] == github.installation_tokens[-1]


@pytest.mark.parametrize(
    "inject",
    [
        pytest.param(lambda g: g.fail(REVOKE, 500), id="500"),
        pytest.param(lambda g: g.fail(REVOKE, 503), id="503"),
        pytest.param(lambda g: g.fail(REVOKE, 404), id="404"),
        pytest.param(lambda g: g.reset_connection(REVOKE, times=1), id="dropped"),
    ],
)
def test_a_failed_revocation_still_refuses_and_is_logged(
    app_gateway: Gateway,
    github: FakeGitHub,
    issuer: FakeIssuer,
    logs: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    inject: Callable[[FakeGitHub], None],
) -> None:
    before = metrics(app_gateway)
    github.skew_tokens(permissions={"administration": "write"})
    inject(github)

    response = post(app_gateway, "/token", issuer.mint(), {})

    assert response.status_code == 502, response.text
    assert response.json() == {
        "error": "upstream_error",
        "message": "GitHub's token was broader than asked (administration:write was not "
        "asked for); revoking it failed",
    }
    token = github.installation_tokens[-1]
    assert operations(github)[-2:] == [ACCESS_TOKENS, REVOKE]
    assert github.token_is_active(token)  # GitHub never took the revocation
    (line,) = [r for r in logs.records if "refused GitHub's installation token" in r.getMessage()]
    assert line.levelno == logging.ERROR
    assert "administration:write was not asked for" in line.getMessage()
    assert "revoking it failed" in line.getMessage()
    after = metrics(app_gateway)
    failed = {"target": "installation_token", "result": "failed"}
    assert sample(after, "exchanger_revocations_total", **failed) == 1 + sample(
        before, "exchanger_revocations_total", **failed
    )
    assert_no_credentials(github, logs, capfd, response)


def test_an_unreadable_token_answer_is_revoked_too(
    app_gateway: Gateway,
    github: FakeGitHub,
    issuer: FakeIssuer,
    app_credentials: AppCredentials,
    fake_client: httpx.Client,
    logs: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A token whose answer does not say what it grants cannot be checked: it is revoked."""
    minted = fake_client.post(
        f"/app/installations/{INSTALLATION_ID}/access_tokens",
        json={"repositories": ["octo-repo"], "permissions": {"contents": "read"}},
        headers={"Authorization": f"Bearer {app_credentials.jwt()}"},
    ).json()
    github.reset()
    unstated = {"token": minted["token"], "expires_at": minted["expires_at"]}  # no permissions
    github.fail(ACCESS_TOKENS, 201, unstated)

    response = post(app_gateway, "/token", issuer.mint(), {})

    assert response.status_code == 502, response.text
    assert response.json()["message"] == (
        "GitHub's token answer does not state its permissions; it was revoked"
    )
    assert github.revocations[-1] == minted["token"]
    assert not github.token_is_active(minted["token"])
    assert_no_credentials(github, logs, capfd, response)


# --- runner tokens and JIT configs --------------------------------------------------------


def unique_name() -> str:
    return f"answers-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize(
    ("body", "misplace", "kind", "words"),
    [
        pytest.param({"scope": "octo-org", "runner_group": "gpu"}, {"group_id": 4},
                     "runner_group", "runner group 4 where 3 was asked", id="org-other-group"),
        pytest.param({}, {"group_id": 2},
                     "runner_group", "runner group 2 where 1 was asked", id="repo-other-group"),
        pytest.param({"scope": "octo-org", "labels": ["linux"]}, {"labels": ["gpu"]},
                     "runner_labels", "labels linux missing; labels 'gpu' not asked for",
                     id="other-labels"),
        pytest.param({"labels": ["linux", "x64"]}, {"labels": ["LINUX", "x64", "arm64"]},
                     "runner_labels", "labels 'arm64' not asked for", id="one-label-more"),
    ],
)  # fmt: skip
def test_misplaced_jit_runner_is_deleted_and_refused(
    github_gateway: Gateway,
    github: FakeGitHub,
    issuer: FakeIssuer,
    logs: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    body: dict[str, Any],
    misplace: dict[str, Any],
    kind: str,
    words: str,
) -> None:
    before = metrics(github_gateway)
    name = unique_name()
    github.misplace_runners(**misplace)

    response = post(github_gateway, "/jitconfig", issuer.mint(), {**body, "name": name})

    assert response.status_code == 502, response.text
    assert response.json() == {
        "error": "upstream_error",
        "message": f"GitHub's JIT runner is not what was asked ({words}); it was deleted",
    }
    (deletion,) = [r for r in github.requests if r.method == "DELETE"]
    scope = "/orgs/octo-org" if body.get("scope") == "octo-org" else "/repos/octo-org/octo-repo"
    assert deletion.path.startswith(f"{scope}/actions/runners/")
    runner_id = int(deletion.path.rsplit("/", 1)[1])
    assert runner_id not in [r["runner"]["id"] for r in github.runners]  # gone
    (line,) = [r for r in logs.records if "refused GitHub's JIT runner" in r.getMessage()]
    assert line.levelno == logging.WARNING
    assert f"refused GitHub's JIT runner {runner_id} of" in line.getMessage()
    assert words in line.getMessage()
    assert line.getMessage().endswith("deleted it")
    assert sample(metrics(github_gateway), "exchanger_broader_answers_total", kind=kind) == (
        1 + sample(before, "exchanger_broader_answers_total", kind=kind)
    )
    again = post(github_gateway, "/jitconfig", issuer.mint(), {**body, "name": name})
    assert again.status_code == 200, again.text  # the name is free again
    assert_no_credentials(github, logs, capfd, response)


def test_a_failed_runner_deletion_still_refuses_and_is_logged(
    github_gateway: Gateway,
    github: FakeGitHub,
    issuer: FakeIssuer,
    logs: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    github.misplace_runners(group_id=4)
    github.fail("actions/delete-self-hosted-runner-from-org", 500)
    body = {"scope": "octo-org", "runner_group": "gpu", "name": unique_name()}

    response = post(github_gateway, "/jitconfig", issuer.mint(), body)

    assert response.status_code == 502, response.text
    assert response.json()["message"] == (
        "GitHub's JIT runner is not what was asked (runner group 4 where 3 was asked); "
        "deleting it failed"
    )
    assert body["name"] in [r["runner"]["name"] for r in github.runners]  # still there
    (line,) = [r for r in logs.records if "refused GitHub's JIT runner" in r.getMessage()]
    assert line.levelno == logging.ERROR
    assert "deleting it failed" in line.getMessage()
    assert_no_credentials(github, logs, capfd, response)


def jit_answer(**runner: Any) -> dict[str, Any]:
    labels = [{"id": 1, "name": "self-hosted", "type": "read-only"}] + [
        {"id": 100 + i, "name": n, "type": "custom"} for i, n in enumerate(["linux", "x64"])
    ]
    fields = {"id": 424242, "os": "unknown", "status": "offline", "busy": False, "labels": labels}
    return {"runner": {**fields, **runner}, "encoded_jit_config": "ZmFrZSBqaXQgY29uZmln"}


def test_a_jit_runner_with_another_name_is_deleted(
    github_gateway: Gateway,
    github: FakeGitHub,
    issuer: FakeIssuer,
    logs: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    name = unique_name()
    github.fail(JIT_REPO, 201, jit_answer(name="someone-else", runner_group_id=1))

    response = post(github_gateway, "/jitconfig", issuer.mint(), {"name": name})

    assert response.status_code == 502, response.text
    # The fake knows no runner 424242: the deletion fails, and the caller is told.
    assert response.json()["message"] == (
        f"GitHub's JIT runner is not what was asked (runner 'someone-else' where {name!r} "
        "was asked); deleting it failed"
    )
    assert [r.path for r in github.requests if r.method == "DELETE"] == [
        "/repos/octo-org/octo-repo/actions/runners/424242"
    ]
    assert "ZmFrZSBqaXQgY29uZmln" not in logs.text + response.text
    assert_no_credentials(github, logs, capfd, response)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        pytest.param({"runner": {"id": "7", "name": "x"}, "encoded_jit_config": "eA=="},
                     "GitHub's JIT answer names no runner id", id="id-not-a-number"),
        pytest.param({"encoded_jit_config": "eA=="},
                     "GitHub's JIT answer names no runner id", id="no-runner"),
        pytest.param({"runner": {"id": True, "name": "x"}},
                     "GitHub's JIT answer names no runner id", id="id-a-boolean"),
    ],
)  # fmt: skip
def test_a_jit_answer_without_a_runner_id_is_502_and_deletes_nothing(
    github_gateway: Gateway, github: FakeGitHub, issuer: FakeIssuer, answer: Any, message: str
) -> None:
    github.fail(JIT_REPO, 201, answer)
    response = post(github_gateway, "/jitconfig", issuer.mint(), {"name": unique_name()})
    assert response.status_code == 502, response.text
    assert response.json() == {"error": "upstream_error", "message": message}
    assert [r for r in github.requests if r.method == "DELETE"] == []


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        pytest.param({"encoded_jit_config": None}, "no encoded_jit_config", id="no-config"),
        pytest.param({"runner_group_id": "1"}, "a runner group id that is not a number",
                     id="group-not-a-number"),
        pytest.param({"labels": "linux"}, "runner labels that cannot be read", id="labels"),
        pytest.param({"name": 7}, "a runner without a name", id="name-not-a-string"),
    ],
)  # fmt: skip
def test_an_unreadable_jit_runner_is_deleted(
    github_gateway: Gateway, github: FakeGitHub, issuer: FakeIssuer, answer: Any, words: str
) -> None:
    name = unique_name()
    body = jit_answer(name=name)
    answer = dict(answer)  # the parameter is shared by both modes
    if "encoded_jit_config" in answer:
        body["encoded_jit_config"] = answer.pop("encoded_jit_config")
    body["runner"].update(answer)
    github.fail(JIT_REPO, 201, body)

    response = post(github_gateway, "/jitconfig", issuer.mint(), {"name": name})

    assert response.status_code == 502, response.text
    assert response.json()["message"] == (
        f"GitHub's JIT runner is not what was asked ({words}); deleting it failed"
    )
    assert [r.path for r in github.requests if r.method == "DELETE"] == [
        "/repos/octo-org/octo-repo/actions/runners/424242"
    ]


def test_a_runner_in_the_asked_place_passes(
    github_gateway: Gateway, github: FakeGitHub, issuer: FakeIssuer
) -> None:
    """GitHub's own read-only labels (`self-hosted`) and a group id it leaves out are fine."""
    name = unique_name()
    github.fail(JIT_REPO, 201, jit_answer(name=name))  # no runner_group_id: optional
    response = post(github_gateway, "/jitconfig", issuer.mint(), {"name": name})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "runner": {"id": 424242, "name": name},
        "encoded_jit_config": "ZmFrZSBqaXQgY29uZmln",
    }
    assert [r for r in github.requests if r.method == "DELETE"] == []


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        pytest.param({"token": "ABC"}, "GitHub's runner token answer lacks token or expires_at",
                     id="no-expiry"),
        pytest.param({"token": 5, "expires_at": "2026-01-22T12:13:35.123-08:00"},
                     "GitHub's runner token answer lacks token or expires_at",
                     id="token-not-a-string"),
        pytest.param({"token": "ABC", "expires_at": "tomorrow"},
                     "GitHub sent an unreadable expires_at", id="unreadable-expiry"),
    ],
)  # fmt: skip
def test_a_malformed_runner_token_answer_is_502(
    github_gateway: Gateway, github: FakeGitHub, issuer: FakeIssuer, answer: Any, message: str
) -> None:
    post(github_gateway, "/register", issuer.mint())  # warm caches: the fault hits the mint
    github.fail(REGISTRATION, 201, answer)
    response = post(github_gateway, "/register", issuer.mint())
    assert response.status_code == 502, response.text
    assert response.json() == {"error": "upstream_error", "message": message}
