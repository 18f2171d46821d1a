"""A bounded soak: mixed good and bad traffic against `exchanger serve`, watching its memory.

    python -m bench.soak                 # about two minutes
    python -m bench.soak --seconds 30    # shorter

It starts the test fakes (OIDC issuer and GitHub, over TLS on loopback) and one
`exchanger serve` process in GitHub App mode (`tests/gateway.py`'s `gateway_process`),
then sends a weighted mix of requests from a few concurrent connections: good
exchanges of every kind, denials, bad bodies, bad and missing tokens, unknown kids,
oversized bodies, a single-use policy with replays, a per-policy rate limit, many
distinct callers (rate-limit buckets), unknown routes and wrong methods.

Every few seconds it reads the gateway's resident memory (VmRSS in
/proc/PID/status). After a warm-up (caches and buckets filling), the growth from the
first samples to the last ones must stay under 10 %; any 5xx, or a credential in the
gateway's logs, also fails the run. It prints every sample and a summary, and exits 1
when a check fails. Traffic goes to 127.0.0.1 only and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from tests.fakes.github import AppCredentials, FakeGitHub, run_fake_github
from tests.fakes.issuer import DROP, FakeIssuer, run_issuer
from tests.fakes.tls import TestCA
from tests.gateway import (
    APP_ID,
    INSTALLATION_ID,
    NPM_TOKEN,
    PAT,
    REGISTRY_PASSWORD,
    GatewayProcess,
    gateway_process,
    ssl_context,
    write_github_config,
)

MAX_GROWTH = 0.10
WORKERS = 6
MAX_REQUESTS = 2_000_000  # a hard bound besides time
DISTINCT_CALLERS = 500

SOAK_POLICIES = """\
- name: soak-single-use
  single_use: true
  claims: {repository_owner_id: "65", repository_id: "80"}
  grants: {secrets: [npm-publish]}
- name: soak-slow-lane
  rate_limit: {per_minute: 6, burst: 2}
  claims: {repository_owner_id: "65", repository_id: "81"}
  grants: {secrets: [registry]}
"""
GLOBAL_LIMIT = "rate_limit: {key: repository_id, per_minute: 1000000, burst: 1000000}\n"


@dataclass
class Call:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None


Scenario = Callable[[FakeIssuer, random.Random], Call]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def json_call(path: str, token: str, body: Any) -> Call:
    headers = {**bearer(token), "Content-Type": "application/json"}
    return Call("POST", path, headers, json.dumps(body).encode())


def _scenarios() -> list[tuple[int, str, Scenario]]:
    """(weight, name, build) for every kind of request in the mix."""

    def unknown_kid(i: FakeIssuer, r: random.Random) -> Call:
        header = {"alg": "RS256", "typ": "JWT", "kid": f"kid-{r.randrange(10**6)}"}
        token = i.sign_raw(header, i.claims(), i.attacker)
        return Call("GET", "/secrets/registry/password", bearer(token))

    def garbage_token(i: FakeIssuer, r: random.Random) -> Call:
        token = ".".join(r.randbytes(r.randrange(1, 60)).hex() for _ in range(r.randrange(1, 5)))
        return Call("GET", "/secrets/registry", bearer(token))

    def many_callers(i: FakeIssuer, r: random.Random) -> Call:
        token = i.mint(repository_id=str(1000 + r.randrange(DISTINCT_CALLERS)))
        return Call("GET", "/secrets/registry/password", bearer(token))

    def random_body(i: FakeIssuer, r: random.Random) -> Call:
        body: dict[str, Any] = {
            r.choice(["scope", "owner", "labels", "x"]): r.choice([1, None, "a/b/c", [], {}])
        }
        return json_call(r.choice(["/register", "/token", "/jitconfig"]), i.mint(), body)

    def get(path: str, **claims: Any) -> Scenario:
        """GET `path` with a good token, `claims` changed."""
        return lambda i, r: Call("GET", path, bearer(i.mint(**claims)))

    def post(path: str, body: Any, **claims: Any) -> Scenario:
        return lambda i, r: json_call(path, i.mint(**claims), body)

    single_use: list[str] = []

    def single_use_once(i: FakeIssuer, r: random.Random) -> Call:
        single_use[:] = [i.mint(repository_id="80")]
        return Call("GET", "/secrets/npm-publish/token", bearer(single_use[0]))

    def single_use_replay(i: FakeIssuer, r: random.Random) -> Call:
        token = single_use[0] if single_use else i.mint(repository_id="80", jti=DROP)
        return Call("GET", "/secrets/npm-publish/token", bearer(token))

    def expired(i: FakeIssuer, r: random.Random) -> Call:
        now = int(time.time())
        return Call("GET", "/secrets/registry", bearer(i.mint(iat=now - 900, exp=now - 600)))

    jit = {"scope": "octo-org", "runner_group": "gpu", "labels": ["linux"]}
    probes = ["/healthz", "/readyz", "/metrics"]
    return [
        (20, "secret-field", get("/secrets/registry/password")),
        (8, "secret-object", get("/secrets/registry")),
        (8, "register", post("/register", {})),
        (4, "remove", post("/remove", {"scope": "octo-org"})),
        (8, "token", post("/token", {"permissions": {"contents": "read"}})),
        (4, "jitconfig", post("/jitconfig", jit)),
        (6, "denied", get("/secrets/registry", repository_id="75")),
        (4, "unknown-secret", lambda i, r: get(f"/secrets/s{r.randrange(10**6)}")(i, r)),
        (4, "deny-policy", post("/token", {}, event_name="pull_request")),
        (6, "bad-body", random_body),
        (3, "not-json", lambda i, r: Call("POST", "/register", bearer(i.mint()), b"{nope")),
        (5, "no-token", lambda i, r: Call("GET", "/secrets/registry/password")),
        (5, "forged", lambda i, r: Call("GET", "/secrets/registry", bearer(i.mint(i.attacker)))),
        (4, "expired", expired),
        (4, "garbage-token", garbage_token),
        (4, "unknown-kid", unknown_kid),
        (2, "oversized", lambda i, r: Call("POST", "/token", bearer(i.mint()), b"x" * 70_000)),
        (2, "query-token", get("/secrets/registry?token=x")),
        (3, "single-use", single_use_once),
        (2, "single-use-replay", single_use_replay),
        (3, "slow-lane", get("/secrets/registry", repository_id="81")),
        (6, "many-callers", many_callers),
        (2, "not-found", lambda i, r: Call("GET", f"/admin/{r.randrange(100)}")),
        (2, "wrong-method", get("/token")),
        (2, "probes", lambda i, r: Call("GET", r.choice(probes))),
    ]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


class LogDrain:
    """Reads the gateway's stdout/stderr (so its pipes never fill) and watches for canaries."""

    def __init__(self, streams: list[IO[str]], canaries: Callable[[], list[str]]) -> None:
        self.lines = 0
        self.hits: list[str] = []
        self._canaries = canaries
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._read, args=(s,), daemon=True) for s in streams
        ]
        for thread in self._threads:
            thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            canaries = self._canaries()
            with self._lock:
                self.lines += 1
                if any(c and c in line for c in canaries):
                    self.hits.append(line[:120])

    def join(self, timeout: float) -> None:
        for thread in self._threads:
            thread.join(timeout)


