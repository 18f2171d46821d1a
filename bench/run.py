"""The benchmark run: every measurement, in one process, as ratios against bare Starlette.

    python -m bench                     # full run (~8 minutes), rewrites docs/benchmarks.md
    python -m bench --duration 3 --output -   # a quick look, printed only

Order of a run: start the fakes and mint the token pool; then for 1 and 2
workers, the bare app and exchanger side by side, each scenario measured on
one then the other (so drift hits both alike), then both at half of
exchanger's peak rate; then exchanger with 10, 1,000 and 10,000 policies.
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from bench import report
from bench.load import LoadResult, Request, run_wrk, wrk_path
from bench.servers import ROOT, Server, start_bare, start_exchanger
from bench.workload import Workload, workload

DOC = ROOT / "docs" / "benchmarks.md"
SETTLE = 0.5  # seconds for requests in flight when wrk stops to finish


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    request: Request
    endpoint: str  # as in the audit line
    bad_tokens: bool = False


SCENARIOS = (
    Scenario("secret", "secret exchange", Request("GET", "/secrets/registry/password"), "secrets"),
    Scenario("installation", "installation token", Request("POST", "/token", "{}"), "token"),
    Scenario("runner", "runner registration", Request("POST", "/register", "{}"), "register"),
    Scenario(
        "rejected",
        "rejected (bad signature)",
        Request("GET", "/secrets/registry/password"),
        "secrets",
        bad_tokens=True,
    ),
)


@dataclass
class Settings:
    duration: float
    warmup: float
    connections: int
    pool: int
    workers: tuple[int, ...]
    policies: tuple[int, ...]


@dataclass
class Measured:
    """One scenario at one worker count: bare and exchanger, same run."""

    scenario: Scenario
    workers: int
    bare: LoadResult
    exchanger: LoadResult
    bare_rss: list[float]
    exchanger_rss: list[float]
    statuses: collections.Counter[int]  # exchanger's answers in the window (audit lines)
    upstream: collections.Counter[str]  # GitHub calls in the window, by operation
    metrics_upstream: float | None  # the same from /metrics (one worker only)


@dataclass
class HalfLoad:
    workers: int
    target_rps: float
    bare: LoadResult
    exchanger: LoadResult


@dataclass
class PolicyRun:
    policies: int
    startup_seconds: float
    peak: LoadResult
    fixed: LoadResult
    fixed_rps: float
    rss: list[float]


@dataclass
class Scaling:
    few: int
    many: int
    one: LoadResult  # with `few` workers
    more: LoadResult  # with `many` workers


@dataclass
class Control:
    busy_us: float
    peak: LoadResult
    half: LoadResult  # at the same offered load as exchanger's half-load run


@dataclass
class Memory:
    policies: int
    workers: int
    rss: list[float]  # per worker
    supervisor: float


@dataclass
class JwksWindow:
    server: str
    workers: int
    seconds: float
    fetches: int


@dataclass
class Results:
    settings: Settings
    started: datetime
    seconds: float = 0.0
    measured: list[Measured] = field(default_factory=list)
    half: list[HalfLoad] = field(default_factory=list)
    policy_runs: list[PolicyRun] = field(default_factory=list)
    jwks: list[JwksWindow] = field(default_factory=list)
    jwks_served: int = 0  # JWKS documents the fake issuer served during the run
    scaling: Scaling | None = None
    control: Control | None = None
    memory: Memory | None = None
    environment: dict[str, str] = field(default_factory=dict)


class Bench:
    def __init__(self, work: Workload, settings: Settings) -> None:
        self.work = work
        self.settings = settings
        self.results = Results(settings, datetime.now(UTC), environment=environment())

    def log(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    def load(
        self, server: Server, scenario: Scenario, seconds: float, mean_delay_ms: float = 0.0
    ) -> LoadResult:
        tokens = self.work.bad_tokens if scenario.bad_tokens else self.work.tokens
        return run_wrk(
            server.url,
            scenario.request,
            tokens,
            seconds=seconds,
            connections=self.settings.connections,
            mean_delay_ms=mean_delay_ms,
        )

    def start_exchanger(self, policies: int, workers: int) -> Server:
        return start_exchanger(
            self.work.directory,
            self.work.config(policies),
            workers,
            self.work.ca.ca_file,
            f"p{policies}",
        )

    def stop_exchanger(self, server: Server) -> None:
        lived = server.stop()
        fetches = server.jwks_fetches()
        self.results.jwks.append(JwksWindow(server.name, server.workers, lived, fetches))

    def run(self) -> Results:
        started = time.monotonic()
        jwks_before = self.work.issuer.jwks_requests
        for workers in self.settings.workers:
            self.compare(workers)
        if len(self.settings.workers) > 1:
            self.worker_scaling()
        self.policy_scaling()
        self.policy_memory()
        self.results.jwks_served = self.work.issuer.jwks_requests - jwks_before
        self.results.seconds = time.monotonic() - started
        return self.results

    def peak_run(
        self, server: Server, scenario: Scenario, mean_delay_ms: float = 0.0
    ) -> Callable[[], LoadResult]:
        """One measured run, to do later (at peak, or paced by `mean_delay_ms`)."""
        return lambda: self.load(server, scenario, self.settings.duration, mean_delay_ms)

    def abba(self, runs: list[Callable[[], LoadResult]], *, peak: bool) -> list[LoadResult]:
        """Every run twice, in order and then in reverse (A B B A), so drift hits all alike.

        At peak the faster of the two counts (other tenants of a shared machine only
        ever slow a run down); paced runs are averaged.
        """
        first = [run() for run in runs]
        second = [run() for run in reversed(runs)][::-1]
        if peak:
            return [max(a, b, key=lambda r: r.rps) for a, b in zip(first, second, strict=True)]
        return [LoadResult.mean([a, b]) for a, b in zip(first, second, strict=True)]

    def compare(self, workers: int) -> None:
        """Every scenario on the bare app and on exchanger (10 policies), then half load."""
        settings = self.settings
        self.log(f"{workers} worker(s): starting the bare app and exchanger")
        bare = start_bare(self.work.directory, workers)
        exchanger = self.start_exchanger(settings.policies[0], workers)
        try:
            peaks: dict[str, LoadResult] = {}
            bare_peaks: dict[str, LoadResult] = {}
            for scenario in SCENARIOS:
                self.log(f"{workers}w {scenario.title}")
                self.load(bare, scenario, settings.warmup)
                self.load(exchanger, scenario, settings.warmup)
                bare_result = bare_peaks[scenario.key] = self.load(
                    bare, scenario, settings.duration
                )
                exchanger.audit_counts()
                calls_before = len(self.work.github.requests)
                metrics_before = upstream_total(exchanger) if workers == 1 else None
                result = self.load(exchanger, scenario, settings.duration)
                time.sleep(SETTLE)
                calls = self.work.github.requests[calls_before:]
                audit = exchanger.audit_counts()
                metrics_after = upstream_total(exchanger) if workers == 1 else None
                peaks[scenario.key] = result
                self.results.measured.append(
                    Measured(
                        scenario=scenario,
                        workers=workers,
                        bare=bare_result,
                        exchanger=result,
                        bare_rss=bare.rss_mb(),
                        exchanger_rss=exchanger.rss_mb(),
                        statuses=collections.Counter(
                            {
                                status: n
                                for (ep, status), n in audit.items()
                                if ep == scenario.endpoint
                            }
                        ),
                        upstream=collections.Counter(c.operation or c.path for c in calls),
                        metrics_upstream=(
                            None
                            if metrics_before is None or metrics_after is None
                            else metrics_after - metrics_before
                        ),
                    )
                )
            target = peaks["secret"].rps / 2
            delay = settings.connections * 1000 / target
            self.log(f"{workers}w half load: {target:.0f} req/s")
            secret = SCENARIOS[0]
            half = HalfLoad(
                workers=workers,
                target_rps=target,
                exchanger=self.load(exchanger, secret, settings.duration, delay),
                bare=self.load(bare, secret, settings.duration, delay),
            )
            self.results.half.append(half)
            if workers == 1:
                self.control(peaks["secret"], bare_peaks["secret"], delay)
        finally:
            bare.stop()
            self.stop_exchanger(exchanger)

    def control(self, exchanger: LoadResult, bare_peak: LoadResult, delay: float) -> None:
        """A bare app that burns exchanger's extra CPU per request: peak and half load."""
        busy_us = max(0.0, 1e6 / exchanger.rps - 1e6 / bare_peak.rps)
        self.log(f"control: bare app burning {busy_us:.0f} µs per request")
        server = start_bare(self.work.directory, 1, busy_us)
        secret = SCENARIOS[0]
        try:
            self.load(server, secret, self.settings.warmup)
            peak = self.load(server, secret, self.settings.duration)
            half = self.load(server, secret, self.settings.duration, delay)
        finally:
            server.stop()
        self.results.control = Control(busy_us, peak, half)

    def worker_scaling(self) -> None:
        """Secret exchange peak with 1 and N workers, side by side, alternated (ABBA)."""
        settings = self.settings
        secret = SCENARIOS[0]
        counts = (settings.workers[0], settings.workers[-1])
        self.log(f"scaling: {counts[0]} vs {counts[1]} workers")
        servers = [self.start_exchanger(settings.policies[0], w) for w in counts]
        try:
            for server in servers:
                self.load(server, secret, settings.warmup)
            one, many = self.abba([self.peak_run(s, secret) for s in servers], peak=True)
            self.results.scaling = Scaling(counts[0], counts[1], one, many)
        finally:
            for server in servers:
                self.stop_exchanger(server)

    def policy_scaling(self) -> None:
        """The secret exchange with more and more policies (one worker each), alternated."""
        settings = self.settings
        secret = SCENARIOS[0]
        servers: list[tuple[int, float, Server]] = []
        try:
            for count in settings.policies:
                self.log(f"{count} policies: starting")
                started = time.monotonic()
                server = self.start_exchanger(count, 1)
                servers.append((count, time.monotonic() - started, server))
                self.load(server, secret, settings.warmup)
            self.log("policies: peak")
            peaks = self.abba([self.peak_run(s, secret) for _, _, s in servers], peak=True)
            fixed_rps = peaks[0].rps / 2
            delay = settings.connections * 1000 / fixed_rps
            self.log(f"policies: fixed load {fixed_rps:.0f} req/s")
            fixed = self.abba([self.peak_run(s, secret, delay) for _, _, s in servers], peak=False)
            for (count, startup, server), peak, at_fixed in zip(servers, peaks, fixed, strict=True):
                self.results.policy_runs.append(
                    PolicyRun(count, startup, peak, at_fixed, fixed_rps, server.rss_mb())
                )
        finally:
            for _, _, server in servers:
                self.stop_exchanger(server)

    def policy_memory(self) -> None:
        """Per-worker RSS with the most policies and several workers (supervisor apart)."""
        settings = self.settings
        count, workers = settings.policies[-1], max(settings.workers)
        if workers < 2:
            return
        self.log(f"{count} policies, {workers} workers: memory")
        server = self.start_exchanger(count, workers)
        try:
            self.load(server, SCENARIOS[0], settings.warmup)
            self.results.memory = Memory(
                count, workers, server.rss_mb(), server.supervisor_rss_mb()
            )
        finally:
            self.stop_exchanger(server)


