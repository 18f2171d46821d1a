"""The issuer key cache (`IssuerKeys`): discovery, JWKS, refetch budget, outages.

Every "how many fetches" assertion reads the fake issuer's request counters
(`discovery_requests`, `jwks_requests`). The cache runs on an injected monotonic
clock (`FakeClock`) and nothing sleeps to synchronise: concurrency is driven with
`asyncio.gather` and tasks. Tokens are minted at the real time and verified with
the real wall clock; only the cache's clock is fake.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from exchanger.config.model import IssuerConfig
from exchanger.errors import InvalidToken, UpstreamUnavailable
from exchanger.http import make_client
from exchanger.identity import jwks as jwks_module
from exchanger.identity.claims import Identity
from exchanger.identity.jwks import IssuerKeys
from exchanger.identity.verify import Verifier
from tests.fakes.issuer import AUDIENCE, FakeIssuer
from tests.fakes.tls import TestCA
from tests.gateway import running_gateway, write_config


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Ring:
    """One issuer's key cache and a verifier over it, with every outbound URL recorded."""

    keys: IssuerKeys
    verifier: Verifier
    clock: FakeClock
    outbound: list[str] = field(default_factory=list)

    async def verify(self, token: str) -> Identity:
        return await self.verifier.verify(token)

    async def outcome(self, token: str) -> Identity | Exception:
        try:
            return await self.verifier.verify(token)
        except Exception as exc:
            return exc


def config_for(issuer: FakeIssuer, **options: Any) -> IssuerConfig:
    return IssuerConfig(issuer=issuer.url, audiences=frozenset({AUDIENCE}), **options)


def jwks_url(issuer: FakeIssuer) -> str:
    return f"{issuer.url}/.well-known/jwks"


def discovery_url(issuer: FakeIssuer) -> str:
    return f"{issuer.url}/.well-known/openid-configuration"


@asynccontextmanager
async def ring(config: IssuerConfig, timeout: float = 10.0) -> AsyncIterator[Ring]:
    config = dataclasses.replace(config, timeout_seconds=timeout)
    async with make_client(timeout) as client:
        clock = FakeClock()
        keys = IssuerKeys(config, client, clock=clock)
        state = Ring(keys, Verifier({config.issuer: keys}), clock)

        async def record(request: httpx.Request) -> None:
            state.outbound.append(str(request.url))

        client.event_hooks = {"request": [record], "response": []}
        yield state


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


def counts(issuer: FakeIssuer) -> tuple[int, int]:
    return issuer.discovery_requests, issuer.jwks_requests


def unknown_kid(issuer: FakeIssuer, kid: str = "unknown-kid") -> str:
    header = {"alg": "RS256", "typ": "JWT", "kid": kid}
    return issuer.sign_raw(header, issuer.claims(), issuer.attacker)


