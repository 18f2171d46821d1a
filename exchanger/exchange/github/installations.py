"""The installation-token exchange: a GitHub App token scoped down by policy."""

from __future__ import annotations

from typing import Any

from exchanger.errors import UpstreamError
from exchanger.exchange.github.auth import AppCredentials, Credentials
from exchanger.policy.engine import InstallationTerms
from exchanger.policy.patterns import ascii_lower


async def installation_token(credentials: Credentials, terms: InstallationTerms) -> dict[str, Any]:
    """Mint exactly what the covering grant allows: these repositories, these permissions.

    Only an App mints installation tokens; the engine refuses them to a token (400).
    """
    assert isinstance(credentials, AppCredentials), "the engine's mode rule"
    installation = await credentials.installation_id(terms.owner)
    minted = await credentials.mint(installation, terms.repositories, terms.permissions)
    if minted.repositories is not None:
        # GitHub resolves bare names inside the installation: a token for another account's
        # repositories is never handed out (the installation look-up already rules it out).
        owner = ascii_lower(terms.owner)
        if any(ascii_lower(name.partition("/")[0]) != owner for name in minted.repositories):
            raise UpstreamError("GitHub's token covers repositories of another account")
        repositories: list[str] | str = list(minted.repositories)
    elif terms.repositories is not None:
        repositories = [f"{terms.owner}/{name}" for name in terms.repositories]
    else:
        repositories = "*"
    return {
        "token": minted.token,
        "expires_at": minted.expires_at,
        "permissions": dict(minted.permissions) or dict(terms.permissions),
        "repositories": repositories,
        "installation_id": installation,
    }
