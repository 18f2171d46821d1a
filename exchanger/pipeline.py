"""One exchange, start to end, in the SPEC's precedence order.

read (413) → verify (401) → admit (429) → ask (400) → decide (400 for the
mode, 403) → settle (429, 401 replay) → exchange → audit. Every step runs
against one `Gateway`, read once, so a reload never splits a request; every
exchange writes one audit line, whatever its outcome. A request that ends in
a 4xx after settling gives back what settling took.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from exchanger import audit, metrics, rfc8693, tracing
from exchanger.config.model import ServerConfig
from exchanger.errors import (
    AccessDenied,
    ExchangerError,
    InvalidRequest,
    MissingToken,
    RequestTimeout,
    RequestTooLarge,
)
from exchanger.exchange import static
from exchanger.exchange.github.installations import installation_token
from exchanger.identity.claims import Identity
from exchanger.limits.admission import Settlement
from exchanger.policy.asks import (
    Ask,
    RevokeRequest,
    RunnerAction,
    RunnerRequest,
    SecretRequest,
    installation_request,
    parse_body,
    revoke_request,
    runner_request,
)
from exchanger.policy.engine import Decision, InstallationTerms, RunnerTerms
from exchanger.runtime import Gateway, Runtime


@dataclass
class Exchange:
    """One exchange in flight: what the audit line will say about it."""

    endpoint: str
    request_id: str
    identity: Identity | None = None
    ask: Ask | None = None
    decision: Decision | None = None


#: Reads the ask from the request (path, body, claims); raises InvalidRequest.
AskReader = Callable[[Request, bytes, Identity], Ask]
#: Reads the caller's token from the request.
TokenReader = Callable[[Request, bytes], str]
#: Performs an allowed exchange.
Performer = Callable[[Gateway, Ask, Decision], Awaitable[Response]]


def bearer(request: Request, body: bytes) -> str:
    """The token of the JSON endpoints: `Authorization: Bearer …`."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise MissingToken()
    return token


def subject_token(request: Request, body: bytes) -> str:
    """The token of the RFC 8693 endpoint: the form's `subject_token`."""
    return rfc8693.subject_token(body)


async def run(
    request: Request,
    endpoint: str,
    read: AskReader,
    perform: Performer,
    *,
    token: TokenReader = bearer,
) -> Response:
    """Run one exchange and write its audit line, whatever the outcome."""
    started = time.perf_counter()
    runtime: Runtime = request.app.state.runtime
    gateway = runtime.gateway
    ex = Exchange(endpoint=endpoint, request_id=request.scope["state"]["request_id"])
    status = 500
    failure: ExchangerError | None = None
    trace = tracing.exchange(endpoint, ex.request_id)
    try:
        body = await _read_body(request, gateway.config.server)
        with tracing.span("verify"):
            ex.identity = await gateway.verifier.verify(token(request, body))
        await gateway.limits.admit(ex.identity)
        if request.scope["query_string"]:
            raise InvalidRequest("query parameters are not accepted; tokens go in headers")
        ex.ask = read(request, body, ex.identity)
        with tracing.span("decide"):
            ex.decision = gateway.engine.decide(ex.identity, ex.ask)
        decision = ex.decision
        if not decision.allowed:
            raise InvalidRequest(decision.reason) if decision.decider == "mode" else AccessDenied()
        settlement = (
            Settlement(gateway.limits.store)
            if decision.policy is None  # a self-revocation: nothing to take
            else await gateway.limits.settle(ex.identity, decision.policy)
        )
        response = await _perform(perform, gateway, ex.ask, decision, settlement)
        status = response.status_code
        return response
    except ExchangerError as exc:
        status, failure = exc.status, exc
        raise
    finally:
        trace.end(status=status, decided_by=ex.decision.decider if ex.decision else "none")
        elapsed = time.perf_counter() - started
        allowed = ex.decision is not None and ex.decision.allowed
        metrics.count_exchange(endpoint, allowed, status, elapsed)
        audit.record(
            request_id=ex.request_id,
            endpoint=endpoint,
            status=status,
            decision=ex.decision,
            failure=failure,
            request=ex.ask.describe() if ex.ask else None,
            identity=ex.identity,
            duration_ms=elapsed * 1000,
        )


