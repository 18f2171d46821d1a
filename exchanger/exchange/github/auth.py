"""How the gateway authenticates to GitHub: a token, or a GitHub App.

App mode signs an RS256 App JWT (`iat` 60 s in the past, `exp` 10 minutes
after that, `iss` the App id), reused until a minute before it expires.

An installation belongs to one account, and GitHub resolves the bare
repository names of a token request inside the installation it is minted in:
so an owner's request only ever uses an installation whose `account.login` is
that owner. A configured `installation_id` is read once (`GET
/app/installations/{id}`) to learn its account and serves that account only;
every other owner is looked up per owner (`/orgs/{owner}/installation`, then
`/users/{owner}/installation`, or `/repos/{owner}/{repo}/installation` for a
repository's runners). Found installations are cached per owner for an hour;
"not installed" for five minutes, and only when the owner itself said so, never
because one repository is outside an installation of selected repositories.
Concurrent identical look-ups share one request. Runner operations need an
installation token with the runner permission; those stay inside the gateway
and are reused until five minutes before they expire, so a runner exchange
costs one GitHub call in steady state.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from cachetools import TTLCache

from exchanger import metrics
from exchanger.config.model import GitHubAppConfig
from exchanger.errors import ExchangerError, UpstreamError
from exchanger.exchange.github.client import GitHubClient
from exchanger.exchange.github.signers import signer_for, timed
from exchanger.policy.patterns import ascii_lower

log = logging.getLogger("exchanger.github")

JWT_BACKDATE = 60
JWT_LIFETIME = 600
JWT_RENEW_BEFORE = 60
FOUND_TTL = 3600.0
NOT_FOUND_TTL = 300.0
RUNNER_TOKEN_RENEW_BEFORE = 300

_T = TypeVar("_T")


class Credentials(Protocol):
    """What the exchanges need: a bearer to act on runners of a scope."""

    async def for_runners(self, owner: str, repository: str | None) -> str: ...


class TokenCredentials:
    """A personal access token: one credential for everything it may do."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __repr__(self) -> str:
        return "TokenCredentials(<redacted>)"

    async def for_runners(self, owner: str, repository: str | None) -> str:
        return self._token


@dataclass(frozen=True, slots=True)
class InstallationToken:
    """A minted installation token and what GitHub says it grants, read but not yet judged."""

    token: str
    expires_at: str
    expires_epoch: float
    permissions: Mapping[str, str]  # as GitHub states them
    repositories: tuple[str, ...] | None  # full names; None when GitHub lists none
    repository_selection: str | None = None  # "all" or "selected"; None when not stated

    def __repr__(self) -> str:
        return f"InstallationToken(<redacted>, expires_at={self.expires_at!r})"


