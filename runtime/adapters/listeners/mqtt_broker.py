"""Built-in MQTT broker listener (``mqttlistener``): devices connect to the runtime itself on ``ListenOnPort``.

The broker is a **managed mosquitto child process** (chosen by measurement over the embedded amqtt
library: about 5x the messages/s into the Intake and it does not run in our event loop; see
docs/listeners.md). The runtime then subscribes to ``#`` (or the listener's ``MqttSubscriptions``) on its
own broker through the ordinary ``MqttClientListener``, which brings acks after commit, refusal handling,
reconnects and replies with it.

Decisions:

- **Files.** ``workdir`` (one per listener, under the data directory) holds ``mosquitto.conf``, the
  password file and mosquitto's persistence file. Persistence is on: messages the broker accepted but the
  runtime had not recorded survive a restart of the listener (the runtime's session is persistent).
- **Credentials.** Not anonymous: one shared ``UserName``/``Password`` for devices (NuvIoT's model), written
  as a mosquitto 2 password file (PBKDF2-SHA512, ``$7$``, made here: no ``mosquitto_passwd`` needed), plus
  an internal user with a random password for the runtime's own client. Anonymous: ``allow_anonymous true``.
  No TLS (NuvIoT's MQTT Listener has none either).
- **Device QoS 1.** The broker sends PUBACK to a device when it has the message; the runtime acks the
  broker only after the record is committed, so what the broker holds is redelivered to the runtime.
- **Bind failures.** mosquitto binds the port itself; when it exits during start (``Address already in
  use``, a privileged port, ...) its own message goes into ``ListenerBindError`` naming the port. Port 0
  picks a free port; ``status()["port"]`` reports the one in use. mosquitto missing is a
  ``ListenerBindError`` too (FailedToStart): the container image must install the ``mosquitto`` package.
- **No orphans.** The child is started with ``prctl(PR_SET_PDEATHSIG, SIGTERM)`` (Linux) in ``preexec_fn``:
  if the runtime dies, even by SIGKILL, the kernel sends mosquitto SIGTERM. The signal follows the
  *thread* that forked, so the child is spawned from the event-loop thread (never from a worker thread).
  It also gets its own session (``start_new_session``): a Ctrl-C on the terminal reaches the runtime,
  which then stops the broker in order, instead of killing the broker first. ``stop()`` sends SIGTERM,
  waits ``stop_timeout`` then SIGKILLs, and reaps the child.
- **Running as root** the broker keeps the runtime's user (``user`` is set to it) instead of mosquitto's
  default switch to user ``mosquitto``, so it can read the files we wrote.
- **Crash.** If mosquitto exits on its own, the listener goes ``failed`` (``lastError`` has its last
  output line) and restarts it with full-jitter backoff; the internal client reconnects by itself.
- **States**: ``listening`` (broker up, runtime subscribed), ``connecting`` (broker up, runtime client not
  yet connected), ``failed`` (broker down, restarting), ``stopped``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import functools
import getpass
import hashlib
import os
import secrets
import shutil
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import structlog
from pydantic import SecretStr

from runtime.adapters.listeners.base import ListenerBase
from runtime.adapters.listeners.mqtt import MqttClientListener
from runtime.core.backoff import Backoff
from runtime.core.errors import ListenerBindError
from runtime.core.listener_state import ListenerState
from runtime.core.solution.enums import QoS
from runtime.core.solution.model import Listener, MqttSubscription
from runtime.services.dataplane import Intake

log = structlog.get_logger(__name__)

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None  # loaded before fork
_BIND_HINTS = ("Address already in use", "Cannot assign requested address", "Permission denied", "Error")


def _die_with_parent(parent_pid: int) -> None:  # runs in the child between fork and exec
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def password_line(user: str, password: str) -> str:
    """A mosquitto 2 password file line (``$7$``: PBKDF2-SHA512, 101 iterations, 12-byte salt)."""
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101)
    return f"{user}:$7$101${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)), None
    )


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class MqttBrokerListener(ListenerBase):
    type = "mqttlistener"

    def __init__(
        self,
        config: Listener,
        *,
        instance_id: str,
        workdir: Path,
        bind_host: str | None = None,
        mosquitto: str | None = None,
        start_timeout: float = 10.0,
        stop_timeout: float = 5.0,
        max_inflight: int = 1000,
        max_queued: int = 100_000,
        restart_backoff_cap: float = 30.0,
        **client_options: Any,
    ) -> None:
        if config.listen_on_port is None:
            raise ValueError(f"mqttlistener listener {config.key}: listenOnPort is required")
        if not config.anonymous and (not config.user_name or config.password is None):
            raise ValueError(f"mqttlistener listener {config.key}: userName and password are required "
                             "unless anonymous")
        self.key = config.key
        self._config = config
        self._instance_id = instance_id
        self._workdir = Path(workdir)
        self._bind_host = bind_host  # None: every interface (IPv4 and IPv6)
        self._client_host = "127.0.0.1" if bind_host in (None, "", "0.0.0.0", "::") else bind_host
        self._binary = mosquitto
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._max_inflight = max_inflight
        self._max_queued = max_queued
        self._client_options = client_options
        self._backoff = Backoff(base=client_options.get("backoff_base", 0.2), cap=restart_backoff_cap)
        self._configured_port = config.listen_on_port
        self.port: int | None = config.listen_on_port or None
        self._proc: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._client: MqttClientListener | None = None
        self._stopping = False
        self._broker_up = False
        self.last_error: str | None = None
        self.restarts = 0

    # ------------------------------------------------------------------ Listener protocol
    async def start(self, intake: Intake) -> None:
        if self._supervisor is not None:
            raise RuntimeError(f"listener {self.key} is already started")
        binary = self._binary or find_mosquitto()
        if binary is None:
            raise ListenerBindError(self.key, self._configured_port,
                                    "mosquitto is not installed (the built-in MQTT listener runs it)")
        self._binary = binary
        if not self.port:  # port 0: a free one, kept for later starts (resume) so devices find it again
            self.port = _free_port(self._client_host)
        self._stopping = False
        internal_user, internal_password = f"nuviot-runtime-{secrets.token_hex(4)}", secrets.token_urlsafe(24)
        self._write_files(internal_user, internal_password)
        await self._spawn()  # raises ListenerBindError
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise(),
                                                                  name=f"listener:{self.key}:broker")
        self._client = MqttClientListener(self._client_config(internal_user, internal_password),
                                          instance_id=self._instance_id, **self._client_options)
        try:
            await self._client.start(intake)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        self._stopping = True
        try:
            if self._client is not None:  # kept afterwards: status() still shows its counters
                await self._client.stop()
        finally:
            await self._terminate()
            supervisor, self._supervisor = self._supervisor, None
            if supervisor is not None:
                supervisor.cancel()
                await asyncio.gather(supervisor, return_exceptions=True)
            self._broker_up = False
        log.info("listener_stopped", listener=self.key, port=self.port)

    @property
    def state(self) -> ListenerState:
        """Derived: the broker process and the internal client's connection to it."""
        if self._supervisor is None:
            return ListenerState.STOPPED
        if not self._broker_up:
            return ListenerState.FAILED
        client = self._client.state if self._client is not None else ListenerState.STOPPED
        return ListenerState.LISTENING if client is ListenerState.CONNECTED else ListenerState.CONNECTING

    def status(self) -> dict[str, Any]:
        inner = self._client.status() if self._client is not None else {}
        counters = {k: v for k, v in inner.items() if type(v) is int and k != "port"}
        return {
            "key": self.key,
            "type": self.type,
            "state": self.state,
            "port": self.port,
            "host": self._bind_host or "*",
            "broker": "mosquitto",
            "pid": self._proc.pid if self._proc is not None and self._proc.returncode is None else None,
            "restarts": self.restarts,
            "lastError": self.last_error or inner.get("lastError"),
            **counters,
        }

    # ------------------------------------------------------------------ broker process
    def _write_files(self, internal_user: str, internal_password: str) -> None:
        wd = self._workdir
        wd.mkdir(parents=True, exist_ok=True, mode=0o700)
        cfg = self._config
        lines = [
            f"listener {self.port}" + (f" {self._bind_host}" if self._bind_host else ""),
            f"user {getpass.getuser()}",
            "persistence true",
            f"persistence_location {wd}/",
            "autosave_interval 60",
            f"max_inflight_messages {self._max_inflight}",
            f"max_queued_messages {self._max_queued}",
            "log_dest stderr",  # unbuffered (stdout is block-buffered on a pipe)
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages false",
            "log_timestamp false",
        ]
        if cfg.anonymous:
            lines.append("allow_anonymous true")
        else:
            pw_file = wd / "passwords"
            users = [password_line(cfg.user_name or "", cfg.password.get_secret_value() if cfg.password else ""),
                     password_line(internal_user, internal_password)]
            fd = os.open(pw_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write("\n".join(users) + "\n")
            lines += ["allow_anonymous false", f"password_file {pw_file}"]
        (wd / "mosquitto.conf").write_text("\n".join(lines) + "\n")

    def _client_config(self, internal_user: str, internal_password: str) -> Listener:
        cfg = self._config
        update: dict[str, Any] = {
            "listener_type": "mqttclient",
            "host_name": self._client_host,
            "connect_to_port": self.port,
            "secure_connection": False,
            "client_id": f"{self._instance_id}-{self.key}",
        }
        if not cfg.mqtt_subscriptions:
            update["mqtt_subscriptions"] = (MqttSubscription(topic="#", qos=QoS.QOS1),)
        if not cfg.anonymous:
            update |= {"user_name": internal_user, "password": SecretStr(internal_password)}
        return cfg.model_copy(update=update)

    async def _spawn(self) -> None:
        """Start mosquitto and return once it runs; ``ListenerBindError`` when it exits or hangs instead."""
        assert self._binary is not None  # start() found it
        proc = await asyncio.create_subprocess_exec(
            self._binary, "-c", str(self._workdir / "mosquitto.conf"),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            preexec_fn=functools.partial(_die_with_parent, os.getpid()),
        )
        self._proc = proc
        assert proc.stderr is not None
        seen: list[str] = []
        try:
            async with asyncio.timeout(self._start_timeout):
                while True:
                    raw = await proc.stderr.readline()
                    if not raw:
                        await proc.wait()
                        break
                    line = raw.decode(errors="replace").strip()
                    seen.append(line)
                    if line.endswith(" running"):  # "mosquitto version 2.0.x running"
                        self._broker_up = True
                        log.info("broker_started", listener=self.key, port=self.port, pid=proc.pid)
                        return
        except TimeoutError:
            await self._terminate()
            raise ListenerBindError(self.key, self.port,
                                    f"mosquitto did not start within {self._start_timeout}s") from None
        self._proc = None
        errors = [ln for ln in seen if any(h in ln for h in _BIND_HINTS)] or seen or [f"exit {proc.returncode}"]
        raise ListenerBindError(self.key, self.port, f"mosquitto: {errors[-1]}")

    async def _terminate(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout=self._stop_timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        self._proc = None

    async def _supervise(self) -> None:
        """Forward the broker's output to the log; restart it when it exits on its own."""
        while True:
            proc = self._proc
            if proc is None or proc.stderr is None:
                return
            last = ""
            while raw := await proc.stderr.readline():
                last = raw.decode(errors="replace").strip()
                level = "warning" if any(w in last for w in ("Error", "Warning")) else "debug"
                getattr(log, level)("broker_output", listener=self.key, line=last)
            await proc.wait()
            if self._stopping:
                return
            self._broker_up = False
            self.last_error = f"mosquitto exited with {proc.returncode}: {last}".rstrip(": ")
            log.error("broker_exited", listener=self.key, port=self.port, code=proc.returncode, output=last)
            while not self._stopping:
                await asyncio.sleep(self._backoff.next_delay())
                try:
                    await self._spawn()
                except ListenerBindError as exc:
                    self.last_error = exc.reason
                    log.error("broker_restart_failed", listener=self.key, port=self.port, error=exc.reason)
                    continue
                self.restarts += 1
                self.last_error = None
                self._backoff.reset()
                break
