"""Patterns: exact entries, `match:` RE2 full matches, claim typing and templates."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
import re2
from hypothesis import given, settings
from hypothesis import strategies as st

from exchanger.policy.patterns import (
    CASE_INSENSITIVE_CLAIMS,
    NamePattern,
    Pattern,
    PatternError,
    Template,
    ascii_lower,
    claim_text,
)

FAST = settings(max_examples=60, deadline=None)


def _compile(source: str, *, fold: bool = False) -> Pattern:
    return Pattern.compile(source, fold=fold)


# --- tables: every pattern with values it must and must not match -----------------------

# (pattern as written in a policy, fold, values that must match, values that must not)
MATCH_TABLE: list[tuple[str, str, bool, list[str], list[str]]] = [
    (
        "exact-ref-case-sensitive",
        "refs/heads/main",
        False,
        ["refs/heads/main"],
        [
            "refs/heads/Main",
            "REFS/HEADS/MAIN",
            "refs/heads/main ",
            " refs/heads/main",
            "refs/heads/main\n",
            "refs/heads/main\x00x",
            "refs/heads/main\u200b",
            "refs/heads/m\u0430in",  # Cyrillic a
            "refs/heads/main-x",
            "xrefs/heads/main",
            "refs/heads/mai",
            "",
        ],
    ),
    (
        "exact-repository-folds-ascii-only",
        "octo-org/octo-repo",
        True,
        ["octo-org/octo-repo", "Octo-Org/Octo-Repo", "OCTO-ORG/OCTO-REPO"],
        [
            "octo-org/octo-repo-evil",
            "evil-octo-org/octo-repo",
            "octo-org/octo",
            "octo-org/octo-repo\n",
            " octo-org/octo-repo",
            "octo-org/octo-repo\u200b",
            "oct\u043e-org/octo-repo",  # Cyrillic o
            "\uff4f\uff43\uff54\uff4f-org/octo-repo",  # fullwidth "octo"
        ],
    ),
    (
        "exact-kelvin-sign-is-not-k",
        "kube-org",
        True,
        ["kube-org", "KUBE-ORG"],
        ["\u212aube-org", "\u212aUBE-ORG"],
    ),
    (
        "exact-dot-is-literal",
        "octo-org/app.v1",
        True,
        ["octo-org/app.v1", "OCTO-ORG/APP.V1"],
        ["octo-org/appXv1", "octo-org/app-v1"],
    ),
    (
        "exact-regex-syntax-is-literal",
        "a|b",
        False,
        ["a|b"],
        ["a", "b"],
    ),
    (
        "exact-match-prefix-with-space-is-literal",
        " match:.*",
        False,
        [" match:.*"],
        ["anything", "match:.*"],
    ),
    (
        "regex-owner-prefix-full-match",
        "match:octo-org/.*",
        True,
        ["octo-org/x", "octo-org/", "octo-org/octo-repo"],
        [
            "evil-octo-org/app",
            "xocto-org/a",
            "octo-org",
            "octo-org/a\nb",
            "octo-org/a\n",
            "Octo-Org/x",  # regexes see the value as sent
        ],
    ),
    (
        "regex-alternation-anchored-as-group",
        "match:main|dev",
        False,
        ["main", "dev"],
        ["main-evil", "xmain", "maindev", "devx", "xdev", "main\n", ""],
    ),
    (
        "regex-alternation-owner-names",
        "match:octo-org/app|octo-org/web",
        False,
        ["octo-org/app", "octo-org/web"],
        ["evil-octo-org/web", "octo-org/app-evil", "octo-org/appocto-org/web"],
    ),
    (
        "regex-alternation-refs",
        "match:refs/heads/main|refs/tags/v1",
        False,
        ["refs/heads/main", "refs/tags/v1"],
        ["refs/heads/main-x", "refs/heads/x/refs/tags/v1", "refs/tags/v10"],
    ),
    (
        "regex-dollar-does-not-allow-trailing-newline",
        "match:^octo-org/octo-repo$",
        False,
        ["octo-org/octo-repo"],
        ["octo-org/octo-repo\n", "octo-org/octo-repo-evil"],
    ),
    (
        "regex-tag-versions",
        "match:refs/tags/v[0-9]+(\\.[0-9]+)*",
        False,
        ["refs/tags/v1", "refs/tags/v1.2.3"],
        ["refs/tags/v1.", "refs/tags/v1.x", "refs/tags/v", "refs/tags/v1\n", "refs/tags/v\u0661"],
    ),
]


@pytest.mark.parametrize(
    ("source", "fold", "good", "bad"),
    [row[1:] for row in MATCH_TABLE],
    ids=[row[0] for row in MATCH_TABLE],
)
def test_pattern_table(source: str, fold: bool, good: list[str], bad: list[str]) -> None:
    pattern = _compile(source, fold=fold)
    assert [v for v in good if not pattern.matches(v)] == []
    assert [v for v in bad if pattern.matches(v)] == []


INVALID_REGEXES = [
    ("lookahead", "match:(?=a)a"),
    ("lookbehind", "match:(?<=a)b"),
    ("backreference", "match:(a)\\1"),
    ("unbalanced-open", "match:(a"),
    ("unbalanced-close-escapes-group", "match:a)|(.*"),
    ("unbalanced-close-only", "match:main)"),
    ("bad-class", "match:[a"),
    ("bad-repeat", "match:*a"),
]


@pytest.mark.parametrize(
    "source", [s for _, s in INVALID_REGEXES], ids=[i for i, _ in INVALID_REGEXES]
)
def test_invalid_regex_is_a_pattern_error(source: str) -> None:
    with pytest.raises(PatternError) as info:
        _compile(source)
    assert repr(source[len("match:") :]) in str(info.value)


def test_regression_unbalanced_paren_cannot_escape_the_anchor_group() -> None:
    """`(?:` + `main)|(.*` + `)` would compile to `(?:main)|(.*)` and match anything."""
    with pytest.raises(PatternError):
        _compile("match:main)|(.*")
    with pytest.raises(PatternError):
        NamePattern.compile("match:${repository})|(.*", fold=True)


def test_regex_is_linear_time() -> None:
    pattern = _compile("match:(a+)+$")
    start = time.perf_counter()
    assert not pattern.matches("a" * 100_000 + "!")
    assert time.perf_counter() - start < 0.5


def test_exact_pattern_built_from_template_is_never_a_regex() -> None:
    pattern = Pattern.build("match:.*", is_regex=False, fold=False)
    assert pattern.regex is None
    assert pattern.matches("match:.*")
    assert not pattern.matches("anything")


# --- hypothesis: `match:` is an RE2 full match ------------------------------------------

_ATOMS = st.sampled_from(["a", "b", "-", ".", "a*", "b+", "a?", "[ab]", "(a|b)", "(ab|a)", "\\."])
_BRANCH = st.lists(_ATOMS, min_size=1, max_size=4).map("".join)
_REGEX = st.lists(_BRANCH, min_size=1, max_size=3).map("|".join)
_SUBJECT = st.text(alphabet="ab-.\n", max_size=8)


@FAST
@given(_REGEX, _SUBJECT)
def test_match_is_re2_full_match(expression: str, subject: str) -> None:
    pattern = _compile(f"match:{expression}")
    expected = re2.fullmatch(f"(?:{expression})", subject) is not None
    assert pattern.matches(subject) == expected
    # An independent oracle for this simple syntax: CPython's re.fullmatch.
    assert pattern.matches(subject) == (re.fullmatch(expression, subject) is not None)


_WORD = st.text(alphabet="abcmnor-/", min_size=1, max_size=8)


@FAST
@given(_WORD, _WORD, _WORD)
def test_alternation_never_matches_with_extra_text(left: str, right: str, extra: str) -> None:
    pattern = _compile(f"match:{left}|{right}")
    assert pattern.matches(left)
    assert pattern.matches(right)
    for subject in (left + extra, extra + left, right + extra, extra + right, left + right):
        assert pattern.matches(subject) == (subject in (left, right))


# --- hypothesis: exact matching and the case rules ---------------------------------------

_CASE_INSENSITIVE = ["repository", "repository_owner", "actor", "environment"]
_CASE_SENSITIVE = [
    "ref",
    "workflow_ref",
    "job_workflow_ref",
    "sub",
    "workflow",
    "head_ref",
    "base_ref",
    "repository_id",
    "event_name",
]


def test_case_insensitive_claims_are_exactly_the_four_github_names() -> None:
    assert set(_CASE_INSENSITIVE) == CASE_INSENSITIVE_CLAIMS
    assert not set(_CASE_SENSITIVE) & CASE_INSENSITIVE_CLAIMS


_TEXT = st.text(
    alphabet=st.sampled_from("aZq-/._ \u00e9\u00c9\u212a\u0130\u0131\u00df\u03a3\u03c3k"),
    min_size=1,
    max_size=10,
)


def _recase(text: str, flips: list[bool]) -> str:
    return "".join(
        (c.upper() if flip else c.lower())
        for c, flip in zip(text, flips + [False] * len(text), strict=False)
    )


@FAST
@given(_TEXT, st.lists(st.booleans(), max_size=10))
def test_folded_exact_ignores_ascii_case_only(text: str, flips: list[bool]) -> None:
    other = _recase(text, flips)
    pattern = Pattern.build(text, is_regex=False, fold=True)
    assert pattern.matches(other) == (ascii_lower(text) == ascii_lower(other))
    if _non_ascii(text) != _non_ascii(other):
        # Non-ASCII letters are compared as sent: another spelling of them never matches.
        assert not pattern.matches(other)
    if text.isascii() and other.isascii():
        assert pattern.matches(other)


def _non_ascii(text: str) -> list[str]:
    return [c for c in text if not c.isascii()]


@FAST
@given(_TEXT, st.lists(st.booleans(), max_size=10))
def test_unfolded_exact_compares_as_sent(text: str, flips: list[bool]) -> None:
    other = _recase(text, flips)
    pattern = Pattern.build(text, is_regex=False, fold=False)
    assert pattern.matches(other) == (text == other)


@pytest.mark.parametrize(
    ("written", "sent", "fold", "expected"),
    [
        ("production", "PRODUCTION", True, True),
        ("production", "Production", True, True),
        ("\u00e9cole", "\u00c9cole", True, False),
        ("\u00c9cole", "\u00e9cole", True, False),
        ("stra\u00dfe", "STRASSE", True, False),
        ("kube-org", "\u212aube-org", True, False),
        ("i-org", "\u0130-org", True, False),
        ("refs/heads/main", "refs/heads/MAIN", False, False),
    ],
    ids=[
        "ascii-upper",
        "ascii-title",
        "e-acute-upper-sent",
        "e-acute-upper-written",
        "sharp-s",
        "kelvin-sign",
        "dotted-capital-i",
        "case-sensitive-claim",
    ],
)
def test_case_rules_table(written: str, sent: str, fold: bool, expected: bool) -> None:
    assert _compile(written, fold=fold).matches(sent) is expected


def test_ascii_lower_leaves_non_ascii_alone() -> None:
    assert ascii_lower("Octo-ORG/\u00c9\u212a\u0130") == "octo-org/\u00c9\u212a\u0130"


# --- claim typing -------------------------------------------------------------------------

CLAIM_TEXT = [
    ("string", "octo-org", "octo-org"),
    ("empty-string", "", ""),
    ("true", True, "true"),
    ("false", False, "false"),
    ("zero", 0, "0"),
    ("integer", 1234, "1234"),
    ("negative", -5, "-5"),
    ("big-integer", 2**70, str(2**70)),
    ("float-integral", 65.0, None),
    ("float", 1.5, None),
    ("nan", float("nan"), None),
    ("list", ["octo-org"], None),
    ("empty-list", [], None),
    ("object", {"a": "b"}, None),
    ("null", None, None),
    ("bytes", b"octo-org", None),
]


@pytest.mark.parametrize(
    ("value", "expected"), [r[1:] for r in CLAIM_TEXT], ids=[r[0] for r in CLAIM_TEXT]
)
def test_claim_text(value: Any, expected: str | None) -> None:
    assert claim_text(value) == expected


@FAST
@given(st.integers())
def test_claim_text_integers_are_decimal_digits(value: int) -> None:
    assert claim_text(value) == str(value)


@FAST
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_claim_text_floats_never_compare(value: float) -> None:
    assert claim_text(value) is None


# --- templates ----------------------------------------------------------------------------

RENDER = [
    ("string", "${repository}", {"repository": "octo-org/octo-repo"}, "octo-org/octo-repo"),
    ("integer", "id-${repository_id}", {"repository_id": 74}, "id-74"),
    ("two-claims", "${a}/${b}-x", {"a": "o", "b": "r"}, "o/r-x"),
    ("no-placeholder", "acme/docs", {}, "acme/docs"),
    ("dollar-without-brace", "$repository", {"repository": "x"}, "$repository"),
    ("absent", "${repository}", {}, None),
    ("null", "${repository}", {"repository": None}, None),
    ("boolean", "${flag}", {"flag": True}, None),
    ("float", "${n}", {"n": 1.0}, None),
    ("list", "${repository}", {"repository": ["a/b"]}, None),
    ("object", "${repository}", {"repository": {"a": "b"}}, None),
    ("one-of-two-absent", "${a}/${b}", {"a": "o"}, None),
]


@pytest.mark.parametrize(
    ("source", "claims", "expected"), [r[1:] for r in RENDER], ids=[r[0] for r in RENDER]
)
def test_template_render(source: str, claims: dict[str, Any], expected: str | None) -> None:
    assert Template.parse(source).render(claims) == expected


@pytest.mark.parametrize(
    "source",
    ["${", "${}", "${repository", "x-${1abc}", "${a b}", "${a/b}", "${${a}}"],
    ids=["open", "empty", "unclosed", "digit-first", "space", "slash", "nested"],
)
def test_template_bad_placeholder_is_a_pattern_error(source: str) -> None:
    with pytest.raises(PatternError):
        Template.parse(source)


def test_template_in_match_entry_is_re2_escaped() -> None:
    entry = NamePattern.compile("match:${repository}", fold=True)
    pattern = entry.bind({"repository": "a.b"})
    assert pattern is not None
    assert pattern.matches("a.b")
    assert not pattern.matches("axb")


def test_template_value_with_regex_syntax_matches_literally() -> None:
    entry = NamePattern.compile("match:${repository_owner}/.*", fold=True)
    pattern = entry.bind({"repository_owner": ".*|x"})
    assert pattern is not None
    assert pattern.matches(".*|x/repo")
    assert not pattern.matches("evil/repo")
    assert not pattern.matches("x")


def test_template_that_cannot_render_binds_to_nothing() -> None:
    entry = NamePattern.compile("${environment}-creds", fold=False)
    assert entry.bind({}) is None
    assert entry.bind({"environment": 1.5}) is None
    bound = entry.bind({"environment": "prod"})
    assert bound is not None
    assert bound.matches("prod-creds")


def test_regression_claim_value_starting_with_match_stays_literal() -> None:
    """A claim `match:.*` rendered into an exact entry must not become a regex."""
    entry = NamePattern.compile("${environment}", fold=False)
    pattern = entry.bind({"environment": "match:.*"})
    assert pattern is not None
    assert pattern.regex is None
    assert pattern.matches("match:.*")
    assert not pattern.matches("registry")
    assert not pattern.matches("")


_ANY_VALUE = st.text(min_size=1, max_size=12)


@FAST
@given(_ANY_VALUE, _ANY_VALUE)
def test_escaped_template_value_matches_only_itself(value: str, other: str) -> None:
    entry = NamePattern.compile("match:${sub}", fold=False)
    pattern = entry.bind({"sub": value})
    assert pattern is not None
    assert pattern.matches(value)
    assert pattern.matches(other) == (other == value)


@FAST
@given(_ANY_VALUE, _ANY_VALUE)
def test_exact_template_value_matches_only_itself(value: str, other: str) -> None:
    entry = NamePattern.compile("${sub}", fold=False)
    pattern = entry.bind({"sub": value})
    assert pattern is not None
    assert pattern.regex is None
    assert pattern.matches(value)
    assert pattern.matches(other) == (other == value)
