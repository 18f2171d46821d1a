"""Per-caller rate limits and single-use tokens, in memory and shared through a real Redis."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fakes.issuer import DROP, FakeIssuer
from tests.fakes.redis import RedisServer, run_redis
from tests.fakes.tls import TestCA
from tests.gateway import (
    REGISTRY_PASSWORD,
    Gateway,
    gateway_process,
    running_gateway,
    ssl_context,
    wait_for,
    write_config,
)

LIMITED = """\
policy_files: [limits-policies.yaml]
rate_limit: {{key: repository_id, per_minute: 60, burst: 3}}
{state}"""

LIMIT_POLICIES = """\
- name: publish-once
  single_use: true
  claims: {repository_owner_id: "65", repository_id: "80"}
  grants: {secrets: [npm-publish]}
- name: slow-lane
  rate_limit: {per_minute: 1, burst: 1}
  claims: {repository_owner_id: "65", repository_id: "81"}
  grants: {secrets: [registry]}
"""


def limited_config(directory: Path, issuer: FakeIssuer, redis_url: str | None = None) -> Path:
    (directory / "limits-policies.yaml").write_text(LIMIT_POLICIES, encoding="utf-8")
    state = f"state: {{redis_url: '{redis_url}'}}\n" if redis_url else ""
    return write_config(directory, issuer.url, LIMITED.format(state=state))


def fetch(gateway: Gateway, token: str, path: str = "/secrets/registry/password") -> httpx.Response:
    with gateway.client() as client:
        return client.get(path, headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
def limited(issuer: FakeIssuer, ca: TestCA, config_dir: Path) -> Iterator[Gateway]:
    with running_gateway(limited_config(config_dir, issuer), ca) as gateway:
        yield gateway


# --- rate limits ------------------------------------------------------------------------


def test_global_bucket_limits_one_caller_not_another(limited: Gateway, issuer: FakeIssuer) -> None:
    answers = [fetch(limited, issuer.mint()).status_code for _ in range(4)]
    assert answers == [200, 200, 200, 429]
    over = fetch(limited, issuer.mint())
    assert over.json()["error"] == "rate_limited"
    assert int(over.headers["retry-after"]) >= 1
    other = fetch(limited, issuer.mint(repository_id="75"))
    assert other.status_code == 403  # its own bucket: it reaches the decision


def test_bucket_is_taken_before_the_decision(limited: Gateway, issuer: FakeIssuer) -> None:
    denied = issuer.mint(repository_id="76")
    assert [fetch(limited, denied).status_code for _ in range(4)] == [403, 403, 403, 429]


def test_caller_without_key_claim_is_keyed_by_sub(limited: Gateway, issuer: FakeIssuer) -> None:
    first = issuer.mint(repository_id=DROP, sub="repo:x/y:ref:refs/heads/a")
    second = issuer.mint(repository_id=DROP, sub="repo:x/y:ref:refs/heads/b")
    assert [fetch(limited, first).status_code for _ in range(4)][-1] == 429
    assert fetch(limited, second).status_code == 403


def test_policy_rate_limit_is_a_separate_bucket(limited: Gateway, issuer: FakeIssuer) -> None:
    token = issuer.mint(repository_id="81")
    assert [fetch(limited, token).status_code for _ in range(2)] == [200, 429]


def test_invalid_tokens_take_no_unit(limited: Gateway, issuer: FakeIssuer) -> None:
    for _ in range(5):
        assert fetch(limited, issuer.forge_hmac()).status_code == 401
    assert fetch(limited, issuer.mint(repository_id="77")).status_code == 403


# --- single use -------------------------------------------------------------------------


def test_single_use_token_is_consumed_once(limited: Gateway, issuer: FakeIssuer) -> None:
    token = issuer.mint(repository_id="80")
    first = fetch(limited, token, "/secrets/npm-publish/token")
    replay = fetch(limited, token, "/secrets/npm-publish/token")
    assert first.status_code == 200
    assert replay.status_code == 401
    assert replay.json() == {"error": "invalid_token", "message": "token already used"}
    assert fetch(limited, issuer.mint(repository_id="80"), "/secrets/npm-publish/token").is_success


def test_token_without_jti_never_satisfies_single_use(limited: Gateway, issuer: FakeIssuer) -> None:
    token = issuer.mint(repository_id="80", jti=DROP)
    assert fetch(limited, token, "/secrets/npm-publish/token").status_code == 403


def test_denied_requests_do_not_consume_the_jti(limited: Gateway, issuer: FakeIssuer) -> None:
    token = issuer.mint(repository_id="80")
    assert fetch(limited, token, "/secrets/registry").status_code == 403
    assert fetch(limited, token, "/secrets/npm-publish/token").status_code == 200


def test_concurrent_replays_let_exactly_one_through(limited: Gateway, issuer: FakeIssuer) -> None:
    token = issuer.mint(repository_id="80")

    async def burst() -> list[int]:
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(
            base_url=limited.url, verify=ssl_context(limited.ca), timeout=10
        ) as client:
            answers = await asyncio.gather(
                *(client.get("/secrets/npm-publish/token", headers=headers) for _ in range(3))
            )
        return sorted(a.status_code for a in answers)

    assert asyncio.run(burst()) == [200, 401, 401]


# --- shared state in Redis --------------------------------------------------------------


@pytest.fixture
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with run_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


def test_replicas_share_limits_and_token_ids(
    issuer: FakeIssuer, ca: TestCA, config_dir: Path, redis: RedisServer
) -> None:
    path = limited_config(config_dir, issuer, redis.url)
    with gateway_process(path, ca) as one, gateway_process(path, ca) as two:
        token = issuer.mint()
        statuses = [fetch(gw, token).status_code for gw in (one, two, one, two)]
        assert statuses == [200, 200, 200, 429]

        once = issuer.mint(repository_id="80")
        assert fetch(one, once, "/secrets/npm-publish/token").status_code == 200
        replay = fetch(two, once, "/secrets/npm-publish/token")
        assert replay.status_code == 401
        assert replay.json()["message"] == "token already used"
        for gateway in (one, two):
            assert gateway.stop()[0] == 0


def test_redis_outage_fails_single_use_closed_and_recovers(
    issuer: FakeIssuer, ca: TestCA, config_dir: Path, redis: RedisServer
) -> None:
    path = limited_config(config_dir, issuer, redis.url)
    with gateway_process(path, ca) as gateway:
        assert fetch(
            gateway, issuer.mint(repository_id="80"), "/secrets/npm-publish/token"
        ).is_success
        redis.stop()

        once = fetch(gateway, issuer.mint(repository_id="80"), "/secrets/npm-publish/token")
        assert once.status_code == 503
        assert once.json()["error"] == "upstream_unavailable"
        assert int(once.headers["retry-after"]) >= 1
        # Rate limits fall back to this process's buckets: the caller still gets through.
        assert fetch(gateway, issuer.mint(repository_id="82")).status_code == 403
        with gateway.client() as client:
            ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["degraded"] == ["redis"]

        redis.start()
        wait_for(
            lambda: fetch(
                gateway, issuer.mint(repository_id="80"), "/secrets/npm-publish/token"
            ).status_code == 200,
            "single-use recovers with redis",
        )  # fmt: skip
        with gateway.client() as client:
            assert client.get("/readyz").json()["degraded"] == []
            assert client.get("/healthz").status_code == 200
        code, out, err = gateway.stop()
    assert code == 0
    assert REGISTRY_PASSWORD not in out + err


def test_redis_url_password_never_logged(
    issuer: FakeIssuer, ca: TestCA, config_dir: Path, redis: RedisServer
) -> None:
    url = redis.url.replace("redis://", "redis://:hunter2-canary@")
    path = limited_config(config_dir, issuer, url)
    with gateway_process(path, ca) as gateway:
        fetch(gateway, issuer.mint(repository_id="80"), "/secrets/npm-publish/token")
        gateway.process.send_signal(signal.SIGHUP)
        code, out, err = gateway.stop()
    assert code == 0
    assert "hunter2-canary" not in out + err
