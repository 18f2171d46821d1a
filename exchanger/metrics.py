"""Prometheus metrics, served at `/metrics` in the text exposition format.

Labels are bounded: endpoint names, decisions, status codes, GitHub operation
templates (ids elided), issuer URLs from the config, cache names. Never a
claim value, a scope or a secret name. With `--workers N` each worker process
counts its own requests.
"""

from __future__ import annotations

import functools

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# `*_created` series double the output and nobody reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]
REGISTRY = CollectorRegistry(auto_describe=True)
CONTENT_TYPE = CONTENT_TYPE_LATEST

EXCHANGES = Counter(
    "exchanger_exchanges",
    "Exchanges by endpoint, decision and HTTP status",
    ["endpoint", "decision", "status"],
    registry=REGISTRY,
)
EXCHANGE_SECONDS = Histogram(
    "exchanger_exchange_duration_seconds",
    "Time from request to response, per endpoint",
    ["endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
UPSTREAM = Counter(
    "exchanger_upstream_requests",
    "GitHub API calls by operation and status (or the transport error)",
    ["operation", "status"],
    registry=REGISTRY,
)
JWKS_REFRESHES = Counter(
    "exchanger_jwks_refreshes",
    "JWKS fetches per issuer and result",
    ["issuer", "result"],
    registry=REGISTRY,
)
CACHE = Counter(
    "exchanger_cache_lookups",
    "Cache look-ups by cache and result (hit or miss)",
    ["cache", "result"],
    registry=REGISTRY,
)
BROADER_ANSWERS = Counter(
    "exchanger_broader_answers",
    "GitHub answers refused for granting more than, or other than, was asked, by kind "
    "(permission, permission_level, repository, repository_selection, runner_group, "
    "runner_labels, runner_name, unreadable); what they minted is revoked",
    ["kind"],
    registry=REGISTRY,
)
REVOCATIONS = Counter(
    "exchanger_revocations",
    "Revocations of refused GitHub answers by target (installation_token, jit_runner) "
    "and result (ok, failed)",
    ["target", "result"],
    registry=REGISTRY,
)
SIGNER_SECONDS = Histogram(
    "exchanger_signer_duration_seconds",
    "App-key signer calls (sign, public_key) by back-end and outcome (ok, unavailable, refused)",
    ["signer", "operation", "outcome"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
RELOADS = Counter(
    "exchanger_config_reloads",
    "Configuration reloads (SIGHUP) by result",
    ["result"],
    registry=REGISTRY,
)


def count_exchange(endpoint: str, allowed: bool, status: int, seconds: float) -> None:
    """One exchange's counter and latency; label children are cached (the hot path).

    `decision` is the engine's verdict, as in the audit line: an allowed exchange
    that GitHub then refused counts as an allow with its 4xx/5xx status.
    """
    counter, histogram = _children(endpoint, allowed, status)
    counter.inc()
    histogram.observe(seconds)


@functools.cache
def _children(endpoint: str, allowed: bool, status: int) -> tuple[Counter, Histogram]:
    decision = "allow" if allowed else "deny"
    return EXCHANGES.labels(endpoint, decision, status), EXCHANGE_SECONDS.labels(endpoint)


def cache_lookup(cache: str, hit: bool) -> None:
    CACHE.labels(cache, "hit" if hit else "miss").inc()


def exposition() -> bytes:
    return generate_latest(REGISTRY)
