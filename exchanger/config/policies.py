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
from types import MappingProxyType
from typing import Any

from exchanger.config import yamlsource
from exchanger.config.model import GITHUB_VOCABULARY, ClaimVocabulary
from exchanger.config.yamlsource import Problems, Section, YamlError, YList, YMap
from exchanger.policy.asks import (
    ENTERPRISE_PREFIX,
    MAX_LABELS,
    MAX_REPOSITORIES,
    RUNNER_ACTIONS,
    scope_kind,
)
from exchanger.policy.lint import (
    ANCHOR_CLAIMS,
    closest,
    glob_as_regex,
    glob_star,
    identity_anchor,
    is_shared_issuer,
    matches_every_name,
    owner_anchored,
    scope_anchored,
)
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

_POLICY_KEYS = frozenset(
    {"name", "effect", "claims", "grants", "single_use", "rate_limit", "unanchored"}
)
_GRANT_KEYS = frozenset({"secrets", "runner", "installation"})
_RUNNER_KEYS = frozenset({"scopes", "actions", "runner_groups", "labels"})
_INSTALLATION_KEYS = frozenset({"owner", "repositories", "permissions"})
_ID_FOR = {"repository": "repository_id", "repository_owner": "repository_owner_id"}
#: Permissions that, on every repository an installation reaches, take it over.
_WIDE_PERMISSIONS = ("administration", "secrets", "workflows", "organization_administration")
#: Runner actions whose tokens let `config.sh` pick any runner group and labels.
_UNLIMITED_ACTIONS = ("register", "remove")

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
    signed_by = _unanchored(section, context, effect)
    claims = _claims(section, context, effect, signed_by)
    grants = _grants(section, context)
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


def _unanchored(section: Section, context: Context, effect: str) -> str | None:
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


def _claims(
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
        _lint_glob(section, where, text, line, exact_star=True)
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


def _lint_glob(section: Section, where: str, text: str, line: int, *, exact_star: bool) -> None:
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
        _lint_glob(grants, f"{grants.path}.secrets", pattern.source, line, exact_star=False)
        if static is not None and static.regex is not None and matches_every_name(static.regex):
            grants.problems.warn(
                grants.file,
                line,
                f"{grants.path}.secrets: {pattern.source!r} matches every secret, "
                "including any added later; name the secrets this policy needs",
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
    actions = _runner_actions(runner)
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


def _runner_actions(runner: Section) -> list[tuple[str, int]]:
    """The granted actions; a grant limiting groups or labels defaults to `jitconfig` only.

    `runner_groups` and `labels` bind only a JIT config: a registration or removal
    token lets `config.sh --runnergroup/--labels` pick any group and labels.
    """
    limited = [key for key in ("runner_groups", "labels") if key in runner.data]
    explicit = runner.strings("actions")
    if explicit is None:
        return [("jitconfig", 0)] if limited else [(a, 0) for a in RUNNER_ACTIONS]
    for action, line in explicit:
        if action not in RUNNER_ACTIONS:
            runner.problems.error(
                runner.file,
                line,
                f"unknown runner action {action!r} (use register, remove, jitconfig)",
            )
    unlimited = [a for a in _UNLIMITED_ACTIONS if a in {a for a, _ in explicit}]
    if limited and unlimited:
        runner.warn(
            "actions",
            f"{runner.path}.actions: {' and '.join(unlimited)} with {' and '.join(limited)}: "
            "a registration or removal token lets config.sh --runnergroup/--labels pick any "
            "runner group and labels, so those limits hold for jitconfig only",
        )
    return explicit


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
        _lint_glob(runner, f"{runner.path}.scopes", source, line, exact_star=False)
        # A placeholder stands for the caller's own (escaped, literal) name.
        probe = pattern.template.render(dict.fromkeys(pattern.template.claims, "x"), escape=True)
        if probe is not None and not scope_anchored(probe[len(REGEX_PREFIX) :]):
            runner.problems.warn(
                runner.file,
                line,
                f"{runner.path}.scopes: {source!r} is not anchored to a literal owner; it "
                "reaches the runners of any organization or repository the GitHub "
                "credential can manage",
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
        if len(entries) > MAX_REPOSITORIES:
            section.error(
                "repositories", f"at most {MAX_REPOSITORIES} repositories (GitHub's limit)"
            )
    permissions = _grant_permissions(section)
    if owner is None or permissions is None:
        return None
    wide = [f"{k}: {v}" for k, v in permissions.items() if k in _WIDE_PERMISSIONS and v != "read"]
    if repositories is None and wide:
        section.warn(
            "repositories",
            f'{section.path}: repositories "*" with {", ".join(wide)} reaches every '
            "repository the installation can; list the repositories this policy needs",
        )
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
