"""Where a worker's CPU goes under load: py-spy on one exchanger worker while wrk runs.

    python -m bench.profile --scenario secret --policies 10 --seconds 15

Starts the same fakes and token pool as `python -m bench`, one `exchanger serve`
worker, loads it with wrk and samples it with `py-spy record` (needs ptrace: run
as root or with CAP_SYS_PTRACE). Prints the functions with the most samples,
on their own (self) and with their callees (total), and the same by package.
`--raw FILE` keeps py-spy's collapsed stacks (flame-graph input).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench.load import run_wrk
from bench.run import SCENARIOS
from bench.servers import start_exchanger
from bench.workload import workload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--scenario", default="secret", choices=[s.key for s in SCENARIOS])
    parser.add_argument("--policies", type=int, default=10)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--pool", type=int, default=10_000)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--raw", type=Path, help="also write py-spy's collapsed stacks here")
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    scenario = next(s for s in SCENARIOS if s.key == args.scenario)
    with tempfile.TemporaryDirectory(prefix="exchanger-profile-") as tmp:
        directory = Path(tmp)
        with workload(directory, args.pool) as work:
            server = start_exchanger(
                directory, work.config(args.policies), 1, work.ca.ca_file, f"p{args.policies}"
            )
            tokens = work.bad_tokens if scenario.bad_tokens else work.tokens
            try:
                run_wrk(server.url, scenario.request, tokens, seconds=3, connections=8)
                raw = directory / "stacks.txt"
                spy = subprocess.Popen(  # noqa: S603 - py-spy, arguments built here
                    [
                        py_spy, "record", "--pid", str(server.process.pid), "--rate",
                        str(args.rate), "--duration", str(args.seconds), "--format", "raw",
                        "--output", str(raw),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )  # fmt: skip
                cpu_before = (_cpu_seconds(server.process.pid), _cpu_seconds(os.getpid()))
                result = run_wrk(
                    server.url,
                    scenario.request,
                    tokens,
                    seconds=args.seconds,
                    connections=args.connections,
                )
                gateway_cpu = _cpu_seconds(server.process.pid) - cpu_before[0]
                fakes_cpu = _cpu_seconds(os.getpid()) - cpu_before[1]
                spy.wait(timeout=args.seconds + 60)
            finally:
                server.stop()
            print(
                f"{scenario.title}, {args.policies} policies: {result.rps:,.0f} req/s, "
                f"p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms; CPU busy: gateway "
                f"{100 * gateway_cpu / result.seconds:.0f}% (py-spy included), fakes "
                f"{100 * fakes_cpu / result.seconds:.0f}%; gateway CPU per request "
                f"{1e6 * gateway_cpu / max(1, result.requests):.0f} µs"
            )
            text = raw.read_text()
            if args.raw:
                args.raw.write_text(text)
            print(breakdown(text, 1e6 * gateway_cpu / max(1, result.requests)))
            print()
            print(summarize(text, args.top))
    return 0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


#: Where a request's CPU goes: each sample counts for the first entry whose function
#: (suffix of the name; empty: any) in a file (path fragment) is on its stack.
BREAKDOWN = (
    ("RSA signature check (cryptography, from verify.py)", "check", "exchanger/verify.py"),
    ("rest of token verification (verify.py, jwks.py)", "Verifier.verify", "exchanger/verify"),
    ("policy decision (policy.py, policy_index.py)", "Engine.decide", "exchanger/policy.py"),
    ("audit line (audit.py, logging, json)", "record", "exchanger/audit.py"),
    ("rate limits (limits.py)", "", "exchanger/limits.py"),
    ("metrics (prometheus_client, called in app.py)", "", "prometheus_client/"),
    ("`request.url.query` (app.py; builds a URL object)", "HTTPConnection.url", "starlette/"),
    ("request id (app.py; uuid4)", "_request_id", "exchanger/app.py"),
    ("reading the body (app.py _read_body)", "_read_body", "exchanger/app.py"),
    ("rest of the exchange in app.py (handler, response object)", "exchange", "exchanger/app"),
    (
        "sending the response (Starlette Response, uvicorn writes)",
        "Response.__call__",
        "starlette/",
    ),
    ("HTTP parsing (uvicorn httptools protocol)", "data_received", "uvicorn/"),
    ("Starlette + uvicorn dispatch, middleware, event loop", "", ""),
)


def breakdown(collapsed: str, cpu_us: float) -> str:
    """Samples (and µs per request) per BREAKDOWN entry, each sample counted once."""
    counts = dict.fromkeys([label for label, _, _ in BREAKDOWN], 0)
    samples = 0
    for frames, count in _stacks(collapsed):
        samples += count
        for label, function, where in BREAKDOWN:
            if any(_frame_is(f, function, where) for f in frames):
                counts[label] += count
                break
    lines = ["share   µs/req  where the CPU goes"]
    for label, count in counts.items():
        share = count / max(1, samples)
        lines.append(f"{100 * share:5.1f}  {share * cpu_us:7.0f}  {label}")
    return "\n".join(lines)


def _stacks(collapsed: str) -> Iterator[tuple[list[str], int]]:
    """py-spy's collapsed output: each stack's frames (outermost first) and sample count."""
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if stack:
            yield stack.split(";"), int(count_text)


def _frame_is(frame: str, function: str, where: str) -> bool:
    name, _, location = frame.partition(" (")
    return where in location and (not function or name.endswith(function))


def summarize(collapsed: str, top: int) -> str:
    """Self and total samples per function and per package from py-spy's raw output."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    package: collections.Counter[str] = collections.Counter()
    samples = 0
    for frames, count in _stacks(collapsed):
        samples += count
        own[frames[-1]] += count
        package[_package(frames[-1])] += count
        for frame in set(frames):
            total[frame] += count
    lines = [f"{samples} samples", "", "self %  total %  function"]
    for frame, count in own.most_common(top):
        lines.append(f"{100 * count / samples:6.1f} {100 * total[frame] / samples:7.1f}  {frame}")
    lines += ["", "total %  function (top by total, exchanger only)"]
    mine = [
        (f, c) for f, c in total.most_common() if "exchanger/" in f and "site-packages" not in f
    ]
    for frame, count in mine[:top]:
        lines.append(f"{100 * count / samples:7.1f}  {frame}")
    lines += ["", "self %  package"]
    for name, count in package.most_common(25):
        lines.append(f"{100 * count / samples:6.1f}  {name}")
    return "\n".join(lines)


def _package(frame: str) -> str:
    """`starlette`, `exchanger/verify.py`, `<stdlib> json`… from `func (file:line)`."""
    path = frame.rpartition("(")[2].rstrip(")").rpartition(":")[0]
    if "site-packages/" in path:
        return path.split("site-packages/")[1].split("/")[0]
    if "/exchanger/" in path:
        return "exchanger/" + path.split("/exchanger/")[-1]
    if "/lib/python3" in path:
        rest = path.split("/lib/python3")[1].split("/", 1)[-1]
        return "<stdlib> " + rest.split("/")[0].removesuffix(".py")
    return path or frame


if __name__ == "__main__":
    raise SystemExit(main())
