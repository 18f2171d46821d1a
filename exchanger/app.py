"""The HTTP surface: routes, the one error handler, request ids, lifespan.

Every exchange follows the same path, in the SPEC's precedence order:
body size (413) → token (401) → request (400) → decision (403) → exchange.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from secrets import token_hex
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from exchanger import audit, metrics
from exchanger.config.model import Config
from exchanger.errors import (
    AccessDenied,
    ExchangerError,
    InvalidRequest,
    MissingToken,
    RequestTooLarge,
)
from exchanger.exchange import static
from exchanger.exchange.github.installations import installation_token
from exchanger.http import make_client
from exchanger.identity.claims import Identity
from exchanger.policy.asks import Request as Ask
from exchanger.policy.asks import (
    RunnerAction,
    SecretRequest,
    installation_request,
    runner_request,
)
from exchanger.policy.engine import Decision, InstallationTerms, RunnerTerms
from exchanger.runtime import Gateway, Runtime

log = logging.getLogger("exchanger")

_REQUEST_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
_NO_STORE = [(b"cache-control", b"no-store"), (b"pragma", b"no-cache")]


@dataclass
class Exchange:
    """One exchange in flight: what the audit line will say about it."""

    endpoint: str
    request_id: str
    identity: Identity | None = None
    ask: Ask | None = None
    decision: Decision | None = None


def create_app(config: Config) -> ASGIApp:
    """The ASGI app for `config`; keys load in the background from startup."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with make_client() as client:
            runtime = Runtime(client, Gateway.build(config, client))
            app.state.runtime = runtime
            runtime.start()
            hangup = _on_sighup(runtime)
            try:
                yield
            finally:
                hangup()
                await runtime.stop()

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/secrets/{name}", secret_object, methods=["GET"]),
        Route("/secrets/{name}/{field}", secret_field, methods=["GET"]),
        Route("/register", register, methods=["POST"]),
        Route("/remove", remove, methods=["POST"]),
        Route("/jitconfig", jitconfig, methods=["POST"]),
        Route("/token", token, methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            ExchangerError: on_error,
            HTTPException: on_http_error,
            Exception: on_unexpected,
        },
    )
    return with_request_id(app)


def _on_sighup(runtime: Runtime) -> Callable[[], None]:
    """Reload on SIGHUP; returns the undo. Only a process's main thread gets signals."""
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[bool]] = set()

    def hangup() -> None:
        task = loop.create_task(runtime.reload())
        pending.add(task)
        task.add_done_callback(pending.discard)

    try:
        loop.add_signal_handler(signal.SIGHUP, hangup)
    except (RuntimeError, ValueError):  # not the main thread (tests serve in a thread)
        return lambda: None

    def undo() -> None:
        loop.remove_signal_handler(signal.SIGHUP)

    return undo


def with_request_id(app: ASGIApp) -> ASGIApp:
    """Give every response an X-Request-Id and `Cache-Control: no-store`."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        extra = [(b"x-request-id", request_id.encode()), *_NO_STORE]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await app(scope, receive, send_with_id)

    return wrapped


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text: str = value.decode("latin-1")
            if 0 < len(text) <= 128 and set(text) <= _REQUEST_ID_CHARS:
                return text
            break
    return token_hex(16)


def error_response(exc: ExchangerError) -> JSONResponse:
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, exc.retry_after))
    if isinstance(exc, MissingToken):
        headers["WWW-Authenticate"] = 'Bearer realm="exchanger"'
    elif exc.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="exchanger", error="invalid_token"'
    return JSONResponse({"error": exc.code, "message": exc.message}, exc.status, headers)


async def on_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ExchangerError)
    return error_response(exc)


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request")
    return JSONResponse(
        {"error": code, "message": str(exc.detail).lower()}, exc.status_code, exc.headers
    )


async def on_unexpected(request: Request, exc: Exception) -> Response:
    """A bug, not a caller's doing: a bare JSON 500, details only in the log."""
    log.error("unexpected %s while serving %s", exc.__class__.__name__, request.url.path)
    return JSONResponse({"error": "internal_error", "message": "internal error"}, 500)


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


async def readyz(request: Request) -> Response:
    gateway = current(request)
    issuers = {name: keys.ready for name, keys in gateway.keys.items()}
    ready = all(issuers.values())
    body = {
        "status": "ready" if ready else "not ready",
        "issuers": issuers,
        # A Redis outage degrades, it does not take every replica out of service.
        "degraded": gateway.limits.store.degraded,
    }
    return JSONResponse(body, 200 if ready else 503)


