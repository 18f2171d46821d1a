"""The audit trail: one JSON line per exchange on stdout.

Only what an auditor needs to reconstruct who asked for what and what they
got — never a token, a secret value or a private key.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from exchanger.identity import Identity

log = logging.getLogger("exchanger.audit")

_CLAIMS = ("sub", "repository", "repository_id", "ref", "workflow_ref", "run_id", "actor")


def configure() -> None:
    """Send audit lines, bare, to stdout; other logs keep their own handlers."""
    if not any(getattr(h, "_exchanger_audit", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._exchanger_audit = True  # type: ignore[attr-defined]
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def record(
    *,
    request_id: str,
    endpoint: str,
    status: int,
    policy: str | None,
    request: Mapping[str, Any] | None,
    identity: Identity | None,
    duration_ms: float,
) -> None:
    claims: Mapping[str, Any] = identity.claims if identity is not None else {}
    entry: dict[str, Any] = {
        "ts": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "event": "exchange",
        "request_id": request_id,
        "endpoint": endpoint,
        "decision": "allow" if status < 400 else "deny",
        "status": status,
        "policy": policy,
        "request": request,
        "iss": identity.issuer if identity is not None else None,
    }
    for claim in _CLAIMS:
        value = claims.get(claim)
        entry[claim] = value if isinstance(value, str | int) else None
    entry["duration_ms"] = round(duration_ms, 3)
    log.info(json.dumps(entry, separators=(",", ":")))
