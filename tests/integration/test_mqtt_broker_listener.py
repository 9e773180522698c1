"""The built-in MQTT listener: devices publish to the runtime's own broker (a managed mosquitto)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from runtime.adapters.listeners.mqtt_broker import MqttBrokerListener, find_mosquitto
from runtime.core.errors import ListenerBindError
from runtime.core.messages import OutgoingMessage
from runtime.core.solution.model import Listener
from runtime.services.dataplane import Intake
from runtime.services.metrics import Counters
from tests.support.intake import running, take

pytestmark = [
    pytest.mark.integration,
    pytest.mark.usefixtures("mqtt_mode"),  # its internal client on the fast path and on plain aiomqtt
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed"),
]

REPO = Path(__file__).resolve().parents[2]


def config(**extra: Any) -> Listener:
    extra.setdefault("listen_on_port", 0)
    return Listener(key="mb", listener_type="mqttlistener", **extra)


def make(cfg: Listener, tmp_path: Path, **kw: Any) -> MqttBrokerListener:
    kw.setdefault("backoff_base", 0.05)
    kw.setdefault("backoff_cap", 0.5)
    kw.setdefault("ack_wait", 0.3)
    kw.setdefault("connect_timeout", 2.0)
    return MqttBrokerListener(cfg, instance_id="test", workdir=tmp_path / "broker", bind_host="127.0.0.1", **kw)


async def until_listening(lst: MqttBrokerListener, within: float = 15.0) -> None:
    async with asyncio.timeout(within):
        while lst.status()["state"] != "listening":  # noqa: ASYNC110 - polling status as an operator would
            await asyncio.sleep(0.02)



def device(port: int, **kw: Any) -> aiomqtt.Client:
    return aiomqtt.Client("127.0.0.1", port, timeout=5, **kw)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is as good as gone
        return f.read().split()[2] != "Z"


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.fixture
def intake() -> Intake:
    return Intake(1000, Counters())


def test_config_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="listenOnPort"):
        MqttBrokerListener(Listener(key="x", listener_type="mqttlistener"), instance_id="i", workdir=tmp_path)
    with pytest.raises(ValueError, match="userName"):
        make(config(anonymous=False, user_name="u"), tmp_path)


async def test_devices_publish_and_messages_arrive(tmp_path: Path, intake: Intake) -> None:
    lst = make(config(), tmp_path)
    async with running(lst, intake):
        await until_listening(lst)
        status = lst.status()
        port = status["port"]
        assert port and port > 0 and status["pid"]
        async with device(port) as dev:
            await dev.publish("dev/1/motion", b'{"m":1}', qos=1)
            await dev.publish("dev/2/temp", b"21.5", qos=0)
            got = sorted(await take(intake, 2), key=lambda m: m.topic or "")
        for m in got:
            if m.ack:
                m.ack()
    assert [(m.listener, m.topic, m.payload) for m in got] == [("mb", "dev/1/motion", b'{"m":1}'),
                                                               ("mb", "dev/2/temp", b"21.5")]
    assert lst.status()["state"] == "stopped"
    assert lst.status()["received"] == 2


async def test_configured_subscriptions_and_replies_reach_the_device(tmp_path: Path, intake: Intake) -> None:
    lst = make(config(mqtt_subscriptions=[{"topic": "in/#", "qos": "qos1"}]), tmp_path)
    async with running(lst, intake):
        await until_listening(lst)
        async with device(lst.status()["port"]) as dev:
            await dev.subscribe("in/dev1/reply", qos=1)
            await dev.publish("other/x", b"ignored", qos=1)
            await dev.publish("in/dev1", b"hello", qos=1)
            (got,) = await take(intake, 1)
            got.ack()  # type: ignore[misc]
            got.reply.send(OutgoingMessage("k", "m", "dev1", payload=b"hi"))  # type: ignore[union-attr]
            async with asyncio.timeout(5):
                reply = await anext(aiter(dev.messages))
    assert got.topic == "in/dev1"
    assert (reply.topic.value, reply.payload) == ("in/dev1/reply", b"hi")


async def test_credentials_are_required_when_not_anonymous(tmp_path: Path, intake: Intake) -> None:
    lst = make(config(anonymous=False, user_name="dev", password="s3cret"), tmp_path)
    async with running(lst, intake):
        await until_listening(lst)
        port = lst.status()["port"]
        with pytest.raises(aiomqtt.MqttError):
            async with device(port, username="dev", password="wrong"):
                pass
        with pytest.raises(aiomqtt.MqttError):
            async with device(port):
                pass
        async with device(port, username="dev", password="s3cret") as dev:
            await dev.publish("d/1", b"ok", qos=1)
            (got,) = await take(intake, 1)
            got.ack()  # type: ignore[misc]
    assert got.payload == b"ok"
    assert oct((tmp_path / "broker" / "passwords").stat().st_mode & 0o777) == "0o600"


async def test_busy_port_is_a_bind_error_naming_the_port(tmp_path: Path, intake: Intake) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        lst = make(config(listen_on_port=port), tmp_path)
        with pytest.raises(ListenerBindError) as err:
            await lst.start(intake)
    assert err.value.port == port and str(port) in str(err.value)
    assert "in use" in err.value.reason
    assert lst.status()["state"] == "stopped"


async def test_stop_leaves_nothing_behind(tmp_path: Path, intake: Intake) -> None:
    lst = make(config(), tmp_path)
    async with running(lst, intake):
        await until_listening(lst)
        pid, port = lst.status()["pid"], lst.status()["port"]
        assert pid_alive(pid)
    assert not pid_alive(pid)
    assert port_free(port)
    assert lst.status()["pid"] is None
    # and it starts again on the same port
    async with running(lst, intake):
        await until_listening(lst)
        assert lst.status()["port"] == port


async def test_a_crashed_broker_is_restarted(tmp_path: Path, intake: Intake) -> None:
    lst = make(config(), tmp_path)
    async with running(lst, intake):
        await until_listening(lst)
        os.kill(lst.status()["pid"], signal.SIGKILL)
        async with asyncio.timeout(10):
            while lst.status()["restarts"] < 1:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        await until_listening(lst, within=10)
        async with device(lst.status()["port"]) as dev:
            await dev.publish("d/after", b"back", qos=1)
            (got,) = await take(intake, 1)
            got.ack()  # type: ignore[misc]
    assert got.payload == b"back"


def test_broker_does_not_outlive_a_killed_runtime(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG: SIGKILL the process that runs the listener; its mosquitto must go too."""
    script = textwrap.dedent(f"""
        import asyncio, sys
        from pathlib import Path
        from runtime.adapters.listeners.mqtt_broker import MqttBrokerListener
        from runtime.core.solution.model import Listener
        from runtime.services.dataplane import Intake
        from runtime.services.metrics import Counters

        async def main():
            lst = MqttBrokerListener(Listener(key="k", listener_type="mqttlistener", listen_on_port=0),
                                     instance_id="t", workdir=Path({str(tmp_path / "w")!r}), bind_host="127.0.0.1")
            await lst.start(Intake(10, Counters()))
            print("PID", lst.status()["pid"], flush=True)
            await asyncio.sleep(3600)

        asyncio.run(main())
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = ""
        while not line.startswith("PID "):  # structlog writes to stdout too
            line = proc.stdout.readline()
            assert line, "the runtime process ended early"
        broker_pid = int(line.split()[1])
        assert pid_alive(broker_pid)
    finally:
        proc.kill()
        proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()
    deadline = time.monotonic() + 5
    while pid_alive(broker_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(broker_pid)
