"""Policies from YAML: inline `policies` and `policy_files`, compiled once.

Every `match:` pattern is compiled here, so a bad one is a config error that
names the policy and the pattern; `check`'s policy warnings are raised here
too (through `exchanger.policy.lint`), while the YAML lines are still at hand.

Two rules make an unsafe policy impossible to load by accident: an allow
policy must bind an identity anchor (an exact owner, enterprise or repository,
or an issuer that signs for one company only) unless it says
`unanchored: {anyone_signed_by: ISSUER}`; and every claim a policy names must
be in the vocabulary of an issuer it can match (`issuers[].claims`), so a
misspelt claim cannot silently switch a deny off.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exchanger.config import yamlsource
from exchanger.config.model import ClaimVocabulary
from exchanger.config.policy_claims import parse_claims, parse_unanchored
from exchanger.config.policy_grants import parse_grants
from exchanger.config.yamlsource import Problems, Section, YamlError, YList, YMap
from exchanger.policy.model import (
    ClaimRule,
    Policy,
    RateLimit,
)
from exchanger.policy.patterns import (
    Pattern,
)

_POLICY_KEYS = frozenset(
    {"name", "effect", "claims", "grants", "single_use", "rate_limit", "unanchored"}
)

#: Rate limits the loader enforces (`schema` publishes the same numbers).
PER_MINUTE_MAX = 1_000_000
BURST_MAX = 1_000_000


def parse_rate_limit(parent: Section, name: str, *, key: str | None = None) -> RateLimit | None:
    """`{per_minute, burst}` (and `key` when `key` is None: the global form)."""
    section = parent.sub(name)
    if section is None:
        return None
    allowed = {"per_minute", "burst"} | ({"key"} if key is None else set())
    section.only(frozenset(allowed))
    per_minute = section.get("per_minute", (int, float), required=True)
    if per_minute is not None and not 0 < per_minute <= PER_MINUTE_MAX:
        section.error("per_minute", f"must be between 0 and {PER_MINUTE_MAX}")
        per_minute = None
    burst = section.integer("burst", 1, BURST_MAX, 0)
    if "burst" not in section.data:
        section.error("burst", "required")
    claim = key if key is not None else section.get("key", str) or "repository_id"
    if per_minute is None or burst == 0:
        return None
    return RateLimit(per_minute=float(per_minute), burst=burst, key=claim)


# A single-use policy is satisfied only by a token that has a `jti` to consume.
_HAS_JTI = ClaimRule("jti", (Pattern.build("match:.+", is_regex=True, fold=False),))


@dataclass(frozen=True)
class Context:
    """What policy parsing needs to know about the rest of the config."""

    base: Path
    github_app: bool
    github_token: bool
    secret_names: frozenset[str]
    #: Each configured issuer and the claims it sends, in config order.
    issuers: Mapping[str, ClaimVocabulary] = field(default_factory=dict)
    shared_state: bool = False  # `state.redis_url`: single use holds across processes
    rate_limit_key: str = "repository_id"


def load_policies(root: Section, context: Context) -> tuple[Policy, ...]:
    """Inline `policies` first, then each `policy_files` match in sorted order."""
    errors_before = len(root.problems.errors)
    policies: list[Policy] = []
    inline = root.get("policies", YList)
    if inline is not None:
        policies.extend(_policy_list(inline, root.file, root.problems, context))
    for pattern, line in root.strings("policy_files") or []:
        files = _glob(context.base, pattern)
        if not files:
            root.problems.warn(root.file, line, f"policy_files: {pattern!r} matches no file")
        for path in files:
            policies.extend(_policy_file(path, root, context))
    seen: dict[str, str] = {}
    for policy in policies:
        if policy.name in seen:
            file, _, row = policy.location.rpartition(":")
            root.problems.error(
                file,
                int(row),
                f"policy name {policy.name!r} is already used at {seen[policy.name]}",
            )
        seen.setdefault(policy.name, policy.location)
    if not policies and len(root.problems.errors) == errors_before:
        key = "policies" if "policies" in root.data else "policy_files"
        root.warn(key, "no policies are configured: every exchange is denied")
    return tuple(policies)


def _glob(base: Path, pattern: str) -> list[Path]:
    """Files matching `pattern`, relative to `base` unless it is absolute."""
    path = Path(pattern)
    if path.is_absolute():
        base, pattern = Path(path.anchor), str(path.relative_to(path.anchor))
    try:
        return sorted(base.glob(pattern))
    except ValueError:  # e.g. an absolute pattern naming only the root
        return []


def _policy_file(path: Path, root: Section, context: Context) -> list[Policy]:
    """The policies of one file, read item by item; a file with a problem is read whole."""
    problems = Problems()
    policies: list[Policy] = []
    try:
        for item, line in yamlsource.iter_sequence(path):
            policies.extend(_policy_list_item(item, line, str(path), problems, context))
    except yamlsource.NotStreamable:
        return _policy_file_whole(path, root, context)
    root.problems.errors.extend(problems.errors)
    root.problems.warnings.extend(problems.warnings)
    return policies


def _policy_file_whole(path: Path, root: Section, context: Context) -> list[Policy]:
    try:
        data = yamlsource.load(path)
    except YamlError as exc:
        root.problems.error(str(path), exc.line, str(exc))
        return []
    if not isinstance(data, YList):
        root.problems.error(str(path), 1, "a policy file holds a list of policies")
        return []
    return _policy_list(data, str(path), root.problems, context)


def _policy_list(items: YList, file: str, problems: Problems, context: Context) -> list[Policy]:
    out = []
    for item, line in zip(items, items.lines, strict=True):
        out.extend(_policy_list_item(item, line, file, problems, context))
    return out


def _policy_list_item(
    item: Any, line: int, file: str, problems: Problems, context: Context
) -> list[Policy]:
    if not isinstance(item, YMap):
        problems.error(file, line, "each policy must be a mapping")
        return []
    policy = _policy(Section(item, file, problems, "policy"), context)
    return [] if policy is None else [policy]


def _policy(section: Section, context: Context) -> Policy | None:
    section.only(_POLICY_KEYS)
    name = section.get("name", str, required=True)
    if name == "":
        section.error("name", "must not be empty")
    elif name is not None:
        section.path = f"policy {name!r}"
    effect = section.get("effect", str) or "allow"
    if effect not in ("allow", "deny"):
        section.error("effect", "must be 'allow' or 'deny'")
    signed_by = parse_unanchored(section, context, effect)
    claims = parse_claims(section, context, effect, signed_by)
    grants = parse_grants(section, context)
    if effect == "allow" and grants is not None and grants.empty:
        section.error("grants", "an allow policy must grant something")
    single_use = section.get("single_use", bool) or False
    if single_use and effect == "deny":
        section.error("single_use", "applies to allow policies only")
    elif single_use and not context.shared_state:
        section.warn(
            "single_use",
            f"{section.path}: single_use without shared state (state.redis_url) holds only "
            "within one process: with several replicas a token can be used once per "
            "replica, and serve refuses --workers above 1",
        )
    rate_limit = parse_rate_limit(section, "rate_limit", key=context.rate_limit_key)
    if name is None or not name or claims is None or grants is None:
        return None
    if signed_by is not None:
        claims = (*claims, ClaimRule.shared("iss", (Pattern.compile(signed_by, fold=False),)))
    return Policy(
        name=name,
        effect="deny" if effect == "deny" else "allow",
        claims=(*claims, _HAS_JTI) if single_use else claims,
        grants=grants,
        location=f"{section.file}:{section.line()}",
        single_use=single_use,
        rate_limit=rate_limit,
    )
