"""The `exchanger` command: serve, check, explain, test, schema, demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from exchanger import __version__
from exchanger.config.load import load_config
from exchanger.config.model import Config
from exchanger.errors import ConfigError, ExchangerError, InvalidRequest
from exchanger.policy import dryrun
from exchanger.policy.engine import Engine

USAGE_ERROR = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return USAGE_ERROR if args.command in ("explain", "test") else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="exchanger", description=__doc__)
    parser.add_argument("--version", action="version", version=f"exchanger {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    _config_argument(serve)
    serve.add_argument("--host", help="bind address (env BIND; default 0.0.0.0)")
    serve.add_argument("--port", type=int, help="port (env PORT; default 8080)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    serve.add_argument("--tls-cert", type=Path, help="serve HTTPS with this certificate chain")
    serve.add_argument("--tls-key", type=Path, help="… and this private key")
    serve.set_defaults(run=_serve)

    check = commands.add_parser("check", help="validate the config and every policy")
    _config_argument(check)
    check.add_argument(
        "--strict", action="store_true", help="fail (exit 1) on warnings too, e.g. in CI"
    )
    check.add_argument(
        "--online",
        action="store_true",
        help="also contact the App key's signer (KMS, HSM) and check its public key",
    )
    check.set_defaults(run=_check)

    explain = commands.add_parser("explain", help="dry-run a decision for a claims set")
    _config_argument(explain)
    explain.add_argument("--claims", type=Path, required=True, help="JSON file of claims")
    what = explain.add_mutually_exclusive_group(required=True)
    what.add_argument("--secret", metavar="NAME[/FIELD]")
    what.add_argument(
        "--runner", metavar="ACTION[:SCOPE]", help="register or remove (or jitconfig)"
    )
    what.add_argument("--jitconfig", metavar="JSON_BODY", help="a /jitconfig body")
    what.add_argument("--installation", metavar="JSON_BODY", help="a /token body")
    what.add_argument(
        "--token-exchange", metavar="FORM", help="an /oauth2/token form's resource=…&scope=…"
    )
    explain.set_defaults(run=_explain)

    test = commands.add_parser("test", help="run policy test cases against the config")
    _config_argument(test)
    test.add_argument("cases", type=Path, nargs="+", help="YAML case files")
    test.set_defaults(run=_test)

    schema = commands.add_parser("schema", help="print the JSON Schema of the config file")
    schema.set_defaults(run=_schema)

    demo = commands.add_parser("demo", help="a self-contained tour on loopback")
    demo.add_argument("--config", type=Path, default=Path("policies/exchanger.yaml"))
    demo.set_defaults(run=_demo)
    return parser


def _config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=os.environ.get("EXCHANGER_CONFIG"),
        required="EXCHANGER_CONFIG" not in os.environ,
        help="config file (env EXCHANGER_CONFIG)",
    )


def _check(args: argparse.Namespace) -> int:
    """Errors (exit 1), then warnings, on stderr; with `--strict` a warning fails too."""
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for line in (*exc.problems, *exc.warnings):
            print(line, file=sys.stderr)
        return 1
    for warning in config.warnings:
        print(warning, file=sys.stderr)
    if args.strict and config.warnings:
        count = len(config.warnings)
        print(
            f"{config.path}: {count} warning{'s' if count > 1 else ''}; --strict fails on warnings",
            file=sys.stderr,
        )
        return 1
    if args.online:
        problem = asyncio.run(_check_online(config))
        if problem is not None:
            print(f"{config.path}: {problem}", file=sys.stderr)
            return 1
    print(config.summary())
    return 0


async def _check_online(config: Config) -> str | None:
    """What the network says is wrong with the config (the App key, today), or None."""
    from exchanger.exchange.github.signers import check_public_key, signer_for

    if config.github is None or config.github.app is None:
        return None
    signer = signer_for(config.github.app.key)
    try:
        await check_public_key(signer)
    except ConfigError as exc:
        return "; ".join(exc.problems)
    except ExchangerError as exc:
        return f"github.app: {exc.message}"
    finally:
        await signer.close()
    return None


def _schema(args: argparse.Namespace) -> int:
    from exchanger.config.schema import SCHEMA

    print(json.dumps(SCHEMA, indent=2))
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from exchanger.app import configure_logging
    from exchanger.serving import uvicorn_options

    config = load_config(args.config)
    configure_logging()
    for warning in config.warnings:
        logging.getLogger("exchanger").warning("%s", warning)
    if bool(args.tls_cert) != bool(args.tls_key):
        print("exchanger: --tls-cert and --tls-key go together", file=sys.stderr)
        return USAGE_ERROR
    if args.workers > 1 and config.redis_url is None and any(p.single_use for p in config.policies):
        print(
            "exchanger: single_use policies need state.redis_url with --workers above 1 "
            "(each worker would accept a token once)",
            file=sys.stderr,
        )
        return USAGE_ERROR
    host, port = args.host or config.server.host, args.port or config.server.port
    server_options = uvicorn_options(config.server)
    # One worker serves the config loaded here; several each load it themselves
    # (the supervisor then keeps no copy of the policies).
    app: Any = "exchanger.app:app_factory"
    if args.workers == 1:
        from exchanger.app import create_app

        app = create_app(config)
    os.environ["EXCHANGER_CONFIG"] = str(args.config)
    del config
    # uvicorn re-raises the stop signal once it has drained in-flight requests;
    # with these handlers in place that last signal is a no-op and we exit 0.
    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, lambda *_: None)
    uvicorn.run(
        app,
        factory=args.workers != 1,
        host=host,
        port=port,
        workers=args.workers,
        ssl_certfile=args.tls_cert,
        ssl_keyfile=args.tls_key,
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=30,
        proxy_headers=False,
        **server_options,
    )
    return 0


def _explain(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    try:
        claims = json.loads(args.claims.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"exchanger: cannot read claims: {exc.__class__.__name__}", file=sys.stderr)
        return USAGE_ERROR
    if not isinstance(claims, dict):
        print("exchanger: the claims file must hold a JSON object", file=sys.stderr)
        return USAGE_ERROR
    identity = dryrun.identity_from_claims(claims)
    kind = next(k for k in dryrun.ASK_KINDS if getattr(args, k))
    try:
        ask = dryrun.ask_from_spec(kind, getattr(args, kind), identity)
    except InvalidRequest as exc:
        print(f"exchanger: {exc.message}", file=sys.stderr)
        return USAGE_ERROR
    decision = Engine.for_config(config).decide(identity, ask, explain=True)
    print(dryrun.render_explanation(decision, ask))
    return 0 if decision.allowed else 1


def _test(args: argparse.Namespace) -> int:
    """Policy unit tests: one line per failing case, then `N passed, M failed`."""
    engine = Engine.for_config(load_config(args.config))
    try:
        cases = [case for path in args.cases for case in dryrun.load_cases(path)]
    except dryrun.CaseFileError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return USAGE_ERROR
    failures = list(dryrun.run_cases(engine, cases))
    for failure in failures:
        print(failure)
    print(f"{len(cases) - len(failures)} passed, {len(failures)} failed")
    return 1 if failures else 0


def _demo(args: argparse.Namespace) -> int:
    from exchanger.demo import run_demo

    return run_demo(args.config)