def upstream_total(server: Server) -> float:
    total = 0.0
    for line in server.metrics().splitlines():
        if line.startswith("exchanger_upstream_requests_total{"):
            total += float(line.rpartition(" ")[2])
    return total


def environment() -> dict[str, str]:
    versions = {
        name: metadata.version(name)
        for name in (
            "starlette", "uvicorn", "uvloop", "httptools", "joserfc", "cryptography",
            "google-re2", "PyYAML", "prometheus-client",
        )
    }  # fmt: skip
    wrk = _output([wrk_path(), "-v"], check=False)  # wrk -v exits 1
    git = shutil.which("git")
    commit = (_output([git, "rev-parse", "--short", "HEAD"]) if git else "") or "?"
    dirty = _output([git, "status", "--porcelain", "--", "exchanger"]) if git else ""
    return {
        "python": platform.python_version(),
        "cpus": str(len(os.sched_getaffinity(0))),
        "kernel": platform.release(),
        "wrk": wrk.split("\n")[0].strip(),
        "commit": commit + (" (exchanger/ modified)" if dirty else ""),
        **versions,
    }


def _output(command: list[str], *, check: bool = True) -> str:
    done = subprocess.run(  # noqa: S603 - fixed commands from PATH
        command, cwd=ROOT, capture_output=True, text=True, check=False
    )
    return (done.stdout or done.stderr).strip() if done.returncode == 0 or not check else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--pool", type=int, default=10_000, help="distinct tokens (>= 10000)")
    parser.add_argument("--workers", default="1,2", help="worker counts, e.g. 1,2")
    parser.add_argument("--policies", default="10,1000,10000", help="policy counts, smallest first")
    parser.add_argument(
        "--output", default=str(DOC), help="markdown file to update, or - to only print"
    )
    args = parser.parse_args(argv)
    settings = Settings(
        duration=args.duration,
        warmup=args.warmup,
        connections=args.connections,
        pool=args.pool,
        workers=tuple(int(w) for w in args.workers.split(",")),
        policies=tuple(int(p) for p in args.policies.split(",")),
    )
    wrk_path()
    with tempfile.TemporaryDirectory(prefix="exchanger-bench-") as tmp:
        started = time.monotonic()
        print(f"[bench] minting {settings.pool} tokens", file=sys.stderr, flush=True)
        with workload(Path(tmp), settings.pool) as work:
            print(
                f"[bench] fakes up, tokens minted in {time.monotonic() - started:.0f} s",
                file=sys.stderr,
                flush=True,
            )
            results = Bench(work, settings).run()
            results.seconds = time.monotonic() - started
    text = report.render(results, argv if argv is not None else sys.argv[1:])
    print(text)
    if args.output != "-":
        report.write(Path(args.output), text)
        print(f"[bench] results written to {args.output}", file=sys.stderr)
    return 0
