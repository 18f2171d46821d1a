"""Dry runs of the engine: `explain` for one claims set, `exchanger test` for a case file.

Both decide with `Engine.for_config`, the engine `serve` decides with, and take
requests as the HTTP API does (`ask_from_spec`), so what they print is
what the gateway would answer.

A case file holds the operator's policy unit tests, kept beside the config:

    claims: {repository_owner_id: "1234", repository_owner: acme}   # shared by every case
    cases:
      - name: main may pull the registry password
        claims: {repository: acme/app, repository_id: "5678", ref: refs/heads/main}
        request: {secret: registry/password}
        expect: allow
        policy: registry-from-main      # optional: the policy that must decide
      - name: pull requests may not
        claims: {event_name: pull_request}   # merged over the shared claims; null drops one
        request: {secret: registry}
        expect: deny
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exchanger import rfc8693
from exchanger.config.yamlsource import YamlError, YList, YMap, load, location
from exchanger.errors import InvalidRequest
from exchanger.identity.claims import Identity
from exchanger.policy.asks import (
    RUNNER_ACTIONS,
    Ask,
    SecretRequest,
    installation_request,
    parse_body,
    runner_request,
)
from exchanger.policy.engine import Decision, Engine, PolicyTrace

_DECIDERS = {
    "policy": "a policy",
    "no_policy": "no policy (default deny)",
    "scope_guard": "runner_scopes",
    "mode": "the GitHub mode (answered 400)",
}
_CASE_KEYS = frozenset({"name", "claims", "request", "expect", "policy"})


class CaseFileError(Exception):
    """A case file that cannot be read; `problems` are `FILE:LINE: message` lines."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def identity_from_claims(claims: Mapping[str, Any]) -> Identity:
    """An identity for a dry run: the operator's claims stand for a verified token."""
    return Identity(issuer=str(claims.get("iss", "")), claims=dict(claims))


def render_explanation(decision: Decision, ask: Ask) -> str:
    lines = [
        f"decision: {'allow' if decision.allowed else 'deny'}",
        f"request: {json.dumps(ask.describe(), sort_keys=True)}",
        f"decided by: {_DECIDERS[decision.decider]}: {decision.reason}",
        f"deciding policy: {decision.policy_name or '(none: default deny)'}",
    ]
    for trace in decision.trace:
        lines.extend(_trace_lines(trace, decision))
    return "\n".join(lines)


def _trace_lines(trace: PolicyTrace, decision: Decision) -> list[str]:
    if not trace.matched:
        outcome = "claims do not match"
    elif trace.covers:
        outcome = "matches and covers the request"
        if decision.policy_name == trace.name:
            outcome += " (decides)"
    else:
        outcome = f"matches but its grants do not cover the request: {trace.shortfall}"
    lines = [f"policy {trace.name!r} ({trace.effect}): {outcome}"]
    for check in trace.checks:
        mark = "ok " if check.matched else "no "
        value = "<missing or not comparable>" if check.value is None else repr(check.value)
        lines.append(f"  {mark} {check.claim} = {value}; wants any of {list(check.patterns)}")
    return lines


def why_not(decision: Decision) -> str:
    """One line on what fell short: the refusal, and each allow policy's first gap."""
    gaps = []
    for trace in decision.trace:
        if trace.effect != "allow":
            continue
        if trace.matched:
            gaps.append(f"{trace.name!r}: {trace.shortfall}")
        else:
            failed = next(c for c in trace.checks if not c.matched)
            value = "missing" if failed.value is None else repr(failed.value)
            gaps.append(f"{trace.name!r}: claim {failed.claim} is {value}")
    detail = f"; {'; '.join(gaps)}" if gaps and decision.decider == "no_policy" else ""
    return f"{decision.reason}{detail}"


@dataclass(frozen=True)
class Case:
    name: str
    where: str  # FILE:LINE
    claims: Mapping[str, Any]
    request: tuple[str, Any]
    expect: str
    policy: str | None


def load_cases(path: Path) -> list[Case]:
    """Read and check a case file; every problem is reported at once."""
    try:
        data = load(path)
    except (OSError, YamlError) as exc:
        line = exc.line if isinstance(exc, YamlError) else 0
        raise CaseFileError(
            [f"{location(str(path), line)}: cannot read the case file: {exc}"]
        ) from None
    problems: list[str] = []
    if not isinstance(data, YMap) or not isinstance(data.get("cases"), YList):
        raise CaseFileError([f"{path}:1: a case file is a mapping with a `cases` list"])
    shared = data.get("claims") or {}
    if not isinstance(shared, dict):
        problems.append(f"{path}:{data.lines.get('claims', 1)}: claims must be a mapping")
        shared = {}
    cases = [
        case
        for item, line in zip(data["cases"], data["cases"].lines, strict=True)
        if (case := _case(item, f"{path}:{line}", shared, problems)) is not None
    ]
    if problems:
        raise CaseFileError(problems)
    return cases


