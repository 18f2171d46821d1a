"""The decision: may this verified identity have what it asks for?

A request is allowed iff no matching `deny` policy covers it and at least one
matching `allow` policy covers the whole request on its own; grants of
different policies are never merged. The first covering allow policy in file
order supplies the defaults (repositories, permissions, labels…). No policy,
no exchange.

A `deny` policy covers a request that asks for *anything* its grants name: a
caller cannot slip past it by adding a repository, a permission or a label to
what it asks for. Whatever the request leaves to defaults is assumed to touch
the deny (the defaults come from an allow policy the deny cannot see), and a
dimension the deny grant leaves open (no `runner_groups`, no `labels`,
`repositories: "*"`) covers every value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from exchanger.identity.claims import Identity
from exchanger.policy.asks import (
    InstallationRequest,
    Request,
    RunnerRequest,
    SecretRequest,
    scope_kind,
)
from exchanger.policy.index import PolicyIndex
from exchanger.policy.model import InstallationGrant, Policy, RunnerGrant
from exchanger.policy.patterns import NamePattern, ascii_lower, claim_text
from exchanger.policy.permissions import RANK
from exchanger.policy.permissions import covers as level_covers

DEFAULT_LABELS = ("self-hosted",)


@dataclass(frozen=True, slots=True)
class RunnerTerms:
    """What a covering runner grant allows for this request, defaults filled in."""

    runner_group: str | None  # None: GitHub's default group (id 1)
    labels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class InstallationTerms:
    owner: str
    repositories: tuple[str, ...] | None  # bare names; None: all the installation reaches
    permissions: Mapping[str, str]


Terms = RunnerTerms | InstallationTerms | None


@dataclass(frozen=True, slots=True)
class ClaimCheck:
    claim: str
    value: str | None  # the compared text; None when missing or of a non-comparable type
    matched: bool
    patterns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PolicyTrace:
    """Why one policy did or did not take part in a decision (for `explain`)."""

    name: str
    effect: str
    checks: tuple[ClaimCheck, ...]
    matched: bool
    covers: bool | None  # None when the claims did not match


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    policy: Policy | None
    terms: Terms = None
    trace: tuple[PolicyTrace, ...] = field(default=())

    @property
    def policy_name(self) -> str | None:
        return None if self.policy is None else self.policy.name


class Engine:
    """Policies compiled for deciding; built once per config load."""

    def __init__(self, policies: tuple[Policy, ...]) -> None:
        self.policies = policies
        self._index = PolicyIndex(policies)

    def decide(self, identity: Identity, request: Request, *, explain: bool = False) -> Decision:
        """Judge `request`; with `explain`, also record why each policy did what it did.

        Only the policies the index names as candidates can match, so only they are
        evaluated (in file order); `explain` evaluates every policy for its trace.
        """
        claims = identity.claims
        allowed: tuple[Policy, Terms] | None = None
        denied: Policy | None = None
        trace: list[PolicyTrace] = []
        policies = self.policies if explain else self._index.candidates(claims)
        for policy in policies:
            matched = policy.matches(claims)
            coverage = _coverage(policy, claims, request) if matched else None
            if explain:
                trace.append(_trace(policy, claims, matched, coverage is not None))
            if coverage is None:
                continue
            if policy.effect == "deny":
                denied = policy
                if not explain:
                    break
            elif allowed is None:
                allowed = (policy, coverage[0])
        if denied is not None:
            return Decision(False, denied, None, tuple(trace))
        if allowed is None:
            return Decision(False, None, None, tuple(trace))
        return Decision(True, allowed[0], allowed[1], tuple(trace))


def _coverage(policy: Policy, claims: Mapping[str, Any], request: Request) -> tuple[Terms] | None:
    """`(terms,)` when the policy's grants cover the whole request, else None."""
    grants = policy.grants
    if grants.empty:
        return (None,)  # a deny policy without grants covers everything
    if policy.effect == "deny":
        return (None,) if _deny_touches(policy, claims, request) else None
    if isinstance(request, SecretRequest):
        if grants.secrets is not None and _any_match(grants.secrets, claims, request.name):
            return (None,)
        return None
    if isinstance(request, RunnerRequest):
        runner = grants.runner
        return None if runner is None else _runner_terms(runner, claims, request)
    installation = grants.installation
    return None if installation is None else _installation_terms(installation, claims, request)


