"""Policies from YAML: inline `policies` and `policy_files`, compiled once.

Every `match:` pattern is compiled here, so a bad one is a config error that
names the policy and the pattern; `check`'s policy warnings are raised here
too (through `exchanger.policy.lint`), while the YAML lines are still at hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from exchanger.config import yamlsource
from exchanger.config.yamlsource import Problems, Section, YamlError, YList, YMap
from exchanger.policy.asks import ENTERPRISE_PREFIX, MAX_LABELS, RUNNER_ACTIONS, scope_kind
from exchanger.policy.lint import owner_anchored
from exchanger.policy.model import (
    ClaimRule,
    Grants,
    InstallationGrant,
    Policy,
    RateLimit,
    RunnerGrant,
)
from exchanger.policy.patterns import (
    CASE_INSENSITIVE_CLAIMS,
    REGEX_PREFIX,
    NamePattern,
    Pattern,
    PatternError,
    Template,
    claim_text,
)
from exchanger.policy.permissions import PERMISSIONS

_POLICY_KEYS = frozenset({"name", "effect", "claims", "grants", "single_use", "rate_limit"})
_GRANT_KEYS = frozenset({"secrets", "runner", "installation"})
_RUNNER_KEYS = frozenset({"scopes", "actions", "runner_groups", "labels"})
_INSTALLATION_KEYS = frozenset({"owner", "repositories", "permissions"})
_ID_FOR = {"repository": "repository_id", "repository_owner": "repository_owner_id"}


def parse_rate_limit(parent: Section, name: str, *, key: str | None = None) -> RateLimit | None:
    """`{per_minute, burst}` (and `key` when `key` is None: the global form)."""
    section = parent.sub(name)
    if section is None:
        return None
    allowed = {"per_minute", "burst"} | ({"key"} if key is None else set())
    section.only(frozenset(allowed))
    per_minute = section.get("per_minute", (int, float), required=True)
    if per_minute is not None and not 0 < per_minute <= 1_000_000:
        section.error("per_minute", "must be between 0 and 1000000")
        per_minute = None
    burst = section.integer("burst", 1, 1_000_000, 0)
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
    issuer_count: int
    rate_limit_key: str = "repository_id"


def load_policies(root: Section, context: Context) -> tuple[Policy, ...]:
    """Inline `policies` first, then each `policy_files` match in sorted order."""
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
    claims = _claims(section, context)
    grants = _grants(section, context)
    if effect == "allow" and grants is not None and grants.empty:
        section.error("grants", "an allow policy must grant something")
    single_use = section.get("single_use", bool) or False
    if single_use and effect == "deny":
        section.error("single_use", "applies to allow policies only")
    rate_limit = parse_rate_limit(section, "rate_limit", key=context.rate_limit_key)
    if name is None or not name or claims is None or grants is None:
        return None
    return Policy(
        name=name,
        effect="deny" if effect == "deny" else "allow",
        claims=(*claims, _HAS_JTI) if single_use else claims,
        grants=grants,
        location=f"{section.file}:{section.line()}",
        single_use=single_use,
        rate_limit=rate_limit,
    )


def _claims(section: Section, context: Context) -> tuple[ClaimRule, ...] | None:
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
    names = set(claims.data)
    for claim, id_claim in _ID_FOR.items():
        if claim in names and id_claim not in names:
            claims.warn(
                claim,
                f"{section.path} matches {claim} by name without {id_claim}; names can be "
                f"renamed and re-registered, ids cannot: add {id_claim}",
            )
    if context.issuer_count > 1 and "iss" not in names:
        section.warn(
            "claims",
            f"{section.path} does not pin iss while several issuers are configured; "
            "ids are unique only within one issuer",
        )
    return tuple(rules)


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


def _yaml_scalar_text(value: Any) -> str | None:
    """YAML integers and booleans compare as the text GitHub would send."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, bool | int):
        return claim_text(value)
    return None


def _grants(section: Section, context: Context) -> Grants | None:
    grants = section.sub("grants")
    if grants is None:
        return None if "grants" in section.data else Grants()
    grants.only(_GRANT_KEYS)
    secrets = _secret_grant(grants, context)
    runner = _runner_grant(grants, context)
    installation = _installation_grant(grants)
    _lint_github_grants(grants, context)
    if section.problems.errors and any(
        k in grants.data and v is None
        for k, v in (("secrets", secrets), ("runner", runner), ("installation", installation))
    ):
        return None
    return Grants(secrets=secrets, runner=runner, installation=installation)


def _name_patterns(
    section: Section, key: str, *, fold: bool
) -> list[tuple[NamePattern, int]] | None:
    entries = section.strings(key, required=True)
    if entries is None:
        return None
    out = []
    for source, line in entries:
        try:
            out.append((NamePattern.compile(source, fold=fold), line))
        except PatternError as exc:
            section.problems.error(section.file, line, f"{section.path}.{key}: {exc}")
    return out if len(out) == len(entries) else None


