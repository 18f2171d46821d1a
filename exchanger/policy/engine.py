"""The decision: may this verified identity have what it asks for?

One engine judges everything that makes a request allowed or refused, in
this order, and `serve`, `explain` and `exchanger test` all call `decide`:

1. **mode** — what the gateway's GitHub credential cannot do at all (an
   installation token without an App, an enterprise scope with an App): a
   refusal of the request's shape, answered 400 before anything is consumed;
2. **scope guard** — `runner_scopes` (`ALLOWED_SCOPES`/`DENIED_SCOPES`) on
   runner scopes: deny wins; with an allow list, only it;
3. **policies** — allowed iff no matching `deny` policy covers the request and
   at least one matching `allow` policy covers the whole request on its own;
   grants of different policies are never merged. The first covering allow
   policy in file order supplies the defaults (repositories, permissions,
   labels…). No policy, no exchange.

A `deny` policy covers a request that asks for *anything* its grants name: a
caller cannot slip past it by adding a repository, a permission or a label.
Whatever the request leaves to defaults is assumed to touch the deny (the
defaults come from an allow policy the deny cannot see), and a dimension the
deny grant leaves open (no `runner_groups`, no `labels`, `repositories: "*"`)
covers every value. A placeholder without a value voids only its own entry of
a deny grant: the caller decides which claims its token carries, so a missing
claim must never switch a deny off. In an allow grant it voids the grant kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from exchanger.config.model import Config
from exchanger.identity.claims import Identity
from exchanger.policy.asks import (
    Ask,
    Grantable,
    InstallationRequest,
    RevokeRequest,
    RunnerRequest,
    SecretRequest,
    scope_kind,
)
from exchanger.policy.index import PolicyIndex
from exchanger.policy.model import InstallationGrant, Policy, RunnerGrant, ScopeGuard
from exchanger.policy.patterns import NamePattern, Pattern, ascii_lower, claim_text
from exchanger.policy.permissions import RANK
from exchanger.policy.permissions import covers as level_covers

DEFAULT_LABELS = ("self-hosted",)

#: What the gateway's GitHub credential is: an App, a token, or none configured.
Mode = Literal["app", "token"] | None
#: What decided: a policy (allow or deny), no covering policy, the scope guard, or the mode.
Decider = Literal["policy", "no_policy", "scope_guard", "mode", "self_revocation"]


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
    shortfall: str | None = None  # what its grants lack, when it matched but did not cover


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict, what decided it, and (with `explain`) every policy's part in it."""

    allowed: bool
    decider: Decider
    policy: Policy | None = None
    terms: Terms = None
    refusal: str = ""  # what the mode or the scope guard refused
    trace: tuple[PolicyTrace, ...] = field(default=())

    @property
    def policy_name(self) -> str | None:
        return None if self.policy is None else self.policy.name

    @property
    def reason(self) -> str:
        """What decided, in words (built on demand: the hot path never needs it)."""
        if self.refusal:
            return self.refusal
        if self.decider == "self_revocation":
            return "a caller may always give up a token it holds"
        if self.policy is None:
            return "no allow policy covers it"
        kind = "deny policy" if self.policy.effect == "deny" else "policy"
        return f"{kind} {self.policy.name!r} covers it"


