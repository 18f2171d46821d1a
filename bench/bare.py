"""The physical limit of the stack: Starlette + uvicorn answering a small plain-text body.

It serves the same paths and methods as the exchanges being compared, and it is
started with exactly the uvicorn settings `exchanger serve` uses (`SERVER_SETTINGS`
mirrors `exchanger.cli._serve`), so the only difference measured is what
exchanger does per request.

    python -m bench.bare --port 8081 --workers 2

`--busy-us N` makes every answer first burn N µs of CPU: a control that is as
slow as exchanger without doing any of its work, to tell queueing (any handler
that costs that much) from what is particular to exchanger.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

#: The keyword arguments `exchanger serve` passes to `uvicorn.run` besides app, host,
#: port, workers and TLS (loop and http stay "auto": uvloop and httptools when present).
SERVER_SETTINGS: dict[str, Any] = {
    "log_config": None,
    "access_log": False,
    "server_header": False,
    "timeout_graceful_shutdown": 30,
    "proxy_headers": False,
}


_BUSY = float(os.environ.get("BENCH_BARE_BUSY_US", "0")) / 1e6


async def _ok(request: Request) -> Response:
    if _BUSY:
        until = time.perf_counter() + _BUSY
        while time.perf_counter() < until:
            pass
    return PlainTextResponse("ok")


def app_factory() -> Starlette:
    """A fresh app per worker, like exchanger's `app_factory`."""
    return Starlette(
        routes=[
            Route("/healthz", _ok, methods=["GET"]),
            Route("/secrets/{name}/{field}", _ok, methods=["GET"]),
            Route("/token", _ok, methods=["POST"]),
            Route("/register", _ok, methods=["POST"]),
        ]
    )


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m bench.bare", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--busy-us", type=float, default=0.0, help="CPU to burn per request")
    args = parser.parse_args()
    os.environ["BENCH_BARE_BUSY_US"] = str(args.busy_us)  # for the worker processes
    uvicorn.run(
        "bench.bare:app_factory",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        **SERVER_SETTINGS,
    )


if __name__ == "__main__":
    main()