async def metrics_endpoint(request: Request) -> Response:
    return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE)


def current(request: Request) -> Gateway:
    """The gateway for this request: read once, so a reload never splits a request."""
    runtime: Runtime = request.app.state.runtime
    return runtime.gateway


async def secret_object(request: Request) -> Response:
    return await exchange(request, "secrets", _reveal_secret)


async def secret_field(request: Request) -> Response:
    return await exchange(request, "secrets", _reveal_secret)


async def _reveal_secret(gateway: Gateway, request: Request, body: bytes, ex: Exchange) -> Response:
    params = request.path_params
    ask = SecretRequest(name=params["name"], field=params.get("field"))
    ex.ask = ask
    await _decide(gateway, ex)
    values = static.reveal(gateway.config.secrets, ask)
    if ask.field is not None:
        return PlainTextResponse(values[ask.field])
    return JSONResponse(values)


def _runner_endpoint(action: RunnerAction) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return await exchange(request, action, _runner)

    endpoint.__name__ = action
    return endpoint


register = _runner_endpoint("register")
remove = _runner_endpoint("remove")
jitconfig = _runner_endpoint("jitconfig")


async def _runner(gateway: Gateway, request: Request, body: bytes, ex: Exchange) -> Response:
    assert ex.identity is not None
    action: RunnerAction = ex.endpoint  # type: ignore[assignment]
    ask = runner_request(action, parse_json(body), ex.identity.text("repository"))
    ex.ask = ask
    if not gateway.config.runner_scopes.permits(ask.scope):
        raise AccessDenied()
    decision = await _decide(gateway, ex)
    runners = gateway.require_github().runners
    if action == "jitconfig":
        assert isinstance(decision.terms, RunnerTerms)
        return JSONResponse(await runners.jitconfig(ask, decision.terms))
    return JSONResponse(await runners.token(ask))


async def token(request: Request) -> Response:
    return await exchange(request, "token", _installation)


async def _installation(gateway: Gateway, request: Request, body: bytes, ex: Exchange) -> Response:
    assert ex.identity is not None
    ex.ask = installation_request(parse_json(body), ex.identity.text("repository_owner"))
    decision = await _decide(gateway, ex)
    assert isinstance(decision.terms, InstallationTerms)
    credentials = gateway.require_github().credentials
    return JSONResponse(await installation_token(credentials, decision.terms))


Handler = Callable[[Gateway, Request, bytes, Exchange], Awaitable[Response]]


async def exchange(request: Request, endpoint: str, handler: Handler) -> Response:
    """Run one exchange and write its audit line, whatever the outcome."""
    started = time.perf_counter()
    gateway = current(request)
    ex = Exchange(endpoint=endpoint, request_id=request.scope["state"]["request_id"])
    status = 500
    try:
        body = await _read_body(request, gateway.config.server.max_body_bytes)
        ex.identity = await gateway.verifier.verify(_bearer(request))
        await gateway.limits.admit(ex.identity)
        if request.scope["query_string"]:
            raise InvalidRequest("query parameters are not accepted; tokens go in headers")
        response = await handler(gateway, request, body, ex)
        status = response.status_code
        return response
    except ExchangerError as exc:
        status = exc.status
        raise
    finally:
        elapsed = time.perf_counter() - started
        metrics.count_exchange(endpoint, status, elapsed)
        audit.record(
            request_id=ex.request_id,
            endpoint=endpoint,
            status=status,
            policy=ex.decision.policy_name if ex.decision else None,
            request=ex.ask.describe() if ex.ask else None,
            identity=ex.identity,
            duration_ms=elapsed * 1000,
        )


async def _decide(gateway: Gateway, ex: Exchange) -> Decision:
    assert ex.identity is not None
    assert ex.ask is not None
    ex.decision = gateway.engine.decide(ex.identity, ex.ask)
    if not ex.decision.allowed:
        raise AccessDenied()
    assert ex.decision.policy is not None
    await gateway.limits.settle(ex.identity, ex.decision.policy)
    return ex.decision


def _bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise MissingToken()
    return token


async def _read_body(request: Request, limit: int) -> bytes:
    headers = request.headers
    declared = headers.get("content-length", "")
    if not declared and "transfer-encoding" not in headers:
        return b""  # no body at all (a GET): nothing to read
    if declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    """The request body as JSON; empty means `{}`."""
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidRequest("the body is not valid JSON") from None