async def _perform(
    perform: Performer, gateway: Gateway, ask: Ask, decision: Decision, settlement: Settlement
) -> Response:
    try:
        return await perform(gateway, ask, decision)
    except ExchangerError as exc:
        if 400 <= exc.status < 500:
            await settlement.undo()
        raise


def read_secret(request: Request, body: bytes, identity: Identity) -> Ask:
    params = request.path_params
    return SecretRequest(name=params["name"], field=params.get("field"))


async def reveal_secret(gateway: Gateway, ask: Ask, decision: Decision) -> Response:
    assert isinstance(ask, SecretRequest)
    values = static.reveal(gateway.config.secrets, ask)
    if ask.field is not None:
        return PlainTextResponse(values[ask.field])
    return JSONResponse(values)


def runner_reader(action: RunnerAction) -> AskReader:
    def read(request: Request, body: bytes, identity: Identity) -> Ask:
        return runner_request(action, parse_body(body), identity.text("repository"))

    return read


async def runner(gateway: Gateway, ask: Ask, decision: Decision) -> Response:
    runners = gateway.require_github().runners
    assert isinstance(ask, RunnerRequest)
    if ask.action == "jitconfig":
        assert isinstance(decision.terms, RunnerTerms)
        return JSONResponse(await runners.jitconfig(ask, decision.terms))
    return JSONResponse(await runners.token(ask))


def read_installation(request: Request, body: bytes, identity: Identity) -> Ask:
    return installation_request(parse_body(body), identity.text("repository_owner"))


async def installation(gateway: Gateway, ask: Ask, decision: Decision) -> Response:
    assert isinstance(decision.terms, InstallationTerms)
    credentials = gateway.require_github().credentials
    return JSONResponse(await installation_token(credentials, decision.terms))


def read_token_exchange(request: Request, body: bytes, identity: Identity) -> Ask:
    return rfc8693.ask_from_form(body)


async def token_exchange(gateway: Gateway, ask: Ask, decision: Decision) -> Response:
    """RFC 8693 §2.2.1: the credential as `access_token`, whatever kind it is."""
    answer: dict[str, object] = {"issued_token_type": rfc8693.ACCESS_TOKEN}
    if isinstance(ask, SecretRequest):
        assert ask.field is not None
        answer |= {"access_token": static.reveal(gateway.config.secrets, ask)[ask.field]}
        answer["token_type"] = rfc8693.NOT_APPLICABLE  # a value to use as it is
    elif isinstance(ask, RunnerRequest):
        minted = await gateway.require_github().runners.token(ask)
        answer |= {"access_token": minted["token"], "token_type": rfc8693.NOT_APPLICABLE}
        answer["expires_in"] = rfc8693.expires_in(minted["expires_at"])
    else:
        assert isinstance(decision.terms, InstallationTerms)
        credentials = gateway.require_github().credentials
        minted = await installation_token(credentials, decision.terms)
        answer |= {"access_token": minted["token"], "token_type": "Bearer"}
        answer["expires_in"] = rfc8693.expires_in(minted["expires_at"])
        answer["scope"] = rfc8693.granted_scope(minted["permissions"])
    return JSONResponse(answer)


def read_revocation(request: Request, body: bytes, identity: Identity) -> Ask:
    return revoke_request(parse_body(body))


async def revoke(gateway: Gateway, ask: Ask, decision: Decision) -> Response:
    """Revoke the caller's installation token with itself; already gone is done too."""
    assert isinstance(ask, RevokeRequest)
    await gateway.require_github().client.delete("/installation/token", ask.token, gone_ok=True)
    return Response(status_code=204)


async def _read_body(request: Request, server: ServerConfig) -> bytes:
    """The body, at most `max_body_bytes` of it, within `body_timeout_seconds`."""
    headers = request.headers
    declared = headers.get("content-length", "")
    if not declared and "transfer-encoding" not in headers:
        return b""  # no body at all (a GET): nothing to read
    limit = server.max_body_bytes
    if declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge()
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(server.body_timeout_seconds):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise RequestTooLarge()
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout() from None
    return b"".join(chunks)
