"""Token verification: every SPEC rule and every THREATS §1 attack, against `Verifier`.

Each case is a builder `(issuer, attack) -> token`. `attack=False` is the positive
control and must verify; `attack=True` differs from it only in the field under
test and must raise `InvalidToken` (401) whose message holds no token material.
The issuer's keys are fetched once before the tokens are presented and the key
clock never moves, so no case may cause any outbound request (a token never
makes the verifier fetch anything). Claims are checked against a fixed wall
clock `NOW`.

The last section drives a few attacks through the running gateway over TLS to
prove the HTTP mapping (401 challenge, JSON body, `no-store`, nothing echoed).
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from joserfc.jwk import ECKey, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from exchanger.config.model import IssuerConfig
from exchanger.errors import InvalidToken
from exchanger.http import make_client
from exchanger.identity.claims import Identity
from exchanger.identity.jwks import IssuerKeys
from exchanger.identity.verify import Verifier
from tests.fakes.issuer import AUDIENCE, DROP, FakeIssuer, b64json, b64url
from tests.fakes.tls import TestCA, serve_tls
from tests.gateway import NPM_TOKEN, REGISTRY_PASSWORD, Gateway, ssl_context

NOW = 1_760_000_000  # the verifier's wall clock
JTI = "6f1c2d3e-0000-4000-8000-000000000001"
X5T = b64url(b"thumbprint-hint")
GITHUB_ISS = "https://token.actions.githubusercontent.com"
MAX_TOKEN = 16 * 1024

Build = Callable[[FakeIssuer, bool], str]
Signer = RSAKey | ECKey | bytes
#: In a case's control or attack value: leave the member as GitHub sends it.
KEEP: Any = object()


# --- token building -----------------------------------------------------------------


def claims(issuer: FakeIssuer, **overrides: Any) -> dict[str, Any]:
    """GitHub-shaped claims issued at NOW for 5 minutes (DROP omits a claim)."""
    base: dict[str, Any] = {"iat": NOW, "nbf": NOW - 5, "exp": NOW + 300, "jti": JTI}
    return issuer.claims(**{**base, **overrides})


def tok(
    issuer: FakeIssuer,
    *,
    key: Signer | None = None,
    alg: Any = "RS256",
    sign_alg: str | None = None,
    header: dict[str, Any] | None = None,
    **overrides: Any,
) -> str:
    """A token shaped like GitHub's (`x5t` included), signed by `key` (default k1).

    `alg` is the header label, `sign_alg` the algorithm actually used (default: the
    label); `header` entries override or (with DROP) remove header members.
    """
    signer = issuer.k1 if key is None else key
    kid = issuer.k1.kid if isinstance(signer, bytes) else signer.kid
    merged = {"alg": alg, "typ": "JWT", "kid": kid, "x5t": X5T, **(header or {})}
    head = {k: v for k, v in merged.items() if v is not DROP}
    return issuer.sign_raw(head, claims(issuer, **overrides), signer, sign_alg or str(alg))


def claim_case(name: str, bad: Any, good: Any = KEEP) -> Build:
    """Control: claim `name` = `good`; attack: `bad` (KEEP: as minted, DROP: omitted)."""

    def build(issuer: FakeIssuer, attack: bool) -> str:
        value = bad if attack else good
        return tok(issuer, **({} if value is KEEP else {name: value}))

    return build


def header_case(name: str, bad: Any, good: Any = KEEP) -> Build:
    """Control: header member `name` = `good`; attack: `bad` (KEEP: GitHub's, DROP: omitted)."""

    def build(issuer: FakeIssuer, attack: bool) -> str:
        value = bad if attack else good
        return tok(issuer, header={} if value is KEEP else {name: value})

    return build


def segments(token: str) -> list[str]:
    return token.split(".")


def with_segment(token: str, index: int, value: str) -> str:
    parts = segments(token)
    parts[index] = value
    return ".".join(parts)


def raw_claims(issuer: FakeIssuer, extra: str, **overrides: Any) -> str:
    """The claims as compact JSON text with `extra` spliced in before the closing brace."""
    text = json.dumps(claims(issuer, **overrides), separators=(",", ":"))
    return text[:-1] + extra + "}"


def raw_case(attack_extra: str, control_extra: str, **drop: Any) -> Build:
    """k1-signed tokens whose payload is raw JSON text (duplicates, NaN, nesting…)."""

    def build(issuer: FakeIssuer, attack: bool) -> str:
        header = {"alg": "RS256", "typ": "JWT", "kid": issuer.k1.kid, "x5t": X5T}
        payload = raw_claims(issuer, attack_extra if attack else control_extra, **drop)
        return issuer.sign_raw(header, payload, issuer.k1)

    return build


def mangle(change: Callable[[FakeIssuer, str], str]) -> Build:
    """Control: a good token; attack: `change` applied to it."""

    def build(issuer: FakeIssuer, attack: bool) -> str:
        good = tok(issuer)
        return change(issuer, good) if attack else good

    return build


# --- presenting tokens to a Verifier -------------------------------------------------


@dataclass
class Result:
    identity: Identity | None
    error: Exception | None
    requests: list[str] = field(default_factory=list)  # outbound during this verify


def issuer_config(issuer: FakeIssuer, **options: Any) -> IssuerConfig:
    return IssuerConfig(issuer=issuer.url, audiences=frozenset({AUDIENCE}), **options)


def github_config(issuer: FakeIssuer, **options: Any) -> IssuerConfig:
    """The production issuer name, with keys from the fake's JWKS (no discovery)."""
    return IssuerConfig(
        issuer=GITHUB_ISS,
        audiences=frozenset({AUDIENCE}),
        jwks_uri=f"{issuer.url}/.well-known/jwks",
        **options,
    )


def present(
    issuer: FakeIssuer,
    tokens: Sequence[str],
    *,
    config: IssuerConfig | None = None,
    now: float = NOW,
    key_clock: float = 0.0,
) -> list[Result]:
    """Fetch the keys once, then verify each token; record what each one sent out.

    `key_clock` is the keys' monotonic time after the first fetch (at 0): past 60 an
    unknown kid may refetch.
    """
    config = config or issuer_config(issuer)

    async def scenario() -> list[Result]:
        outbound: list[str] = []

        async def record(request: httpx.Request) -> None:
            outbound.append(str(request.url))

        mono = [0.0]
        async with make_client() as client:
            client.event_hooks = {"request": [record], "response": []}
            keys = IssuerKeys(config, client, clock=lambda: mono[0])
            verifier = Verifier({config.issuer: keys}, clock=lambda: now)
            await keys.refresh()
            assert keys.ready, "the fake issuer's keys did not load"
            mono[0] = key_clock
            results = []
            for token in tokens:
                outbound.clear()
                try:
                    results.append(Result(await verifier.verify(token), None))
                except Exception as exc:
                    results.append(Result(None, exc))
                results[-1].requests = list(outbound)
            return results

    return asyncio.run(scenario())


def expect_accepted(result: Result, config_issuer: str) -> None:
    assert result.error is None, f"control refused: {result.error!r}"
    assert result.identity is not None
    assert result.identity.issuer == config_issuer


def expect_refused(result: Result, token: str) -> None:
    assert result.identity is None, "attack token verified"
    assert type(result.error) is InvalidToken, f"expected InvalidToken, got {result.error!r}"
    assert result.error.status == 401
    assert_no_token_material(str(result.error), token)
    assert_no_token_material(result.error.message, token)


def decoded_parts(token: str) -> list[str]:
    out = []
    for part in segments(token)[:2]:
        try:
            out.append(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)).decode())
        except ValueError:
            continue
    return out


