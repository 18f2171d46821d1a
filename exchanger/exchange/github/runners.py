"""Runner exchanges: registration and removal tokens, JIT runner configurations.

Scopes map to GitHub's three runner levels: `owner/name` → `/repos/…`,
`owner` → `/orgs/…`, `enterprise:slug` → `/enterprises/…`. GitHub Apps cannot
manage enterprise runners: the policy engine refuses that (400) before anything here.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

from cachetools import TTLCache

from exchanger import metrics
from exchanger.errors import AccessDenied, UpstreamError
from exchanger.exchange.github.auth import Credentials
from exchanger.exchange.github.client import GitHubClient
from exchanger.policy.asks import ENTERPRISE_PREFIX, RunnerRequest, scope_kind
from exchanger.policy.engine import RunnerTerms

DEFAULT_GROUP_ID = 1
GROUPS_TTL = 300.0
MAX_GROUP_PAGES = 50
_TOKEN_PATH = {"register": "registration-token", "remove": "remove-token"}


def scope_path(scope: str) -> str:
    """The API prefix of a scope's runners, e.g. `/orgs/acme/actions/runners`."""
    kind = scope_kind(scope)
    if kind == "repository":
        return f"/repos/{scope}/actions/runners"
    if kind == "organization":
        return f"/orgs/{scope}/actions/runners"
    return f"/enterprises/{scope[len(ENTERPRISE_PREFIX) :]}/actions/runners"


class Runners:
    """Mints runner tokens and JIT configs with the gateway's own credential."""

    def __init__(
        self,
        github: GitHubClient,
        credentials: Credentials,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._github = github
        self._credentials = credentials
        self._groups: TTLCache[str, dict[str, int]] = TTLCache(1000, GROUPS_TTL, timer=clock)

    async def _bearer(self, scope: str) -> str:
        if scope_kind(scope) == "enterprise":  # a token's (the engine refuses it to an App)
            return await self._credentials.for_runners(scope, None)
        owner, _, repository = scope.partition("/")
        return await self._credentials.for_runners(owner, repository or None)

    async def token(self, request: RunnerRequest) -> dict[str, Any]:
        """A registration or removal token: `{"token", "expires_at"}` as GitHub sent them."""
        bearer = await self._bearer(request.scope)
        path = f"{scope_path(request.scope)}/{_TOKEN_PATH[request.action]}"
        reply = await self._github.post(path, bearer)
        body = reply.body
        if not isinstance(body, dict) or not all(
            isinstance(body.get(k), str) for k in ("token", "expires_at")
        ):
            raise UpstreamError("GitHub's runner token answer lacks token or expires_at")
        return {"token": body["token"], "expires_at": body["expires_at"]}

    async def jitconfig(self, request: RunnerRequest, terms: RunnerTerms) -> dict[str, Any]:
        """A just-in-time runner configuration (a credential: the runner's identity)."""
        bearer = await self._bearer(request.scope)
        group_id = DEFAULT_GROUP_ID
        if terms.runner_group is not None and scope_kind(request.scope) != "repository":
            group_id = await self._group_id(request.scope, terms.runner_group, bearer)
        name = (
            request.name
            or f"{request.scope.rsplit('/', 1)[-1].rsplit(':', 1)[-1]}-{secrets.token_hex(4)}"
        )
        body = {
            "name": name,
            "runner_group_id": group_id,
            "labels": list(terms.labels),
            "work_folder": request.work_folder or "_work",
        }
        reply = await self._github.post(
            f"{scope_path(request.scope)}/generate-jitconfig", bearer, body
        )
        answer = reply.body
        runner = answer.get("runner") if isinstance(answer, dict) else None
        encoded = answer.get("encoded_jit_config") if isinstance(answer, dict) else None
        if not isinstance(runner, dict) or not isinstance(encoded, str):
            raise UpstreamError("GitHub's JIT answer lacks runner or encoded_jit_config")
        return {
            "runner": {"id": runner.get("id"), "name": runner.get("name")},
            "encoded_jit_config": encoded,
        }

    async def _group_id(self, scope: str, name: str, bearer: str) -> int:
        groups = self._groups.get(scope)
        metrics.cache_lookup("runner_groups", groups is not None)
        if groups is None:
            groups = await self._list_groups(scope, bearer)
            self._groups[scope] = groups
        group = groups.get(name)
        if group is None:
            # The policy named a group GitHub does not have: nothing to grant.
            raise AccessDenied()
        return group

    async def _list_groups(self, scope: str, bearer: str) -> dict[str, int]:
        base = scope_path(scope).removesuffix("/runners") + "/runner-groups"
        groups: dict[str, int] = {}
        for page in range(1, MAX_GROUP_PAGES + 1):
            reply = await self._github.get(f"{base}?per_page=100&page={page}", bearer)
            body = reply.body
            items = body.get("runner_groups") if isinstance(body, dict) else None
            if not isinstance(items, list):
                raise UpstreamError("GitHub's runner-groups answer has no list")
            for item in items:
                if isinstance(item, dict) and isinstance(item.get("name"), str):
                    group_id = item.get("id")
                    if isinstance(group_id, int) and not isinstance(group_id, bool):
                        groups.setdefault(item["name"], group_id)
            if 'rel="next"' not in reply.headers.get("link", ""):
                break
        return groups