@dataclass
class Stats:
    statuses: collections.Counter[tuple[str, int]] = field(default_factory=collections.Counter)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    sent: int = 0


async def drive(
    gateway: GatewayProcess, issuer: FakeIssuer, seconds: float, seed: int, stats: Stats
) -> None:
    scenarios = _scenarios()
    weights = [w for w, _, _ in scenarios]
    deadline = time.monotonic() + seconds

    async def worker(number: int) -> None:
        rng = random.Random(seed * 1000 + number)  # noqa: S311 - traffic mix, not crypto
        async with httpx.AsyncClient(
            base_url=gateway.url, verify=ssl_context(gateway.ca), timeout=30
        ) as client:
            while time.monotonic() < deadline and stats.sent < MAX_REQUESTS:
                _, name, build = rng.choices(scenarios, weights)[0]
                call = build(issuer, rng)
                stats.sent += 1
                try:
                    response = await client.request(
                        call.method, call.path, headers=call.headers, content=call.content
                    )
                except httpx.HTTPError as exc:
                    stats.errors[f"{name}: {exc.__class__.__name__}"] += 1
                    continue
                stats.statuses[name, response.status_code] += 1

    await asyncio.gather(*(worker(n) for n in range(WORKERS)))


@dataclass
class Sample:
    at: float
    rss_kib: int
    sent: int


def sample_memory(
    pid: int, stats: Stats, interval: float, stop: threading.Event, out: list[Sample]
) -> None:
    started = time.monotonic()
    while not stop.is_set():
        sample = Sample(time.monotonic() - started, rss_kib(pid), stats.sent)
        out.append(sample)
        print(
            f"  t={sample.at:6.1f}s  rss={sample.rss_kib / 1024:7.1f} MiB  requests={sample.sent}"
        )
        sys.stdout.flush()
        stop.wait(interval)


def environment(directory: Path, stack: ExitStack) -> tuple[GatewayProcess, FakeIssuer, FakeGitHub]:
    """The fakes, the config and a running `exchanger serve` (closed by `stack`)."""
    ca = TestCA.create(directory)
    issuer, _ = stack.enter_context(run_issuer(ca))
    app = AppCredentials.generate(APP_ID)
    fake = FakeGitHub(
        app=app,
        pat=PAT,
        installations={"octo-org": INSTALLATION_ID},
        runner_groups={"octo-org": [(2, "ci"), (3, "gpu")]},
    )
    github, _ = stack.enter_context(run_fake_github(ca, fake))
    assert github.api_url is not None
    (directory / "app.pem").write_text(app.pem_pkcs8, encoding="utf-8")
    path = write_github_config(
        directory, issuer.url, github.api_url, mode="app", extra=GLOBAL_LIMIT
    )
    with (directory / "github-policies.yaml").open("a", encoding="utf-8") as policies:
        policies.write(SOAK_POLICIES)
    gateway = stack.enter_context(gateway_process(path, ca))
    return gateway, issuer, github