class AppCredentials:
    """A GitHub App: App JWTs, installation look-ups and installation tokens."""

    def __init__(
        self,
        app: GitHubAppConfig,
        github: GitHubClient,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._app = app
        self.signer = signer_for(app.key)
        self._github = github
        self._clock = clock
        self._jwt: tuple[str, float] | None = None
        self._signing: asyncio.Future[str] | None = None
        # Per owner (ASCII lower-case): its installation, or "not installed" (org/user only).
        self._installations: TTLCache[str, int] = TTLCache(10_000, FOUND_TTL)
        self._missing: TTLCache[str, bool] = TTLCache(10_000, NOT_FOUND_TTL)
        # The configured installation: (its account's login,) (None: no user or
        # organization), or that GitHub answered 404 for it.
        self._configured_account: TTLCache[int, tuple[str | None]] = TTLCache(1, FOUND_TTL)
        self._configured_missing: TTLCache[int, bool] = TTLCache(1, NOT_FOUND_TTL)
        self._lookups: dict[str, asyncio.Future[Any]] = {}
        self._runner_tokens: dict[tuple[int, str | None], InstallationToken] = {}

    def __repr__(self) -> str:
        return f"AppCredentials(app_id={self._app.id})"

    async def app_jwt(self) -> str:
        """The current App JWT, signed anew a minute before the last one expires.

        Signing may be a network call (KMS, HSM): concurrent callers share one.
        """
        now = self._clock()
        if self._jwt is not None and self._jwt[1] - JWT_RENEW_BEFORE > now:
            return self._jwt[0]
        if self._signing is not None:
            shared: str = await asyncio.shield(self._signing)
            return shared
        self._signing = asyncio.get_running_loop().create_future()
        try:
            token, exp = await self._sign(now)
        except BaseException as exc:
            self._signing.set_exception(exc)
            self._signing.exception()  # retrieved: an unshared failure is not "never retrieved"
            raise
        else:
            self._jwt = (token, exp)
            self._signing.set_result(token)
        finally:
            self._signing = None
        return token

    async def _sign(self, now: float) -> tuple[str, float]:
        iat = int(now) - JWT_BACKDATE
        exp = iat + JWT_LIFETIME
        claims = {"iat": iat, "exp": exp, "iss": str(self._app.id)}
        signing_input = (
            f"{_JWT_HEADER}.{_b64url(json.dumps(claims, separators=(',', ':')).encode())}"
        )
        signer = self.signer
        signature = await timed(signer, "sign", lambda: signer.sign(signing_input.encode()))
        return f"{signing_input}.{_b64url(signature)}", float(exp)

    async def installation_id(self, owner: str, repository: str | None = None) -> int:
        """The installation of `owner`'s account: the configured one if it is that account's,
        else the one GitHub names for `owner` (or for its `repository`), cached."""
        owner = ascii_lower(owner)
        configured = self._app.installation_id
        if configured is not None:
            cached = configured in self._configured_account
            if await self._configured_owner(configured) == owner:
                metrics.cache_lookup("installation_id", cached)
                return configured
        found = self._installations.get(owner)
        metrics.cache_lookup("installation_id", found is not None or owner in self._missing)
        if found is None and owner not in self._missing:
            found = await self._owner_installation(owner, repository)
        if found is None:
            where = f"{owner}/{repository}" if repository and owner not in self._missing else owner
            raise UpstreamError(f"the GitHub App is not installed for {where!r}")
        return found

    async def _configured_owner(self, installation: int) -> str | None:
        """The login (ASCII lower-case) of the account the configured installation belongs to.

        Read once and cached; a 404 is remembered like a missing owner and fails every
        request, since no owner can then be told to be, or not to be, its account.
        """
        known = self._configured_account.get(installation)
        if known is not None:
            return known[0]
        if installation not in self._configured_missing:

            def store(found: tuple[bool, str | None]) -> None:
                exists, account = found
                if exists:
                    self._configured_account[installation] = (account,)
                else:
                    self._configured_missing[installation] = True

            exists, account = await self._coalesced(
                f"installation:{installation}", lambda: self._read_installation(installation), store
            )
            if exists:
                return account
        raise UpstreamError(
            f"GitHub has no installation {installation} of this App "
            "(the configured github.app.installation_id)"
        )

    async def _read_installation(self, installation: int) -> tuple[bool, str | None]:
        """GET /app/installations/{id}: (exists, its account's login or None)."""
        reply = await self._github.get(
            f"/app/installations/{installation}", await self.app_jwt(), allow_404=True
        )
        if reply.status == 404:
            log.error(
                "github.app.installation_id %d: GitHub answered 404 (no such installation of "
                "this App); every request that needs an installation fails until it is fixed",
                installation,
            )
            return False, None
        found, account = _installation_answer(reply.body)
        if found != installation:
            raise UpstreamError("GitHub's installation answer names another installation")
        if account is None:
            log.warning(
                "github.app.installation_id %d belongs to no user or organization; "
                "every owner is looked up instead",
                installation,
            )
        return True, account

    async def _owner_installation(self, owner: str, repository: str | None) -> int | None:
        """Look up `owner`'s installation once, sharing the request with concurrent callers.

        An org/user 404 means the App is not installed for the account: remembered. A
        repository's 404 may mean only that this repository is not among the installation's
        selected ones, so it is never held against the owner's other repositories.
        """
        if repository:

            def store_found(found: int | None) -> None:
                if found is not None:
                    self._installations[owner] = found  # an installation is its account's

            key = f"{owner}/{ascii_lower(repository)}"
            return await self._coalesced(key, lambda: self._lookup(owner, repository), store_found)

        def store(found: int | None) -> None:
            if found is None:
                self._missing[owner] = True
            else:
                self._installations[owner] = found

        return await self._coalesced(owner, lambda: self._lookup(owner, None), store)

    async def _coalesced(
        self, key: str, lookup: Callable[[], Awaitable[_T]], store: Callable[[_T], None]
    ) -> _T:
        """One `lookup` per `key` at a time; its result is stored before anyone sees it."""
        pending = self._lookups.get(key)
        if pending is not None:
            shared: _T = await asyncio.shield(pending)
            return shared
        future: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        self._lookups[key] = future
        try:
            found = await lookup()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here, so an unshared failure is not "never retrieved"
            raise
        finally:
            self._lookups.pop(key, None)
        store(found)
        future.set_result(found)
        return found

    async def _lookup(self, owner: str, repository: str | None) -> int | None:
        paths = (
            [f"/repos/{owner}/{repository}/installation"]
            if repository
            else [f"/orgs/{owner}/installation", f"/users/{owner}/installation"]
        )
        for path in paths:
            reply = await self._github.get(path, await self.app_jwt(), allow_404=True)
            if reply.status == 404:
                continue
            # Anything but a readable id of this owner's is GitHub's trouble, never "not
            # installed"; and an installation of another account is never used for it.
            installation, account = _installation_answer(reply.body)
            if account != owner:
                raise UpstreamError(f"GitHub's installation for {owner!r} is another account's")
            return installation
        return None

    async def mint(
        self,
        installation: int,
        repositories: tuple[str, ...] | None,
        permissions: Mapping[str, str],
    ) -> InstallationToken:
        """A new installation token limited to `repositories` (bare names) and `permissions`.

        An answer that carries a token but cannot be read in full is refused and the token
        revoked at once; comparing a readable answer with what was asked is the caller's part.
        """
        body: dict[str, Any] = {"permissions": dict(permissions)}
        if repositories is not None:
            body["repositories"] = list(repositories)
        reply = await self._github.post(
            f"/app/installations/{installation}/access_tokens", await self.app_jwt(), body
        )
        try:
            return _installation_token(reply.body)
        except UpstreamError as exc:
            token = reply.body.get("token") if isinstance(reply.body, dict) else None
            if not isinstance(token, str) or not token:
                raise
            why = f"installation {installation}: {exc.message}"
            revoked = await self.revoke(token, why, ("unreadable",))
            outcome = "it was revoked" if revoked else "revoking it failed"
            raise UpstreamError(f"{exc.message}; {outcome}") from None

    async def revoke(self, token: str, why: str, kinds: Iterable[str]) -> bool:
        """Revoke at once an installation token GitHub answered other than asked.

        `DELETE /installation/token`, authenticated with the token itself (GitHub answers
        204). One log line says `why` (never the token) and whether it worked; each of
        `kinds` counts once in `exchanger_broader_answers_total`. True when GitHub confirmed.
        """
        why = why.replace(token, "[redacted]")
        for kind in sorted(set(kinds)):
            metrics.BROADER_ANSWERS.labels(kind).inc()
        try:
            await self._github.delete("/installation/token", token)
        except ExchangerError as exc:
            metrics.REVOCATIONS.labels("installation_token", "failed").inc()
            log.error(
                "refused GitHub's installation token (%s); revoking it failed (%s): it stays "
                "valid until it expires",
                why,
                exc.message,
            )
            return False
        metrics.REVOCATIONS.labels("installation_token", "ok").inc()
        log.warning("refused GitHub's installation token (%s); revoked it", why)
        return True

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


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_JWT_HEADER = _b64url(b'{"alg":"RS256","typ":"JWT"}')


def _installation_answer(body: Any) -> tuple[int, str | None]:
    """An installation object's id, and its account's login in ASCII lower case (None when
    the account is not a user or organization, e.g. an enterprise)."""
    installation = body.get("id") if isinstance(body, dict) else None
    if not isinstance(installation, int) or isinstance(installation, bool):
        raise UpstreamError("GitHub's installation answer has no id")
    account = body.get("account") if isinstance(body, dict) else None
    login = account.get("login") if isinstance(account, dict) else None
    return installation, ascii_lower(login) if isinstance(login, str) and login else None


def _installation_token(body: Any) -> InstallationToken:
    """GitHub's token answer, read in full: what cannot be read cannot be checked (502)."""
    if not isinstance(body, dict):
        raise UpstreamError("GitHub's token answer is not an object")
    token, expires_at = body.get("token"), body.get("expires_at")
    if not isinstance(token, str) or not isinstance(expires_at, str):
        raise UpstreamError("GitHub's token answer lacks token or expires_at")
    permissions = body.get("permissions")
    if not isinstance(permissions, dict) or not all(
        isinstance(level, str) for level in permissions.values()
    ):
        raise UpstreamError("GitHub's token answer does not state its permissions")
    selection = body.get("repository_selection")
    if selection not in (None, "all", "selected"):
        raise UpstreamError("GitHub's token answer has an unknown repository_selection")
    repos = body.get("repositories")
    names = None
    if repos is not None:
        if not isinstance(repos, list):
            raise UpstreamError("GitHub's token answer lists its repositories unreadably")
        full = [r.get("full_name") if isinstance(r, dict) else None for r in repos]
        if not all(isinstance(name, str) and "/" in name for name in full):
            raise UpstreamError("GitHub's token answer lists a repository without a full name")
        names = tuple(str(name) for name in full)
    return InstallationToken(
        token=token,
        expires_at=expires_at,
        expires_epoch=parse_timestamp(expires_at),
        permissions=dict(permissions),
        repositories=names,
        repository_selection=selection,
    )


def parse_timestamp(value: str) -> float:
    """GitHub's timestamps: `…Z` or `…-08:00`, with or without milliseconds."""
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise UpstreamError("GitHub sent an unreadable expires_at") from None
