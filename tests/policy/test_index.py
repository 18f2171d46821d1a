"""The policy index never changes a decision: indexed and linear evaluation agree.

`Engine.decide` evaluates only the policies `PolicyIndex.candidates` names; these
tests compare it with the same engine evaluating every policy in file order, on
random policy sets and claims built to collide (shared exact values, folded
claims, numbers and booleans, `match:` patterns, deny rules), and check the
fallbacks of the RE2 sets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchanger.identity.claims import Identity
from exchanger.policy.asks import SecretRequest
from exchanger.policy.engine import Decision, Engine
from exchanger.policy.index import SHARED, PolicyIndex
from exchanger.policy.model import ClaimRule, Grants, Policy
from exchanger.policy.patterns import CASE_INSENSITIVE_CLAIMS, NamePattern, Pattern

CLAIM_NAMES = ["repository_id", "repository", "ref", "event_name", "environment"]
VALUES: list[Any] = [
    "1", "2", "A", "a", "main", "refs/heads/main", "refs/tags/v1", "octo/App", "octo/app",
    "", 1, 2, True, False, 1.5, None, ["1"], {"a": "1"}, "\ud800",
]  # fmt: skip
EXACT = ["1", "2", "A", "a", "main", "refs/heads/main", "octo/app", "true", "push"]
REGEX = [
    "match:[0-9]+", "match:a|A", "match:refs/.*", "match:.*", "match:octo/.*",
    "match:refs/(heads|tags)/.*", "match:(?i)main", "match:x+",
]  # fmt: skip


def _policy(
    number: int, effect: str, rules: Sequence[tuple[str, Sequence[str]]], grant: str
) -> Policy:
    claims = tuple(
        ClaimRule(
            claim,
            tuple(Pattern.compile(p, fold=claim in CASE_INSENSITIVE_CLAIMS) for p in patterns),
        )
        for claim, patterns in rules
    )
    if effect == "deny" and grant == "all":
        grants = Grants()
    else:
        grants = Grants(secrets=(NamePattern.compile(grant, fold=False),))
    return Policy(f"p{number}", effect, claims, grants, f"policies.yaml:{number + 1}")  # type: ignore[arg-type]


_RULE = st.tuples(
    st.sampled_from(CLAIM_NAMES),
    st.lists(st.sampled_from(EXACT + REGEX), min_size=1, max_size=3),
)
_POLICY = st.tuples(
    st.sampled_from(["allow", "allow", "deny"]),
    st.lists(_RULE, min_size=1, max_size=3),
    st.sampled_from(["s", "t", "match:s|t", "all"]),
)
_CLAIMS = st.dictionaries(st.sampled_from(CLAIM_NAMES), st.sampled_from(VALUES), max_size=5)


def _linear(engine: Engine, identity: Identity, request: SecretRequest) -> Decision:
    """The decision with every policy a candidate: evaluation before the index."""
    index = engine._index
    engine._index = _All(engine.policies)  # type: ignore[assignment]
    try:
        return engine.decide(identity, request)
    finally:
        engine._index = index


class _All:
    def __init__(self, policies: tuple[Policy, ...]) -> None:
        self.policies = policies

    def candidates(self, claims: Any) -> tuple[Policy, ...]:
        return self.policies


def _same(a: Decision, b: Decision) -> None:
    assert (a.allowed, a.policy_name, a.terms) == (b.allowed, b.policy_name, b.terms)


@settings(max_examples=400, deadline=None)
@given(
    specs=st.lists(_POLICY, min_size=1, max_size=12),
    claims=st.lists(_CLAIMS, min_size=1, max_size=6),
)
def test_index_agrees_with_evaluating_every_policy(specs: list[Any], claims: list[Any]) -> None:
    policies = tuple(_policy(i, *spec) for i, spec in enumerate(specs))
    engine = Engine(policies)
    for claim_set in claims:
        identity = Identity("https://issuer.test", claim_set)
        for name in ("s", "t", "u"):
            request = SecretRequest(name=name)
            try:
                linear = _linear(engine, identity, request)
            except UnicodeEncodeError:
                # RE2 cannot take a lone surrogate: evaluating every policy fails here, so
                # there is no decision to agree with (the index may skip the failing rule).
                continue
            _same(engine.decide(identity, request), linear)


def test_shared_exact_values_give_way_to_a_pattern() -> None:
    """Many policies on the one owner id: filed under their `match:` rule instead."""
    policies = tuple(
        _policy(
            i, "allow", [("repository_owner_id", ["65"]), ("ref", [f"match:refs/heads/b{i}"])], "s"
        )
        for i in range(SHARED + 1)
    )
    index = PolicyIndex(policies)
    claims = {"repository_owner_id": "65", "ref": "refs/heads/b3"}
    assert [p.name for p in index.candidates(claims)] == ["p3"]


def test_most_selective_exact_rule_is_the_key() -> None:
    policies = (
        _policy(0, "allow", [("event_name", ["push"]), ("repository_id", ["1"])], "s"),
        _policy(1, "allow", [("event_name", ["push"]), ("repository_id", ["2"])], "s"),
        _policy(2, "deny", [("event_name", ["push", "pull_request"])], "all"),
    )
    index = PolicyIndex(policies)
    names = [p.name for p in index.candidates({"event_name": "push", "repository_id": "2"})]
    assert names == ["p1", "p2"]


def test_folded_claims_are_looked_up_folded() -> None:
    policies = (_policy(0, "allow", [("repository", ["Octo/App"])], "s"),)
    index = PolicyIndex(policies)
    assert [p.name for p in index.candidates({"repository": "OCTO/app"})] == ["p0"]
    assert index.candidates({"repository": "octo/other"}) == ()


def test_rule_without_patterns_never_matches() -> None:
    empty = Policy("p0", "allow", (ClaimRule("ref", ()),), Grants(), "x:1")
    assert PolicyIndex((empty,)).candidates({"ref": "main"}) == ()


@pytest.mark.parametrize("answer", [None, [], [1]], ids=["error", "empty", "no-sentinel"])
def test_a_set_that_cannot_answer_falls_back_to_each_pattern(answer: Any) -> None:
    """RE2 sets answer nothing when their DFA runs out of memory: try the patterns instead."""
    policies = (
        _policy(0, "deny", [("ref", ["match:refs/heads/bot-.*"])], "all"),
        _policy(1, "allow", [("ref", ["match:refs/heads/.*"])], "s"),
        _policy(2, "allow", [("ref", ["match:refs/tags/.*"])], "s"),
    )
    index = PolicyIndex(policies)
    (claim_set,) = index._sets

    class Failing:
        def Match(self, text: str) -> Any:
            return answer

    claim_set._set = Failing()
    names = [p.name for p in index.candidates({"ref": "refs/heads/bot-x"})]
    assert names == ["p0", "p1"]
