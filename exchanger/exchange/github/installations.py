"""The installation-token exchange: a GitHub App token scoped down by policy."""

from __future__ import annotations

from typing import Any

from exchanger.errors import InvalidRequest
from exchanger.exchange.github.auth import AppCredentials, Credentials
from exchanger.policy.engine import InstallationTerms


async def installation_token(credentials: Credentials, terms: InstallationTerms) -> dict[str, Any]:
    """Mint exactly what the covering grant allows: these repositories, these permissions."""
    if not isinstance(credentials, AppCredentials):
        raise InvalidRequest("installation tokens need a GitHub App; the gateway has a token")
    installation = await credentials.installation_id(terms.owner)
    minted = await credentials.mint(installation, terms.repositories, terms.permissions)
    if minted.repositories is not None:
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
