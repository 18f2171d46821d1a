"""What the servers are loaded with: fakes, a pool of pre-minted tokens, policies, configs.

The fakes are the test suite's own (`tests/fakes`): a fake OIDC issuer serving
discovery and JWKS over TLS, and a fake GitHub (App mode) that answers every
call after a fixed 50 ms. Both run on threads of the benchmark process and
count what they are asked.

Tokens come from four "hot" repositories of `octo-org`; every token is
distinct (its own `jti`, signature), so nothing can be served from a per-token
cache. Bad-signature tokens pair one token's header and claims with another
token's signature.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.fakes.github import AppCredentials, FakeGitHub, run_fake_github
from tests.fakes.issuer import AUDIENCE, FakeIssuer, run_issuer
from tests.fakes.tls import TestCA

GITHUB_LATENCY = 0.050
APP_ID = 12345
INSTALLATION_ID = 4242
HOT_REPOSITORIES = 4
TOKEN_LIFETIME = 7200  # the run must never see an expired token

_CONFIG = """\
issuers:
  - issuer: {issuer}
    audiences: ["{audience}"]
github:
  api_url: {api_url}
  app:
    id: {app_id}
    private_key: {{file: app.pem}}
secrets:
  registry:
    username: {{value: ci-bot}}
    password: {{value: bench-registry-password}}
policy_files: ["{policies}"]
"""
_REF = "[refs/heads/main, 'match:refs/tags/v[0-9]+(\\.[0-9]+)*']"


class _Unchecked:
    """openapi-core's validators, switched off (see `BenchGitHub`)."""

    def validate_request(self, request: object) -> None:
        return None

    def validate_response(self, request: object, response: object) -> None:
        return None


