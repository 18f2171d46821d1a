"""The audit trail: one JSON line per exchange on stdout.

Only what an auditor needs to reconstruct who asked for what and what they
got — never a token, a secret value or a private key.

It is on every request's path, so the line is built with one reused JSON
encoder, a timestamp formatted once per second, and a log record made
directly (the caller's file and line, which `Logger.info` would look up on
every call, are not part of the line).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any

from exchanger.errors import ExchangerError
from exchanger.identity.claims import Identity
from exchanger.policy.engine import Decision

log = logging.getLogger("exchanger.audit")

_CLAIMS = ("sub", "repository", "repository_id", "ref", "workflow_ref", "run_id", "actor")
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode
_EMPTY: Mapping[str, Any] = {}


def configure() -> None:
    """Send audit lines, bare, to stdout; other logs keep their own handlers."""
    if not any(getattr(h, "_exchanger_audit", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._exchanger_audit = True  # type: ignore[attr-defined]
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


class _Clock:
    """UTC timestamps with milliseconds, `2025-01-02T03:04:05.678Z`, truncated like isoformat."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def now(self) -> str:
        second, nanos = divmod(time.time_ns(), 1_000_000_000)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._prefix}.{nanos // 1_000_000:03d}Z"


_clock = _Clock()


def _error_code(status: int, failure: ExchangerError | None) -> str | None:
    if failure is not None:
        return failure.code
    return "internal_error" if status >= 500 else None


def record(
    *,
    request_id: str,
    endpoint: str,
    status: int,
    decision: Decision | None,
    failure: ExchangerError | None,
    request: Mapping[str, Any] | None,
    identity: Identity | None,
    duration_ms: float,
) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    claims = identity.claims if identity is not None else _EMPTY
    entry: dict[str, Any] = {
        "ts": _clock.now(),
        "event": "exchange",
        "request_id": request_id,
        "endpoint": endpoint,
        # The verdict, not the outcome: an allowed exchange GitHub then refused is an allow.
        "decision": "allow" if decision is not None and decision.allowed else "deny",
        "decided_by": decision.decider if decision is not None else None,
        "status": status,
        # Why a request was refused: the stable code and the message the caller got
        # (fixed texts and names, never a token or a secret value).
        "error": _error_code(status, failure),
        "reason": failure.message if failure is not None else None,
        "policy": decision.policy_name if decision is not None else None,
        "request": request,
        "iss": identity.issuer if identity is not None else None,
    }
    for claim in _CLAIMS:
        value = claims.get(claim)
        entry[claim] = value if isinstance(value, str | int) else None
    entry["duration_ms"] = round(duration_ms, 3)
    line = _ENCODE(entry)
    log.handle(log.makeRecord(log.name, logging.INFO, __file__, 0, line, (), None))
