"""A policy's claims from YAML: patterns, the identity anchor, the issuer's vocabulary.

The rules that make an unsafe claim set impossible to load by accident live
here; `policies` calls them while the YAML lines are at hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from exchanger.config.model import GITHUB_VOCABULARY
from exchanger.config.yamlsource import Section, YList
from exchanger.policy.lint import (
    ANCHOR_CLAIMS,
    closest,
    glob_as_regex,
    glob_star,
    identity_anchor,
    is_shared_issuer,
    owner_anchored,
)
from exchanger.policy.model import (
    ClaimRule,
)
from exchanger.policy.patterns import (
    CASE_INSENSITIVE_CLAIMS,
    REGEX_PREFIX,
    Pattern,
    PatternError,
    claim_text,
)

if TYPE_CHECKING:
    from exchanger.config.policies import Context

_ID_FOR = {"repository": "repository_id", "repository_owner": "repository_owner_id"}


def parse_unanchored(section: Section, context: Context, effect: str) -> str | None:
    """`unanchored: {anyone_signed_by: ISSUER}`: the explicit "anyone this issuer signs for".

    The value must repeat a configured issuer's exact URL, and never GitHub's
    shared issuer; the policy then matches that issuer's tokens only.
    """
    opt_out = section.sub("unanchored")
    if opt_out is None:
        return None
    opt_out.only(frozenset({"anyone_signed_by"}))
    issuer: str | None = opt_out.get("anyone_signed_by", str, required=True)
    if effect == "deny":
        section.error("unanchored", "applies to allow policies only")
        return None
    if issuer is None:
        return None
    if is_shared_issuer(issuer):
        opt_out.error(
            "anyone_signed_by",
            "GitHub's shared issuer signs for every repository on github.com; "
            "bind an identity anchor instead",
        )
        return None
    if issuer not in context.issuers:
        opt_out.error("anyone_signed_by", f"{issuer!r} is not a configured issuer")
        return None
    return issuer


def parse_claims(
    section: Section, context: Context, effect: str, signed_by: str | None
) -> tuple[ClaimRule, ...] | None:
    claims = section.sub("claims", required=True)
    if claims is None:
        return None
    if not claims.data:
        section.error("claims", "must not be empty: a policy never matches everything")
        return None
    rules = []
    for claim, raw in claims.data.items():
        patterns = _claim_patterns(claims, claim, raw)
        if patterns is not None:
            rules.append(ClaimRule.shared(claim, patterns))
    exact = {c: v for c, raw in claims.data.items() if (v := _exact_values(raw)) is not None}
    _vocabulary(claims, context, _matchable(exact, signed_by, context))
    _anchor(section, context, effect, signed_by, exact)
    names = set(claims.data)
    for claim, id_claim in _ID_FOR.items():
        if claim not in names or id_claim in names:
            continue
        if claim == "repository" and "repository_owner_id" in exact:
            continue  # the owner is pinned by id: only its own members can take the name
        claims.warn(
            claim,
            f"{section.path} matches {claim} by name without {id_claim}; names can be "
            f"renamed and re-registered, ids cannot: add {id_claim}",
        )
    for issuer in exact.get("iss", ()):
        if context.issuers and issuer not in context.issuers:
            claims.warn(
                "iss", f"{section.path}: iss {issuer!r} is not a configured issuer; never matches"
            )
    if len(context.issuers) > 1 and "iss" not in names and signed_by is None:
        section.warn(
            "claims",
            f"{section.path} does not pin iss while several issuers are configured; "
            "ids are unique only within one issuer",
        )
    return tuple(rules)


def _exact_values(raw: Any) -> tuple[str, ...] | None:
    """The values of a claim rule made only of exact (not `match:`) patterns, else None."""
    texts = [_yaml_scalar_text(item) for item in (raw if isinstance(raw, list) else [raw])]
    if not texts or any(t is None or t.startswith(REGEX_PREFIX) for t in texts):
        return None
    return tuple(t for t in texts if t is not None)


def _matchable(
    exact: Mapping[str, tuple[str, ...]], signed_by: str | None, context: Context
) -> list[str]:
    """The configured issuers whose tokens a policy can match (all, unless it pins iss)."""
    pinned = (signed_by,) if signed_by is not None else exact.get("iss", ())
    named = [issuer for issuer in context.issuers if issuer in pinned]
    return named or list(context.issuers)


def _vocabulary(claims: Section, context: Context, issuers: list[str]) -> None:
    """Every claim must be one an issuer the policy can match sends: typos are errors."""
    vocabularies = [context.issuers[i] for i in issuers] or [GITHUB_VOCABULARY]
    for claim in claims.data:
        if any(v.allows(claim) for v in vocabularies):
            continue
        where = (
            f"issuer {issuers[0]}"
            if len(issuers) == 1
            else f"any of its issuers ({', '.join(issuers)})"
            if issuers
            else "GitHub's issuer"
        )
        guess = closest(claim, set().union(*(v.names for v in vocabularies)))
        hint = (
            f"did you mean {guess}?"
            if guess is not None
            else "if the issuer sends it, list it in that issuer's claims (issuers[].claims)"
        )
        claims.problems.error(
            claims.file,
            _key_line(claims, claim),
            f"{claims.path}.{claim}: unknown claim: not in the claims of {where}; {hint}",
        )


def _anchor(
    section: Section,
    context: Context,
    effect: str,
    signed_by: str | None,
    exact: Mapping[str, tuple[str, ...]],
) -> None:
    """An allow policy must bind an identity anchor, or say `unanchored` explicitly."""
    anchor = identity_anchor(exact, context.issuers)
    if signed_by is not None:
        if anchor is not None:
            section.warn(
                "unanchored",
                f"{section.path} is anchored by {anchor}; unanchored is not needed",
            )
        return
    if effect != "allow" or anchor is not None:
        return
    issuers = _matchable(exact, None, context)
    if not issuers or any(is_shared_issuer(i) for i in issuers):
        who = "any repository on github.com"
    else:
        who = f"anyone {' or '.join(issuers)} signs for"
    section.problems.error(
        section.file,
        _key_line(section, "claims"),
        f"{section.path} has no identity anchor: {who} could mint a token it matches; "
        f"match one of {', '.join(ANCHOR_CLAIMS)} exactly (not match:), or pin iss to "
        "an issuer that signs for you alone (GHES, an enterprise-unique issuer)",
    )


def _key_line(section: Section, key: str) -> int:
    """The line of `key` itself (its value may start lower)."""
    key_lines: dict[Any, int] = getattr(section.data, "key_lines", {})
    return key_lines.get(key, section.line(key))


def _claim_patterns(section: Section, claim: str, raw: Any) -> tuple[Pattern, ...] | None:
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        section.error(claim, "needs at least one pattern")
        return None
    # Each list item's own line, so a problem points at the offending pattern.
    lines = raw.lines if isinstance(raw, YList) else [section.line(claim)] * len(items)
    where = f"{section.path}.{claim}"
    patterns = []
    for item, line in zip(items, lines, strict=True):
        text = _yaml_scalar_text(item)
        if text is None:
            section.problems.error(
                section.file, line, f"{where}: patterns must be strings, integers or booleans"
            )
            continue
        try:
            pattern = Pattern.compile(text, fold=claim in CASE_INSENSITIVE_CLAIMS)
        except PatternError as exc:
            section.problems.error(section.file, line, f"{where}: {exc}")
            continue
        lint_glob(section, where, text, line, exact_star=True)
        expression = text[len(REGEX_PREFIX) :]
        if pattern.regex is not None and not owner_anchored(claim, expression):
            section.problems.warn(
                section.file,
                line,
                f"{section.path}: {text!r} is not anchored to a literal owner; "
                "anyone could create a matching account",
            )
        patterns.append(pattern)
    return tuple(patterns) if len(patterns) == len(items) else None


def lint_glob(section: Section, where: str, text: str, line: int, *, exact_star: bool) -> None:
    """Warn about a `match:` written as a shell glob (`acme/*`), or an exact value with `*`."""
    if text.startswith(REGEX_PREFIX):
        fixed = glob_star(text[len(REGEX_PREFIX) :])
        if fixed is not None:
            section.problems.warn(
                section.file,
                line,
                f"{where}: {text!r} looks like a glob, but match: takes a regular expression "
                f"(* repeats the character before it); did you mean '{REGEX_PREFIX}{fixed}'?",
            )
    elif exact_star and "*" in text:
        section.problems.warn(
            section.file,
            line,
            f"{where}: {text!r} is compared exactly, * included; "
            f"did you mean '{REGEX_PREFIX}{glob_as_regex(text)}'?",
        )


def _yaml_scalar_text(value: Any) -> str | None:
    """YAML integers and booleans compare as the text GitHub would send."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, bool | int):
        return claim_text(value)
    return None
