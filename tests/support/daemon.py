"""Run the real daemon (``python -m runtime run``) as a subprocess for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.net import free_port

REPO = Path(__file__).resolve().parents[2]


def request_json(method: str, url: str, body: Any = None, token: str | None = None,
                 timeout: float = 5.0) -> tuple[int, Any]:
    """One HTTP call with a JSON body; returns (status, the JSON answer, or its text if not JSON)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw) if raw else None
        except ValueError:
            return exc.code, raw.decode(errors="replace")


class Daemon:
    def __init__(self, data_dir: Path, *args: str, env: dict[str, str] | None = None,
                 admin_port: int | None = None, new_session: bool = False) -> None:
        """``new_session``: the daemon leads a process group of its own (its pid is the group's id), which a
        test can signal as a terminal's Ctrl-C does (``os.killpg(pid, SIGINT)``) without signalling itself."""
        self.data_dir = data_dir
        self.new_session = new_session
        self.admin_port = admin_port or free_port()
        self.token = "test-token-" + os.urandom(6).hex()
        self.args = list(args)
        self.env = {
            **os.environ,
            "NUVIOT_ADMIN_TOKEN": self.token,
            "NUVIOT_LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.lines: list[str] = []
        self._reader: threading.Thread | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def start(self) -> None:
        cmd = [sys.executable, "-m", "runtime", "run", "--data-dir", str(self.data_dir),
               "--admin-host", "127.0.0.1", "--admin-port", str(self.admin_port), *self.args]
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=self.new_session)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def json_lines(self) -> list[dict[str, Any]]:
        out = []
        for line in list(self.lines):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def request(self, method: str, path: str, body: Any = None, token: str | None = "default",
                timeout: float = 5.0) -> tuple[int, Any]:
        if token == "default":
            token = self.token
        return request_json(method, self.base + path, body, token, timeout)

    def wait_state(self, *states: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n" + "\n".join(self.lines[-40:]))
            try:
                code, last = self.request("GET", "/status", timeout=2)
                if code == 200 and last["state"] in states:
                    return last
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"state not in {states} after {timeout}s; last status {last}\n"
                             + "\n".join(self.lines[-40:]))

    def terminate(self, timeout: float = 10.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def __enter__(self) -> Daemon:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
                # the test then fails on the exit code; these lines say where the stop hung
                print("daemon did not exit within 10 s of SIGTERM; its last lines:\n" + "\n".join(self.lines[-30:]),
                      file=sys.stderr)
        if self._reader is not None:
            self._reader.join(timeout=5)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