def assert_no_token_material(text: str, token: str, window: int = 10) -> None:
    """No `window`-character run of `text` occurs in the token or its decoded JSON."""
    haystacks = [token, *decoded_parts(token)]
    for start in range(max(0, len(text) - window + 1)):
        piece = text[start : start + window]
        for hay in haystacks:
            assert piece not in hay, f"message {text!r} repeats token material {piece!r}"


def check(
    issuer: FakeIssuer, build: Build, *, config: IssuerConfig | None = None, now: float = NOW
) -> None:
    """The control verifies, the attack is a clean 401, and neither sends anything."""
    config = config or issuer_config(issuer)
    control, attack = build(issuer, False), build(issuer, True)
    assert control != attack
    good, bad = present(issuer, [control, attack], config=config, now=now)
    expect_accepted(good, config.issuer)
    expect_refused(bad, attack)
    assert good.requests == []
    assert bad.requests == []


# --- 1. alg none ---------------------------------------------------------------------


def alg_none(label: str, signature: str) -> Build:
    def build(issuer: FakeIssuer, attack: bool) -> str:
        good = tok(issuer)
        if not attack:
            return good
        header = {"alg": label, "typ": "JWT", "kid": issuer.k1.kid, "x5t": X5T}
        unsigned = issuer.sign_raw(header, claims(issuer), None)  # "header.payload."
        if signature == "stale":
            return unsigned + segments(good)[2]
        if signature == "two-segment":
            return unsigned[:-1]
        return unsigned

    return build


@pytest.mark.parametrize(
    "build",
    [
        *(
            pytest.param(alg_none(label, sig), id=f"{label}-{sig}")
            for label in ("none", "None", "NONE", "nOnE")
            for sig in ("empty-signature", "stale", "two-segment")
        ),
        pytest.param(mangle(lambda i, t: t.rsplit(".", 1)[0]), id="rs256-signature-stripped"),
        pytest.param(mangle(lambda i, t: t.rsplit(".", 1)[0] + "."), id="rs256-signature-empty"),
    ],
)
def test_sec_01_alg_none_rejected(issuer: FakeIssuer, build: Build) -> None:
    check(issuer, build)


# --- 2. algorithm pinning ------------------------------------------------------------


def relabel(label: Any, sign_alg: str, signer: str = "k1", kid: str = "own") -> Build:
    """Attack: header `alg` = `label`, signed with `sign_alg` by `signer` (k1 or the EC key)."""

    def build(issuer: FakeIssuer, attack: bool) -> str:
        if not attack:
            return tok(issuer)
        key = issuer.ec if signer == "ec" else issuer.k1
        header = {"kid": issuer.k1.kid if kid == "k1" else key.kid}
        return tok(issuer, key=key, alg=label, sign_alg=sign_alg, header=header)

    return build


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(relabel("RS384", "RS256"), id="RS384-label-on-RS256-signature"),
        pytest.param(relabel("RS512", "RS256"), id="RS512-label-on-RS256-signature"),
        pytest.param(relabel("PS256", "RS256"), id="PS256-label-on-RS256-signature"),
        pytest.param(relabel("RS384", "RS384"), id="RS384-really-signed-by-k1"),
        pytest.param(relabel("RS512", "RS512"), id="RS512-really-signed-by-k1"),
        pytest.param(relabel("PS256", "PS256"), id="PS256-really-signed-by-k1"),
        pytest.param(relabel("ES256", "ES256", signer="ec"), id="ES256-ec-key-own-kid"),
        pytest.param(relabel("ES256", "ES256", signer="ec", kid="k1"), id="ES256-ec-key-kid-k1"),
        pytest.param(relabel("rs256", "RS256"), id="lower-case-rs256"),
        pytest.param(relabel("RS256 ", "RS256"), id="RS256-trailing-space"),
        pytest.param(relabel(["RS256"], "RS256"), id="alg-list"),
        pytest.param(relabel(None, "RS256"), id="alg-null"),
        pytest.param(header_case("alg", DROP, "RS256"), id="alg-missing"),
    ],
)
def test_sec_02_algorithm_pinned_to_rs256(issuer: FakeIssuer, build: Build) -> None:
    check(issuer, build)


