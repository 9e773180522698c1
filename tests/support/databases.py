"""A private PostgreSQL and a private redis-server on free loopback ports, started by the tests.

The machine's own servers (5432, 6379) are shared with others and are never stopped; the outage tests stop
and restart these private ones. PostgreSQL: Debian's ``initdb`` + ``pg_ctl`` (``/usr/lib/postgresql/*/bin``)
in a temporary directory, trust authentication on 127.0.0.1; ``initdb`` refuses root, so as root the
cluster belongs to the ``postgres`` user (``runuser``). ``make test`` installs both packages when missing.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.support.net import free_port, wait_for_port
from tests.support.process import start_server, stop_server


def pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    if found:
        return found[0]
    path = shutil.which(name)
    if path:
        return path
    raise RuntimeError("PostgreSQL is not installed: run `make test`, which installs Debian's postgresql")


class Postgres:
    """One cluster; ``stop()`` and ``start()`` again keep the port and the data (outage tests)."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.workdir = workdir
        self.data = workdir / "pgdata"
        self.user = "postgres"
        self.database = "postgres"
        self._run_as: list[str] = []
        if os.geteuid() == 0:
            self._run_as = ["runuser", "-u", "postgres", "--"]
        self._started = False
        self._own_dir = False

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"

    def _run(self, *args: str, timeout: float = 60) -> None:
        done = subprocess.run([*self._run_as, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=timeout, cwd=self.workdir)
        if done.returncode:
            raise RuntimeError(f"{' '.join(args[:1])} failed ({done.returncode}): {done.stdout.decode()[-2000:]}")

    def init(self) -> None:
        if self._run_as:
            # A directory of its own directly under the temp dir: pytest resets its base directory to 0700
            # whenever another session starts, which would lock the postgres user out of a tmp_path.
            self.workdir = Path(tempfile.mkdtemp(prefix="nuviot-test-pg-"))
            self.data = self.workdir / "pgdata"
            self._own_dir = True
            pw = pwd.getpwnam("postgres")
            os.chown(self.workdir, pw.pw_uid, pw.pw_gid)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._run(pg_bin("initdb"), "-D", str(self.data), "-U", self.user, "--auth=trust", "-E", "UTF8",
                  "--no-sync", timeout=120)

    def start(self) -> None:
        if self._started:
            return
        opts = (f"-c listen_addresses={self.host} -c port={self.port} -c unix_socket_directories={self.workdir} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=50")
        self._run(pg_bin("pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.workdir / "pg.log"),
                  "-w", "-t", "60", "start", timeout=90)
        wait_for_port(self.host, self.port, timeout=30)
        self._started = True

    def stop(self) -> None:
        if not self._started:
            return
        self._run(pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop", timeout=90)
        self._started = False

    def __enter__(self) -> Postgres:
        self.init()
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            if self._own_dir:
                shutil.rmtree(self.workdir, ignore_errors=True)


class Redis:
    """One redis-server without persistence; ``stop()`` and ``start()`` keep the port."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.workdir = workdir
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(binary):
            raise RuntimeError("redis-server is not installed: run `make test`, which installs it")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._proc = start_server(
            [binary, "--port", str(self.port), "--bind", self.host, "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--protected-mode", "no"], self.host, self.port)

    def stop(self) -> None:
        if self._proc is None:
            return
        stop_server(self._proc)
        self._proc = None

    def __enter__(self) -> Redis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
