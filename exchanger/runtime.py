"""The running gateway: everything a request needs, and how SIGHUP replaces it.

A `Gateway` is built from one `Config` and never changes; `Runtime` holds the
current one and swaps it whole on reload, so a request sees either the old
config or the new one, never a mix. Key caches and the GitHub side carry over
when their part of the config did not change; a new issuer's keys are fetched
before the swap. An invalid new config is logged with its `FILE:LINE`
problems and the old one keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from exchanger import metrics
from exchanger.config.load import load_config
from exchanger.config.model import Config, GitHubConfig
from exchanger.errors import ConfigError, UpstreamUnavailable
from exchanger.exchange.github.auth import AppCredentials, Credentials, TokenCredentials
from exchanger.exchange.github.client import GitHubClient
from exchanger.exchange.github.runners import Runners
from exchanger.exchange.github.signers import check_public_key
from exchanger.identity.jwks import IssuerKeys
from exchanger.identity.verify import Verifier
from exchanger.limits.admission import Limits
from exchanger.limits.store import MemoryStore, RedisStore, Store
from exchanger.policy.engine import Engine

log = logging.getLogger("exchanger")

NEW_ISSUER_WAIT = 10.0


@dataclass
class GitHub:
    """The GitHub side: one API client, the gateway's credential, the exchanges."""

    config: GitHubConfig
    client: GitHubClient
    credentials: Credentials
    runners: Runners

    @classmethod
    def build(cls, config: GitHubConfig, http: httpx.AsyncClient) -> GitHub:
        client = GitHubClient(http, config.api_url, config.timeout_seconds)
        credentials: Credentials
        if config.app is not None:
            credentials = AppCredentials(config.app, client)
        else:
            assert config.token is not None
            credentials = TokenCredentials(config.token.value)
        return cls(config, client, credentials, Runners(client, credentials))


@dataclass
class Gateway:
    """One config's worth of state: policies, issuer keys, GitHub."""

    config: Config
    engine: Engine
    keys: dict[str, IssuerKeys]
    verifier: Verifier
    github: GitHub | None
    limits: Limits

    @classmethod
    def build(
        cls, config: Config, client: httpx.AsyncClient, previous: Gateway | None = None
    ) -> Gateway:
        """Build for `config`, reusing what `previous` has for unchanged parts."""
        old_keys = previous.keys if previous else {}
        keys = {}
        for issuer in config.issuers:
            kept = old_keys.get(issuer.issuer)
            keys[issuer.issuer] = (
                kept if kept is not None and kept.issuer == issuer else IssuerKeys(issuer, client)
            )
        github = previous.github if previous else None
        if config.github is None:
            github = None
        elif github is None or github.config != config.github:
            github = GitHub.build(config.github, client)
        store = _store(config, previous)
        leeway = {i.issuer: i.leeway_seconds for i in config.issuers}
        limits = Limits(store, config.rate_limit, leeway.__getitem__)
        return cls(config, Engine.for_config(config), keys, Verifier(keys), github, limits)

    def require_github(self) -> GitHub:
        if self.github is None:
            raise UpstreamUnavailable("GitHub is not configured on this gateway", retry_after=60)
        return self.github


async def check_app_key(github: GitHub | None) -> None:
    """Fetch the App's public key from its signer and refuse one that is not RSA ≥ 2048.

    A signer that cannot be reached is logged, not fatal: exchanges that need it
    answer 503 until it returns, and everything else keeps working.
    """
    if github is None or not isinstance(github.credentials, AppCredentials):
        return
    try:
        await check_public_key(github.credentials.signer)
    except UpstreamUnavailable as exc:
        log.warning("the GitHub App's key could not be checked: %s", exc.message)


async def close_signer(github: GitHub | None) -> None:
    if github is not None and isinstance(github.credentials, AppCredentials):
        await github.credentials.signer.close()


def _store(config: Config, previous: Gateway | None) -> Store:
    """Keep the previous store (and its buckets) unless the Redis URL changed."""
    if previous is not None and previous.config.redis_url == config.redis_url:
        return previous.limits.store
    if config.redis_url is None:
        return MemoryStore()
    return RedisStore(config.redis_url.value)


@dataclass
class Runtime:
    """The current gateway and the background key refreshers behind it."""

    client: httpx.AsyncClient
    gateway: Gateway
    _refreshers: dict[IssuerKeys, asyncio.Task[None]] = field(default_factory=dict)
    _reloading: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def start(self) -> None:
        """Check the App key (ConfigError stops start-up), then fetch keys in the background."""
        await check_app_key(self.gateway.github)
        self._sync_refreshers()

    async def stop(self) -> None:
        await self.gateway.limits.store.close()
        await close_signer(self.gateway.github)
        tasks = list(self._refreshers.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._refreshers.clear()

    def _sync_refreshers(self) -> None:
        """One background refresher per current issuer; stop those no longer used."""
        current = set(self.gateway.keys.values())
        for keys, task in list(self._refreshers.items()):
            if keys not in current:
                task.cancel()
                del self._refreshers[keys]
        for keys in current:
            if keys not in self._refreshers:
                self._refreshers[keys] = asyncio.create_task(keys.run())

    async def reload(self, path: Path | None = None) -> bool:
        """Load the config again and swap it in; False (old config kept) when invalid."""
        async with self._reloading:
            path = path or self.gateway.config.path
            try:
                config = await asyncio.to_thread(load_config, path)
            except ConfigError as exc:
                for problem in exc.problems:
                    log.error("reload refused, keeping the current config: %s", problem)
                metrics.RELOADS.labels("invalid").inc()
                return False
            gateway = Gateway.build(config, self.client, previous=self.gateway)
            if gateway.github is not self.gateway.github:
                try:
                    await check_app_key(gateway.github)
                except ConfigError as exc:
                    await close_signer(gateway.github)
                    for problem in exc.problems:
                        log.error("reload refused, keeping the current config: %s", problem)
                    metrics.RELOADS.labels("invalid").inc()
                    return False
            fresh = [k for k in gateway.keys.values() if not k.ready]
            if fresh:
                await asyncio.wait(
                    [asyncio.create_task(k.refresh()) for k in fresh], timeout=NEW_ISSUER_WAIT
                )
            previous, self.gateway = self.gateway, gateway
            if previous.github is not gateway.github:
                await close_signer(previous.github)
            if previous.limits.store is not gateway.limits.store:
                await previous.limits.store.close()
            self._sync_refreshers()
            for warning in config.warnings:
                log.warning("%s", warning)
            log.info("config reloaded: %s", config.summary())
            metrics.RELOADS.labels("ok").inc()
            return True
