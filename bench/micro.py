"""Per-stage CPU cost of the exchange path, in-process, without HTTP (µs per call).

    python -m bench.micro

Times token verification (good and bad signatures), the policy decision with
10, 1,000 and 10,000 policies (the benchmark's mix) and one audit line, each
the best of several repeats, on the same token pool shape as `python -m bench`.
Cheaper to run and much less noisy than the HTTP benchmark: use it to compare
implementations of one stage.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from joserfc.jwk import RSAKey

from bench.workload import _CONFIG, hot_claims, mint_pool
from exchanger import audit
from exchanger.config.load import load_config
from exchanger.config.model import IssuerConfig
from exchanger.identity.claims import Identity
from exchanger.identity.jwks import IssuerKeys, VerificationKey
from exchanger.identity.verify import Verifier
from exchanger.policy.asks import SecretRequest
from exchanger.policy.engine import Engine
from exchanger.policy.model import Policy
from tests.fakes.issuer import AUDIENCE, FakeIssuer

ISSUER = "https://issuer.bench.invalid"


def best_of(fn: Callable[[], object], calls: int, repeats: int = 5) -> float:
    """Microseconds per call, best of `repeats` rounds of `calls` calls."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, time.perf_counter() - started)
    return best / calls * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.micro", description=__doc__)
    parser.add_argument("--policies", default="10,1000,10000")
    parser.add_argument("--tokens", type=int, default=400)
    args = parser.parse_args(argv)
    issuer = FakeIssuer(url=ISSUER)
    tokens, bad = mint_pool(issuer, args.tokens)
    config = IssuerConfig(issuer=ISSUER, audiences=frozenset({AUDIENCE}))
    keys = IssuerKeys(config, client=None)  # type: ignore[arg-type]
    kid = issuer.k1.kid or ""
    keys.keys = {kid: VerificationKey(kid, "RSA", "RS256", _public(issuer))}
    verifier = Verifier({ISSUER: keys})
    loop = asyncio.new_event_loop()

    def cycle(pool: list[str]) -> Callable[[], object]:
        state = {"i": 0}

        def one() -> object:
            state["i"] = (state["i"] + 1) % len(pool)
            coro = verifier.verify(pool[state["i"]])
            try:
                coro.send(None)
            except StopIteration as done:
                return done.value
            raise RuntimeError("verify awaited something")

        return one

    def rejected() -> object:
        try:
            return cycle(bad)()
        except Exception as exc:
            return exc

    print(f"verify, valid token      {best_of(cycle(tokens), len(tokens)):8.1f} µs")
    print(f"verify, bad signature    {best_of(rejected, len(bad)):8.1f} µs")
    identity = Identity(ISSUER, hot_claims(1, issuer, int(time.time())))
    ask = SecretRequest(name="registry", field="password")
    with tempfile.TemporaryDirectory() as tmp:
        for count in (int(p) for p in args.policies.split(",")):
            engine = Engine(_policies(Path(tmp), count))
            decision = engine.decide(identity, ask)
            assert decision.allowed, decision
            cost = best_of(partial(engine.decide, identity, ask), 200)
            print(f"decide, {count:>6} policies {cost:8.1f} µs")
    audit_log = logging.getLogger("exchanger.audit")
    audit_log.handlers[:] = [logging.StreamHandler(io.StringIO())]
    audit_log.setLevel(logging.INFO)
    audit_log.propagate = False

    def record() -> None:
        audit.record(
            request_id="0123456789abcdef0123456789abcdef",
            endpoint="secrets",
            status=200,
            decision=decision,
            failure=None,
            request=ask.describe(),
            identity=identity,
            duration_ms=0.123,
        )

    print(f"audit line               {best_of(record, 2000):8.1f} µs")
    loop.close()
    return 0


def _public(issuer: FakeIssuer) -> RSAKey:
    public = {k: v for k, v in issuer.k1.as_dict(private=False).items() if k in ("kty", "n", "e")}
    return RSAKey.import_key(public)


def _policies(directory: Path, count: int) -> tuple[Policy, ...]:
    from bench.workload import policies_yaml

    (directory / "app.pem").write_text(_app_pem(), encoding="utf-8")
    (directory / f"p{count}.yaml").write_text(policies_yaml(count), encoding="utf-8")
    path = directory / f"c{count}.yaml"
    path.write_text(
        _CONFIG.format(
            issuer=ISSUER, audience=AUDIENCE, api_url="https://api.bench.invalid", app_id=1,
            policies=f"p{count}.yaml",
        ),
        encoding="utf-8",
    )  # fmt: skip
    return load_config(path).policies


_PEM: list[str] = []


def _app_pem() -> str:
    if not _PEM:
        from tests.fakes.github import AppCredentials

        _PEM.append(AppCredentials.generate(1).pem_pkcs1)
    return _PEM[0]


if __name__ == "__main__":
    sys.exit(main())