@pytest.mark.parametrize("alg", ["RS384", "RS512", "PS256", "PS384"])
def test_sec_02_allow_list_applies_when_the_jwk_names_no_alg(issuer: FakeIssuer, alg: str) -> None:
    """A JWK without `alg` fits every RSA algorithm; only the configured list then limits it."""
    bare = {k: v for k, v in issuer.k1.as_dict(private=False).items() if k != "alg"}
    issuer.published = [bare, issuer.k2]
    check(issuer, lambda i, attack: tok(i, alg=alg if attack else "RS256"))


def test_sec_02_jwk_alg_pins_the_key_to_one_algorithm(issuer: FakeIssuer) -> None:
    """With RS256 and PS256 configured, k1 (published with `alg: RS256`) never verifies PS256."""
    config = issuer_config(issuer, algorithms=("RS256", "PS256"))
    check(issuer, lambda i, attack: tok(i, alg="PS256" if attack else "RS256"), config=config)
    bare = {k: v for k, v in issuer.k1.as_dict(private=False).items() if k != "alg"}
    issuer.published = [bare]  # control: a JWK without `alg` may serve both configured ones
    (result,) = present(issuer, [tok(issuer, alg="PS256")], config=config)
    expect_accepted(result, issuer.url)


def test_sec_02_default_algorithm_allow_list_is_rs256_only() -> None:
    assert IssuerConfig(issuer="https://x.test", audiences=frozenset({"a"})).algorithms == (
        "RS256",
    )


# --- 3. HMAC key confusion -----------------------------------------------------------

ENCODINGS = [
    "spki-pem",
    "spki-pem-no-newline",
    "pkcs1-pem",
    "spki-der",
    "pkcs1-der",
    "jwk-json",
    "jwk-json-compact",
    "jwks-json",
    "openssh",
]


def hmac_forgery(alg: str, encoding: str) -> Build:
    def build(issuer: FakeIssuer, attack: bool) -> str:
        if not attack:
            return tok(issuer)
        secret = b"" if encoding == "empty" else issuer.public_key_encodings()[encoding]
        return tok(issuer, key=secret, alg=alg)

    return build


@pytest.mark.parametrize(
    "build",
    [
        *(
            pytest.param(hmac_forgery(alg, encoding), id=f"{alg}-{encoding}")
            for alg in ("HS256", "HS384", "HS512")
            for encoding in ENCODINGS
        ),
        pytest.param(hmac_forgery("HS256", "empty"), id="HS256-empty-secret"),
    ],
)
def test_sec_03_hmac_with_public_key_rejected(issuer: FakeIssuer, build: Build) -> None:
    check(issuer, build)


# --- 5. key material in the header ---------------------------------------------------


@dataclass
class Attacker:
    """A TLS server that would hand out the attacker's key; it must never be asked."""

    url: str = ""
    jwks: dict[str, Any] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def attacker(ca: TestCA) -> Iterator[Attacker]:
    state = Attacker()

    async def anything(request: Request) -> Response:
        state.requests.append(request.url.path)
        return JSONResponse(state.jwks)

    app = Starlette(routes=[Route("/{path:path}", anything)])
    with serve_tls(app, ca) as server:
        state.url = server.url
        # It does answer, so "0 requests" below means it was never asked.
        with httpx.Client(verify=ssl_context(ca)) as client:
            assert client.get(f"{state.url}/jwks.json").status_code == 200
        state.requests.clear()
        yield state


HeaderAttack = Callable[[FakeIssuer, Attacker], dict[str, Any]]


def _attacker_jwk(issuer: FakeIssuer) -> dict[str, Any]:
    return dict(issuer.attacker.as_dict(private=False))


def _x5c(issuer: FakeIssuer) -> list[str]:
    return [base64.b64encode(issuer.self_signed_cert(issuer.attacker)).decode()]


HEADER_ATTACKS = [
    pytest.param(lambda i, a: {"jwk": _attacker_jwk(i)}, id="jwk-kid-k1"),
    pytest.param(lambda i, a: {"jwk": _attacker_jwk(i), "kid": DROP}, id="jwk-no-kid"),
    pytest.param(lambda i, a: {"jku": f"{a.url}/jwks.json"}, id="jku-attacker-host"),
    pytest.param(lambda i, a: {"jku": f"{a.url}/jwks.json", "kid": "evil"}, id="jku-own-kid"),
    pytest.param(
        lambda i, a: {"jku": "https://169.254.169.254/latest/meta-data/"}, id="jku-metadata"
    ),
    pytest.param(lambda i, a: {"x5u": f"{a.url}/cert.pem"}, id="x5u-attacker-host"),
    pytest.param(lambda i, a: {"x5c": _x5c(i)}, id="x5c-self-signed"),
    pytest.param(lambda i, a: {"x5c": _x5c(i), "kid": DROP}, id="x5c-no-kid"),
]


