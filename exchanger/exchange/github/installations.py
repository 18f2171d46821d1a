"""The installation-token exchange: a GitHub App token scoped down by policy.

GitHub's answer is checked against what was asked before anyone sees the token: a
permission not asked for or at a higher level (read < write < admin), a repository not
asked for (or another account's), or `repository_selection: all` where repositories were
named make the token broader than the grant, so it is revoked at once and the caller gets
502. A narrower answer (GitHub dropped a permission or a repository) is passed on as GitHub
states it, and so is the `metadata: read` GitHub adds to every token of its own accord.
"""

from __future__ import annotations

import re
from typing import Any

from exchanger.errors import UpstreamError
from exchanger.exchange.github.auth import AppCredentials, Credentials, InstallationToken
from exchanger.policy.engine import InstallationTerms
from exchanger.policy.patterns import ascii_lower
from exchanger.policy.permissions import RANK

#: What GitHub adds to every installation token without being asked (the App always has it).
IMPLICIT_PERMISSIONS = {"metadata": "read"}
_SHOWN_REPOSITORIES = 5
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_FULL_NAME = re.compile(r"[A-Za-z0-9-]{1,39}/[A-Za-z0-9._-]{1,100}")


async def installation_token(credentials: Credentials, terms: InstallationTerms) -> dict[str, Any]:
    """Mint exactly what the covering grant allows: these repositories, these permissions.

    Only an App mints installation tokens; the engine refuses them to a token (400).
    """
    assert isinstance(credentials, AppCredentials), "the engine's mode rule"
    installation = await credentials.installation_id(terms.owner)
    minted = await credentials.mint(installation, terms.repositories, terms.permissions)
    broader = broader_than_asked(minted, terms)
    if broader:
        summary = "; ".join(words for _, words in broader).replace(minted.token, "[redacted]")
        revoked = await credentials.revoke(
            minted.token, f"installation {installation}: {summary}", (k for k, _ in broader)
        )
        outcome = "it was revoked" if revoked else "revoking it failed"
        raise UpstreamError(f"GitHub's token was broader than asked ({summary}); {outcome}")
    # Unless all repositories were asked, the answer listed them (else it was refused).
    repositories = list(minted.repositories) if minted.repositories is not None else "*"
    return {
        "token": minted.token,
        "expires_at": minted.expires_at,
        "permissions": dict(minted.permissions),
        "repositories": repositories,
        "installation_id": installation,
    }


def broader_than_asked(
    minted: InstallationToken, terms: InstallationTerms
) -> list[tuple[str, str]]:
    """How GitHub's token exceeds `terms`, as (metrics kind, words) pairs; [] when it does not.

    GitHub resolves bare names inside the installation: a token naming another account's
    repositories is never handed out (the installation look-up already rules it out).
    """
    found: list[tuple[str, str]] = []
    for name, level in sorted(minted.permissions.items()):
        asked = terms.permissions.get(name)
        if level not in RANK:
            found.append(
                ("permission_level", f"{_shown(name)} at a level the gateway does not know")
            )
        elif asked is None and IMPLICIT_PERMISSIONS.get(name) != level:
            found.append(("permission", f"{_shown(name)}:{level} was not asked for"))
        elif asked is not None and RANK[level] > RANK[asked]:
            found.append(("permission_level", f"{name}:{level} where {asked} was asked"))
    if terms.repositories is not None:
        count = len(terms.repositories)
        asked_for = f"{count} {'repository was' if count == 1 else 'repositories were'} asked"
        if minted.repository_selection == "all":
            found.append(("repository_selection", f"all repositories where {asked_for}"))
        elif minted.repositories is None:
            found.append(("unreadable", f"no list of its repositories where {asked_for}"))
    owner = ascii_lower(terms.owner)
    wanted = None if terms.repositories is None else {ascii_lower(n) for n in terms.repositories}
    foreign = 0
    extra: list[str] = []
    for full_name in minted.repositories or ():
        account, _, name = full_name.partition("/")
        if ascii_lower(account) != owner:
            foreign += 1
        elif wanted is not None and ascii_lower(name) not in wanted:
            extra.append(full_name)
    if foreign:
        found.append(("repository", f"{_repositories(foreign)} of another account"))
    if extra:
        shown = ", ".join(_shown(n, _FULL_NAME) for n in extra[:_SHOWN_REPOSITORIES])
        more = len(extra) - _SHOWN_REPOSITORIES
        found.append(
            (
                "repository",
                f"{_repositories(len(extra))} not asked for: {shown}"
                + (f" and {more} more" if more > 0 else ""),
            )
        )
    return found


def _repositories(count: int) -> str:
    return f"{count} {'repository' if count == 1 else 'repositories'}"


def _shown(text: str, pattern: re.Pattern[str] = _NAME) -> str:
    """A name GitHub sent, for a message: as it is if it looks like a name, else a stand-in."""
    return text if pattern.fullmatch(text) else "(an unreadable name)"
