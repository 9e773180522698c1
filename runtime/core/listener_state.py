"""The states a data listener reports in ``GET /status`` (``listeners[].state``), one enum for every listener.

``up`` is what ``/ready`` requires of every listener while Running: a server listener is ``listening``, a
client listener (MQTT, AMQP, WebSocket client) is ``connected``. A client that lost its broker says
``disconnected`` (it was connected) or ``connecting`` (it never was since start) and reconnects by itself.
"""

from __future__ import annotations

from enum import StrEnum


class ListenerState(StrEnum):
    STOPPED = "stopped"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    LISTENING = "listening"
    STOPPING = "stopping"
    FAILED = "failed"

    @property
    def up(self) -> bool:
        return self in _UP


_UP = frozenset({ListenerState.CONNECTED, ListenerState.LISTENING})