@pytest.mark.parametrize("extra", HEADER_ATTACKS)
def test_sec_05_header_key_material_never_honoured(
    issuer: FakeIssuer, attacker: Attacker, extra: HeaderAttack
) -> None:
    attacker.jwks = {"keys": [_attacker_jwk(issuer)]}
    attacker.requests.clear()
    before = (issuer.discovery_requests, issuer.jwks_requests)

    def build(i: FakeIssuer, attack: bool) -> str:
        if not attack:
            return tok(i)  # k1, with GitHub's x5t
        return tok(i, key=i.attacker, header=extra(i, attacker))

    check(issuer, build)
    assert attacker.requests == []
    assert (issuer.discovery_requests, issuer.jwks_requests) == (before[0] + 1, before[1] + 1)


def test_sec_05_x5t_header_is_harmless(issuer: FakeIssuer) -> None:
    """Real GitHub tokens carry `x5t`; the fake's own `mint` (joserfc-signed) passes."""
    token = issuer.mint(iat=NOW, nbf=NOW - 5, exp=NOW + 300)
    header = json.loads(base64.urlsafe_b64decode(segments(token)[0] + "=="))
    assert "x5t" in header
    (result,) = present(issuer, [token])
    expect_accepted(result, issuer.url)


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(header_case("crit", ["x-policy"]), id="crit-unknown"),
        pytest.param(header_case("crit", []), id="crit-empty"),
        pytest.param(header_case("crit", "x"), id="crit-string"),
        pytest.param(header_case("crit", ["exp"]), id="crit-exp"),
    ],
)
def test_sec_16_crit_header_rejected(issuer: FakeIssuer, build: Build) -> None:
    check(issuer, build)


# --- 6. kid injection ----------------------------------------------------------------


def kid_hmac_empty(issuer: FakeIssuer, attack: bool) -> str:
    if not attack:
        return tok(issuer)
    return tok(issuer, key=b"", alg="HS256", header={"kid": "../../../../dev/null"})


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(kid_hmac_empty, id="path-traversal-hs256-empty-key"),
        pytest.param(header_case("kid", "../../../../dev/null"), id="path-traversal"),
        pytest.param(header_case("kid", "x' OR '1'='1"), id="sql"),
        pytest.param(header_case("kid", "https://attacker.test/k"), id="url"),
        pytest.param(header_case("kid", "k1\r\nX-Injected: 1"), id="crlf"),
        pytest.param(header_case("kid", "k1\x00"), id="nul"),
        pytest.param(header_case("kid", "\x1b[31mred\x1b[0m"), id="ansi"),
        pytest.param(header_case("kid", "k" * 257), id="kid-257-chars"),
        pytest.param(header_case("kid", "k" * (1 << 20)), id="kid-1MiB-oversize"),
        pytest.param(header_case("kid", 12345), id="number"),
        pytest.param(header_case("kid", ["k1"]), id="list"),
        pytest.param(header_case("kid", {"kid": "k1"}), id="object"),
        pytest.param(header_case("kid", None), id="null"),
        pytest.param(header_case("kid", ""), id="empty"),
        pytest.param(header_case("kid", DROP, "38826b17-6a30-5f9b-b169-8beb8202f723"), id="none"),
    ],
)
def test_sec_06_kid_injection_rejected(issuer: FakeIssuer, build: Build) -> None:
    check(issuer, build)


def kid_variant(change: Callable[[str], str]) -> Build:
    def build(issuer: FakeIssuer, attack: bool) -> str:
        kid = str(issuer.k1.kid)
        return tok(issuer, header={"kid": change(kid) if attack else kid})

    return build


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(kid_variant(lambda k: "unknown-kid"), id="unknown"),
        pytest.param(kid_variant(str.upper), id="case-changed"),
        pytest.param(kid_variant(lambda k: k + " "), id="trailing-space"),
        pytest.param(kid_variant(lambda k: " " + k), id="leading-space"),
    ],
)
def test_sec_06_unknown_kid_rejected(issuer: FakeIssuer, build: Build) -> None:
    check(issuer, build)


# --- tampering and foreign keys ------------------------------------------------------


def tamper_claim(name: str, value: Any) -> Callable[[FakeIssuer, str], str]:
    def change(issuer: FakeIssuer, token: str) -> str:
        payload = json.loads(decoded_parts(token)[1])
        payload[name] = value
        return with_segment(token, 1, b64json(payload))

    return change


def swap_signature(issuer: FakeIssuer, token: str) -> str:
    other = tok(issuer, repository="evil-org/evil-repo")
    return with_segment(token, 2, segments(other)[2])


def flip_bit(issuer: FakeIssuer, token: str) -> str:
    raw = bytearray(base64.urlsafe_b64decode(segments(token)[2] + "=="))
    raw[-1] ^= 1
    return with_segment(token, 2, b64url(bytes(raw)))