async def yield_until(condition: Callable[[], bool]) -> None:
    """Let other tasks run (no timed sleep) until `condition` holds."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


# --- first fetch, discovery ----------------------------------------------------------


def test_first_fetch_goes_through_discovery(issuer: FakeIssuer) -> None:
    async def scenario() -> None:
        async with ring(config_for(issuer)) as r:
            assert not r.keys.ready
            identity = await r.verify(issuer.mint())
            assert identity.issuer == issuer.url
            assert counts(issuer) == (1, 1)
            assert r.keys.fetches == 1
            assert r.outbound == [discovery_url(issuer), jwks_url(issuer)]
            await r.verify(issuer.mint(key=issuer.k2))
            await r.verify(issuer.mint())
            assert counts(issuer) == (1, 1)

    run(scenario)


def test_configured_jwks_uri_skips_discovery(issuer: FakeIssuer) -> None:
    async def scenario() -> None:
        async with ring(config_for(issuer, jwks_uri=jwks_url(issuer))) as r:
            await r.verify(issuer.mint())
            assert counts(issuer) == (0, 1)
            assert r.outbound == [jwks_url(issuer)]

    run(scenario)


async def expect_cold_outage(r: Ring, issuer: FakeIssuer) -> UpstreamUnavailable:
    with pytest.raises(UpstreamUnavailable) as caught:
        await r.verify(issuer.mint())
    assert isinstance(caught.value.retry_after, int)
    assert caught.value.retry_after >= 1
    assert caught.value.status == 503
    assert not r.keys.ready
    return caught.value


@pytest.mark.parametrize(
    "named",
    [
        pytest.param("{url}/", id="trailing-slash"),
        pytest.param("https://evil.test", id="other-host"),
        pytest.param("HTTPS://{host}", id="upper-case-scheme"),
        pytest.param("{url}#", id="empty-fragment"),
        pytest.param("", id="empty"),
    ],
)
def test_sec_11_discovery_issuer_mismatch_gives_no_keys(issuer: FakeIssuer, named: str) -> None:
    bad = named.format(url=issuer.url, host=issuer.url.removeprefix("https://"))

    async def scenario() -> None:
        async with ring(config_for(issuer)) as r:  # control: the real name
            await r.verify(issuer.mint())
        issuer.reset()
        issuer.discovery_issuer = bad
        async with ring(config_for(issuer)) as r:
            await expect_cold_outage(r, issuer)
            assert counts(issuer) == (1, 0)  # its jwks_uri is never followed
            assert r.outbound == [discovery_url(issuer)]

    run(scenario)


@pytest.mark.parametrize(
    "uri",
    [
        pytest.param("http://{host}/.well-known/jwks", id="http"),
        pytest.param("HTTP://{host}/.well-known/jwks", id="http-upper-case"),
        pytest.param("//{host}/.well-known/jwks", id="scheme-relative"),
        pytest.param("/.well-known/jwks", id="relative-path"),
        pytest.param("file:///etc/passwd", id="file"),
        pytest.param("", id="empty"),
        pytest.param("https://[::1", id="malformed-ipv6"),
        pytest.param("https://{host}:notaport/jwks", id="malformed-port"),
        pytest.param("https://xn--zz.invalid/jwks", id="bad-punycode"),
        pytest.param("https://\u2488.invalid/jwks", id="bad-idna"),
    ],
)
def test_sec_11_discovery_jwks_uri_must_be_https(issuer: FakeIssuer, uri: str) -> None:
    """A non-https or unusable `jwks_uri` means no keys (503), never a crash or a fetch."""
    issuer.jwks_uri_override = uri.format(host=issuer.url.removeprefix("https://"))

    async def scenario() -> None:
        async with ring(config_for(issuer)) as r:
            await expect_cold_outage(r, issuer)
            assert counts(issuer) == (1, 0)
            assert r.outbound == [discovery_url(issuer)]
            issuer.jwks_uri_override = None  # control: the same cache recovers
            r.clock.advance(1)
            await r.verify(issuer.mint())
            assert counts(issuer) == (2, 1)

    run(scenario)


def test_sec_11_configured_http_jwks_uri_is_never_requested(issuer: FakeIssuer) -> None:
    http_uri = jwks_url(issuer).replace("https://", "http://")

    async def scenario() -> None:
        async with ring(config_for(issuer, jwks_uri=http_uri)) as r:
            await expect_cold_outage(r, issuer)
            assert r.outbound == []
            assert counts(issuer) == (0, 0)

    run(scenario)


# --- rotation ------------------------------------------------------------------------


def test_sec_08_rotation_new_key_after_one_refetch(issuer: FakeIssuer) -> None:
    issuer.published = [issuer.k1]

    async def scenario() -> None:
        async with ring(config_for(issuer)) as r:
            await r.verify(issuer.mint())
            assert counts(issuer) == (1, 1)
            issuer.published = [issuer.k2]  # k1 withdrawn, k2 published
            r.clock.advance(59)  # the first fetch counts: no refetch yet
            with pytest.raises(InvalidToken):
                await r.verify(issuer.mint(key=issuer.k2))
            assert counts(issuer) == (1, 1)
            r.clock.advance(1)
            identity = await r.verify(issuer.mint(key=issuer.k2))
            assert identity.claims["repository"] == "octo-org/octo-repo"
            assert counts(issuer) == (2, 2)
            with pytest.raises(InvalidToken):  # withdrawn, and no refetch within 60 s
                await r.verify(issuer.mint())
            assert counts(issuer) == (2, 2)

    run(scenario)


def test_sec_08_withdrawn_key_fails_after_refresh(issuer: FakeIssuer) -> None:
    async def scenario() -> None:
        async with ring(config_for(issuer)) as r:
            await r.verify(issuer.mint())
            issuer.published = [issuer.k2]
            await r.keys.refresh()  # what the background loop does every few minutes
            with pytest.raises(InvalidToken):
                await r.verify(issuer.mint())
            await r.verify(issuer.mint(key=issuer.k2))
            assert set(r.keys.keys) == {issuer.k2.kid}
            assert counts(issuer) == (2, 2)

    run(scenario)


# --- 7. unknown kid: refetch budget and single flight --------------------------------


def test_sec_07_unknown_kid_refetch_budget(issuer: FakeIssuer) -> None:
    async def scenario() -> None:
        async with ring(config_for(issuer)) as r:
            start = r.clock.now
            await r.verify(issuer.mint())
            expected = 1
            for offset, refetch in [
                (0, False),
                (30, False),
                (59.9, False),
                (60, True),
                (60, False),
                (90, False),
                (119.9, False),
                (120, True),
                (500, True),
                (559, False),
            ]:
                r.clock.now = start + offset
                with pytest.raises(InvalidToken) as caught:
                    await r.verify(unknown_kid(issuer, f"kid-{offset}"))
                assert type(caught.value) is InvalidToken
                expected += refetch
                assert counts(issuer) == (expected, expected), f"at +{offset}s"
                assert r.keys.fetches == expected
                await r.verify(issuer.mint())  # known keys never wait or refetch
                assert counts(issuer) == (expected, expected)

    run(scenario)


def test_sec_07_single_flight_for_100_concurrent_unknown_kids(issuer: FakeIssuer) -> None:
    async def scenario() -> None:
        async with ring(config_for(issuer)) as r:
            await r.verify(issuer.mint())
            r.clock.advance(61)
            tokens = [unknown_kid(issuer, f"random-{n}") for n in range(100)]
            outcomes = await asyncio.gather(*(r.outcome(t) for t in tokens))
            assert all(type(o) is InvalidToken for o in outcomes), outcomes[:3]
            assert counts(issuer) == (2, 2)
            assert r.keys.fetches == 2
            more = await asyncio.gather(*(r.outcome(t) for t in tokens))
            assert all(type(o) is InvalidToken for o in more)
            assert counts(issuer) == (2, 2)

    run(scenario)


def test_sec_07_single_flight_on_cold_start(issuer: FakeIssuer) -> None:
    """Concurrent first requests wait for one fetch and then all verify."""

    async def scenario() -> None:
        async with ring(config_for(issuer)) as r:
            tokens = [issuer.mint() for _ in range(50)] + [issuer.mint(key=issuer.k2)] * 50
            outcomes = await asyncio.gather(*(r.outcome(t) for t in tokens))
            assert all(isinstance(o, Identity) for o in outcomes), outcomes[:3]
            assert counts(issuer) == (1, 1)

    run(scenario)


def test_sec_07_late_caller_joins_the_cold_start_fetch(issuer: FakeIssuer) -> None:
    """A request arriving while the first fetch is under way waits for it: no 503."""
    issuer.slow_seconds = 0.2

    async def scenario() -> None:
        async with ring(config_for(issuer)) as r:
            first = asyncio.create_task(r.outcome(issuer.mint()))
            await yield_until(lambda: r.keys.fetches == 1)
            late = await r.outcome(issuer.mint(key=issuer.k2))
            assert isinstance(late, Identity), late
            assert isinstance(await first, Identity)
            assert counts(issuer) == (1, 1)

    run(scenario)


@pytest.mark.parametrize(
    "kid",
    [
        pytest.param(None, id="no-kid"),
        pytest.param(7, id="number"),
        pytest.param(["a"], id="list"),
        pytest.param("k" * 257, id="too-long"),
    ],
)
def test_sec_07_unusable_kid_never_fetches(issuer: FakeIssuer, kid: Any) -> None:
    header: dict[str, Any] = {"alg": "RS256", "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    token = issuer.sign_raw(header, issuer.claims(), issuer.k1)

    async def scenario() -> None:
        async with ring(config_for(issuer)) as r:
            await r.verify(issuer.mint())
            r.clock.advance(61)
            with pytest.raises(InvalidToken):
                await r.verify(token)
            assert counts(issuer) == (1, 1)

    run(scenario)


def test_sec_07_known_keys_served_while_a_refetch_is_in_flight(issuer: FakeIssuer) -> None:
    async def scenario() -> None:
        async with ring(config_for(issuer)) as r:
            await r.verify(issuer.mint())
            issuer.slow_seconds = 0.3
            r.clock.advance(61)
            before = r.keys.fetches
            pending = asyncio.create_task(r.outcome(unknown_kid(issuer)))
            await yield_until(lambda: r.keys.fetches > before)
            await r.verify(issuer.mint())  # from cache, not behind the slow fetch
            assert not pending.done()
            assert type(await pending) is InvalidToken
            assert counts(issuer) == (2, 2)

    run(scenario)


# --- 8. outages ----------------------------------------------------------------------

OUTAGES = [
    pytest.param("down", id="down-503"),
    pytest.param("garbage", id="garbage"),
    pytest.param("empty", id="empty-key-set"),
    pytest.param("huge", id="over-size-cap"),
    pytest.param("redirect", id="redirect"),
    pytest.param("junk-only", id="only-unusable-keys"),
    pytest.param("timeout", id="timeout"),
]


def set_outage(issuer: FakeIssuer, outage: str) -> None:
    if outage == "junk-only":
        issuer.published = [issuer.junk_jwk(n)[0] for n in ("oct", "ec", "enc", "private")]
    elif outage == "timeout":
        issuer.slow_seconds = 1.0  # twice the client timeout below
    else:
        issuer.mode = outage


def outage_timeout(outage: str) -> float:
    return 0.5 if outage == "timeout" else 10.0


@pytest.mark.parametrize("outage", OUTAGES)
def test_sec_08_outage_after_a_good_fetch_keeps_the_keys(issuer: FakeIssuer, outage: str) -> None:
    async def scenario() -> None:
        async with ring(config_for(issuer), timeout=outage_timeout(outage)) as r:
            await r.verify(issuer.mint())
            good = dict(r.keys.keys)
            set_outage(issuer, outage)
            for _ in range(2):
                r.clock.advance(61)
                before = r.keys.fetches
                with pytest.raises(InvalidToken) as caught:  # 401, not 503
                    await r.verify(unknown_kid(issuer))
                assert type(caught.value) is InvalidToken
                assert r.keys.fetches == before + 1
                assert r.keys.keys == good  # nothing evicted, no empty set cached
                await r.verify(issuer.mint())
                await r.verify(issuer.mint(key=issuer.k2))
            issuer.reset()
            r.clock.advance(61)
            with pytest.raises(InvalidToken):
                await r.verify(unknown_kid(issuer))
            await r.verify(issuer.mint())

    run(scenario)


@pytest.mark.parametrize("outage", OUTAGES)
def test_sec_08_cold_start_outage_is_503(issuer: FakeIssuer, outage: str) -> None:
    set_outage(issuer, outage)

    async def scenario() -> None:
        async with ring(config_for(issuer), timeout=outage_timeout(outage)) as r:
            error = await expect_cold_outage(r, issuer)
            assert error.retry_after == 1
            assert r.keys.keys == {}
            issuer.reset()  # control: once the issuer serves keys, the next attempt works
            r.clock.advance(1)
            await r.verify(issuer.mint())

    run(scenario)


def test_sec_08_cold_start_backs_off_1_to_60_seconds(issuer: FakeIssuer) -> None:
    issuer.mode = "down"
    waits = [1, 2, 4, 8, 16, 32, 60, 60, 60]

    async def scenario() -> None:
        async with ring(config_for(issuer)) as r:
            error = await expect_cold_outage(r, issuer)
            assert error.retry_after == 1
            assert issuer.discovery_requests == 1
            last = r.clock.now
            for attempt, wait in enumerate(waits, start=2):
                r.clock.now = last + wait - 0.5  # not yet due: no attempt
                for _ in range(3):
                    error = await expect_cold_outage(r, issuer)
                    assert error.retry_after == 1
                assert issuer.discovery_requests == attempt - 1
                r.clock.now = last + wait
                error = await expect_cold_outage(r, issuer)
                assert issuer.discovery_requests == attempt
                assert error.retry_after == min(60, 2 ** (attempt - 1))
                last = r.clock.now
            assert issuer.jwks_requests == 0
            issuer.mode = "ok"
            r.clock.now = last + 59  # still backing off, even though the issuer is back
            await expect_cold_outage(r, issuer)
            r.clock.now = last + 60
            await r.verify(issuer.mint())
            assert r.keys.ready
            r.clock.advance(59)  # keys now: the kid-miss cooldown applies, not the backoff
            with pytest.raises(InvalidToken):
                await r.verify(unknown_kid(issuer))
            assert issuer.discovery_requests == len(waits) + 2

    run(scenario)


class _Stop(Exception):
    pass


class _RecordingAsyncio:
    """Stands in for `asyncio` inside exchanger.jwks: `run()`'s sleeps move the fake clock.

    `IssuerKeys.run` sleeps on the event loop's real clock and takes no sleep
    function, so this is the one place a module attribute is replaced.
    """

    def __init__(self, clock: FakeClock, stop_after: int) -> None:
        self.clock = clock
        self.stop_after = stop_after
        self.delays: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    async def sleep(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.clock.advance(seconds)
        if len(self.delays) >= self.stop_after:
            raise _Stop
        await asyncio.sleep(0)


def test_sec_08_background_loop_backs_off_then_refreshes(
    issuer: FakeIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    issuer.mode = "down"

    async def scenario() -> None:
        async with ring(config_for(issuer)) as r:
            fake = _RecordingAsyncio(r.clock, stop_after=9)
            monkeypatch.setattr(jwks_module, "asyncio", fake)
            with pytest.raises(_Stop):
                await r.keys.run()
            assert fake.delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]
            assert counts(issuer) == (9, 0)
            issuer.mode = "ok"
            fake = _RecordingAsyncio(r.clock, stop_after=2)
            monkeypatch.setattr(jwks_module, "asyncio", fake)
            with pytest.raises(_Stop):
                await r.keys.run()
            assert fake.delays == [300, 300]
            assert counts(issuer) == (11, 2)
            await r.verify(issuer.mint())

    run(scenario)


# --- 4. unusable keys in the JWKS ----------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("oct", id="oct-symmetric"),
        pytest.param("ec", id="ec-p256-with-rs256-only"),
        pytest.param("ec-no-alg", id="ec-p256-without-alg-with-rs256-only"),
        pytest.param("enc", id="rsa-use-enc"),
        pytest.param("rs512", id="rsa-alg-rs512"),
        pytest.param("private", id="rsa-with-private-members"),
    ],
)
def test_sec_04_unusable_jwks_keys_never_verify(issuer: FakeIssuer, name: str) -> None:
    entry, signer, alg = issuer.junk_jwk(name)
    kid = entry["kid"]
    token = issuer.sign_raw({"alg": alg, "typ": "JWT", "kid": kid}, issuer.claims(), signer)
    issuer.published = [issuer.k1, entry]

    async def scenario() -> None:
        async with ring(config_for(issuer)) as r:
            await r.verify(issuer.mint())  # k1 from the same JWKS works
            with pytest.raises(InvalidToken):
                await r.verify(token)
            assert kid not in r.keys.keys
            assert counts(issuer) == (1, 1)
        if name == "oct":
            return  # no configuration makes a symmetric key usable
        # control: the same key, fit for the purpose, verifies the same token
        config = config_for(issuer)
        if name.startswith("ec"):
            config = config_for(issuer, algorithms=("RS256", "ES256"))
        else:
            issuer.published = [issuer.k1, {k: entry[k] for k in ("kty", "kid", "n", "e")}]
        async with ring(config) as r:
            identity = await r.verify(token)
            assert identity.issuer == issuer.url

    run(scenario)


def test_sec_04_jwks_document_shapes(issuer: FakeIssuer) -> None:
    """Malformed entries are skipped; the usable key next to them still loads."""
    issuer.published = [
        "not-an-object",
        {"kty": "RSA", "kid": issuer.k2.kid, "n": "!!", "e": "AQAB"},
        {"kty": "RSA", "n": "x", "e": "AQAB"},
        {"kty": ["RSA"], "kid": "k-list"},
        {"kty": "RSA", "kid": 5},
        {"kty": "RSA", "kid": "k-use", "use": ["sig"]},
        issuer.k1,
    ]

    async def scenario() -> None:
        async with ring(config_for(issuer)) as r:
            await r.verify(issuer.mint())
            assert set(r.keys.keys) == {issuer.k1.kid}

    run(scenario)


# --- 11. size cap and redirects ------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "mode"),
    [
        pytest.param("discovery", "huge", id="discovery-content-length"),
        pytest.param("discovery", "huge-stream", id="discovery-chunked"),
        pytest.param("jwks", "huge", id="jwks-content-length"),
        pytest.param("jwks", "huge-stream", id="jwks-chunked"),
    ],
)
def test_sec_11_documents_over_the_size_cap_refused(
    issuer: FakeIssuer, document: str, mode: str
) -> None:
    config = config_for(issuer, jwks_uri=jwks_url(issuer) if document == "jwks" else None)

    async def scenario() -> None:
        async with ring(config) as r:  # control: the same document, normal size
            await r.verify(issuer.mint())
        issuer.reset()
        issuer.mode = mode  # a valid document padded past 1 MiB
        async with ring(config) as r:
            await expect_cold_outage(r, issuer)
            assert counts(issuer) == ((1, 0) if document == "discovery" else (0, 1))

    run(scenario)


@pytest.mark.parametrize("document", ["discovery", "jwks"])
def test_sec_11_redirects_not_followed(issuer: FakeIssuer, document: str) -> None:
    config = config_for(issuer, jwks_uri=jwks_url(issuer) if document == "jwks" else None)
    first = discovery_url(issuer) if document == "discovery" else jwks_url(issuer)

    async def scenario() -> None:
        async with ring(config) as r:
            await r.verify(issuer.mint())
        issuer.reset()
        issuer.mode = "redirect"  # 302 to the same URL + ?followed=1, which would serve keys
        async with ring(config) as r:
            await expect_cold_outage(r, issuer)
            assert r.outbound == [first]
            assert counts(issuer) == ((1, 0) if document == "discovery" else (0, 1))

    run(scenario)


# --- through HTTP: a cold outage is a 503 --------------------------------------------


def test_sec_55_cold_issuer_outage_answers_503(
    issuer: FakeIssuer, ca: TestCA, config_dir: Path
) -> None:
    issuer.mode = "down"
    token = issuer.mint()
    path = write_config(config_dir, issuer.url)
    with running_gateway(path, ca, ready=False) as gateway, gateway.client() as client:
        ready = client.get("/readyz")
        response = client.get("/secrets/registry", headers={"Authorization": f"Bearer {token}"})
    assert ready.status_code == 503
    assert response.status_code == 503
    assert response.json()["error"] == "upstream_unavailable"
    assert response.headers["retry-after"].isdigit()
    assert int(response.headers["retry-after"]) >= 1
    assert "no-store" in response.headers["cache-control"]
    assert "www-authenticate" not in response.headers
    for part in token.split("."):
        assert part[:12] not in response.text
    assert json.loads(response.text).keys() <= {"error", "message"}


def test_sec_07_trickling_jwks_is_cut_off_by_the_fetch_deadline(issuer: FakeIssuer) -> None:
    """Per-read timeouts never fire on a peer that sends a byte at a time."""
    issuer.mode = "trickle"

    async def scenario() -> None:
        async with make_client(5.0) as client:
            config = config_for(issuer)
            keys = IssuerKeys(config, client, clock=FakeClock(), fetch_deadline=0.5)
            verifier = Verifier({config.issuer: keys})
            started = time.monotonic()
            with pytest.raises(UpstreamUnavailable):
                await verifier.verify(issuer.mint())
            assert time.monotonic() - started < 3.0
            assert keys.keys == {}

    run(scenario)


def test_a_failed_refresh_logs_the_reason_in_words_and_the_next_attempt(
    issuer: FakeIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    issuer.mode = "down"

    async def scenario() -> None:
        async with ring(config_for(issuer)) as r:
            with caplog.at_level("WARNING", logger="exchanger.jwks"):
                await r.keys.refresh()

    run(scenario)
    (line,) = [r.getMessage() for r in caplog.records if "jwks refresh failed" in r.getMessage()]
    assert line.startswith(f"jwks refresh failed for {issuer.url}: HTTP ")
    assert f"({issuer.url}/.well-known/" in line
    assert line.endswith("; next attempt in 1 s")
