"""A policy's grants from YAML: secrets, runners, installation tokens, and their lint."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from exchanger.config.policy_claims import lint_glob
from exchanger.config.yamlsource import Section
from exchanger.policy import permissions
from exchanger.policy.asks import (
    ENTERPRISE_PREFIX,
    MAX_LABELS,
    MAX_REPOSITORIES,
    RUNNER_ACTIONS,
    scope_kind,
)
from exchanger.policy.lint import (
    matches_every_name,
    scope_anchored,
)
from exchanger.policy.model import (
    Grants,
    InstallationGrant,
    RunnerGrant,
)
from exchanger.policy.patterns import (
    REGEX_PREFIX,
    NamePattern,
    PatternError,
    Template,
)

if TYPE_CHECKING:
    from exchanger.config.policies import Context


_GRANT_KEYS = frozenset({"secrets", "runner", "installation"})
_RUNNER_KEYS = frozenset({"scopes", "actions", "runner_groups", "labels"})
_INSTALLATION_KEYS = frozenset({"owner", "repositories", "permissions"})
#: Permissions that, on every repository an installation reaches, take it over.
_WIDE_PERMISSIONS = ("administration", "secrets", "workflows", "organization_administration")
#: Runner actions whose tokens let `config.sh` pick any runner group and labels.
_UNLIMITED_ACTIONS = ("register", "remove")


def parse_grants(section: Section, context: Context) -> Grants | None:
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
        lint_glob(grants, f"{grants.path}.secrets", pattern.source, line, exact_star=False)
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
        lint_glob(runner, f"{runner.path}.scopes", source, line, exact_star=False)
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
        wrong = permissions.problem(name, level)
        if wrong is None:
            out[name] = level
        else:
            perms.error(name, wrong)
    return MappingProxyType(out) if len(out) == len(perms.data) else None