def signed_by(key_name: str) -> Build:
    def build(issuer: FakeIssuer, attack: bool) -> str:
        if not attack:
            return tok(issuer)
        key = {"attacker": issuer.attacker, "k2": issuer.k2}[key_name]
        return tok(issuer, key=key, header={"kid": issuer.k1.kid})

    return build


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(mangle(tamper_claim("repository", "evil-org/evil-repo")), id="repository"),
        pytest.param(mangle(tamper_claim("sub", "repo:evil-org/x:ref:refs/heads/main")), id="sub"),
        pytest.param(mangle(tamper_claim("exp", NOW + 3600)), id="exp-extended"),
        pytest.param(mangle(tamper_claim("ref", "refs/heads/main ")), id="ref-whitespace"),
        pytest.param(
            mangle(lambda i, t: with_segment(t, 0, b64json({"kid": i.k1.kid, "alg": "RS256"}))),
            id="header-reencoded",
        ),
        pytest.param(mangle(swap_signature), id="signature-of-another-token"),
        pytest.param(mangle(flip_bit), id="signature-bit-flipped"),
        pytest.param(mangle(lambda i, t: t[:-8]), id="signature-truncated"),
        pytest.param(signed_by("attacker"), id="attacker-key-with-kid-k1"),
        pytest.param(signed_by("k2"), id="k2-signature-with-kid-k1"),
    ],
)
def test_tampered_token_rejected(issuer: FakeIssuer, build: Build) -> None:
    check(issuer, build)


# --- 13. exp / nbf / iat and lifetime ------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        # leeway is 30 s: exp must be after NOW - 30, iat and nbf at most NOW + 30
        pytest.param(claim_case("exp", NOW - 30, NOW - 29), id="exp-at-leeway-edge"),
        pytest.param(claim_case("exp", NOW - 31, NOW - 29), id="exp-past-leeway"),
        pytest.param(claim_case("exp", -1, NOW + 300), id="exp-negative"),
        pytest.param(claim_case("iat", NOW + 31, NOW + 30), id="iat-future-past-leeway"),
        pytest.param(claim_case("iat", NOW + 3600, NOW + 30), id="iat-an-hour-ahead"),
        pytest.param(claim_case("nbf", NOW + 31, NOW + 30), id="nbf-future-past-leeway"),
        pytest.param(claim_case("nbf", NOW + 120, DROP), id="nbf-two-minutes-ahead"),
        pytest.param(claim_case("nbf", str(NOW - 5), NOW - 5), id="nbf-string"),
        pytest.param(claim_case("nbf", None, DROP), id="nbf-null"),
        pytest.param(claim_case("nbf", True, NOW - 5), id="nbf-true"),
        pytest.param(claim_case("exp", DROP, NOW + 300), id="exp-missing"),
        pytest.param(claim_case("iat", DROP, NOW), id="iat-missing"),
        pytest.param(claim_case("exp", "9999999999", NOW + 300), id="exp-numeric-string"),
        pytest.param(claim_case("exp", str(NOW + 300), NOW + 300.5), id="exp-string-vs-float"),
        pytest.param(claim_case("exp", True, NOW + 300), id="exp-true"),
        pytest.param(claim_case("iat", False, NOW), id="iat-false"),
        pytest.param(claim_case("exp", None, NOW + 300), id="exp-null"),
        pytest.param(claim_case("exp", [NOW + 300], NOW + 300), id="exp-list"),
        pytest.param(claim_case("exp", "nan", NOW + 300), id="exp-nan-string"),
        pytest.param(claim_case("exp", "inf", NOW + 300), id="exp-inf-string"),
        pytest.param(claim_case("iat", str(NOW), NOW + 0.5), id="iat-string-vs-float"),
    ],
)
def test_sec_13_time_claims(issuer: FakeIssuer, build: Build) -> None:
    check(issuer, build)


def test_sec_13_zero_leeway(issuer: FakeIssuer) -> None:
    config = issuer_config(issuer, leeway_seconds=0)
    check(issuer, claim_case("exp", NOW, NOW + 1), config=config)
    check(issuer, claim_case("iat", NOW + 1, NOW), config=config)
    check(issuer, claim_case("nbf", NOW + 1, NOW), config=config)


def lifetime(attack_seconds: int, control_seconds: int, iat: int = NOW) -> Build:
    def build(issuer: FakeIssuer, attack: bool) -> str:
        seconds = attack_seconds if attack else control_seconds
        return tok(issuer, iat=iat, nbf=iat, exp=iat + seconds)

    return build


@pytest.mark.parametrize(
    ("build", "maximum"),
    [
        pytest.param(lifetime(21601, 300), None, id="default-300s-ok"),
        pytest.param(lifetime(21601, 21600), None, id="default-21600s-ok-21601s-not"),
        pytest.param(lifetime(21601, 21600, iat=NOW - 21000), None, id="default-old-token"),
        pytest.param(lifetime(365 * 86400, 21600), None, id="default-one-year"),
        pytest.param(lifetime(601, 600), 600, id="configured-600s"),
        pytest.param(lifetime(301, 300), 300, id="configured-300s"),
    ],
)
def test_sec_13_max_lifetime(issuer: FakeIssuer, build: Build, maximum: int | None) -> None:
    options = {} if maximum is None else {"max_lifetime_seconds": maximum}
    check(issuer, build, config=issuer_config(issuer, **options))


