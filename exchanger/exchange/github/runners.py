"""Runner exchanges: registration and removal tokens, JIT runner configurations.

Scopes map to GitHub's three runner levels: `owner/name` → `/repos/…`,
`owner` → `/orgs/…`, `enterprise:slug` → `/enterprises/…`. GitHub Apps cannot
manage enterprise runners: the policy engine refuses that (400) before anything here.

GitHub's answers are checked: a token and its `expires_at` must be there and readable; a JIT
runner must carry the requested name, sit in the requested group (when GitHub states it) and
carry the requested labels (names, ignoring case; the read-only labels GitHub assigns on its
own, such as `self-hosted`, are not asked for and not held against it). A runner that is not
what was asked is deleted at once with the same credential, and the caller gets 502.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

from cachetools import TTLCache

from exchanger import metrics
from exchanger.errors import AccessDenied, ExchangerError, UpstreamError
from exchanger.exchange.github.auth import Credentials, parse_timestamp
from exchanger.exchange.github.client import GitHubClient
from exchanger.policy.asks import ENTERPRISE_PREFIX, RunnerRequest, scope_kind
from exchanger.policy.engine import RunnerTerms

DEFAULT_GROUP_ID = 1
GROUPS_TTL = 300.0
MAX_GROUP_PAGES = 50
_TOKEN_PATH = {"register": "registration-token", "remove": "remove-token"}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}")

log = logging.getLogger("exchanger.github")


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
        parse_timestamp(body["expires_at"])  # unreadable: GitHub's trouble, never the caller's
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
        runner_id = runner.get("id") if isinstance(runner, dict) else None
        if not isinstance(runner, dict) or not _is_int(runner_id):
            # Without its id the runner cannot even be found again: nothing to delete.
            raise UpstreamError("GitHub's JIT answer names no runner id")
        assert isinstance(runner_id, int)
        encoded = answer.get("encoded_jit_config") if isinstance(answer, dict) else None
        mismatches = _jit_mismatches(runner, encoded, name, group_id, terms.labels)
        if mismatches:
            secret = encoded if isinstance(encoded, str) else None
            raise await self._refuse(request.scope, runner_id, bearer, mismatches, secret)
        return {"runner": {"id": runner_id, "name": name}, "encoded_jit_config": encoded}

    async def _refuse(
        self,
        scope: str,
        runner_id: int,
        bearer: str,
        mismatches: Sequence[tuple[str, str]],
        secret: str | None,
    ) -> UpstreamError:
        """Delete a JIT runner that is not what was asked; the caller's error (502).

        One log line (never the JIT config) says why and whether the deletion worked.
        """
        summary = "; ".join(words for _, words in mismatches)
        if secret:
            summary = summary.replace(secret, "[redacted]")
        for kind in sorted({kind for kind, _ in mismatches}):
            metrics.BROADER_ANSWERS.labels(kind).inc()
        try:
            await self._github.delete(f"{scope_path(scope)}/{runner_id}", bearer)
        except ExchangerError as exc:
            metrics.REVOCATIONS.labels("jit_runner", "failed").inc()
            log.error(
                "refused GitHub's JIT runner %d of %s (%s); deleting it failed (%s)",
                runner_id,
                scope,
                summary,
                exc.message,
            )
            outcome = "deleting it failed"
        else:
            metrics.REVOCATIONS.labels("jit_runner", "ok").inc()
            log.warning(
                "refused GitHub's JIT runner %d of %s (%s); deleted it", runner_id, scope, summary
            )
            outcome = "it was deleted"
        return UpstreamError(f"GitHub's JIT runner is not what was asked ({summary}); {outcome}")

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


def _jit_mismatches(
    runner: dict[str, Any],
    encoded: object,
    name: str,
    group_id: int,
    labels: Sequence[str],
) -> list[tuple[str, str]]:
    """How GitHub's JIT runner differs from the one asked for: (metrics kind, words) pairs."""
    found: list[tuple[str, str]] = []
    if not isinstance(encoded, str) or not encoded:
        found.append(("unreadable", "no encoded_jit_config"))
    got_name = runner.get("name")
    if not isinstance(got_name, str):
        found.append(("unreadable", "a runner without a name"))
    elif got_name != name:
        found.append(("runner_name", f"runner {_shown(got_name)} where {name!r} was asked"))
    got_group = runner.get("runner_group_id", group_id)  # optional in GitHub's schema
    if not _is_int(got_group):
        found.append(("unreadable", "a runner group id that is not a number"))
    elif got_group != group_id:
        found.append(("runner_group", f"runner group {got_group} where {group_id} was asked"))
    read = _label_names(runner.get("labels"))
    if read is None:
        found.append(("unreadable", "runner labels that cannot be read"))
    else:
        every, custom = read
        asked = {label.lower() for label in labels}
        missing = sorted(asked - every)
        extra = sorted(custom - asked)
        if missing:
            found.append(("runner_labels", f"labels {', '.join(missing)} missing"))
        if extra:
            shown = ", ".join(_shown(label) for label in extra)
            found.append(("runner_labels", f"labels {shown} not asked for"))
    return found


def _label_names(labels: object) -> tuple[set[str], set[str]] | None:
    """(every label name, the names not read-only) in lower case; None when unreadable."""
    if not isinstance(labels, list):
        return None
    every: set[str] = set()
    custom: set[str] = set()
    for label in labels:
        label_name = label.get("name") if isinstance(label, dict) else None
        if not isinstance(label_name, str):
            return None
        every.add(label_name.lower())
        if label.get("type") != "read-only":
            custom.add(label_name.lower())
    return every, custom


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shown(text: str) -> str:
    """A name GitHub sent, for a message: quoted if it looks like a name, else a stand-in."""
    return repr(text) if _NAME.fullmatch(text) else "(an unreadable name)"