class Engine:
    """Policies, the scope guard and the GitHub mode, compiled for deciding once per load."""

    def __init__(
        self,
        policies: tuple[Policy, ...],
        *,
        guard: ScopeGuard | None = None,
        mode: Mode = None,
        secrets: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        self.policies = policies
        self._guard = guard or ScopeGuard()
        self._mode = mode
        self._secrets = secrets
        self._index = PolicyIndex(policies)

    @classmethod
    def for_config(cls, config: Config) -> Engine:
        """The engine `serve`, `explain` and `exchanger test` all decide with."""
        github = config.github
        mode: Mode = None if github is None else "app" if github.app is not None else "token"
        return cls(
            config.policies,
            guard=config.runner_scopes,
            mode=mode,
            secrets={name: frozenset(fields) for name, fields in config.secrets.items()},
        )

    def decide(self, identity: Identity, ask: Ask, *, explain: bool = False) -> Decision:
        """Judge `ask`; with `explain`, also record why each policy did what it did.

        Only the policies the index names as candidates can match, so only they are
        evaluated (in file order); `explain` evaluates every policy for its trace.
        """
        if isinstance(ask, RevokeRequest):
            # Holding the token is the authority, and giving it up only takes access away.
            return Decision(True, "self_revocation")
        if not isinstance(ask, SecretRequest):
            refusal = self._mode_refusal(ask) or self._guard_refusal(ask)
            if refusal is not None:
                decider, reason = refusal
                trace = self._policies(identity, ask, explain=True)[2] if explain else ()
                return Decision(False, decider, refusal=reason, trace=trace)
        allowed, denied, trace = self._policies(identity, ask, explain=explain)
        if denied is not None:
            return Decision(False, "policy", denied, trace=trace)
        if allowed is None:
            return Decision(False, "no_policy", trace=trace)
        return Decision(True, "policy", allowed[0], allowed[1], trace=trace)

    def _mode_refusal(self, ask: Grantable) -> tuple[Decider, str] | None:
        if isinstance(ask, InstallationRequest) and self._mode == "token":
            return "mode", "installation tokens need a GitHub App; the gateway has a token"
        if (
            isinstance(ask, RunnerRequest)
            and self._mode == "app"
            and scope_kind(ask.scope) == "enterprise"
        ):
            return "mode", "GitHub App tokens cannot manage enterprise runners"
        return None

    def _guard_refusal(self, ask: Grantable) -> tuple[Decider, str] | None:
        if isinstance(ask, RunnerRequest) and not self._guard.permits(ask.scope):
            return "scope_guard", f"runner_scopes does not permit {ask.scope!r}"
        return None

    def _policies(
        self, identity: Identity, ask: Grantable, *, explain: bool
    ) -> tuple[tuple[Policy, Terms] | None, Policy | None, tuple[PolicyTrace, ...]]:
        claims = identity.claims
        allowed: tuple[Policy, Terms] | None = None
        denied: Policy | None = None
        trace: list[PolicyTrace] = []
        policies = self.policies if explain else self._index.candidates(claims)
        for policy in policies:
            matched = policy.matches(claims)
            coverage = self._coverage(policy, claims, ask) if matched else None
            if explain:
                trace.append(_trace(policy, claims, coverage))
            if not isinstance(coverage, _Covered):
                continue
            if policy.effect == "deny":
                denied = policy
                if not explain:
                    break
            elif allowed is None:
                allowed = (policy, coverage.terms)
        return allowed, denied, tuple(trace)

    def _coverage(
        self, policy: Policy, claims: Mapping[str, Any], ask: Grantable
    ) -> _Covered | str:
        """`_Covered` when the policy's grants cover the whole request, else what they lack."""
        grants = policy.grants
        if grants.empty:
            return _COVERED  # a deny policy without grants covers everything
        if policy.effect == "deny":
            return _deny_touches(policy, claims, ask)
        if isinstance(ask, SecretRequest):
            if grants.secrets is None:
                return "grants no secrets"
            if not self._secret_exists(ask):
                return f"no secret {ask.name!r} with that field is configured"
            return _allow_names(grants.secrets, claims, ask.name, "secret")
        if isinstance(ask, RunnerRequest):
            runner = grants.runner
            return "grants no runners" if runner is None else _runner_terms(runner, claims, ask)
        installation = grants.installation
        if installation is None:
            return "grants no installation tokens"
        return _installation_terms(installation, claims, ask)

    def _secret_exists(self, ask: SecretRequest) -> bool:
        if self._secrets is None:
            return True
        fields = self._secrets.get(ask.name)
        return fields is not None and (ask.field is None or ask.field in fields)


@dataclass(frozen=True, slots=True)
class _Covered:
    terms: Terms


_COVERED = _Covered(None)


def _bound(patterns: tuple[NamePattern, ...], claims: Mapping[str, Any]) -> list[Pattern | None]:
    return [entry.bind(claims) for entry in patterns]


def _allow_names(
    patterns: tuple[NamePattern, ...], claims: Mapping[str, Any], name: str, what: str
) -> _Covered | str:
    """An allow grant's entries: a placeholder without a value voids them all (SPEC)."""
    bound = _bound(patterns, claims)
    if any(pattern is None for pattern in bound):
        return f"a {what} entry names a claim the token does not carry"
    if any(pattern is not None and pattern.matches(name) for pattern in bound):
        return _COVERED
    return f"{what} {name!r} is not granted"


def _deny_names(patterns: tuple[NamePattern, ...], claims: Mapping[str, Any], name: str) -> bool:
    """A deny grant's entries: an entry without a value is skipped, the others still deny."""
    return any(p is not None and p.matches(name) for p in _bound(patterns, claims))


def _fold_labels(labels: tuple[str, ...]) -> set[str]:
    """Runner labels compare case-insensitively, as GitHub compares them."""
    return {label.lower() for label in labels}


def _deny_touches(policy: Policy, claims: Mapping[str, Any], ask: Grantable) -> _Covered | str:
    """Whether `ask` asks for anything the deny policy's grants name."""
    touched = _COVERED
    spared = "asks for nothing it denies"
    grants = policy.grants
    if isinstance(ask, SecretRequest):
        secrets = grants.secrets
        return touched if secrets is not None and _deny_names(secrets, claims, ask.name) else spared
    if isinstance(ask, RunnerRequest):
        return touched if _deny_touches_runner(grants.runner, claims, ask) else spared
    return touched if _deny_touches_installation(grants.installation, claims, ask) else spared


def _deny_touches_runner(
    runner: RunnerGrant | None, claims: Mapping[str, Any], ask: RunnerRequest
) -> bool:
    if runner is None or ask.action not in runner.actions:
        return False
    if not _deny_names(runner.scopes, claims, ask.scope):
        return False
    groups, group = runner.runner_groups, ask.runner_group
    if groups is not None and group is not None and group not in groups:
        return False
    labels, asked = runner.labels, ask.labels
    return (
        labels is None or asked is None or not _fold_labels(labels).isdisjoint(_fold_labels(asked))
    )


def _deny_touches_installation(
    grant: InstallationGrant | None, claims: Mapping[str, Any], ask: InstallationRequest
) -> bool:
    if grant is None:
        return False
    granted = _granted_repositories(grant, claims, ask.owner, deny=True)
    if granted is False:
        return False
    wanted = ask.repositories
    if granted is not None and isinstance(wanted, tuple) and set(granted).isdisjoint(wanted):
        return False
    if ask.permissions is None:
        return True
    return any(
        name in grant.permissions and RANK[level] >= RANK[grant.permissions[name]]
        for name, level in ask.permissions.items()
    )


def _runner_terms(
    grant: RunnerGrant, claims: Mapping[str, Any], ask: RunnerRequest
) -> _Covered | str:
    if ask.action not in grant.actions:
        return f"does not grant the {ask.action} action"
    scopes = _allow_names(grant.scopes, claims, ask.scope, "scope")
    if isinstance(scopes, str):
        return scopes
    group = ask.runner_group
    if scope_kind(ask.scope) == "repository":
        group = None  # repository runners always join the default group
    elif group is None:
        group = grant.runner_groups[0] if grant.runner_groups else None
    elif grant.runner_groups is None or group not in grant.runner_groups:
        return f"runner group {group!r} is not granted"
    labels = ask.labels
    if labels is None:
        labels = grant.labels or DEFAULT_LABELS
    elif grant.labels is not None:
        outside = sorted(_fold_labels(labels) - _fold_labels(grant.labels))
        if outside:
            return f"labels {outside} are not granted"
    return _Covered(RunnerTerms(runner_group=group, labels=labels))


def _installation_terms(
    grant: InstallationGrant, claims: Mapping[str, Any], ask: InstallationRequest
) -> _Covered | str:
    granted = _granted_repositories(grant, claims, ask.owner, deny=False)
    if granted is False:
        return f"grants no repositories of {ask.owner!r}"
    wanted = ask.repositories
    if wanted is None:
        repositories = granted
    elif wanted == "*":
        if granted is not None:
            return "grants listed repositories, not all of them"
        repositories = None
    elif granted is None or set(wanted) <= set(granted):
        repositories = wanted
    else:
        return f"repositories {sorted(set(wanted) - set(granted))} are not granted"
    permissions = ask.permissions
    if permissions is None:
        permissions = grant.permissions
    else:
        outside = [
            f"{name}: {level}"
            for name, level in permissions.items()
            if name not in grant.permissions or not level_covers(grant.permissions[name], level)
        ]
        if outside:
            return f"permissions {outside} are not granted"
    return _Covered(InstallationTerms(ask.owner, repositories, permissions))


def _granted_repositories(
    grant: InstallationGrant, claims: Mapping[str, Any], owner: str, *, deny: bool
) -> tuple[str, ...] | Literal[False] | None:
    """Bare names the grant names under `owner`; None for all; False when it is for
    another owner or no name is left (an empty list would mean "all" to GitHub).

    An entry whose placeholder has no value voids an allow grant, but only itself
    in a deny grant.
    """
    granted_owner = grant.owner.render(claims)
    if granted_owner is None or ascii_lower(granted_owner) != owner:
        return False
    if grant.repositories is None:
        return None
    names: dict[str, None] = {}
    for template in grant.repositories:
        rendered = template.render(claims)
        if rendered is None:
            if deny:
                continue
            return False
        repo_owner, slash, bare = ascii_lower(rendered).rpartition("/")
        if not slash or repo_owner == owner:
            names[bare] = None
    return tuple(names) or False


def _trace(
    policy: Policy, claims: Mapping[str, Any], coverage: _Covered | str | None
) -> PolicyTrace:
    checks = tuple(
        ClaimCheck(
            claim=rule.claim,
            value=claim_text(claims.get(rule.claim)),
            matched=rule.matches(claims),
            patterns=tuple(p.source for p in rule.patterns),
        )
        for rule in policy.claims
    )
    matched = coverage is not None
    covers = isinstance(coverage, _Covered) if matched else None
    shortfall = coverage if isinstance(coverage, str) else None
    return PolicyTrace(policy.name, policy.effect, checks, matched, covers, shortfall)