# --- 9. issuer -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(GITHUB_ISS + "/", id="trailing-slash"),
        pytest.param("https://TOKEN.actions.githubusercontent.com", id="upper-case-host"),
        pytest.param("HTTPS://token.actions.githubusercontent.com", id="upper-case-scheme"),
        pytest.param(GITHUB_ISS + ":443", id="explicit-port-443"),
        pytest.param("http://token.actions.githubusercontent.com", id="http"),
        pytest.param(GITHUB_ISS + ".evil.test", id="suffix-evil-test"),
        pytest.param(GITHUB_ISS + "/some-enterprise", id="enterprise-path"),
        pytest.param("https://token.actions", id="substring"),
        pytest.param(" " + GITHUB_ISS, id="leading-space"),
        pytest.param(GITHUB_ISS + "\x00", id="trailing-nul"),
        pytest.param([GITHUB_ISS], id="list"),
        pytest.param(1, id="number"),
        pytest.param(None, id="null"),
        pytest.param({"iss": GITHUB_ISS}, id="object"),
        pytest.param(DROP, id="missing"),
    ],
)
def test_sec_09_issuer_exact_match(issuer: FakeIssuer, bad: Any) -> None:
    check(issuer, claim_case("iss", bad, GITHUB_ISS), config=github_config(issuer))


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param("http://169.254.169.254/latest/meta-data/", id="metadata-service"),
        pytest.param("https://attacker.test", id="attacker-host"),
        pytest.param("https://localhost/controllable#", id="localhost-fragment"),
        pytest.param("self", id="the-fake-issuers-own-url-not-configured"),
    ],
)
def test_sec_47_token_issuer_never_fetched(issuer: FakeIssuer, bad: str) -> None:
    """Unconfigured issuers are refused without any outbound request (check asserts it)."""
    before = (issuer.discovery_requests, issuer.jwks_requests)
    value = issuer.url if bad == "self" else bad
    check(issuer, claim_case("iss", value, GITHUB_ISS), config=github_config(issuer))
    assert (issuer.discovery_requests, issuer.jwks_requests) == (before[0], before[1] + 1)


# --- 12. audience --------------------------------------------------------------------

OTHER_AUD = "https://other-gateway.test"


@pytest.mark.parametrize(
    ("bad", "good"),
    [
        pytest.param(DROP, AUDIENCE, id="missing"),
        pytest.param("sts.amazonaws.com", AUDIENCE, id="foreign"),
        pytest.param("https://github.com/octo-org", AUDIENCE, id="github-default-audience"),
        pytest.param([AUDIENCE, "sts.amazonaws.com"], [AUDIENCE], id="list-with-foreign"),
        pytest.param(["sts.amazonaws.com", AUDIENCE], [AUDIENCE], id="list-foreign-first"),
        pytest.param([], [AUDIENCE], id="empty-list"),
        pytest.param(AUDIENCE + "/", AUDIENCE, id="trailing-slash"),
        pytest.param(AUDIENCE.upper(), AUDIENCE, id="upper-case"),
        pytest.param("", AUDIENCE, id="empty-string"),
        pytest.param({"aud": AUDIENCE}, AUDIENCE, id="object"),
        pytest.param(None, AUDIENCE, id="null"),
        pytest.param(1, AUDIENCE, id="number"),
        pytest.param([AUDIENCE, None], [AUDIENCE], id="list-with-null"),
        pytest.param([[AUDIENCE]], [AUDIENCE], id="nested-list"),
        pytest.param([AUDIENCE, OTHER_AUD, "x"], [AUDIENCE, OTHER_AUD], id="two-configured-plus"),
    ],
)
def test_sec_12_audience(issuer: FakeIssuer, bad: Any, good: Any) -> None:
    config = IssuerConfig(issuer=issuer.url, audiences=frozenset({AUDIENCE, OTHER_AUD}))
    check(issuer, claim_case("aud", bad, good), config=config)


def test_sec_12_github_default_audience_when_configured_elsewhere(issuer: FakeIssuer) -> None:
    """A list of only configured audiences passes; GitHub's default never does."""
    check(issuer, claim_case("aud", "https://github.com/octo-org", [AUDIENCE, AUDIENCE]))


# --- subject and the runner-internal credential shape -------------------------------


def runner_credential(issuer: FakeIssuer, attack: bool) -> str:
    """The shape of the runner's internal Actions credential: no aud, no sub."""
    body: dict[str, Any] = {
        "iss": issuer.url,
        "nameid": "dddddddd-dddd-dddd-dddd-dddddddddddd",
        "scp": "Actions.GenericRead:00000000-0000-0000-0000-000000000000 Actions.Results:1:2",
        "IdentityTypeClaim": "System:ServiceIdentity",
        "ac": '[{"Scope":"refs/heads/main","Permission":3}]',
        "orchid": "1.2.3",
        "iat": NOW,
        "nbf": NOW - 5,
        "exp": NOW + 300,
    }
    if not attack:
        body.update(aud=AUDIENCE, sub="repo:octo-org/octo-repo:ref:refs/heads/main")
    header = {"alg": "RS256", "typ": "JWT", "kid": issuer.k1.kid, "x5t": X5T}
    return issuer.sign_raw(header, body, issuer.k1)


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(runner_credential, id="runner-internal-credential"),
        pytest.param(
            claim_case("sub", DROP, "repo:octo-org/octo-repo:ref:refs/heads/main"), id="sub-missing"
        ),
        pytest.param(claim_case("sub", ""), id="sub-empty"),
        pytest.param(claim_case("sub", 74), id="sub-number"),
        pytest.param(claim_case("sub", ["repo:octo-org/octo-repo"]), id="sub-list"),
        pytest.param(claim_case("sub", None), id="sub-null"),
    ],
)
def test_subject_required(issuer: FakeIssuer, build: Build) -> None:
    check(issuer, build)


# --- 14 / 17 / 46. size and malformed input ------------------------------------------