def _any_match(patterns: tuple[NamePattern, ...], claims: Mapping[str, Any], name: str) -> bool:
    """True when an entry matches `name`; a placeholder without a value voids them all."""
    bound = [entry.bind(claims) for entry in patterns]
    if any(pattern is None for pattern in bound):
        return False  # the whole grant kind does not apply (SPEC: templates)
    return any(pattern is not None and pattern.matches(name) for pattern in bound)


def _deny_touches(policy: Policy, claims: Mapping[str, Any], request: Request) -> bool:
    """Whether `request` asks for anything the deny policy's grants name."""
    grants = policy.grants
    if isinstance(request, SecretRequest):
        return grants.secrets is not None and _any_match(grants.secrets, claims, request.name)
    if isinstance(request, RunnerRequest):
        runner = grants.runner
        if runner is None or request.action not in runner.actions:
            return False
        if not _any_match(runner.scopes, claims, request.scope):
            return False
        groups, group = runner.runner_groups, request.runner_group
        if groups is not None and group is not None and group not in groups:
            return False
        labels, asked = runner.labels, request.labels
        return labels is None or asked is None or not set(labels).isdisjoint(asked)
    installation = grants.installation
    if installation is None:
        return False
    granted = _granted_repositories(installation, claims, request.owner)
    if granted is False:
        return False
    wanted = request.repositories
    if granted is not None and isinstance(wanted, tuple) and set(granted).isdisjoint(wanted):
        return False
    if request.permissions is None:
        return True
    return any(
        name in installation.permissions and RANK[level] >= RANK[installation.permissions[name]]
        for name, level in request.permissions.items()
    )


def _runner_terms(
    grant: RunnerGrant, claims: Mapping[str, Any], request: RunnerRequest
) -> tuple[Terms] | None:
    if request.action not in grant.actions:
        return None
    if not _any_match(grant.scopes, claims, request.scope):
        return None  # also when a placeholder without a value voids the whole runner grant
    group = request.runner_group
    if scope_kind(request.scope) == "repository":
        group = None  # repository runners always join the default group
    elif group is None:
        group = grant.runner_groups[0] if grant.runner_groups else None
    elif grant.runner_groups is None or group not in grant.runner_groups:
        return None
    labels = request.labels
    if labels is None:
        labels = grant.labels or DEFAULT_LABELS
    elif grant.labels is not None and not set(labels) <= set(grant.labels):
        return None
    return (RunnerTerms(runner_group=group, labels=labels),)


def _installation_terms(
    grant: InstallationGrant, claims: Mapping[str, Any], request: InstallationRequest
) -> tuple[Terms] | None:
    granted = _granted_repositories(grant, claims, request.owner)
    if granted is False:
        return None
    wanted = request.repositories
    if wanted is None:
        repositories = granted
    elif wanted == "*":
        if granted is not None:
            return None
        repositories = None
    elif granted is None or set(wanted) <= set(granted):
        repositories = wanted
    else:
        return None
    permissions = request.permissions
    if permissions is None:
        permissions = grant.permissions
    elif not all(
        name in grant.permissions and level_covers(grant.permissions[name], level)
        for name, level in permissions.items()
    ):
        return None
    return (InstallationTerms(request.owner, repositories, permissions),)


def _granted_repositories(
    grant: InstallationGrant, claims: Mapping[str, Any], owner: str
) -> tuple[str, ...] | Literal[False] | None:
    """Bare names the grant allows under `owner`; None for all; False when it is for
    another owner, a placeholder voids it, or no name is left (an empty list would
    mean "all" to GitHub)."""
    granted_owner = grant.owner.render(claims)
    if granted_owner is None or ascii_lower(granted_owner) != owner:
        return False
    if grant.repositories is None:
        return None
    names: dict[str, None] = {}
    for template in grant.repositories:
        rendered = template.render(claims)
        if rendered is None:
            return False
        repo_owner, slash, bare = ascii_lower(rendered).rpartition("/")
        if not slash or repo_owner == owner:
            names[bare] = None
    return tuple(names) or False


def _trace(policy: Policy, claims: Mapping[str, Any], matched: bool, covered: bool) -> PolicyTrace:
    checks = tuple(
        ClaimCheck(
            claim=rule.claim,
            value=claim_text(claims.get(rule.claim)),
            matched=rule.matches(claims),
            patterns=tuple(p.source for p in rule.patterns),
        )
        for rule in policy.claims
    )
    return PolicyTrace(policy.name, policy.effect, checks, matched, covered if matched else None)
