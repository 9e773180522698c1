"""A real mosquitto broker on a free loopback port, started and stopped by the tests.

Mosquitto 2.x needs an explicit listener and anonymous opt-in. ``max_queued_messages`` is raised because
the default (1000) silently drops QoS1 messages queued for a slow or reconnecting client.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

from tests.support.net import free_port
from tests.support.process import start_server, stop_server


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
    if not found:
        raise RuntimeError("mosquitto is not installed: run `make test`, which installs it")
    return found


class Mosquitto:
    """One broker process. ``stop()`` and ``start()`` again keep the same port (for restart tests)."""

    def __init__(self, workdir: Path, port: int | None = None, persistence: bool = False) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {workdir}/",
            "max_queued_messages 1000000",
            "max_inflight_messages 0",
            "log_dest file " + str(workdir / "mosquitto.log"),
            "log_type error",
            "log_type warning",
        ]
        self.conf.write_text("\n".join(lines) + "\n")
        self._proc: subprocess.Popen[bytes] | None = None
        self._hung = False

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        self._proc = start_server([mosquitto_binary(), "-c", str(self.conf)], self.host, self.port)

    def hang(self) -> None:
        """SIGSTOP: the broker stops answering but its sockets stay open (a hung broker, not a closed one)."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)
        self._hung = True

    def unhang(self) -> None:
        if self._proc is not None and self._hung:
            self._proc.send_signal(signal.SIGCONT)
        self._hung = False

    def stop(self) -> None:
        if self._proc is None:
            return
        self.unhang()  # a stopped process would not see SIGTERM
        stop_server(self._proc)
        self._proc = None

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
