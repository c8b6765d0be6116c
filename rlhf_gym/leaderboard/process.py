"""Run ``rlhf-gym leaderboard serve`` as a child process, for scripted sessions and demos."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_subprocess(db: str | Path, log_path: str | Path, extra_args: Sequence[str] = (),
                     timeout: float = 120) -> Iterator[tuple[str, int, subprocess.Popen]]:
    """Start the server on a free 127.0.0.1 port, wait until it answers, yield ``(url, port,
    process)``, and stop it on exit. A server that exits or never answers raises with the tail of
    its log, which is where the reason is."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = Path(log_path)
    with log_path.open("w") as log:
        server = subprocess.Popen([sys.executable, "-m", "rlhf_gym.cli", "leaderboard", "serve", "--db", str(db),
                                   "--port", str(port), *extra_args], stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    urllib.request.urlopen(url + "/api/leaderboard", timeout=2).read()
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"leaderboard server did not start:\n{log_path.read_text()[-2000:]}")
                    time.sleep(0.3)
            yield url, port, server
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
