"""Starting and stopping the server processes the suite runs itself (redis-server, mosquitto) on free ports."""

from __future__ import annotations

import subprocess

from tests.support.net import wait_for_port


def start_server(argv: list[str], host: str, port: int) -> subprocess.Popen[bytes]:
    """Starts ``argv`` (output discarded) and returns once something listens on ``host:port`` (10 s at most)."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(host, port, timeout=10)
    return proc


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 5 s."""
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
