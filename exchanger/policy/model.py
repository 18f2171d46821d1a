"""Policies as data: claim rules and grants, immutable once loaded.

Built by `exchanger.config.policies` from the YAML; judged by `engine`.
"""

from __future__ import annotations

import weakref
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from exchanger.policy.patterns import (
    NamePattern,
    Pattern,
    Regex,
    Template,
    ascii_lower,
    claim_text,
)

Effect = Literal["allow", "deny"]


@dataclass(frozen=True, slots=True, weakref_slot=True)
class ClaimRule:
    """One claim and the patterns of which at least one must match it.

    The exact values are also kept apart (as written, and ASCII-folded; a set once
    there are many), so they are compared before any regex is tried.
    """

    claim: str
    patterns: tuple[Pattern, ...]
    _exact: Collection[str] = field(init=False, repr=False, compare=False)
    _folded: Collection[str] = field(init=False, repr=False, compare=False)
    _regexes: tuple[Regex, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        exact = tuple(p.exact for p in self.patterns if p.exact is not None and not p.fold)
        folded = tuple(p.exact for p in self.patterns if p.exact is not None and p.fold)
        regexes = tuple(p.regex for p in self.patterns if p.regex is not None)
        object.__setattr__(self, "_exact", _values(exact))
        object.__setattr__(self, "_folded", _values(folded))
        object.__setattr__(self, "_regexes", regexes)

    @classmethod
    def shared(cls, claim: str, patterns: tuple[Pattern, ...]) -> ClaimRule:
        """The rule, as one object for every policy that repeats it (rules are immutable)."""
        key = (claim, patterns)
        rule = _RULES.get(key)
        if rule is None:
            rule = _RULES[key] = cls(claim, patterns)
        return rule

    def matches(self, claims: Mapping[str, Any]) -> bool:
        text = claim_text(claims.get(self.claim))
        if text is None:
            return False
        if text in self._exact or (self._folded and ascii_lower(text) in self._folded):
            return True
        return any(regex.fullmatch(text) is not None for regex in self._regexes)


def _values(values: tuple[str, ...]) -> Collection[str]:
    """A few values stay a tuple (small, and quick to scan); many become a set."""
    return values if len(values) <= 8 else frozenset(values)


_RULES: weakref.WeakValueDictionary[tuple[str, tuple[Pattern, ...]], ClaimRule] = (
    weakref.WeakValueDictionary()
)


@dataclass(frozen=True, slots=True)
class RunnerGrant:
    scopes: tuple[NamePattern, ...]
    actions: frozenset[str]
    runner_groups: tuple[str, ...] | None
    labels: tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class InstallationGrant:
    owner: Template
    repositories: tuple[Template, ...] | None  # None: every repository the installation reaches
    permissions: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Grants:
    secrets: tuple[NamePattern, ...] | None = None
    runner: RunnerGrant | None = None
    installation: InstallationGrant | None = None

    @property
    def empty(self) -> bool:
        return self.secrets is None and self.runner is None and self.installation is None


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    effect: Effect
    claims: tuple[ClaimRule, ...]
    grants: Grants
    location: str  # FILE:LINE of the policy, for operators
    single_use: bool = False
    rate_limit: RateLimit | None = None

    def matches(self, claims: Mapping[str, Any]) -> bool:
        return all(rule.matches(claims) for rule in self.claims)


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A token bucket: `per_minute` sustained, `burst` at once, per caller (`key` claim)."""

    per_minute: float
    burst: int
    key: str = "repository_id"

    @property
    def per_second(self) -> float:
        return self.per_minute / 60.0


@dataclass(frozen=True)
class ScopeGuard:
    """The global guard on runner scopes: deny wins; with an allow list, only it."""

    allow: tuple[Pattern, ...] | None = None
    deny: tuple[Pattern, ...] = ()

    def permits(self, scope: str) -> bool:
        if any(p.matches(scope) for p in self.deny):
            return False
        return self.allow is None or any(p.matches(scope) for p in self.allow)
