"""A RabbitMQ for the tests: the one on 127.0.0.1:5672 when it answers, else one of our own, else none.

``find_or_start`` returns ``None`` (the caller skips, which fails the run: see tests/conftest.py) when no
broker answers and ``rabbitmq-server`` is not installed (``make test`` installs it). Our own node runs in a
temporary directory on free ports (node, distribution and epmd ports) with its own node name and cookie,
so it does not disturb a system RabbitMQ. ``NUVIOT_TEST_OWN_RABBIT=1`` starts our own even when
127.0.0.1:5672 answers. ``close_connection(name)`` closes a
client connection from the server side with ``rabbitmqctl`` (no management plugin needed).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

from tests.support.net import free_port

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
                 env: dict[str, str] | None = None, ctl: str | None = None, epmd_port: int | None = None) -> None:
        self.host = host
        self.port = port
        self.user = "guest"
        self.password = "guest"
        self.node = node  # None: the default node of this machine
        self.own = proc is not None
        self._proc = proc
        self._env = env
        self._ctl_path = ctl or shutil.which("rabbitmqctl")
        self._epmd_port = epmd_port

    def _ctl(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        ctl = self._ctl_path
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
        """Stop our own node and its epmd (never the machine's: ``own`` is False for that one)."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired, RuntimeError):
                self._ctl("stop", timeout=60)
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(timeout=10)
        self._proc = None
        epmd = shutil.which("epmd")
        if self._epmd_port is not None and epmd is not None:
            subprocess.run([epmd, "-port", str(self._epmd_port), "-kill"], capture_output=True, timeout=10,
                           check=False)


def _server_script() -> tuple[str, str | None]:
    """rabbitmq-server and rabbitmqctl to run as the current user.

    Debian's ``/usr/sbin/rabbitmq-server`` is a wrapper that, as root, re-runs the real script as the user
    ``rabbitmq`` (``su``), who cannot write our temporary directory: the node stopped at boot with
    ``failed_to_create_feature_flags_file_directory`` (stderr went nowhere, so the tests only saw "did not
    come up in 90 s"); as another user the wrapper refuses to run. The real scripts are beside it in
    ``/usr/lib/rabbitmq/bin``; elsewhere (upstream's generic package) ``rabbitmq-server`` is the real one.
    """
    real = Path("/usr/lib/rabbitmq/bin")
    if (real / "rabbitmq-server").exists():
        return str(real / "rabbitmq-server"), str(real / "rabbitmqctl")
    server = shutil.which("rabbitmq-server") or "/usr/sbin/rabbitmq-server"
    return server, shutil.which("rabbitmqctl")


def start_own(workdir: Path, timeout: float = 90.0) -> Rabbit:
    """A node of our own: its own name, ports, epmd, cookie and files, all under ``workdir``.

    - ``HOME=workdir``: the node writes its Erlang cookie there and ``rabbitmqctl`` (same env) reads it.
    - ``RABBITMQ_CONF_ENV_FILE``: an empty file instead of ``/etc/rabbitmq/rabbitmq-env.conf``, whose
      ``NODENAME`` and ``ERL_FLAGS`` belong to the machine's node.
    - ``ERL_EPMD_PORT``: an epmd of our own on a free port (the machine's epmd on 4369 stays untouched);
      it is killed in ``stop()``.
    - node name ``nuviot<random>@localhost`` (short names; ``localhost`` always resolves).
    """
    server, ctl = _server_script()
    port, dist, epmd = free_port(), free_port(), free_port()
    node = f"nuviot{uuid.uuid4().hex[:8]}@localhost"
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "enabled_plugins").write_text("[].\n")
    (workdir / "rabbitmq-env.conf").write_text("")
    env = {
        **os.environ,
        "HOME": str(workdir),
        "RABBITMQ_CONF_ENV_FILE": str(workdir / "rabbitmq-env.conf"),
        "RABBITMQ_NODENAME": node,
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist),
        "ERL_EPMD_PORT": str(epmd),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "RABBITMQ_MNESIA_BASE": str(workdir / "mnesia"),
        "RABBITMQ_LOG_BASE": str(workdir / "log"),
        "RABBITMQ_PID_FILE": str(workdir / "rabbit.pid"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(workdir / "enabled_plugins"),
        "RABBITMQ_CONFIG_FILE": str(workdir / "rabbitmq"),
    }
    out = workdir / "rabbitmq-server.out"
    with out.open("wb") as sink:
        proc = subprocess.Popen([server], env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=workdir)
    rabbit = Rabbit("127.0.0.1", port, node=node, proc=proc, env=env, ctl=ctl, epmd_port=epmd)
    deadline = time.monotonic() + timeout
    while not answers_amqp("127.0.0.1", port, timeout=0.5):
        if proc.poll() is not None or time.monotonic() > deadline:
            rabbit.stop()
            tail = out.read_text(errors="replace")[-2000:]
            why = f"exited with {proc.returncode}" if proc.returncode is not None else f"did not answer in {timeout:g} s"
            raise RuntimeError(f"rabbitmq-server {why}; its output ends:\n{tail}")
        time.sleep(0.2)
    return rabbit


def find_or_start(workdir: Path) -> Rabbit | None:
    if os.environ.get("NUVIOT_TEST_OWN_RABBIT") != "1" and answers_amqp("127.0.0.1", 5672):
        return Rabbit("127.0.0.1", 5672)
    if shutil.which("rabbitmq-server") is None and not os.path.exists("/usr/sbin/rabbitmq-server"):
        return None
    return start_own(workdir)
