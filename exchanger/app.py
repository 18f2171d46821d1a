"""The HTTP surface: routes, the one error handler, request ids, lifespan.

Exchange routes hand their request to `pipeline.run`; errors of the one
`ExchangerError` family become the SPEC's JSON here and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from secrets import token_hex

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from exchanger import audit, metrics, pipeline, rfc8693, tracing
from exchanger.config.load import load_config
from exchanger.config.model import Config
from exchanger.errors import ExchangerError, MissingToken
from exchanger.http import make_client
from exchanger.policy.asks import RUNNER_ACTIONS, RunnerAction
from exchanger.runtime import Gateway, Runtime

log = logging.getLogger("exchanger")

_REQUEST_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
_NO_STORE = [(b"cache-control", b"no-store"), (b"pragma", b"no-cache")]


def create_app(config: Config) -> ASGIApp:
    """The ASGI app for `config`; keys load in the background from startup."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tracing.configure()  # once per worker process; off unless OTEL_* asks for it
        async with make_client() as client:
            runtime = Runtime(client, Gateway.build(config, client))
            app.state.runtime = runtime
            await runtime.start()
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
        Route("/secrets/{name}", _secrets, methods=["GET"]),
        Route("/secrets/{name}/{field}", _secrets, methods=["GET"]),
        *(
            Route(f"/{action}", _runner_endpoint(action), methods=["POST"])
            for action in RUNNER_ACTIONS
        ),
        Route("/token", _token, methods=["POST"]),
        Route(rfc8693.PATH, _token_exchange, methods=["POST"]),
        Route("/revoke", _revoke, methods=["POST"]),
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


def app_factory() -> ASGIApp:
    """Build the app in each uvicorn worker from EXCHANGER_CONFIG (`serve --workers N`)."""
    configure_logging()
    return create_app(load_config(os.environ["EXCHANGER_CONFIG"]))


def configure_logging() -> None:
    """Operational logs to stderr; audit lines to stdout; HTTP clients quiet."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "httpcore", "hpack"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    audit.configure()


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
    if request.url.path == rfc8693.PATH:
        return oauth_error_response(exc)
    return error_response(exc)


def oauth_error_response(exc: ExchangerError) -> JSONResponse:
    """RFC 6749 §5.2 on the token-exchange route: a refused subject token or target is a 400."""
    headers = {} if exc.retry_after is None else {"Retry-After": str(max(1, exc.retry_after))}
    status = 400 if exc.status in (401, 403) else exc.status
    body = {"error": exc.oauth_error or exc.code, "error_description": exc.message}
    return JSONResponse(body, status, headers)


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request")
    return JSONResponse(
        {"error": code, "message": str(exc.detail).lower()}, exc.status_code, exc.headers
    )


async def on_unexpected(request: Request, exc: Exception) -> Response:
    """A bug, not a caller's doing: a bare JSON 500, its traceback only in the log.

    The traceback names code and the exception; a credential is never put into an
    exception's message anywhere in the package, so none can reach the log here.
    """
    log.error(
        "unexpected %s while serving %s", exc.__class__.__name__, request.url.path, exc_info=exc
    )
    return JSONResponse({"error": "internal_error", "message": "internal error"}, 500)


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


async def readyz(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    gateway = runtime.gateway
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


async def _secrets(request: Request) -> Response:
    return await pipeline.run(request, "secrets", pipeline.read_secret, pipeline.reveal_secret)


def _runner_endpoint(action: RunnerAction) -> Callable[[Request], Awaitable[Response]]:
    read = pipeline.runner_reader(action)

    async def endpoint(request: Request) -> Response:
        return await pipeline.run(request, action, read, pipeline.runner)

    endpoint.__name__ = action
    return endpoint


async def _token(request: Request) -> Response:
    return await pipeline.run(request, "token", pipeline.read_installation, pipeline.installation)


async def _token_exchange(request: Request) -> Response:
    return await pipeline.run(
        request,
        "oauth2-token",
        pipeline.read_token_exchange,
        pipeline.token_exchange,
        token=pipeline.subject_token,
    )


async def _revoke(request: Request) -> Response:
    return await pipeline.run(request, "revoke", pipeline.read_revocation, pipeline.revoke)
