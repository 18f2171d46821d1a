"""The configuration as typed, immutable objects; `load` builds them from the file."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from exchanger.policy.model import Policy, RateLimit, ScopeGuard

#: Asymmetric JWS algorithms an issuer may be configured with. HMAC and
#: `none` are absent on purpose: a public key must never act as a secret.
SIGNING_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
)


@dataclass(frozen=True)
class Secret:
    """A secret value; its repr names where it came from, never what it is."""

    value: str = field(repr=False)
    origin: str

    def __repr__(self) -> str:
        return f"Secret(<{self.origin}>)"


@dataclass(frozen=True)
class ServerConfig:
    max_body_bytes: int = 65536
    # What one hostile client may cost (see `exchanger.serving`).
    max_header_bytes: int = 32768
    header_timeout_seconds: int = 10  # a request's headers, from its first byte (or connect)
    body_timeout_seconds: int = 10  # a request's whole body
    keepalive_timeout_seconds: int = 5  # an idle connection between requests
    max_concurrency: int = 1000  # connections and requests per worker; beyond: 503
    host: str = "0.0.0.0"  # noqa: S104 - a gateway in a container listens on all interfaces
    port: int = 8080


#: The registered JWT claims (RFC 7519 §4.1): part of every issuer's vocabulary.
REGISTERED_CLAIMS = frozenset({"iss", "sub", "aud", "jti", "iat", "nbf", "exp"})

#: The claims GitHub Actions documents or lists in its discovery document's
#: `claims_supported` (GITHUB.md §1.5): the default vocabulary of every issuer.
GITHUB_CLAIMS = REGISTERED_CLAIMS | frozenset(
    {
        "actor",
        "actor_id",
        "base_ref",
        "check_run_id",
        "enterprise",
        "enterprise_id",
        "environment",
        "environment_node_id",
        "event_name",
        "head_ref",
        "issuer_scope",
        "job_workflow_ref",
        "job_workflow_sha",
        "ref",
        "ref_protected",
        "ref_type",
        "repository",
        "repository_id",
        "repository_owner",
        "repository_owner_id",
        "repository_visibility",
        "run_attempt",
        "run_id",
        "run_number",
        "runner_environment",
        "sha",
        "workflow",
        "workflow_ref",
        "workflow_sha",
    }
)

#: Claim families GitHub names by prefix: `repo_property_<name>` (custom properties).
GITHUB_CLAIM_PREFIXES = ("repo_property_",)


@dataclass(frozen=True)
class ClaimVocabulary:
    """The claim names an issuer sends (`issuers[].claims`); policies may name no other.

    `any_claim` is the explicit opt-out (`claims: any`): every name is accepted.
    """

    names: frozenset[str] = GITHUB_CLAIMS
    prefixes: tuple[str, ...] = GITHUB_CLAIM_PREFIXES
    any_claim: bool = False

    def allows(self, claim: str) -> bool:
        return (
            self.any_claim
            or claim in self.names
            or any(claim.startswith(p) and len(claim) > len(p) for p in self.prefixes)
        )


GITHUB_VOCABULARY = ClaimVocabulary()


@dataclass(frozen=True)
class IssuerConfig:
    issuer: str
    audiences: frozenset[str]
    jwks_uri: str | None = None
    algorithms: tuple[str, ...] = ("RS256",)
    leeway_seconds: int = 30
    max_lifetime_seconds: int = 21600
    timeout_seconds: float = 10.0  # each discovery or JWKS request
    claims: ClaimVocabulary = GITHUB_VOCABULARY  # what policies may name for this issuer


#: The smallest App key accepted, wherever it is kept (GitHub generates 2048-bit keys).
MIN_KEY_BITS = 2048


@dataclass(frozen=True)
class PemKey:
    """`private_key: {value|env|file}`: the App key, read into the process."""

    source: Secret
    key: rsa.RSAPrivateKey = field(repr=False, compare=False)


@dataclass(frozen=True)
class KmsKey:
    """`kms: {key_id, region, endpoint_url}`: an AWS KMS key that signs and never leaves."""

    key_id: str
    region: str | None = None
    endpoint_url: str | None = None  # tests, VPC endpoints


@dataclass(frozen=True)
class Pkcs11Key:
    """`pkcs11: {module, token_label, key_label, pin}`: a key on a PKCS#11 token (an HSM)."""

    module: str
    token_label: str
    key_label: str
    pin: Secret


AppKey = PemKey | KmsKey | Pkcs11Key


@dataclass(frozen=True)
class GitHubAppConfig:
    id: int
    key: AppKey
    installation_id: int | None = None


@dataclass(frozen=True)
class GitHubConfig:
    api_url: str = "https://api.github.com"
    timeout_seconds: float = 10.0
    app: GitHubAppConfig | None = None
    token: Secret | None = None


@dataclass(frozen=True)
class Config:
    path: Path
    server: ServerConfig
    issuers: tuple[IssuerConfig, ...]
    github: GitHubConfig | None
    runner_scopes: ScopeGuard
    secrets: Mapping[str, Mapping[str, Secret]]
    policies: tuple[Policy, ...]
    warnings: tuple[str, ...] = ()
    rate_limit: RateLimit | None = None
    redis_url: Secret | None = None  # a URL may carry a password

    def summary(self) -> str:
        return (
            f"{self.path}: ok: {len(self.issuers)} issuer(s), {len(self.policies)} "
            f"polic{'y' if len(self.policies) == 1 else 'ies'}, {len(self.secrets)} secret(s)"
        )
