"""The servers under test as real processes: start, wait until ready, measure, stop.

Both the bare app and exchanger run under `uvicorn.run` with the same settings
(see `bench.bare.SERVER_SETTINGS`), plain HTTP on 127.0.0.1. exchanger's audit
lines (stdout) go to a file, as a container runtime would take them; the
benchmark counts exchanges from that file, because with several workers each
worker's /metrics only knows its own requests.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    """One server process (uvicorn's supervisor when workers > 1) and its logs."""

    name: str
    url: str
    workers: int
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path
    started: float = field(default_factory=time.monotonic)
    _audit_offset: int = 0

    def worker_pids(self) -> list[int]:
        """The processes that serve requests: uvicorn's spawned workers, or the process."""
        if self.workers == 1:
            return [self.process.pid]
        return [pid for pid in _children(self.process.pid) if "spawn_main" in _cmdline(pid)]

    def rss_mb(self) -> list[float]:
        """Resident memory of each worker, in MB (10^6 bytes)."""
        return [_status_kb(pid, "VmRSS") * 1024 / 1e6 for pid in self.worker_pids()]

    def supervisor_rss_mb(self) -> float:
        """Resident memory of the process started (uvicorn's supervisor with workers > 1)."""
        return _status_kb(self.process.pid, "VmRSS") * 1024 / 1e6

    def wait_ready(self, path: str, timeout: float = 120.0) -> None:
        """Until every worker is up and `path` answered 200 many times in a row."""
        deadline = time.monotonic() + timeout
        streak = 0
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while streak < 20:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited: {self.stderr.read_text()[-2000:]}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name} did not become ready")
                try:
                    ok = client.get(path).status_code == 200
                except httpx.TransportError:
                    ok = False
                ready = ok and len(self.worker_pids()) == self.workers
                streak = streak + 1 if ready else 0
                time.sleep(0.01 if ready else 0.1)

    def metrics(self) -> str:
        """/metrics of whichever worker answers (the whole picture only with one worker)."""
        with httpx.Client(base_url=self.url, timeout=5) as client:
            return client.get("/metrics").text

    def audit_counts(self) -> collections.Counter[tuple[str, int]]:
        """(endpoint, status) of the audit lines written since the last call."""
        counts: collections.Counter[tuple[str, int]] = collections.Counter()
        with self.stdout.open("rb") as out:
            out.seek(self._audit_offset)
            data = out.read()
        end = data.rfind(b"\n") + 1
        self._audit_offset += end
        for line in data[:end].splitlines():
            if line.startswith(b"{"):
                entry = json.loads(line)
                if entry.get("event") == "exchange":
                    counts[(entry["endpoint"], entry["status"])] += 1
        return counts

    def jwks_fetches(self) -> int:
        """JWKS fetches of every worker, from their logs (`exchanger.jwks` logs each one)."""
        text = self.stderr.read_text(errors="replace")
        return text.count("jwks refreshed for ") + text.count("jwks refresh failed for ")

    def stop(self) -> float:
        """SIGTERM, wait; returns the seconds the server lived."""
        lived = time.monotonic() - self.started
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return lived


def start_bare(directory: Path, workers: int, busy_us: float = 0.0) -> Server:
    port = free_port()
    command = [sys.executable, "-m", "bench.bare", "--port", str(port), "--workers", str(workers)]
    name = f"bare-{workers}w"
    if busy_us:
        command += ["--busy-us", f"{busy_us:.0f}"]
        name = f"bare-busy{busy_us:.0f}us-{workers}w"
    server = _spawn(name, command, port=port, workers=workers, directory=directory, env={})
    server.wait_ready("/healthz")
    return server


def start_exchanger(
    directory: Path, config: Path, workers: int, ca_file: Path, label: str
) -> Server:
    port = free_port()
    command = [
        sys.executable, "-m", "exchanger", "serve", "--config", str(config),
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip
    env = {"SSL_CERT_FILE": str(ca_file)}
    server = _spawn(
        f"exchanger-{label}-{workers}w",
        command,
        port=port,
        workers=workers,
        directory=directory,
        env=env,
    )
    server.wait_ready("/readyz")
    return server


def _spawn(
    name: str,
    command: list[str],
    *,
    port: int,
    workers: int,
    directory: Path,
    env: dict[str, str],
) -> Server:
    stdout, stderr = directory / f"{name}.out", directory / f"{name}.err"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            command,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},  # as in the Dockerfile
            stdout=out,
            stderr=err,
        )
    return Server(name, f"http://127.0.0.1:{port}", workers, process, stdout, stderr)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return int(value.split()[0])
    raise KeyError(key)
