"""What the image tests check on a running container, and how they talk to it."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

from tests.image.harness import Container, Image, proc_ids
from tests.support.daemon import request_json
from tests.support.net import free_port


def request(method: str, url: str, body: Any = None, token: str | None = None,
            timeout: float = 5.0) -> tuple[int, Any]:
    return request_json(method, url, body, token or None, timeout)


class Ports:
    """Free loopback ports for the admin API, the input commands and the listeners (`-e` variables)."""

    def __init__(self, *listeners: str) -> None:
        self.admin = free_port()
        self.commands = free_port()
        self.listeners = {key: free_port() for key in listeners}

    def env(self) -> dict[str, str]:
        env = {"NUVIOT_ADMIN_HOST": "127.0.0.1", "NUVIOT_ADMIN_PORT": str(self.admin),
               "NUVIOT_INPUT_COMMAND_PORT": str(self.commands)}
        if self.listeners:
            env["NUVIOT_LISTENER_PORTS"] = ",".join(f"{k}={p}" for k, p in self.listeners.items())
        return env

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin}"


def wait_ready(c: Container, ports: Ports, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not c.running():
            raise AssertionError(f"the container exited with {c.proc.returncode}:\n{c.output()}")  # type: ignore[union-attr]
        try:
            if request("GET", ports.admin_url + "/ready", timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"/ready never answered 200 within {timeout}s:\n{c.output()}")


def attribute(ports: Ports, token: str, device: str, key: str, expect: object, within: float = 15.0) -> object:
    """The device attribute once it has the expected value (or the last value seen after `within` s)."""
    deadline = time.monotonic() + within
    found = None
    while time.monotonic() < deadline:
        code, body = request("GET", f"{ports.admin_url}/devices/{device}", token=token)
        found = body.get("attributes", {}).get(key) if code == 200 else None
        if found == expect:
            break
        time.sleep(0.1)
    return found


def admin_token(c: Container) -> str:
    return (c.volume / "admin-token").read_text().strip()


def assert_private_data(c: Container, uid: int) -> None:
    """The data directory 0700 and every file in it 0600, all owned by the image's user."""
    top = c.volume.stat()
    assert stat.S_IMODE(top.st_mode) == 0o700, f"{c.volume_target} is {oct(stat.S_IMODE(top.st_mode))}"
    assert top.st_uid == uid
    files = 0
    for dirpath, dirnames, filenames in os.walk(c.volume):
        for name in dirnames:
            mode = stat.S_IMODE(os.lstat(Path(dirpath) / name).st_mode)
            assert mode == 0o700, f"{Path(dirpath, name).relative_to(c.volume)} is a directory {oct(mode)}"
        for name in filenames:
            st = os.lstat(Path(dirpath) / name)
            where = Path(dirpath, name).relative_to(c.volume)
            assert stat.S_IMODE(st.st_mode) == 0o600, f"{where} is {oct(stat.S_IMODE(st.st_mode))}"
            assert st.st_uid == uid, f"{where} is owned by uid {st.st_uid}"
            files += 1
    assert files >= 2, "expected at least runtime.db and admin-token"


def assert_nothing_runs_as_root(c: Container, uid: int, expect: set[str]) -> None:
    procs = c.processes()
    assert expect <= set(procs.values()), f"expected {expect} among {procs}"
    for pid, comm in procs.items():
        uids, gids, caps = proc_ids(pid)
        assert set(uids) == {uid} and 0 not in gids, f"{comm} (pid {pid}) runs as uids {uids} gids {gids}"
        assert caps == 0, f"{comm} (pid {pid}) has capabilities {caps:#x}"


STOP_SECONDS: list[float] = []  # reported in the summary (conftest)


def stops_on_sigterm(c: Container) -> None:
    code, seconds = c.terminate(timeout=10)
    STOP_SECONDS.append(seconds)
    assert code == 0, f"exit {code} after SIGTERM:\n{c.output()}"
    assert seconds < 10, f"took {seconds:.1f}s to stop"


def image_uid(image: Image) -> int:
    uid = int(image.user.split(":")[0])
    assert uid != 0
    return uid
