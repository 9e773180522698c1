"""A PostgreSQL for the Cluster edition's tests: the machine's on 127.0.0.1:5432 when it answers (each test
gets a database of its own there), else a private one (initdb + pg_ctl on a free port, trust auth).

``NUVIOT_TEST_OWN_POSTGRES=1`` forces the private one. A test that stops PostgreSQL uses ``Private``
directly, never the machine's. As root the private cluster belongs to the ``postgres`` user (``initdb``
refuses root). Kept small and separate so that it merges beside a fuller helper (tests/support/databases.py).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

from tests.support.net import free_port


def answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    path = found[0] if found else shutil.which(name)
    if path is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (make test installs Debian's postgresql)")
    return path


class Private:
    """A private PostgreSQL cluster; ``stop()`` then ``start()`` keep its port and data (fault tests)."""

    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="nuviot-cluster-pg-"))
        self.data = self.workdir / "pgdata"
        self._as: list[str] = []
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "postgres", "--"]
            pw = pwd.getpwnam("postgres")
            os.chown(self.workdir, pw.pw_uid, pw.pw_gid)
        self._run(pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-sync")
        self.start()

    def _run(self, *args: str) -> None:
        done = subprocess.run([*self._as, *args], capture_output=True, timeout=120, cwd=self.workdir, check=False)
        if done.returncode:
            raise RuntimeError(f"{Path(args[0]).name} failed: {(done.stdout + done.stderr).decode()[-2000:]}")

    def start(self) -> None:
        opts = (f"-c listen_addresses={self.host} -c port={self.port} -c unix_socket_directories={self.workdir} "
                "-c fsync=off -c max_connections=100")
        self._run(pg_bin("pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.workdir / "pg.log"), "-w",
                  "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def close(self) -> None:
        try:
            self.stop()
        except RuntimeError:
            pass
        shutil.rmtree(self.workdir, ignore_errors=True)


class Server:
    """Where the tests' databases are made: ``create()`` a fresh database, ``drop()`` it after."""

    def __init__(self, host: str, port: int, private: Private | None = None) -> None:
        self.host = host
        self.port = port
        self.private = private

    def url(self, database: str) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def _psql(self, sql: str) -> None:
        subprocess.run(["psql", "-h", self.host, "-p", str(self.port), "-U", "postgres", "-d", "postgres",
                        "-v", "ON_ERROR_STOP=1", "-qc", sql], check=True, capture_output=True, timeout=60)

    def create(self) -> str:
        name = f"nuviot_test_{uuid.uuid4().hex[:12]}"
        self._psql(f"CREATE DATABASE {name}")
        return name

    def drop(self, name: str) -> None:
        self._psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def find_or_start() -> Server:
    if os.environ.get("NUVIOT_TEST_OWN_POSTGRES") != "1" and answers("127.0.0.1", 5432):
        return Server("127.0.0.1", 5432)
    private = Private()
    return Server(private.host, private.port, private)
