"""A real forward proxy on loopback: Debian's tinyproxy, logging every CONNECT it tunnels."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.servers import loopback_socket


@dataclass
class Proxy:
    url: str
    log: Path

    def connects(self) -> list[str]:
        """The `host:port` of every CONNECT tunnel opened so far, oldest first."""
        text = self.log.read_text(encoding="utf-8", errors="replace")
        # "CONNECT   <date> [pid]: Request (file descriptor 5): CONNECT 127.0.0.1:9 HTTP/1.1"
        marker = "): CONNECT "
        return [line.split(marker, 1)[1].split()[0] for line in text.splitlines() if marker in line]


@contextmanager
def run_tinyproxy(directory: Path) -> Iterator[Proxy]:
    binary = shutil.which("tinyproxy")
    if binary is None:
        raise RuntimeError("tinyproxy is missing: scripts/install-test-deps.sh installs it")
    sock = loopback_socket()
    port = sock.getsockname()[1]
    sock.close()
    log = directory / "tinyproxy.log"
    config = directory / "tinyproxy.conf"
    config.write_text(
        f'Port {port}\nListen 127.0.0.1\nTimeout 30\nLogFile "{log}"\nLogLevel Connect\n'
        f'PidFile "{directory / "tinyproxy.pid"}"\nMaxClients 50\nAllow 127.0.0.1\n',
        encoding="utf-8",
    )
    process = subprocess.Popen(
        [binary, "-d", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_listening(port, process)
        yield Proxy(url=f"http://127.0.0.1:{port}", log=log)
    finally:
        process.terminate()
        process.wait(timeout=10)


def _wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("tinyproxy exited at start")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("tinyproxy did not start listening")