def _case(item: Any, where: str, shared: Mapping[str, Any], problems: list[str]) -> Case | None:
    if not isinstance(item, dict):
        problems.append(f"{where}: each case is a mapping")
        return None
    errors = [f"unknown key {key!r}" for key in item if key not in _CASE_KEYS]
    name, claims, request = item.get("name"), item.get("claims") or {}, item.get("request")
    expect, policy = item.get("expect"), item.get("policy")
    if not isinstance(name, str) or not name:
        errors.append("name must be a non-empty string")
    if not isinstance(claims, dict):
        errors.append("claims must be a mapping")
    if not isinstance(request, dict) or len(request) != 1 or next(iter(request)) not in ASK_KINDS:
        errors.append(f"request must be one of {', '.join(ASK_KINDS)}, e.g. {{secret: NAME}}")
    if expect not in ("allow", "deny"):
        errors.append("expect must be allow or deny")
    if policy is not None and not isinstance(policy, str):
        errors.append("policy must be a policy name")
    if errors or not isinstance(request, dict):
        problems.extend(f"{where}: {error}" for error in errors)
        return None
    merged = {k: v for k, v in {**shared, **claims}.items() if v is not None}
    kind, value = next(iter(request.items()))
    return Case(str(name), where, merged, (kind, value), str(expect), policy)


def run_cases(engine: Engine, cases: list[Case]) -> Iterator[str]:
    """One line per failing case, with the reason; nothing for a case that passes."""
    for case in cases:
        identity = identity_from_claims(case.claims)
        try:
            ask = ask_from_spec(*case.request, identity)
        except InvalidRequest as exc:
            yield f"{case.where}: {case.name}: the request is invalid (400): {exc.message}"
            continue
        decision = engine.decide(identity, ask, explain=True)
        got = "allow" if decision.allowed else "deny"
        if got != case.expect:
            reason = why_not(decision) if got == "deny" else decision.reason
            yield f"{case.where}: {case.name}: expected {case.expect}, got {got}: {reason}"
        elif case.policy is not None and decision.policy_name != case.policy:
            yield (
                f"{case.where}: {case.name}: expected policy {case.policy!r} to decide, "
                f"but {decision.policy_name or 'no policy'!s} did ({decision.reason})"
            )


#: The request kinds `explain` and `exchanger test` name, as the HTTP API takes them.
ASK_KINDS = ("secret", "runner", "jitconfig", "installation", "token_exchange")


def ask_from_spec(kind: str, value: Any, identity: Identity) -> Ask:
    """An ask written down for a dry run, parsed exactly as its HTTP request would be.

    `secret`: `NAME` or `NAME/FIELD`; `runner`: `ACTION[:SCOPE]`; `jitconfig` and
    `installation`: the JSON body (an object, or its text); `token_exchange`: the
    RFC 8693 form's target and scope (`resource=…&scope=…`, no subject token).
    """
    if kind == "token_exchange":
        if not isinstance(value, str):
            raise InvalidRequest("a token exchange is its form: resource=…&scope=…")
        return rfc8693.ask_from_form(value.encode("utf-8", "surrogatepass"))
    if kind == "secret":
        if not isinstance(value, str) or not value:
            raise InvalidRequest("a secret is named NAME or NAME/FIELD")
        name, _, field = value.partition("/")
        return SecretRequest(name=name, field=field or None)
    if kind == "runner":
        if not isinstance(value, str):
            raise InvalidRequest("a runner request is ACTION[:SCOPE]")
        action, _, scope = value.partition(":")
        if action not in RUNNER_ACTIONS:
            raise InvalidRequest(f"runner action must be one of {', '.join(RUNNER_ACTIONS)}")
        body = {"scope": scope} if scope else {}
        return runner_request(action, body, identity.text("repository"))
    if isinstance(value, str):
        value = parse_body(value.encode("utf-8", "surrogatepass"))
    if kind == "jitconfig":
        return runner_request("jitconfig", value, identity.text("repository"))
    if kind == "installation":
        return installation_request(value, identity.text("repository_owner"))
    raise InvalidRequest(f"the request kind must be one of {', '.join(ASK_KINDS)}")