def sized(issuer: FakeIssuer, length: int, kid: str | None = None) -> str:
    """A k1-signed token of exactly `length` characters (padding claim, x5t length)."""
    header = {} if kid is None else {"kid": kid}
    base = len(tok(issuer, header=header, pad=""))
    estimate = (length - base) * 3 // 4
    for extra in range(4):
        head = {**header, "x5t": X5T + "A" * extra}
        for pad in range(max(0, estimate - 6), estimate + 6):
            token = tok(issuer, header=head, pad="p" * pad)
            if len(token) == length:
                return token
    raise AssertionError(f"cannot build a token of {length} characters")


def test_sec_14_token_size_limit_is_16KiB(issuer: FakeIssuer) -> None:
    check(issuer, lambda i, attack: sized(i, MAX_TOKEN + 1 if attack else MAX_TOKEN))


def test_sec_14_oversize_token_rejected_before_parsing(issuer: FakeIssuer) -> None:
    """Past the refetch cooldown, an unknown kid refetches once, but only if it is read."""
    over = sized(issuer, MAX_TOKEN + 1, kid="unknown-kid")
    under = sized(issuer, MAX_TOKEN, kid="unknown-kid")
    before = issuer.jwks_requests
    oversize, parsed = present(issuer, [over, under], key_clock=61.0)
    expect_refused(oversize, over)
    assert oversize.requests == []  # its header was never looked at
    expect_refused(parsed, under)
    assert parsed.requests == [
        f"{issuer.url}/.well-known/openid-configuration",
        f"{issuer.url}/.well-known/jwks",
    ]
    assert issuer.jwks_requests == before + 2  # the priming fetch and the one refetch


def nested(depth: int) -> str:
    return ',"deep":' + "[" * depth + "]" * depth


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(mangle(lambda i, t: ""), id="empty"),
        pytest.param(mangle(lambda i, t: "not-a-jwt"), id="one-segment"),
        pytest.param(mangle(lambda i, t: ".."), id="empty-segments"),
        pytest.param(mangle(lambda i, t: "a.b.c"), id="tiny-segments"),
        pytest.param(mangle(lambda i, t: t + "."), id="four-segments"),
        pytest.param(mangle(lambda i, t: t + ".AAAA.AAAA"), id="five-segments-jwe-shape"),
        pytest.param(mangle(lambda i, t: t + "." * 10000), id="ten-thousand-dots"),
        pytest.param(mangle(lambda i, t: "." * 100_000), id="hundred-thousand-dots"),
        pytest.param(mangle(lambda i, t: "a" * (MAX_TOKEN + 1)), id="oversize-garbage"),
        pytest.param(mangle(lambda i, t: with_segment(t, 1, segments(t)[1] + "=")), id="padding"),
        pytest.param(mangle(lambda i, t: with_segment(t, 1, "+" + segments(t)[1])), id="std-b64"),
        pytest.param(mangle(lambda i, t: with_segment(t, 1, segments(t)[1] + "A")), id="b64-len"),
        pytest.param(mangle(lambda i, t: with_segment(t, 1, "é" + segments(t)[1])), id="non-ascii"),
        pytest.param(mangle(lambda i, t: t.replace(".", ". ", 1)), id="inner-space"),
        pytest.param(mangle(lambda i, t: t + "\n"), id="trailing-newline"),
        pytest.param(mangle(lambda i, t: with_segment(t, 0, b64url(b"not json"))), id="hdr-text"),
        pytest.param(mangle(lambda i, t: with_segment(t, 0, b64url(b"\xff\xfe{}"))), id="hdr-utf8"),
        pytest.param(
            mangle(lambda i, t: with_segment(t, 0, b64json([{"alg": "RS256"}]))), id="hdr-array"
        ),
        pytest.param(mangle(lambda i, t: with_segment(t, 0, b64json("RS256"))), id="hdr-string"),
        pytest.param(mangle(lambda i, t: with_segment(t, 0, b64json(None))), id="hdr-null"),
        pytest.param(mangle(lambda i, t: with_segment(t, 1, b64json([1]))), id="payload-array"),
        pytest.param(mangle(lambda i, t: with_segment(t, 1, b64url(b"{"))), id="payload-cut"),
    ],
)
def test_sec_14_malformed_tokens_rejected(issuer: FakeIssuer, build: Build) -> None:
    check(issuer, build)


def duplicate_header(issuer: FakeIssuer, attack: bool) -> str:
    kid = json.dumps(issuer.k1.kid)
    dup = '"alg":"none",' if attack else ""
    header = f'{{{dup}"alg":"RS256","typ":"JWT","kid":{kid}}}'
    return issuer.sign_raw(header, claims(issuer), issuer.k1, alg="RS256")


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(duplicate_header, id="duplicate-alg-in-header"),
        pytest.param(raw_case(',"repository":"evil-org/evil-repo"', ""), id="duplicate-repository"),
        pytest.param(raw_case(',"sub":"evil"', ""), id="duplicate-sub"),
        pytest.param(raw_case(',"exp":NaN', f',"exp":{NOW + 300}', exp=DROP), id="exp-NaN"),
        pytest.param(raw_case(',"exp":Infinity', f',"exp":{NOW}', exp=DROP), id="exp-Infinity"),
        pytest.param(raw_case(',"iat":-Infinity', f',"iat":{NOW}', iat=DROP), id="iat-minus-inf"),
        pytest.param(raw_case(',"exp":1e400', f',"exp":{NOW}.5', exp=DROP), id="exp-1e400"),
        pytest.param(raw_case(',"nbf":-1e400', f',"nbf":{NOW}.0', nbf=DROP), id="nbf-minus-1e400"),
        pytest.param(raw_case(f',"exp":{10**400}', f',"exp":{NOW}', exp=DROP), id="exp-10e400"),
        pytest.param(
            raw_case(f',"exp":{NOW + 300}{"0" * 5000}', f',"exp":{NOW + 300}', exp=DROP),
            id="exp-5000-digits",
        ),
        pytest.param(raw_case(',"exp":true', f',"exp":{NOW + 300}', exp=DROP), id="exp-true"),
        pytest.param(raw_case(nested(5000), nested(20)), id="deeply-nested-payload"),
    ],
)
def test_sec_17_strict_json_parsing(issuer: FakeIssuer, build: Build) -> None:
    check(issuer, build)