def summarize(samples: list[Sample], warmup: float) -> tuple[float, float, float]:
    """(baseline MiB, final MiB, growth): medians of the first and last three samples
    after the warm-up."""
    steady = [s for s in samples if s.at >= warmup] or samples
    head, tail = steady[:3], steady[-3:]
    baseline = statistics.median(s.rss_kib for s in head) / 1024
    final = statistics.median(s.rss_kib for s in tail) / 1024
    return baseline, final, (final - baseline) / baseline


@dataclass
class Result:
    seconds: float
    warmup: float
    elapsed: float
    stats: Stats
    samples: list[Sample]
    log_lines: int
    log_hits: list[str]
    exit_code: int


def soak(seconds: float, interval: float, warmup: float, seed: int) -> Result:
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        gateway, issuer, github = environment(Path(tmp), stack)
        pid = gateway.process.pid
        assert gateway.process.stdout is not None
        assert gateway.process.stderr is not None

        def canaries() -> list[str]:
            return [REGISTRY_PASSWORD, NPM_TOKEN, *github.minted_secrets()]

        drain = LogDrain([gateway.process.stdout, gateway.process.stderr], canaries)
        print(
            f"soak: exchanger serve pid {pid} at {gateway.url}, {seconds:.0f} s, "
            f"{WORKERS} connections, warm-up {warmup:.0f} s"
        )
        stats = Stats()
        samples: list[Sample] = []
        stop = threading.Event()
        sampler = threading.Thread(
            target=sample_memory, args=(pid, stats, interval, stop, samples), daemon=True
        )
        started = time.monotonic()
        sampler.start()
        asyncio.run(drive(gateway, issuer, seconds, seed, stats))
        elapsed = time.monotonic() - started
        stop.set()
        sampler.join(10)
        samples.append(Sample(elapsed, rss_kib(pid), stats.sent))
        gateway.process.terminate()
        exit_code = gateway.process.wait(30)
        drain.join(10)
    return Result(
        seconds, warmup, elapsed, stats, samples, drain.lines, list(drain.hits), exit_code
    )


def report(result: Result) -> list[str]:
    """Print the summary; return the failed checks."""
    stats = result.stats
    baseline, final, growth = summarize(result.samples, result.warmup)
    peak = max(s.rss_kib for s in result.samples) / 1024
    by_status: collections.Counter[int] = collections.Counter()
    for (_, status), count in stats.statuses.items():
        by_status[status] += count
    print()
    print(
        f"requests: {stats.sent} in {result.elapsed:.0f} s "
        f"({stats.sent / result.elapsed:.0f}/s); statuses {dict(sorted(by_status.items()))}"
    )
    print(
        "by scenario: " + ", ".join(f"{n}={s}:{c}" for (n, s), c in sorted(stats.statuses.items()))
    )
    print(
        f"rss: baseline {baseline:.1f} MiB (after {result.warmup:.0f} s warm-up), final "
        f"{final:.1f} MiB, peak {peak:.1f} MiB, growth {growth * 100:+.1f} % "
        f"(limit {MAX_GROWTH * 100:.0f} %)"
    )
    print(
        f"gateway log lines: {result.log_lines}, credential hits: {len(result.log_hits)}, "
        f"exit code after SIGTERM: {result.exit_code}"
    )
    failures = []
    if growth >= MAX_GROWTH:
        failures.append(f"memory grew {growth * 100:.1f} %")
    server_errors = {k: v for k, v in stats.statuses.items() if k[1] >= 500}
    if server_errors:
        failures.append(f"5xx answers: {server_errors}")
    if stats.errors:
        failures.append(f"transport errors: {dict(stats.errors)}")
    if result.log_hits:
        failures.append(f"credentials in the gateway's logs: {result.log_hits[:3]}")
    if result.exit_code != 0:
        failures.append(f"exit code {result.exit_code} after SIGTERM")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="traffic time (default 120)")
    parser.add_argument("--interval", type=float, default=5.0, help="RSS sampling period (s)")
    parser.add_argument("--warmup", type=float, help="seconds before the baseline (default 15%%)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    warmup = args.warmup if args.warmup is not None else max(5.0, 0.15 * args.seconds)
    failures = report(soak(args.seconds, args.interval, warmup, args.seed))
    for failure in failures:
        print(f"FAIL: {failure}")
    print("soak: " + ("FAILED" if failures else "ok"))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
