"""A RabbitMQ for the tests: the one on 127.0.0.1:5672 when it answers, else one of our own, else none.

``find_or_start`` returns ``None`` (the caller skips) when no broker answers and ``rabbitmq-server`` is not
installed. Our own node runs in a temporary directory on free ports (node port and distribution port)
with its own node name, so it does not disturb a system RabbitMQ. ``close_connection(name)`` closes a
client connection from the server side with ``rabbitmqctl`` (no management plugin needed).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import uuid
from pathlib import Path

from tests.support.net import free_port, wait_for_port

AMQP_HEADER = b"AMQP\x00\x00\x09\x01"


def answers_amqp(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when something on host:port answers the AMQP 0-9-1 protocol header with a frame."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(AMQP_HEADER)
            return s.recv(1) == b"\x01"  # frame type 1: connection.start
    except OSError:
        return False


class Rabbit:
    def __init__(self, host: str, port: int, node: str | None = None, proc: subprocess.Popen[bytes] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.host = host
        self.port = port
        self.user = "guest"
        self.password = "guest"
        self.node = node  # None: the default node of this machine
        self.own = proc is not None
        self._proc = proc
        self._env = env

    def _ctl(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        ctl = shutil.which("rabbitmqctl")
        if ctl is None:
            raise RuntimeError("rabbitmqctl is not installed")
        cmd = [ctl, *(["-n", self.node] if self.node else []), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=self._env, check=False)

    def connection_pids(self, connection_name: str) -> list[str]:
        out = self._ctl("list_connections", "pid", "client_properties", "-q")
        if out.returncode != 0:
            raise RuntimeError(f"rabbitmqctl list_connections failed: {out.stderr.strip()}")
        # one line per connection: "<node.x.y.z>\t[{...},{\"connection_name\",\"NAME\"},...]"
        wanted = f"{{\"connection_name\",{json.dumps(connection_name)}}}"
        return [line.split("\t", 1)[0] for line in out.stdout.splitlines() if wanted in line]

    def close_connection(self, connection_name: str) -> int:
        """Close every client connection of that name from the server side; returns how many."""
        pids = self.connection_pids(connection_name)
        for pid in pids:
            self._ctl("close_connection", pid, "closed by the test")
        return len(pids)

    def stop(self) -> None:
        if self._proc is None:
            return
        self._ctl("stop", timeout=60)
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._proc = None


def start_own(workdir: Path) -> Rabbit:
    server = shutil.which("rabbitmq-server") or "/usr/sbin/rabbitmq-server"
    port, dist = free_port(), free_port()
    node = f"nuviot{uuid.uuid4().hex[:8]}@localhost"
    (workdir / "enabled_plugins").write_text("[].\n")
    env = {
        **os.environ,
        "RABBITMQ_NODENAME": node,
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist),
        "RABBITMQ_MNESIA_BASE": str(workdir / "mnesia"),
        "RABBITMQ_LOG_BASE": str(workdir / "log"),
        "RABBITMQ_PID_FILE": str(workdir / "rabbit.pid"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(workdir / "enabled_plugins"),
        "RABBITMQ_CONFIG_FILE": str(workdir / "rabbitmq"),
    }
    proc = subprocess.Popen([server], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    rabbit = Rabbit("127.0.0.1", port, node=node, proc=proc, env=env)
    try:
        wait_for_port("127.0.0.1", port, timeout=90)
    except TimeoutError:
        proc.kill()
        proc.wait(timeout=10)
        raise
    return rabbit


def find_or_start(workdir: Path) -> Rabbit | None:
    if os.environ.get("NUVIOT_TEST_OWN_RABBIT") != "1" and answers_amqp("127.0.0.1", 5672):
        return Rabbit("127.0.0.1", 5672)
    if shutil.which("rabbitmq-server") is None and not os.path.exists("/usr/sbin/rabbitmq-server"):
        return None
    return start_own(workdir)