# --- through HTTP: the 401 / 503 mapping ---------------------------------------------

CHALLENGE = 'Bearer realm="exchanger"'
INVALID_CHALLENGE = 'Bearer realm="exchanger", error="invalid_token"'
CLAIM_VALUES = ("octo-org", "octo-repo", "refs/heads/", "repo:", "octocat", "74", "65")

HttpBuild = Callable[[FakeIssuer], str]


def _tampered(issuer: FakeIssuer) -> str:
    return tamper_claim("repository_id", "75")(issuer, issuer.mint())


HTTP_ATTACKS = [
    pytest.param(lambda i: i.forge_unsigned("none"), id="alg-none"),
    pytest.param(lambda i: i.forge_unsigned("nOnE", "c2ln"), id="alg-none-with-signature"),
    pytest.param(lambda i: i.forge_hmac("HS256"), id="hs256-public-key"),
    pytest.param(lambda i: i.mint(exp=1_000_000, iat=999_900, nbf=999_900), id="expired"),
    pytest.param(lambda i: i.mint(aud="https://github.com/octo-org"), id="github-default-aud"),
    pytest.param(lambda i: i.mint(iss=GITHUB_ISS), id="unconfigured-issuer"),
    pytest.param(lambda i: i.mint(key=i.attacker), id="attacker-key-kid-k1"),
    pytest.param(_tampered, id="tampered-payload"),
    pytest.param(
        lambda i: i.sign_raw(
            {"alg": "RS256", "kid": "k", "jwk": _attacker_jwk(i)}, i.claims(), i.attacker
        ),
        id="embedded-jwk",
    ),
    pytest.param(lambda i: "not.a.jwt", id="garbage"),
]


def _fragments(token: str) -> list[str]:
    out = [p[i : i + 10] for p in segments(token) for i in range(0, max(1, len(p) - 9), 10)]
    return [f for f in out if len(f) == 10]


@pytest.mark.parametrize("build", HTTP_ATTACKS)
def test_sec_01_http_attacks_answer_invalid_token(
    gateway: Gateway, issuer: FakeIssuer, build: HttpBuild
) -> None:
    token = build(issuer)
    with gateway.client() as client:
        control = client.get(
            "/secrets/registry", headers={"Authorization": f"Bearer {issuer.mint()}"}
        )
        response = client.get("/secrets/registry", headers={"Authorization": f"Bearer {token}"})
    assert control.status_code == 200, control.text
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == INVALID_CHALLENGE
    assert "no-store" in response.headers["cache-control"]
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == "invalid_token"
    assert set(body) <= {"error", "message"}
    text = response.text
    for value in (*CLAIM_VALUES, REGISTRY_PASSWORD, NPM_TOKEN, str(issuer.k1.kid)):
        assert value not in text
    for fragment in _fragments(token):
        assert fragment not in text


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


def raw_get(gateway: Gateway, path: str, extra_headers: bytes) -> RawResponse:
    """One GET with exactly these header bytes (httpx refuses e.g. `Bearer ` with a space)."""
    host, _, port = gateway.url.removeprefix("https://").rpartition(":")
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\n".encode()
        + extra_headers
        + b"Connection: close\r\n\r\n"
    )
    context = ssl_context(gateway.ca)
    with (
        socket.create_connection((host, int(port)), timeout=10) as sock,
        context.wrap_socket(sock, server_hostname=host) as tls,
    ):
        tls.sendall(request)
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawResponse(int(status_line.split()[1]), headers, body)


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(None, id="no-header"),
        pytest.param("Basic dXNlcjpwYXNzd29yZA==", id="basic"),
        pytest.param("Basic TOKEN", id="basic-with-a-valid-jwt"),
        pytest.param("Bearer", id="bearer-no-value"),
        pytest.param("Bearer ", id="bearer-empty"),
        pytest.param("Bearer \t  ", id="bearer-blank"),
        pytest.param("Token TOKEN", id="other-scheme"),
        pytest.param("BearerTOKEN", id="no-space"),
        pytest.param("", id="empty-header"),
    ],
)
def test_missing_token_challenge(
    gateway: Gateway, issuer: FakeIssuer, authorization: str | None
) -> None:
    """RFC 6750 §3.1: no token at all gets the bare challenge, with no error code."""
    token = issuer.mint()

    def header(value: str) -> bytes:
        return f"Authorization: {value.replace('TOKEN', token)}\r\n".encode()

    control = raw_get(gateway, "/secrets/registry", header(f"bearer {token}"))
    response = raw_get(
        gateway, "/secrets/registry", b"" if authorization is None else header(authorization)
    )
    assert control.status == 200, control.body
    assert response.status == 401
    assert response.headers["www-authenticate"] == CHALLENGE
    assert "no-store" in response.headers["cache-control"]
    assert json.loads(response.body)["error"] == "invalid_token"
    for fragment in _fragments(token):
        assert fragment.encode() not in response.body