class BenchGitHub(FakeGitHub):
    """The test suite's fake GitHub without its OpenAPI validation of every exchange.

    Validating each request and answer against GitHub's OpenAPI description costs the
    fake about 10 ms of CPU per call, on the same two cores as the gateway: the fake,
    not the gateway, would be measured. The test suite checks the contract; everything
    else (App JWT checks, tokens, the 50 ms latency, request records) is unchanged.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._spec = dataclasses.replace(self._spec, openapi=_Unchecked())  # type: ignore[arg-type]


@dataclass(frozen=True)
class Workload:
    directory: Path
    ca: TestCA
    issuer: FakeIssuer
    github: FakeGitHub
    tokens: Path  # one valid token per line
    bad_tokens: Path  # the same number of bad-signature tokens
    pool: int

    def config(self, policies: int) -> Path:
        """A config in App mode with `policies` policies (written once, then reused)."""
        path = self.directory / f"exchanger-{policies}.yaml"
        if not path.exists():
            policy_file = self.directory / f"policies-{policies}.yaml"
            policy_file.write_text(policies_yaml(policies), encoding="utf-8")
            assert self.github.api_url is not None
            path.write_text(
                _CONFIG.format(
                    issuer=self.issuer.url,
                    audience=AUDIENCE,
                    api_url=self.github.api_url,
                    app_id=APP_ID,
                    policies=policy_file.name,
                ),
                encoding="utf-8",
            )
        return path


@contextlib.contextmanager
def workload(directory: Path, pool: int) -> Iterator[Workload]:
    """Start the fakes, mint the token pools, yield; the fakes stop on exit."""
    ca = TestCA.create(directory)
    app = AppCredentials.generate(APP_ID)
    (directory / "app.pem").write_text(app.pem_pkcs1, encoding="utf-8")
    fake = BenchGitHub(app=app, installations={"octo-org": INSTALLATION_ID})
    with run_issuer(ca) as (issuer, _), run_fake_github(ca, fake) as (github, _):
        github.delay("^/", GITHUB_LATENCY)  # every call, until the end of the run
        tokens, bad = mint_pool(issuer, pool)
        (directory / "tokens.txt").write_text("\n".join(tokens) + "\n", encoding="ascii")
        (directory / "bad-tokens.txt").write_text("\n".join(bad) + "\n", encoding="ascii")
        yield Workload(
            directory, ca, issuer, github, directory / "tokens.txt", directory / "bad-tokens.txt",
            pool,
        )  # fmt: skip


def hot_claims(k: int, issuer: FakeIssuer, now: int) -> dict[str, object]:
    repository = f"octo-org/app-{k}"
    workflow = f"{repository}/.github/workflows/build.yml@refs/heads/main"
    return issuer.claims(
        sub=f"repo:{repository}:ref:refs/heads/main",
        repository=repository,
        repository_id=str(500_000 + k),
        workflow_ref=workflow,
        job_workflow_ref=workflow,
        iat=now,
        nbf=now - 5,
        exp=now + TOKEN_LIFETIME,
    )


def mint_pool(issuer: FakeIssuer, size: int) -> tuple[list[str], list[str]]:
    """`size` distinct valid tokens, and as many with a wrong (but well-formed) signature."""
    now = int(time.time())
    header = {"alg": "RS256", "typ": "JWT", "kid": issuer.k1.kid}
    tokens = [
        issuer.sign(dict(header), hot_claims(i % HOT_REPOSITORIES, issuer, now), issuer.k1)
        for i in range(size)
    ]
    bad = []
    for i, token in enumerate(tokens):
        signed, _, _ = token.rpartition(".")
        other = tokens[(i + 1) % size].rpartition(".")[2]
        bad.append(f"{signed}.{other}")
    return tokens, bad


def policies_yaml(total: int) -> str:
    """`total` policies, a realistic mix, with the four hot repositories spread through it.

    One global deny (pull requests) first; then, per ten policies, seven exact
    `repository_id` allows, two `match:` allows on `job_workflow_ref` and one
    deny (an exact quarantined `repository_id`, or every other time a `match:`
    on bot branches). The hot repositories' allow policies sit at 1/5, 2/5, 3/5
    and 4/5 of the file.
    """
    if total < HOT_REPOSITORIES + 1:
        raise ValueError(f"at least {HOT_REPOSITORIES + 1} policies")
    fillers = [_filler(i) for i in range(total - HOT_REPOSITORIES - 1)]
    for k in reversed(range(HOT_REPOSITORIES)):
        at = round((k + 1) * len(fillers) / (HOT_REPOSITORIES + 1))
        fillers.insert(at, _hot(k))
    global_deny = (
        "- name: no-pull-requests\n  effect: deny\n  claims:\n"
        "    event_name: [pull_request, pull_request_target]\n"
    )
    return global_deny + "".join(fillers)


def _hot(k: int) -> str:
    return (
        f"- name: app-{k}\n  claims:\n"
        f'    repository_owner_id: "65"\n    repository_id: "{500_000 + k}"\n'
        f"    ref: {_REF}\n"
        "  grants:\n    secrets: [registry]\n"
        "    runner:\n      scopes: ['${repository}']\n      actions: [register, remove]\n"
        "    installation:\n      repositories: ['${repository}']\n"
        "      permissions: {contents: read}\n"
    )


def _filler(i: int) -> str:
    kind = i % 10
    if kind in (3, 8):
        return (
            f"- name: shared-workflow-{i}\n  claims:\n"
            f'    repository_owner_id: "65"\n'
            f"    job_workflow_ref: 'match:octo-org/shared-{i}/\\.github/workflows/"
            "[a-z-]+\\.ya?ml@refs/(heads/main|tags/v[0-9]+)'\n"
            "  grants:\n    secrets: [registry]\n"
        )
    if kind == 7 and i % 20 == 7:
        return (
            f"- name: quarantine-{i}\n  effect: deny\n  claims:\n"
            f'    repository_id: "{900_000 + i}"\n'
        )
    if kind == 7:
        return (
            f"- name: no-bot-branches-{i}\n  effect: deny\n  claims:\n"
            f'    repository_owner_id: "65"\n'
            f"    ref: 'match:refs/heads/bot-{i}/.*'\n"
            "  grants:\n    secrets: [registry]\n"
        )
    installation = (
        "    installation:\n      repositories: ['${repository}']\n"
        "      permissions: {contents: read}\n"
        if i % 3 == 0
        else ""
    )
    return (
        f"- name: repo-{i}\n  claims:\n"
        f'    repository_owner_id: "65"\n    repository_id: "{100_000 + i}"\n'
        f"    ref: {_REF}\n"
        f"  grants:\n    secrets: [registry]\n{installation}"
    )
