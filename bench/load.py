"""Load generation: `wrk` on loopback, bounded in time, rotating through a token file."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).with_name("exchange.lua")
WRK_INSTALL_HINT = "wrk is missing: install it with `apt-get install wrk` (Debian package `wrk`)"


@dataclass(frozen=True, slots=True)
class Request:
    """What every request of a run looks like (only the token changes)."""

    method: str
    path: str
    body: str = ""


@dataclass(frozen=True, slots=True)
class LoadResult:
    requests: int
    seconds: float
    status_errors: int  # responses other than 2xx/3xx
    socket_errors: int  # connect, read, write errors and timeouts
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @staticmethod
    def mean(results: list[LoadResult]) -> LoadResult:
        """Several runs of the same thing as one: requests pooled, latencies averaged."""
        n = len(results)
        return LoadResult(
            requests=sum(r.requests for r in results),
            seconds=sum(r.seconds for r in results),
            status_errors=sum(r.status_errors for r in results),
            socket_errors=sum(r.socket_errors for r in results),
            p50_ms=sum(r.p50_ms for r in results) / n,
            p90_ms=sum(r.p90_ms for r in results) / n,
            p99_ms=sum(r.p99_ms for r in results) / n,
            max_ms=max(r.max_ms for r in results),
            mean_ms=sum(r.mean_ms for r in results) / n,
        )


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit(WRK_INSTALL_HINT)
    return path


def run_wrk(
    url: str,
    request: Request,
    tokens: Path,
    *,
    seconds: float,
    connections: int,
    mean_delay_ms: float = 0.0,
    threads: int = 1,
) -> LoadResult:
    """One bounded wrk run against `url` (loopback only); raises if wrk fails."""
    if not url.startswith(("http://127.0.0.1:", "https://127.0.0.1:")):
        raise ValueError("the benchmark only loads servers on 127.0.0.1")
    command = [
        wrk_path(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "-s",
        str(SCRIPT),
        url,
        "--",
        str(tokens),
        request.method,
        request.path,
        request.body,
        f"{mean_delay_ms:.3f}",
    ]
    done = subprocess.run(  # noqa: S603 - wrk from PATH, arguments built here
        command, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    for line in done.stdout.splitlines():
        if line.startswith("BENCH "):
            data = json.loads(line[len("BENCH ") :])
            break
    else:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return LoadResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        status_errors=data["status_errors"],
        socket_errors=sum(
            data[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts")
        ),
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        mean_ms=data["mean_us"] / 1000,
    )
