"""Which policies could match a claims set: an index, so 10,000 policies cost about what 10 do.

Every policy is filed under one of its claim rules, its *key*: a policy can
only match if its key rule does, so the policies whose key rule fails for a
request are never looked at. The decision itself (`Engine.decide`) then runs
unchanged over the remaining candidates, in file order; skipping a policy that
cannot match changes nothing about the outcome, the deciding policy or the
defaults.

- A rule of exact patterns only (`repository_id: "74"`, a list of ids) is
  filed by value in a dictionary: one look-up per indexed claim.
- A rule with `match:` patterns is filed in an RE2 set per claim: one pass
  over the claim value finds every pattern that full-matches it. The set's
  first member matches everything, so a set that could not run (RE2 gives up
  when its DFA runs out of memory) is noticed, and that claim's patterns are
  then tried one by one, as without the index.
- Each policy's key is its most selective exact rule (fewest other policies
  sharing a value), unless every exact rule is shared by many policies (say
  `repository_owner_id` of the one organisation) and a `match:` rule exists.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import re2

from exchanger.policy.model import ClaimRule, Policy
from exchanger.policy.patterns import OPTIONS, Regex, ascii_lower, claim_text

#: An exact key shared by more policies than this loses to a `match:` rule, if any.
SHARED = 16
#: Memory budget of one claim's RE2 set (its compiled program and DFA cache).
SET_MAX_MEM = 64 << 20
_EVERYTHING = "(?s:.*)"


class PolicyIndex:
    """Candidate policies for a claims set, in file order."""

    def __init__(self, policies: Sequence[Policy]) -> None:
        self._policies = tuple(policies)
        shared = _sharing(self._policies)
        exact: dict[tuple[str, bool], dict[str, list[int]]] = {}
        regex: dict[str, list[tuple[Regex, int]]] = {}
        self._always: list[int] = []
        for number, policy in enumerate(self._policies):
            rule = _key_rule(policy, shared)
            if rule is None:
                self._always.append(number)
                continue
            for pattern in rule.patterns:
                if pattern.exact is not None:
                    table = exact.setdefault((rule.claim, pattern.fold), {})
                    table.setdefault(pattern.exact, []).append(number)
                elif pattern.regex is not None:
                    regex.setdefault(rule.claim, []).append((pattern.regex, number))
        self._exact = tuple(
            (claim, fold, {value: tuple(numbers) for value, numbers in table.items()})
            for (claim, fold), table in exact.items()
        )
        self._sets = tuple(_ClaimSet(claim, entries) for claim, entries in regex.items())
        self._always = [n for s in self._sets for n in s.unindexed] + self._always

    def candidates(self, claims: Mapping[str, Any]) -> tuple[Policy, ...]:
        """The policies whose key rule matches `claims` (only they can match), in file order."""
        found: set[int] = set(self._always)
        for claim, fold, table in self._exact:
            text = claim_text(claims.get(claim))
            if text is not None:
                numbers = table.get(ascii_lower(text) if fold else text)
                if numbers is not None:
                    found.update(numbers)
        for claim_set in self._sets:
            text = claim_text(claims.get(claim_set.claim))
            if text is not None:
                found.update(claim_set.matching(text))
        policies = self._policies
        return tuple(policies[n] for n in sorted(found))


def _sharing(policies: Iterable[Policy]) -> dict[tuple[str, bool, str], int]:
    """How many policies have an exact-only rule naming each (claim, fold, value)."""
    counts: dict[tuple[str, bool, str], int] = {}
    for policy in policies:
        seen: set[tuple[str, bool, str]] = set()
        for rule in policy.claims:
            if all(p.exact is not None for p in rule.patterns):
                seen.update((rule.claim, p.fold, p.exact or "") for p in rule.patterns)
        for key in seen:
            counts[key] = counts.get(key, 0) + 1
    return counts


def _key_rule(policy: Policy, shared: Mapping[tuple[str, bool, str], int]) -> ClaimRule | None:
    """The rule to file `policy` under; None (always a candidate) when it has none."""
    best: tuple[int, ClaimRule] | None = None
    pattern_rule: ClaimRule | None = None
    for rule in policy.claims:
        if not rule.patterns:
            return rule  # matches nothing: filed under no value, never a candidate
        if all(p.exact is not None for p in rule.patterns):
            cost = max(shared[(rule.claim, p.fold, p.exact or "")] for p in rule.patterns)
            if best is None or cost < best[0]:
                best = (cost, rule)
        elif pattern_rule is None:
            pattern_rule = rule
    if best is not None and (best[0] <= SHARED or pattern_rule is None):
        return best[1]
    return pattern_rule


class _ClaimSet:
    """The `match:` patterns filed under one claim, matched together by an RE2 set."""

    def __init__(self, claim: str, entries: Sequence[tuple[Regex, int]]) -> None:
        self.claim = claim
        self.unindexed: list[int] = []
        by_expression: dict[str, list[int]] = {}
        self._patterns: list[tuple[Regex, tuple[int, ...]]] = []
        for regex, number in entries:
            by_expression.setdefault(regex.pattern, []).append(number)
        first = {regex.pattern: regex for regex, _ in reversed(entries)}
        self._set: Any = re2.Set.FullMatchSet(_set_options())
        self._set.Add(_EVERYTHING)
        self._numbers: list[tuple[int, ...]] = [()]
        for expression, numbers in by_expression.items():
            try:
                self._set.Add(expression)
            except re2.error:  # compiles alone (config load checked), but not in a set
                self.unindexed.extend(numbers)
                continue
            self._numbers.append(tuple(numbers))
            self._patterns.append((first[expression], tuple(numbers)))
        try:
            self._set.Compile()
        except re2.error:
            self.unindexed.extend(n for _, numbers in self._patterns for n in numbers)
            self._patterns, self._numbers = [], [()]

    def matching(self, text: str) -> Iterable[int]:
        if not self._patterns:
            return ()
        try:
            hits = self._set.Match(text)
        except UnicodeEncodeError:  # a lone surrogate: let each policy's own rule decide
            hits = None
        if not hits or 0 not in hits:
            return self._one_by_one(text)
        numbers = self._numbers
        return [n for hit in hits for n in numbers[hit]]  # numbers[0] is empty

    def _one_by_one(self, text: str) -> Iterable[int]:
        """Without the set's answer: every policy whose pattern matches or cannot be tried."""
        out: list[int] = []
        for regex, numbers in self._patterns:
            if regex.fullmatch(text) is not None:
                out.extend(numbers)
        return out


def _set_options() -> Any:
    """The options every pattern was compiled with, with a set-sized memory budget."""
    options = re2.Options()
    for name in re2.Options.NAMES:
        setattr(options, name, getattr(OPTIONS, name))
    options.max_mem = SET_MAX_MEM
    return options
