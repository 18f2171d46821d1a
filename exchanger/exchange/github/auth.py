"""How the gateway authenticates to GitHub: a token, or a GitHub App.

App mode signs an RS256 App JWT (`iat` 60 s in the past, `exp` 10 minutes
after that, `iss` the App id), reused until a minute before it expires.
Installation ids come from the config or are looked up per owner and cached
(found: 1 h; not found: 5 min); concurrent identical look-ups share one
request. Runner operations need an installation token with the runner
permission; those stay inside the gateway and are reused until five minutes
before they expire, so a runner exchange costs one GitHub call in steady state.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from cachetools import TTLCache
from joserfc import jwt

from exchanger import metrics
from exchanger.config.model import GitHubAppConfig
from exchanger.errors import UpstreamError
from exchanger.exchange.github.client import GitHubClient

JWT_BACKDATE = 60
JWT_LIFETIME = 600
JWT_RENEW_BEFORE = 60
FOUND_TTL = 3600.0
NOT_FOUND_TTL = 300.0
RUNNER_TOKEN_RENEW_BEFORE = 300


class Credentials(Protocol):
    """What the exchanges need: a bearer to act on runners of a scope."""

    app_mode: bool

    async def for_runners(self, owner: str, repository: str | None) -> str: ...


class TokenCredentials:
    """A personal access token: one credential for everything it may do."""

    app_mode = False

    def __init__(self, token: str) -> None:
        self._token = token

    def __repr__(self) -> str:
        return "TokenCredentials(<redacted>)"

    async def for_runners(self, owner: str, repository: str | None) -> str:
        return self._token


@dataclass(frozen=True, slots=True)
class InstallationToken:
    token: str
    expires_at: str
    expires_epoch: float
    permissions: Mapping[str, str]
    repositories: tuple[str, ...] | None  # full names; None when all

    def __repr__(self) -> str:
        return f"InstallationToken(<redacted>, expires_at={self.expires_at!r})"


class AppCredentials:
    """A GitHub App: App JWTs, installation look-ups and installation tokens."""

    app_mode = True

    def __init__(
        self,
        app: GitHubAppConfig,
        github: GitHubClient,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._app = app
        assert app.signing_key is not None, "config.load parses the App key"
        self._key = app.signing_key
        self._github = github
        self._clock = clock
        self._jwt: tuple[str, float] | None = None
        self._installations: TTLCache[str, int | None] = TTLCache(10_000, FOUND_TTL)
        self._missing: TTLCache[str, bool] = TTLCache(10_000, NOT_FOUND_TTL)
        self._lookups: dict[str, asyncio.Future[int | None]] = {}
        self._runner_tokens: dict[tuple[int, str | None], InstallationToken] = {}

    def __repr__(self) -> str:
        return f"AppCredentials(app_id={self._app.id})"

    def app_jwt(self) -> str:
        """The current App JWT, signed anew a minute before the last one expires."""
        now = self._clock()
        if self._jwt is not None and self._jwt[1] - JWT_RENEW_BEFORE > now:
            return self._jwt[0]
        iat = int(now) - JWT_BACKDATE
        exp = iat + JWT_LIFETIME
        claims = {"iat": iat, "exp": exp, "iss": str(self._app.id)}
        token = jwt.encode({"alg": "RS256", "typ": "JWT"}, claims, self._key)
        self._jwt = (token, float(exp))
        return token

    async def installation_id(self, owner: str, repository: str | None = None) -> int:
        """The installation for `owner`: configured, cached, or looked up once."""
        if self._app.installation_id is not None:
            return self._app.installation_id
        found = self._installations.get(owner)
        metrics.cache_lookup("installation_id", found is not None or owner in self._missing)
        if found is None and owner not in self._missing:
            found = await self._coalesced(owner, lambda: self._lookup(owner, repository))
        if found is None:
            raise UpstreamError(f"the GitHub App is not installed for {owner!r}")
        return found

    async def _coalesced(
        self, owner: str, lookup: Callable[[], Awaitable[int | None]]
    ) -> int | None:
        pending = self._lookups.get(owner)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._lookups[owner] = future
        try:
            found = await lookup()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here, so an unshared failure is not "never retrieved"
            raise
        finally:
            self._lookups.pop(owner, None)
        future.set_result(found)
        if found is None:
            self._missing[owner] = True
        else:
            self._installations[owner] = found
        return found

    async def _lookup(self, owner: str, repository: str | None) -> int | None:
        paths = (
            [f"/repos/{owner}/{repository}/installation"]
            if repository
            else [f"/orgs/{owner}/installation", f"/users/{owner}/installation"]
        )
        for path in paths:
            reply = await self._github.get(path, self.app_jwt(), allow_404=True)
            if reply.status == 404:
                continue
            # Anything but a readable id is GitHub's trouble, never "not installed".
            installation = reply.body.get("id") if isinstance(reply.body, dict) else None
            if isinstance(installation, int) and not isinstance(installation, bool):
                return installation
            raise UpstreamError("GitHub's installation answer has no id")
        return None

    async def mint(
        self,
        installation: int,
        repositories: tuple[str, ...] | None,
        permissions: Mapping[str, str],
    ) -> InstallationToken:
        """A new installation token limited to `repositories` (bare names) and `permissions`."""
        body: dict[str, Any] = {"permissions": dict(permissions)}
        if repositories is not None:
            body["repositories"] = list(repositories)
        reply = await self._github.post(
            f"/app/installations/{installation}/access_tokens", self.app_jwt(), body
        )
        return _installation_token(reply.body)

    async def for_runners(self, owner: str, repository: str | None) -> str:
        """An installation token that may manage runners of this repository or org."""
        installation = await self.installation_id(owner, repository)
        key = (installation, repository)
        cached = self._runner_tokens.get(key)
        fresh = (
            cached is not None and cached.expires_epoch - RUNNER_TOKEN_RENEW_BEFORE > self._clock()
        )
        metrics.cache_lookup("runner_token", fresh)
        if cached is not None and fresh:
            return cached.token
        permission = "administration" if repository else "organization_self_hosted_runners"
        repos = (repository,) if repository else None
        token = await self.mint(installation, repos, {permission: "write"})
        self._runner_tokens[key] = token
        return token.token


def _installation_token(body: Any) -> InstallationToken:
    if not isinstance(body, dict):
        raise UpstreamError("GitHub's token answer is not an object")
    token, expires_at = body.get("token"), body.get("expires_at")
    if not isinstance(token, str) or not isinstance(expires_at, str):
        raise UpstreamError("GitHub's token answer lacks token or expires_at")
    permissions = body.get("permissions")
    repos = body.get("repositories")
    names = None
    if isinstance(repos, list):
        names = tuple(r["full_name"] for r in repos if isinstance(r, dict) and "full_name" in r)
    return InstallationToken(
        token=token,
        expires_at=expires_at,
        expires_epoch=parse_timestamp(expires_at),
        permissions=permissions if isinstance(permissions, dict) else {},
        repositories=names,
    )


def parse_timestamp(value: str) -> float:
    """GitHub's timestamps: `…Z` or `…-08:00`, with or without milliseconds."""
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise UpstreamError("GitHub sent an unreadable expires_at") from None