def _secret_grant(grants: Section, context: Context) -> tuple[NamePattern, ...] | None:
    if "secrets" not in grants.data:
        return None
    names = _name_patterns(grants, "secrets", fold=False)
    if names is None:
        return None
    for pattern, line in names:
        static = pattern.static
        exact = None if static is None else static.exact
        if exact is not None and exact not in context.secret_names:
            grants.problems.warn(
                grants.file, line, f"{grants.path} names secret {exact!r}, which is not configured"
            )
    return tuple(p for p, _ in names)


def _lint_github_grants(grants: Section, context: Context) -> None:
    """GitHub grants need a `github` section, and installation tokens need an App."""
    for kind in ("runner", "installation"):
        if kind in grants.data and not (context.github_app or context.github_token):
            grants.error(kind, "grants a GitHub credential, but no `github` section is configured")
    if "installation" in grants.data and context.github_token:
        grants.warn(
            "installation",
            f"{grants.path}: installation tokens need a GitHub App; with a token this "
            "grant always answers 400",
        )


def _runner_grant(grants: Section, context: Context) -> RunnerGrant | None:
    runner = grants.sub("runner")
    if runner is None:
        return None
    runner.only(_RUNNER_KEYS)
    scopes = _name_patterns(runner, "scopes", fold=True)
    for pattern, line in scopes or []:
        _lint_scope(runner, pattern, line, context)
    actions = runner.strings("actions") or [(a, 0) for a in RUNNER_ACTIONS]
    for action, line in actions:
        if action not in RUNNER_ACTIONS:
            runner.problems.error(
                runner.file,
                line,
                f"unknown runner action {action!r} (use register, remove, jitconfig)",
            )
    groups = runner.strings("runner_groups")
    labels = runner.strings("labels")
    if labels is not None and len(labels) > MAX_LABELS:
        runner.error("labels", f"at most {MAX_LABELS} labels")
    if scopes is None:
        return None
    return RunnerGrant(
        scopes=tuple(p for p, _ in scopes),
        actions=frozenset(a for a, _ in actions),
        runner_groups=None if groups is None else tuple(g for g, _ in groups),
        labels=None if labels is None else tuple(dict.fromkeys(x for x, _ in labels)),
    )


def _lint_scope(runner: Section, pattern: NamePattern, line: int, context: Context) -> None:
    source = pattern.source
    if pattern.is_regex:
        if any(c.isupper() for c in source[len(REGEX_PREFIX) :]):
            runner.problems.warn(
                runner.file,
                line,
                f"{source!r} has upper-case letters, but requested scopes "
                "are lower-cased before matching",
            )
        return
    if pattern.static is not None and scope_kind(pattern.static.exact or "") is None:
        runner.problems.error(
            runner.file,
            line,
            f"{runner.path}.scopes: {source!r} is not 'owner/name', 'owner' or 'enterprise:slug'",
        )
    if context.github_app and source.lower().startswith(ENTERPRISE_PREFIX):
        runner.problems.warn(
            runner.file,
            line,
            f"{source!r}: GitHub App tokens cannot manage enterprise "
            "runners; this grant only works with a token",
        )


def _installation_grant(grants: Section) -> InstallationGrant | None:
    section = grants.sub("installation")
    if section is None:
        return None
    section.only(_INSTALLATION_KEYS)
    owner = _template(section, "owner", section.get("owner", str) or "${repository_owner}")
    repositories: tuple[Template, ...] | None = None
    raw = section.data.get("repositories")
    if raw != "*":
        entries = section.strings("repositories", required=True) or []
        repositories = tuple(
            t for t in (_template(section, "repositories", s) for s, _ in entries) if t
        )
    permissions = _grant_permissions(section)
    if owner is None or permissions is None:
        return None
    return InstallationGrant(owner=owner, repositories=repositories, permissions=permissions)


def _template(section: Section, key: str, source: str) -> Template | None:
    try:
        return Template.parse(source)
    except PatternError as exc:
        section.error(key, str(exc))
        return None


def _grant_permissions(section: Section) -> Mapping[str, str] | None:
    perms = section.sub("permissions", required=True)
    if perms is None:
        return None
    if not perms.data:
        section.error("permissions", "must list at least one permission (never all of them)")
        return None
    out = {}
    for name, level in perms.data.items():
        levels = PERMISSIONS.get(name)
        if levels is None:
            perms.error(name, "is not a GitHub App permission")
        elif level not in levels:
            perms.error(name, f"must be one of: {', '.join(levels)}")
        else:
            out[name] = level
    return MappingProxyType(out) if len(out) == len(perms.data) else None
