"""GitHub App permission names and the levels GitHub accepts for each.

Source: the `app-permissions` schema of GitHub's REST description
(`@octokit/openapi`, ghec). Levels order as read < write < admin; a grant of a
higher level covers a request for a lower one.
"""

from __future__ import annotations

from types import MappingProxyType

LEVELS: tuple[str, ...] = ("read", "write", "admin")
RANK: MappingProxyType[str, int] = MappingProxyType({level: i for i, level in enumerate(LEVELS)})

_RW = ("read", "write")
_RWA = ("read", "write", "admin")
_R = ("read",)
_W = ("write",)

_BY_LEVELS: dict[tuple[str, ...], tuple[str, ...]] = {
    _RW: (
        "actions",
        "administration",
        "artifact_metadata",
        "attestations",
        "checks",
        "code_quality",
        "codespaces",
        "contents",
        "dependabot_secrets",
        "deployments",
        "discussions",
        "environments",
        "issues",
        "merge_queues",
        "metadata",
        "packages",
        "pages",
        "pull_requests",
        "repository_custom_properties",
        "repository_hooks",
        "secret_scanning_alerts",
        "secrets",
        "security_events",
        "single_file",
        "statuses",
        "vulnerability_alerts",
        "custom_properties_for_organizations",
        "members",
        "organization_administration",
        "organization_custom_roles",
        "organization_custom_org_roles",
        "organization_copilot_seat_management",
        "organization_copilot_agent_settings",
        "organization_announcement_banners",
        "organization_hooks",
        "organization_personal_access_tokens",
        "organization_personal_access_token_requests",
        "organization_packages",
        "organization_secrets",
        "organization_self_hosted_runners",
        "organization_user_blocking",
        "email_addresses",
        "followers",
        "git_ssh_keys",
        "gpg_keys",
        "interaction_limits",
        "starring",
        "enterprise_administration",
        "enterprise_organization_installations",
        "enterprise_organization_installation_repositories",
    ),
    _RWA: (
        "repository_projects",
        "organization_custom_properties",
        "organization_projects",
        "enterprise_custom_properties_for_organizations",
    ),
    _R: ("organization_events", "organization_plan"),
    _W: ("workflows", "profile"),
}

#: permission name → the levels GitHub accepts for it
PERMISSIONS: MappingProxyType[str, tuple[str, ...]] = MappingProxyType(
    {name: levels for levels, names in _BY_LEVELS.items() for name in names}
)


def covers(granted: str, requested: str) -> bool:
    """True when a grant at level `granted` allows a request for `requested`."""
    return RANK[requested] <= RANK[granted]


def problem(name: str, level: object) -> str | None:
    """What is wrong with `name: level` as a GitHub App permission, or None."""
    levels = PERMISSIONS.get(name)
    if levels is None:
        return "is not a GitHub App permission"
    if level not in levels:
        return f"takes one of: {', '.join(levels)}"
    return None
